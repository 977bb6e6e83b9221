"""The offline store: a Parquet feature log and event archive, written by the worker and read
by backfills and training sets. The layout lives in layout.py (docs/storage-offline.md)."""

from streamfs.offline.scan import (
    archive_files,
    archived_events,
    events_from_table,
    scan_archive,
    scan_features,
)
from streamfs.offline.writer import OfflineWriter

__all__ = [
    "OfflineWriter",
    "archive_files",
    "archived_events",
    "events_from_table",
    "scan_archive",
    "scan_features",
]
