"""The Redis layout of the online store: key names and value encoding, write side and read side.

This module and its binary half, online/packed.py, are the only places that know how features
sit in Redis (docs/storage-online.md):

* ``<ns>:{<entity>:<encode_key(key)>}:<view>`` — a string per (view, entity key). The ``{...}``
  hash tag puts every view of one entity in one Redis Cluster slot.
* its value — for a view whose features are all numbers, written by the kernel: packed 64-bit
  words (online/packed.py, first byte 0xB5); otherwise compact JSON
  ``[fingerprint, max_time, events, written_ms, exotic, groups]`` where
  ``groups`` is ``[[starts, values], ...]``, one step function per window group (engine order).
  Reads evaluate the step function at ``max(as_of, max_time)``, so values decay with time even
  when no event arrives. ``exotic`` is 1 when some value needed a tag (see streamfs.tagged), so the
  common case decodes with one ``orjson.loads`` and nothing else.
* ``<ns>:views`` — a hash: view name → JSON metadata (`ViewMeta`), so a client can read without
  importing the pipeline.

Entries expire (PX) after the view's ttl plus its longest window: Redis frees dead entities,
while the reader applies the ttl itself against as_of, so reads stay exact.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, NamedTuple

import orjson

from streamfs.definitions import FeatureView
from streamfs.engine import ServingState, ViewEngine
from streamfs.engine.serving import INT64_MIN, UINT64_MAX, ServingColumns, is_plain
from streamfs.online.packed import CAN_PACK, PACKED_PREFIX, PackedReader, Pick, pack_entries
from streamfs.tagged import freeze, thaw

NAMESPACE = "sfs"
META_FORMAT = 1


# --------------------------------------------------------------------------- key names


def key_prefix(namespace: str, entity: str) -> str:
    """Everything before the encoded entity key: ``sfs:{card:``."""
    return f"{namespace}:{{{entity}:"


def key_suffix(view: str) -> str:
    """Everything after the encoded entity key: ``}:card_activity``."""
    return f"}}:{view}"


def entry_key(namespace: str, entity: str, encoded_key: str, view: str) -> str:
    """``sfs:{card:c1}:card_activity``; `encoded_key` is `streamfs.keys.encode_key` of the key."""
    return key_prefix(namespace, entity) + encoded_key + key_suffix(view)


def views_key(namespace: str) -> str:
    """The hash of view metadata: ``sfs:views``."""
    return f"{namespace}:views"


def short_fingerprint(fingerprint: str) -> str:
    """16 hex digits of the engine fingerprint: enough to tell definitions apart, cheap to store per entry."""
    return blake2b(fingerprint.encode(), digest_size=8).hexdigest()


# --------------------------------------------------------------------------- view metadata


@dataclass(frozen=True, slots=True)
class ViewMeta:
    """What a reader needs to know about a view; stored in ``<ns>:views`` by the writer."""

    name: str
    entity: str
    join_keys: tuple[str, ...]
    features: tuple[str, ...]
    """Feature names in view order (the order a whole-view read returns)."""
    groups: tuple[tuple[str, ...], ...]
    """Feature names of each window group, in the order an entry's step values hold them."""
    ttl: int | None
    expire_ms: int | None
    """The PX of every entry: ttl + longest window, or None (no expiry) without a ttl."""
    fingerprint: str

    @classmethod
    def from_engine(cls, engine: ViewEngine) -> ViewMeta:
        view = engine.view
        windows = [f.window for f in view.features if f.window is not None]
        expire = None if view.ttl is None else view.ttl + max(windows, default=0)
        return cls(
            name=view.name,
            entity=view.entity.name,
            join_keys=tuple(view.entity.join_keys),
            features=tuple(view.feature_names),
            groups=tuple(tuple(names) for names in engine.group_features),
            ttl=view.ttl,
            expire_ms=expire,
            fingerprint=short_fingerprint(engine.fingerprint()),
        )

    @classmethod
    def from_view(cls, view: FeatureView) -> ViewMeta:
        return cls.from_engine(ViewEngine(view))

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "format": META_FORMAT,
                "name": self.name,
                "entity": self.entity,
                "join_keys": self.join_keys,
                "features": self.features,
                "groups": self.groups,
                "ttl": self.ttl,
                "expire_ms": self.expire_ms,
                "fingerprint": self.fingerprint,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> ViewMeta:
        data = orjson.loads(raw)
        if data.get("format") != META_FORMAT:
            raise ValueError(f"view metadata format {data.get('format')!r} is not {META_FORMAT}")
        return cls(
            name=data["name"],
            entity=data["entity"],
            join_keys=tuple(data["join_keys"]),
            features=tuple(data["features"]),
            groups=tuple(tuple(names) for names in data["groups"]),
            ttl=data["ttl"],
            expire_ms=data["expire_ms"],
            fingerprint=data["fingerprint"],
        )


# --------------------------------------------------------------------------- entries: write side


def encode_entry(state: ServingState, fingerprint: str, written_ms: int) -> bytes:
    """One entity's serving state as bytes; the same state always gives the same bytes but written_ms."""
    if _all_plain(state):  # the common case: orjson writes the step tuples as they are
        plain = [(steps.starts, steps.values) for steps in state.groups]
        return orjson.dumps([fingerprint, state.max_time, state.events, written_ms, 0, plain])
    exotic = 0
    groups: list[tuple[tuple[int, ...], list[list[Any]]]] = []
    for steps in state.groups:
        rows = [list(row) for row in steps.values]
        groups.append((steps.starts, rows))
        for row in rows:
            for index, value in enumerate(row):
                if not is_plain(value):
                    row[index] = freeze(value)
                    exotic = 1
    return orjson.dumps([fingerprint, state.max_time, state.events, written_ms, exotic, groups])


def encode_entries(columns: ServingColumns, fingerprint: str, written_ms: int) -> list[bytes | None]:
    """The entry of each key's state in `columns` (None where it has none), in bulk: packed
    (online/packed.py) where the kernel's arrays hold it and every value is plain, else JSON
    as encode_entry writes it (a plain key's straight from the columns, byte for byte what
    encode_entry writes for its ServingState: tests/unit/test_engine_kernel.py checks)."""
    slow = columns.states
    plain = columns.plain
    count = len(columns.keys)
    out: list[bytes | None] = [None] * count
    arrays = columns.arrays
    packable: list[int] = []
    if arrays is not None and CAN_PACK:
        packable = [index for index in range(count) if plain[index] and index not in slow]
        packed = pack_entries(arrays, packable, fingerprint, written_ms, columns.max_times, columns.events)
        for index, entry in zip(packable, packed, strict=True):
            out[index] = entry
        if len(packable) == count:
            return out
    chosen = set(packable)
    dumps = orjson.dumps
    max_times, events, groups = columns.max_times, columns.events, columns.groups
    for index in range(count):
        if index in chosen:
            continue
        if index in slow or not plain[index]:
            state = columns.state(index)
            out[index] = None if state is None else encode_entry(state, fingerprint, written_ms)
        else:
            out[index] = dumps([fingerprint, max_times[index], events[index], written_ms, 0, groups(index)])
    return out


def _all_plain(state: ServingState) -> bool:
    """Whether every step value is `is_plain` (inlined: this runs for every value written)."""
    isfinite = math.isfinite
    for steps in state.groups:
        for row in steps.values:
            for value in row:
                kind = type(value)
                if kind is float:
                    if not isfinite(value):
                        return False
                elif kind is int:
                    if not INT64_MIN <= value <= UINT64_MAX:
                        return False
                elif not (kind is str or value is None or kind is bool):
                    return False
    return True


def _thaw_groups(groups: list[list[Any]]) -> list[list[Any]]:
    for _starts, rows in groups:
        for row in rows:
            for index, value in enumerate(row):
                if type(value) is dict:
                    row[index] = thaw(value)
    return groups


# --------------------------------------------------------------------------- entries: read side


class Freshness(NamedTuple):
    """How current one entity's entry of one view is (all times epoch milliseconds, UTC).

    A NamedTuple rather than a dataclass: one is built per entity per view on the read path.
    """

    event_time: int
    """The newest event time the entry includes."""
    written_at: int
    """When the writer stored the entry (wall clock)."""
    events: int
    """How many events of the entity the engine has accepted."""
    expired: bool
    """True when as_of is more than the view's ttl after event_time (the values read as None)."""


class EntryReader:
    """Decodes the entries of one view for a fixed list of requested features, in bulk.

    Built once per read plan: the per-entity work is one orjson.loads, one bisect per group
    and slicing, with no per-feature Python dispatch.
    """

    __slots__ = ("_absent", "_fingerprint", "_order", "_packed", "_picks", "_ttl", "width")

    def __init__(self, meta: ViewMeta, features: Sequence[str]) -> None:
        where = {name: (g, p) for g, names in enumerate(meta.groups) for p, name in enumerate(names)}
        per_group: dict[int, list[int]] = {}
        for name in features:
            group, position = where[name]
            per_group.setdefault(group, []).append(position)
        picks: list[Pick] = []
        fetched: list[str] = []
        for group, positions in sorted(per_group.items()):
            whole = positions == list(range(len(meta.groups[group])))
            picks.append((group, None if whole else tuple(positions)))
            fetched.extend(meta.groups[group][p] for p in positions)
        order = tuple(fetched.index(name) for name in features)
        self._picks = tuple(picks)
        self._order = None if order == tuple(range(len(order))) else order
        self._fingerprint = meta.fingerprint
        self._ttl = meta.ttl
        self.width = len(features)
        self._absent: tuple[Any, ...] = (None,) * len(features)
        widths = tuple(len(names) for names in meta.groups)
        self._packed = PackedReader(meta.fingerprint, widths, self._picks, self._order)

    def read(
        self, raws: Sequence[bytes | None], as_of: int
    ) -> tuple[list[Sequence[Any]], list[Freshness | None]]:
        """Values (in the requested feature order) and freshness of each entry at as_of.

        A missing entry, an entry of another definition (fingerprint) and an entry past the
        view's ttl read as all-None values; only the last has a Freshness (expired=True).
        """
        values: list[Sequence[Any]] = []
        freshness: list[Freshness | None] = []
        absent = self._absent
        ttl = self._ttl
        packed = [raw for raw in raws if raw is not None and raw[:1] == PACKED_PREFIX]
        if packed:  # read in bulk; taken in order below
            valid, max_times, events, written, rows = self._packed.read(packed, as_of)
        p = 0
        for raw in raws:
            if raw is None:
                values.append(absent)
                freshness.append(None)
            elif raw[:1] != PACKED_PREFIX:
                self._read_json(raw, as_of, values, freshness)
            else:
                if not valid[p]:
                    values.append(absent)
                    freshness.append(None)
                elif ttl is not None and as_of - max_times[p] > ttl:
                    values.append(absent)
                    freshness.append(Freshness(max_times[p], written[p], events[p], True))
                else:
                    values.append(rows[p])
                    freshness.append(Freshness(max_times[p], written[p], events[p], False))
                p += 1
        return values, freshness

    def _read_json(
        self, raw: bytes | str, as_of: int, values: list[Sequence[Any]], freshness: list[Freshness | None]
    ) -> None:
        """read() of one JSON entry."""
        entry = orjson.loads(raw)
        if entry[0] != self._fingerprint:
            values.append(self._absent)
            freshness.append(None)
            return
        max_time = entry[1]
        if self._ttl is not None and as_of - max_time > self._ttl:
            values.append(self._absent)
            freshness.append(Freshness(max_time, entry[3], entry[2], True))
            return
        groups = _thaw_groups(entry[5]) if entry[4] else entry[5]
        t = as_of if as_of > max_time else max_time
        row: list[Any] = []
        for group, positions in self._picks:
            starts, steps = groups[group]
            step = steps[bisect_right(starts, t) - 1]
            if positions is None:
                row += step
            else:
                row += [step[p] for p in positions]
        order = self._order
        values.append(row if order is None else [row[i] for i in order])
        freshness.append(Freshness(max_time, entry[3], entry[2], False))
