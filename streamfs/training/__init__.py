"""Point-in-time training sets, recomputed from the event archive with the engine itself.

This is where leakage bugs live, so it is its own package: labels.py validates label tables,
replay.py drives the engine through the archive for one view, build.py assembles the result.
See docs/training.md.
"""

from streamfs.training.build import TrainingSetReport, training_set, training_set_command
from streamfs.training.replay import Mode

__all__ = ["Mode", "TrainingSetReport", "training_set", "training_set_command"]
