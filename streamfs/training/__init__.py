"""Point-in-time training sets, recomputed from the event archive with the engine itself.

This is where leakage bugs live, so it is its own package: labels.py validates label tables,
replay.py drives the engine through one bucket of keys' archive rows (archive_rows.py reads and
orders them), buckets.py splits the labels' keys into buckets and runs them in processes, build.py
assembles the result.
See docs/training.md.
"""

from streamfs.training.build import TrainingSetReport, training_set, training_set_command
from streamfs.training.replay import Mode

__all__ = ["Mode", "TrainingSetReport", "training_set", "training_set_command"]
