"""Engine state as plain values (lists, tuples, ints, floats, strings) and back, and as JSON.

Snapshots are what checkpoints and backfill state store, as JSON written by `to_json`: Python's
json, because exact sums are integers beyond 64 bits, with datetimes, dates and Decimals (inputs
and values of min/max/first/last/count_distinct over such fields) tagged by streamfs.tagged.
Tiles are stored as per-feature partials (GroupAggregator.partials), which keeps the format
stable when the in-memory layout of a group's partial changes.
"""

from __future__ import annotations

import json
from typing import Any

from streamfs.engine.compiled import CompiledView
from streamfs.engine.state import Key, KeyState
from streamfs.errors import StateError
from streamfs.tagged import freeze, thaw

SNAPSHOT_FORMAT = 1


def to_json(document: Any) -> bytes:
    """A document holding snapshots as JSON bytes (any value a snapshot may hold is carried exactly)."""
    return json.dumps(document, default=freeze).encode()


def from_json(raw: bytes | str) -> Any:
    """The inverse of `to_json`."""
    return json.loads(raw, object_hook=thaw)


def snapshot_states(
    compiled: CompiledView, name: str, fingerprint: str, partition: int, states: dict[Key, KeyState]
) -> dict[str, Any]:
    """A plain-value copy of one partition's key states."""
    keys = []
    for key, state in states.items():
        groups = []
        for group, group_state in zip(compiled.groups, state.groups, strict=True):
            aggregator = group.aggregator
            tiles = (
                [(index, aggregator.partials(tile)) for index, tile in sorted(group_state.tiles.items())]
                if aggregator is not None
                else []
            )
            groups.append(
                [
                    tiles,
                    [sorted(d.live(group.hop), key=_value_order) for d in group_state.distinct],
                ]
            )
        keys.append([list(key), state.max_time, state.seq, [list(item) for item in state.buffer], groups])
    return {
        "format": SNAPSHOT_FORMAT,
        "view": name,
        "fingerprint": fingerprint,
        "partition": partition,
        "keys": keys,
    }


def restore_states(
    compiled: CompiledView, name: str, fingerprint: str, snapshot: dict[str, Any]
) -> tuple[int, dict[Key, KeyState]]:
    """The partition and key states a snapshot holds; StateError if it is of another definition."""
    if snapshot.get("format") != SNAPSHOT_FORMAT:
        raise StateError(f"snapshot format {snapshot.get('format')!r} is not {SNAPSHOT_FORMAT}")
    check_definition(snapshot, name, fingerprint)
    groups = compiled.groups
    states: dict[Key, KeyState] = {}
    for key_list, max_time, seq, buffer, group_snaps in snapshot["keys"]:
        state = KeyState(groups)
        state.max_time = max_time
        state.seq = seq
        state.buffer = [(int(t), int(s), tuple(values)) for t, s, values in buffer]
        for group, group_state, (tiles, distincts) in zip(groups, state.groups, group_snaps, strict=True):
            aggregator = group.aggregator
            if aggregator is not None:
                group_state.tiles = {
                    int(index): aggregator.from_partials([as_tuples(p) for p in partials])
                    for index, partials in tiles
                }
            for distinct, latest in zip(group_state.distinct, distincts, strict=True):
                distinct.latest = {as_tuples(v): int(t) for v, t in latest}
                for time in distinct.latest.values():
                    tile = group.window.tile(time)
                    distinct.per_tile[tile] = distinct.per_tile.get(tile, 0) + 1
        states[tuple(as_tuples(part) for part in key_list)] = state
    return int(snapshot["partition"]), states


def check_definition(snapshot: dict[str, Any], name: str, fingerprint: str) -> None:
    """StateError unless the snapshot (either format) is of this view's definition."""
    if snapshot.get("view") != name or snapshot.get("fingerprint") != fingerprint:
        raise StateError(
            f"snapshot is of view {snapshot.get('view')!r} with a different definition; "
            f"rebuild the state of {name!r} from the archive (streamfs backfill)"
        )


def as_tuples(value: Any) -> Any:
    """Lists that went through JSON come back as lists; keys and partials are tuples."""
    if isinstance(value, list):
        return tuple(as_tuples(v) for v in value)
    return value


def _value_order(item: tuple[Any, int]) -> tuple[str, str]:
    return (type(item[0]).__name__, repr(item[0]))
