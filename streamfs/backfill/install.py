"""Installing a finished backfill's staged rows into the live feature log, per date directory.

A re-run replaces its output instead of duplicating it: for every date the backfill touches,
a complete new ``date=`` directory is built beside the live one, then swapped in with two
renames (live → old, new → live). Readers see the old day or the new day, never a mix, and
never duplicates (at worst the day is absent for the instant between the two renames).

The new day holds:
* the staged rows of that day (hard links, so a crash can rebuild the new day from staging);
* every live row the backfill did not recompute, kept as it was: rows outside [start, end)
  (a day the range cuts in two) and rows at offsets ≥ the partition's bound (what a running
  worker wrote after the bound). Files wholly outside are linked untouched; a file that
  straddles is rewritten with only its kept rows, named after their offsets like any file.
  With `replace`, rows of another definition (fingerprint) are never kept.

Files a worker adds to a live day while it is being swapped are moved into the new day after
the swap. The steps are idempotent, so a crash mid-install is finished by the next run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from streamfs import durable
from streamfs.offline import layout
from streamfs.offline.writer import write_atomic

__all__ = ["build_days", "swap_days"]


def build_days(
    live: Path,
    staged: Path,
    work: Path,
    *,
    start: int | None,
    end: int | None,
    bounds: dict[int, int],
    fingerprint: str,
    replace: bool,
) -> list[str]:
    """Build work/next/date=D for every affected day D; return the day directory names."""
    shutil.rmtree(work / "next", ignore_errors=True)
    shutil.rmtree(work / "known", ignore_errors=True)
    staged_files = layout.list_files(staged)
    live_files = layout.list_files(live)
    days = {f.day for f in staged_files}
    days |= {f.day for f in live_files if _overlaps(f.day, start, end)}
    names = []
    for day in sorted(days):
        name = layout.date_dir_name(day)
        target = work / "next" / name
        durable.make_dirs(target)
        for data_file in staged_files:
            if data_file.day == day:
                os.link(data_file.path, target / data_file.path.name)
        whole = _covers(day, start, end)
        known = []
        for data_file in live_files:
            if data_file.day != day:
                continue
            known.append(data_file.path.name)
            _keep(data_file, target, whole, start, end, bounds.get(data_file.partition), fingerprint, replace)
        durable.write_bytes(work / "known" / f"{name}.json", json.dumps(known).encode())
        durable.fsync_dir(target)
        names.append(name)
    return names


def _keep(
    data_file: layout.DataFile,
    target: Path,
    whole: bool,
    start: int | None,
    end: int | None,
    bound: int | None,
    fingerprint: str,
    replace: bool,
) -> None:
    """Put into `target` the rows of a live file that the backfill did not recompute."""
    if replace and _fingerprint(data_file.path) != fingerprint:
        return
    if bound is None or data_file.first_offset >= bound:
        if bound is None and replace:
            return
        os.link(data_file.path, target / data_file.path.name)
        return
    if whole and data_file.last_offset < bound:
        return  # every row recomputed
    table = pq.read_table(data_file.path)
    offsets = table.column("offset")
    recomputed = pc.less(offsets, bound)
    if not whole:
        times = table.column("event_time").cast(pa.int64())
        if start is not None:
            recomputed = pc.and_(recomputed, pc.greater_equal(times, start))
        if end is not None:
            recomputed = pc.and_(recomputed, pc.less(times, end))
    kept = table.filter(pc.invert(recomputed))
    if kept.num_rows:
        kept_offsets = kept.column("offset")
        first, last = pc.min(kept_offsets).as_py(), pc.max(kept_offsets).as_py()
        write_atomic(kept, target / layout.file_name(data_file.partition, first, last))


def swap_days(live: Path, work: Path, names: list[str]) -> None:
    """Swap each built day into place (idempotent: finishes an interrupted swap)."""
    durable.make_dirs(live)
    for name in names:
        built = work / "next" / name
        if not built.exists():
            continue  # swapped by an earlier, interrupted attempt
        current = live / name
        old = work / "old" / name
        durable.make_dirs(old.parent)
        if current.exists():
            if old.exists():  # an earlier attempt moved the old day out; this one is newer
                for path in current.iterdir():
                    os.replace(path, built / path.name)
                current.rmdir()
            else:
                os.replace(current, old)
        if any(built.iterdir()):
            os.replace(built, current)
        else:
            built.rmdir()
        durable.fsync_dir(live)
        _rescue(old, current, work / "known" / f"{name}.json")
    shutil.rmtree(work / "old", ignore_errors=True)
    shutil.rmtree(work / "next", ignore_errors=True)
    shutil.rmtree(work / "known", ignore_errors=True)


def _rescue(old: Path, current: Path, known_path: Path) -> None:
    """Move files a worker wrote into the old day while it was being rebuilt into the new day."""
    if not old.exists():
        return
    try:
        known = set(json.loads(known_path.read_bytes()))
    except FileNotFoundError:
        known = set()
    moved = False
    for path in old.iterdir():
        if path.name not in known and not path.name.startswith("."):
            durable.make_dirs(current)
            os.replace(path, current / path.name)
            moved = True
    if moved:
        durable.fsync_dir(current)


def _overlaps(day: int, start: int | None, end: int | None) -> bool:
    lo, hi = day * layout.DAY_MS, (day + 1) * layout.DAY_MS
    return (start is None or hi > start) and (end is None or lo < end)


def _covers(day: int, start: int | None, end: int | None) -> bool:
    lo, hi = day * layout.DAY_MS, (day + 1) * layout.DAY_MS
    return (start is None or start <= lo) and (end is None or end >= hi)


def _fingerprint(path: Path) -> str | None:
    return layout.metadata_of(pq.read_schema(path)).get("streamfs.fingerprint")
