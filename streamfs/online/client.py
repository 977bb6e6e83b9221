"""The read side of the online store: FeatureClient.get_features.

A read of many entities is one MGET (one round trip; RedisCluster splits it by slot), and the
decode work is planned once per distinct `refs`: which views, which groups, which positions, in
which output order. Values decay at read time, so a read at `as_of` is exactly what the
engine's `serve(key, as_of)` answers, with no writer running.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

import redis
from redis.cluster import RedisCluster

from streamfs.definitions import FeatureView
from streamfs.keys import encode_key, normalize_key
from streamfs.online.layout import (
    NAMESPACE,
    EntryReader,
    Freshness,
    ViewMeta,
    key_prefix,
    key_suffix,
    views_key,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Ref: TypeAlias = "str | FeatureView"
Refs: TypeAlias = "Ref | Sequence[Ref]"


class UnknownFeatureError(KeyError):
    """A view or feature reference names nothing known to the client or stored in Redis."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class FeatureResult:
    """The answer to one get_features call; rows follow the order of the entity keys given."""

    names: tuple[str, ...]
    """Output feature labels: the feature name, or "view:feature" when two views share the name."""
    keys: tuple[tuple[Any, ...], ...]
    rows: list[Sequence[Any]]
    freshness: dict[str, list[Freshness | None]]
    """view name → per entity: when its entry was last updated, or None if absent."""
    as_of: int

    def __len__(self) -> int:
        return len(self.rows)

    def to_dicts(self) -> list[dict[str, Any]]:
        names = self.names
        return [dict(zip(names, row, strict=True)) for row in self.rows]

    @property
    def columns(self) -> dict[str, list[Any]]:
        if not self.rows:
            return {name: [] for name in self.names}
        columns = zip(*self.rows, strict=True)
        return {name: list(column) for name, column in zip(self.names, columns, strict=True)}


@dataclass(frozen=True, slots=True)
class _ViewRead:
    meta: ViewMeta
    prefix: str
    suffix: str
    reader: EntryReader


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """Everything about a get_features call that depends only on its refs."""

    names: tuple[str, ...]
    views: tuple[_ViewRead, ...]
    arity: int
    order: tuple[int, ...] | None
    """Permutation from the views' concatenated values to the requested order (None: identity)."""


class FeatureClient:
    """Reads feature values from the online store.

    `views` (FeatureView objects) are used as given; any other view name is looked up in the
    ``<ns>:views`` hash the writer keeps, so a service can read without importing the pipeline.
    """

    def __init__(
        self,
        redis_url_or_client: str | redis.Redis | RedisCluster,
        views: Sequence[FeatureView] | None = None,
        *,
        namespace: str = NAMESPACE,
    ) -> None:
        if isinstance(redis_url_or_client, str):
            self.client: redis.Redis | RedisCluster = redis.Redis.from_url(redis_url_or_client)
        else:
            self.client = redis_url_or_client
            if self.client.get_encoder().decode_responses:
                raise ValueError(
                    "FeatureClient needs a Redis client that returns bytes (decode_responses=False): "
                    "entries of numeric views are binary (docs/storage-online.md)"
                )
        self.namespace = namespace
        self._given = {view.name: ViewMeta.from_view(view) for view in views or ()}
        self._stored: dict[str, ViewMeta] = {}
        self._plans: dict[tuple[Ref, ...], ReadPlan] = {}

    def close(self) -> None:
        self.client.close()

    def refresh(self) -> None:
        """Reload stored view metadata and forget cached plans (after a redeploy changed views)."""
        raw: dict[bytes | str, bytes | str] = self.client.hgetall(views_key(self.namespace))
        self._stored = {
            (name.decode() if isinstance(name, bytes) else name): ViewMeta.from_bytes(value)
            for name, value in raw.items()
        }
        self._plans.clear()

    def get_features(
        self,
        refs: Refs,
        entity_keys: Sequence[Any],
        as_of: datetime | int | None = None,
    ) -> FeatureResult:
        """Feature values of each entity key at `as_of` (aware datetime or epoch ms; None = now).

        refs: a view name, "view:feature", a FeatureView, or a list mixing them; views in one
        call must share their entity's join keys. Keys are scalars for one join key, tuples for
        composite keys. Absent or expired entities read as None.
        """
        plan = self.plan(refs)
        at = _as_of_ms(as_of)
        arity = plan.arity
        keys = tuple([normalize_key(key, arity) for key in entity_keys])
        encoded = [encode_key(key) for key in keys]
        names: list[str] = []
        for view in plan.views:
            prefix, suffix = view.prefix, view.suffix
            names.extend([prefix + text + suffix for text in encoded])
        raws = self._mget(names) if names else []
        count = len(encoded)
        freshness: dict[str, list[Freshness | None]] = {}
        parts: list[list[Sequence[Any]]] = []
        for index, view in enumerate(plan.views):
            values, fresh = view.reader.read(raws[index * count : (index + 1) * count], at)
            parts.append(values)
            freshness[view.meta.name] = fresh
        rows: list[Sequence[Any]]
        if len(parts) == 1:
            rows = parts[0]
        else:
            rows = [[value for part in row for value in part] for row in zip(*parts, strict=True)]
        if plan.order is not None:
            order = plan.order
            rows = [[row[i] for i in order] for row in rows]
        return FeatureResult(plan.names, keys, rows, freshness, at)

    def _mget(self, names: list[str]) -> list[bytes | None]:
        if isinstance(self.client, RedisCluster):
            return self.client.mget_nonatomic(names)
        return self.client.mget(names)  # type: ignore[return-value]

    # ---------------------------------------------------------------- planning

    def plan(self, refs: Refs) -> ReadPlan:
        """The cached read plan for `refs`; UnknownFeatureError for a ref that names nothing."""
        wanted: tuple[Ref, ...] = (refs,) if isinstance(refs, str | FeatureView) else tuple(refs)
        plan = self._plans.get(wanted)
        if plan is None:
            plan = self._plans[wanted] = self._build(wanted)
        return plan

    def _meta(self, name: str) -> ViewMeta:
        meta = self._given.get(name) or self._stored.get(name)
        if meta is None:
            self.refresh()
            meta = self._stored.get(name)
        if meta is None:
            known = sorted({*self._given, *self._stored})
            raise UnknownFeatureError(f"unknown feature view {name!r} (known views: {known})")
        return meta

    def _build(self, refs: tuple[Ref, ...]) -> ReadPlan:
        if not refs:
            raise ValueError("get_features needs at least one view or feature reference")
        requested: list[tuple[ViewMeta, str]] = []
        for ref in refs:
            if isinstance(ref, FeatureView):
                meta = self._given.get(ref.name) or ViewMeta.from_view(ref)
                requested.extend((meta, name) for name in meta.features)
            elif isinstance(ref, str):
                view_name, _, feature = ref.partition(":")
                meta = self._meta(view_name)
                if not feature:
                    requested.extend((meta, name) for name in meta.features)
                elif feature in meta.features:
                    requested.append((meta, feature))
                else:
                    raise UnknownFeatureError(
                        f"view {view_name!r} has no feature {feature!r} (features: {list(meta.features)})"
                    )
            else:
                raise TypeError(f"a feature ref is a view name, 'view:feature' or a FeatureView, not {ref!r}")
        if len(set(requested)) != len(requested):
            raise ValueError(f"features requested twice in {list(refs)!r}")
        join_keys = {meta.join_keys for meta, _ in requested}
        if len(join_keys) > 1:
            raise ValueError(f"views in one get_features call must share join keys; got {sorted(join_keys)}")
        by_view: dict[str, tuple[ViewMeta, list[str]]] = {}
        for meta, name in requested:
            by_view.setdefault(meta.name, (meta, []))[1].append(name)
        views = tuple(
            _ViewRead(
                meta, key_prefix(self.namespace, meta.entity), key_suffix(meta.name), EntryReader(meta, names)
            )
            for meta, names in by_view.values()
        )
        fetched = [(meta_name, name) for meta_name, (_, names) in by_view.items() for name in names]
        order = tuple(fetched.index((meta.name, name)) for meta, name in requested)
        counts: dict[str, int] = {}
        for _, name in requested:
            counts[name] = counts.get(name, 0) + 1
        labels = tuple(name if counts[name] == 1 else f"{meta.name}:{name}" for meta, name in requested)
        return ReadPlan(
            names=labels,
            views=views,
            arity=len(requested[0][0].join_keys),
            order=None if order == tuple(range(len(order))) else order,
        )


def _as_of_ms(as_of: datetime | int | None) -> int:
    if as_of is None:
        return time.time_ns() // 1_000_000
    if isinstance(as_of, datetime):
        if as_of.tzinfo is None or as_of.utcoffset() is None:
            raise ValueError(f"as_of {as_of!r} is a naive datetime; give a time zone (e.g. tzinfo=UTC)")
        delta = as_of - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    if isinstance(as_of, int) and not isinstance(as_of, bool):
        return as_of
    raise TypeError(f"as_of must be an aware datetime, epoch milliseconds or None, not {as_of!r}")
