"""Backfills: recompute feature views from the event archive or a Kafka replay (docs/backfill.md).

plan.py checks a request and fixes where each partition's replay stops; replay.py reads bounded
event sources; job.py runs one view (engine, staged rows, resumable checkpoint); install.py
swaps staged rows into the feature log; run.py ties them together.
"""

from streamfs.backfill.plan import SourceKind
from streamfs.backfill.run import BackfillReport, backfill

__all__ = ["BackfillReport", "SourceKind", "backfill"]
