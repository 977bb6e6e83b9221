"""Engine-state checkpoints: one JSON file per (topic, partition) holding every view's snapshot.

A checkpoint says "the engine state of these views after consuming this partition up to (not
including) `offset`". Recovery loads the newest checkpoint at or below the committed offset and
replays the event archive from there to the committed offset, so checkpoints can be taken far
less often than commits. Files are written atomically (streamfs.durable), as the engine's
snapshot JSON (streamfs.engine.snapshot.to_json).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from streamfs import durable
from streamfs.engine import snapshot as snapshots_json

_NAME = re.compile(r"^o(\d{15})\.json$")


class CheckpointStore:
    """Checkpoints under `<root>/<group>/<topic>/p<partition>/o<offset>.json`; keeps the newest few."""

    def __init__(self, root: Path, group_id: str, keep: int = 2) -> None:
        self.root = Path(root) / group_id
        self.keep = keep

    def partition_dir(self, topic: str, partition: int) -> Path:
        """`<root>/<group>/<topic>/p<partition>`: the partition's checkpoints (and its ownership epoch)."""
        return self.root / topic / f"p{partition:04d}"

    def save(self, topic: str, partition: int, offset: int, snapshots: dict[str, Any]) -> Path:
        directory = self.partition_dir(topic, partition)
        path = directory / f"o{offset:015d}.json"
        record = {"topic": topic, "partition": partition, "offset": offset, "views": snapshots}
        durable.write_bytes(path, snapshots_json.to_json(record))
        for old in self._offsets(topic, partition)[: -self.keep]:
            (directory / f"o{old:015d}.json").unlink(missing_ok=True)
        return path

    def _offsets(self, topic: str, partition: int) -> list[int]:
        directory = self.partition_dir(topic, partition)
        if not directory.is_dir():
            return []
        found = (_NAME.match(p.name) for p in directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def latest(self, topic: str, partition: int, at_most: int) -> tuple[int, dict[str, Any]] | None:
        """The newest checkpoint whose offset ≤ `at_most` (the committed offset), or None."""
        for offset in reversed(self._offsets(topic, partition)):
            if offset <= at_most:
                path = self.partition_dir(topic, partition) / f"o{offset:015d}.json"
                data = snapshots_json.from_json(path.read_bytes())
                return offset, data["views"]
        return None

    def discard_after(self, topic: str, partition: int, offset: int) -> None:
        """Drop checkpoints beyond `offset`: they describe work that was never committed."""
        for found in self._offsets(topic, partition):
            if found > offset:
                (self.partition_dir(topic, partition) / f"o{found:015d}.json").unlink(missing_ok=True)


class CommitLog:
    """The offsets this group committed, recorded by the workers themselves after each commit.

    Kafka's committed offsets are the primary record; this one guards against a broker that
    loses or cannot yet return them (an in-memory broker restarted, a coordinator mid-rebalance).
    The worker resumes from the larger of the two. Written after the Kafka commit succeeds, so it
    can lag by one commit but never lead: resuming from it at worst redoes one commit's work.
    """

    def __init__(self, root: Path, group_id: str) -> None:
        self.path = Path(root) / group_id / "committed.json"

    def read(self) -> dict[str, int]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                data: dict[str, int] = json.load(handle)
                return data
        except FileNotFoundError:
            return {}

    def offset(self, topic: str, partition: int) -> int | None:
        return self.read().get(f"{topic}:{partition}")

    def record(self, offsets: dict[tuple[str, int], int]) -> None:
        """Merge these partitions' offsets in, under a file lock: workers of one group share the
        data directory, and without it one's read-merge-write would put back an older copy of
        the partitions another just recorded."""
        if not offsets:
            return
        with durable.exclusive_lock(self.path.with_name(self.path.name + ".lock")):
            merged = self.read()
            merged.update({f"{topic}:{partition}": offset for (topic, partition), offset in offsets.items()})
            durable.write_bytes(self.path, json.dumps(merged).encode())
