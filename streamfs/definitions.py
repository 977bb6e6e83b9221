"""How a data engineer declares features: Entity, KafkaSource, Aggregate and FeatureView.

Definitions are frozen pydantic models that reject unknown fields and do no I/O; the runtime
objects (decoder, engine, sinks) are built from them. Every check runs when a definition is
created, so a pipeline that imports is a pipeline that is valid, and an error names the object
and field at fault.

    card = Entity("card", join_keys=["card_id"])
    payments = KafkaSource("payments", topic="payments", schema=Payment, timestamp_field="ts")
    card_activity = FeatureView(
        "card_activity", entity=card, source=payments,
        features=[Aggregate("amount", "sum", window="1h", hop="5m")],   # -> amount_sum_1h
    )
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from streamfs.durations import Duration, label, to_ms
from streamfs.errors import DefinitionError

AggregationName = Literal[
    "count",
    "sum",
    "mean",
    "min",
    "max",
    "last",
    "first",
    "stddev",
    "stddev_pop",
    "variance",
    "variance_pop",
    "count_distinct",
]
AGGREGATIONS: tuple[AggregationName, ...] = get_args(AggregationName)
NUMERIC_AGGREGATIONS = frozenset({"sum", "mean", "stddev", "stddev_pop", "variance", "variance_pop"})
ORDERED_AGGREGATIONS = frozenset({"min", "max"})

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

EventTransform = Callable[[dict[str, Any]], "dict[str, Any] | None"]

STORABLE_TYPES: tuple[type, ...] = (bool, int, float, str, bytes, datetime, date)
"""Field types the whole path can hold: the archive, the feature log, Redis and checkpoints."""
"""A row-level transform: takes the validated event as a dict, returns the (possibly changed)
dict, or None to filter the event out of the view. An exception rejects the event."""


class _Definition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    def __init__(self, /, *args: Any, **data: Any) -> None:
        names = self._positional_fields()
        if len(args) > len(names):
            raise DefinitionError(
                f"{type(self).__name__} takes at most {len(names)} positional arguments ({', '.join(names)})"
            )
        for name, value in zip(names, args, strict=False):
            if name in data:
                raise DefinitionError(f"{type(self).__name__}: {name!r} given both by position and by name")
            data[name] = value
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise DefinitionError(_describe(type(self).__name__, data, exc)) from None

    @classmethod
    def _positional_fields(cls) -> tuple[str, ...]:
        return ("name",)


def _describe(kind: str, data: Mapping[str, Any], exc: ValidationError) -> str:
    label_ = data.get("name") or data.get("field") or ""
    where = f"{kind} {label_!r}" if label_ else kind
    problems = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"]) or "(definition)"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"  {loc}: {message}")
    return f"invalid {where}:\n" + "\n".join(problems)


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{what} {value!r} must be lowercase letters, digits and underscores, starting with a letter "
            "(it is used in Redis keys and Parquet paths)"
        )
    return value


class Entity(_Definition):
    """What features describe (a card, a user, a merchant), identified by one or more join keys."""

    name: str
    join_keys: tuple[str, ...]
    description: str = ""

    if TYPE_CHECKING:  # the signature users write; pydantic's mypy plugin would make it keyword-only

        def __init__(self, name: str, *, join_keys: str | Sequence[str], description: str = "") -> None: ...

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "entity name")

    @field_validator("join_keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return (value,)
        return value

    @field_validator("join_keys")
    @classmethod
    def _keys_valid(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("an entity needs at least one join key")
        if len(set(value)) != len(value):
            raise ValueError(f"join keys repeat: {list(value)}")
        return value


class KafkaSource(_Definition):
    """A Kafka topic of events of one pydantic schema, with the field that carries event time."""

    name: str
    topic: str
    schema_: type[BaseModel] = Field(alias="schema")
    timestamp_field: str
    allowed_lateness: int = 0
    """Milliseconds an event may lag behind the newest accepted event of its entity key."""
    format: Literal["json"] = "json"
    decoder: Callable[[bytes], Any] | None = None
    """Optional bytes -> dict function replacing the JSON decoder (Avro, Protobuf, ...)."""
    max_message_bytes: int = 1_000_000
    max_future: int | None = None
    """Milliseconds an event's time may lie after its arrival (the Kafka record timestamp); a
    later one is rejected as future_timestamp. None: no limit. One event from a clock years
    ahead would otherwise make every later event of its entity key too late."""
    description: str = ""

    if TYPE_CHECKING:

        def __init__(
            self,
            name: str,
            *,
            topic: str,
            schema: type[BaseModel],
            timestamp_field: str,
            allowed_lateness: Duration = 0,
            format: Literal["json"] = "json",
            decoder: Callable[[bytes], Any] | None = None,
            max_message_bytes: int = 1_000_000,
            max_future: Duration | None = None,
            description: str = "",
        ) -> None: ...

    model_config = ConfigDict(populate_by_name=True)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "source name")

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9._-]{1,249}$", value):
            raise ValueError(f"topic {value!r} is not a valid Kafka topic name")
        return value

    @field_validator("allowed_lateness", mode="before")
    @classmethod
    def _lateness(cls, value: Any) -> int:
        return to_ms(value)

    @field_validator("max_future", mode="before")
    @classmethod
    def _max_future(cls, value: Any) -> int | None:
        return _optional_ms(value, "max_future", zero_allowed=True)

    @model_validator(mode="after")
    def _timestamp_is_a_time(self) -> KafkaSource:
        fields = self.schema_.model_fields
        if self.timestamp_field not in fields:
            raise ValueError(
                f"timestamp_field {self.timestamp_field!r} is not a field of {self.schema_.__name__} "
                f"(fields: {', '.join(fields)})"
            )
        if _base_type(fields[self.timestamp_field].annotation) not in (datetime, int):
            raise ValueError(
                f"timestamp_field {self.timestamp_field!r} must be a datetime (or int epoch milliseconds)"
            )
        return self

    @property
    def schema(self) -> type[BaseModel]:  # type: ignore[override]
        """The pydantic model every event must validate against."""
        return self.schema_

    def field_type(self, name: str) -> type | None:
        """The base Python type of a schema field (Optional stripped), or None if unknown."""
        info = self.schema_.model_fields.get(name)
        return None if info is None else _base_type(info.annotation)


def _optional_ms(value: Any, what: str, *, zero_allowed: bool) -> int | None:
    """An optional duration in milliseconds: None stays None; negative (or zero) is an error."""
    if value is None:
        return None
    ms = to_ms(value)
    if ms < 0 or (ms == 0 and not zero_allowed):
        raise ValueError(f"{what} must be {'zero or more' if zero_allowed else 'positive'}")
    return ms


def _base_type(annotation: Any) -> type | None:
    """int for `int`, `int | None`, `Optional[int]`; None for anything more complicated."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else None
    if origin is typing.Annotated:
        return _base_type(typing.get_args(annotation)[0])
    if annotation is AwareDatetime:  # pydantic's "datetime with a time zone" type
        return datetime
    return annotation if isinstance(annotation, type) else None


class Aggregate(_Definition):
    """One feature: `function` over `field`, in a window of `window` that moves by `hop`.

    No window means lifetime (every event since the entity was first seen). No hop means a
    tumbling window (hop = window). `field=None` is only for `count` (counts events).
    """

    field: str | None
    function: AggregationName
    window: int | None = None
    hop: int | None = None
    name: str = ""

    if TYPE_CHECKING:

        def __init__(
            self,
            field: str | None,
            function: AggregationName,
            *,
            window: Duration | None = None,
            hop: Duration | None = None,
            name: str = "",
        ) -> None: ...

    @classmethod
    def _positional_fields(cls) -> tuple[str, ...]:
        return ("field", "function")

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        """Name the feature after the window as the user wrote it: window="24h" -> amount_count_24h."""
        if isinstance(data, dict) and not data.get("name") and data.get("function"):
            parts = [data["field"]] if data.get("field") else []
            parts.append(data["function"])
            window = data.get("window")
            if window is not None:
                try:
                    ms = to_ms(window)
                except ValueError:
                    return data  # the window validator reports it
                written = window.strip() if isinstance(window, str) else label(ms)
                parts.append(written if written == label(ms) or written[:-1].isdigit() else label(ms))
            return {**data, "name": "_".join(str(part) for part in parts)}
        return data

    @field_validator("window", "hop", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int | None:
        return None if value is None else to_ms(value)

    @model_validator(mode="after")
    def _consistent(self) -> Aggregate:
        if self.field is None and self.function != "count":
            raise ValueError(f"{self.function!r} needs an input field; only 'count' may omit it")
        if self.window is None:
            if self.hop is not None:
                raise ValueError("hop is set but window is not; a lifetime aggregate has no hop")
        else:
            if self.window <= 0:
                raise ValueError("window must be positive")
            hop = self.window if self.hop is None else self.hop
            if hop <= 0 or self.window % hop:
                raise ValueError(
                    f"hop {label(hop)} must be positive and divide window {label(self.window)} exactly"
                )
            object.__setattr__(self, "hop", hop)
        _check_name(self.name, "feature name")
        return self

    @property
    def is_lifetime(self) -> bool:
        return self.window is None


class FeatureView(_Definition):
    """A named group of aggregate features of one entity, computed from one source."""

    name: str
    entity: Entity
    source: KafkaSource
    features: tuple[Aggregate, ...]
    transform: EventTransform | None = None
    transform_fields: Mapping[str, type] = Field(default_factory=dict)
    """The type of each field `transform` adds that a feature reads, e.g. {"amount_eur": float}:
    the schema cannot say, and the feature log, Redis and checkpoints need to know."""
    ttl: int | None = None
    """Milliseconds without an accepted event after which the entity reads as absent."""
    owner: str = ""
    description: str = ""
    tags: Mapping[str, str] = Field(default_factory=dict)
    version: int = 1

    if TYPE_CHECKING:

        def __init__(
            self,
            name: str,
            *,
            entity: Entity,
            source: KafkaSource,
            features: Sequence[Aggregate],
            transform: EventTransform | None = None,
            transform_fields: Mapping[str, type] = ...,
            ttl: Duration | None = None,
            owner: str = "",
            description: str = "",
            tags: Mapping[str, str] = ...,
            version: int = 1,
        ) -> None: ...

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "view name")

    @field_validator("features", mode="before")
    @classmethod
    def _features_list(cls, value: Any) -> Any:
        if isinstance(value, Sequence) and not isinstance(value, str):
            return tuple(value)
        return value

    @field_validator("ttl", mode="before")
    @classmethod
    def _ttl(cls, value: Any) -> int | None:
        return _optional_ms(value, "ttl", zero_allowed=False)

    @model_validator(mode="after")
    def _fits_source(self) -> FeatureView:
        if not self.features:
            raise ValueError("a feature view needs at least one feature")
        names = [feature.name for feature in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"feature names repeat: {duplicates}; give one of them an explicit name=")
        source = self.source
        fields = source.schema_.model_fields
        for key in self.entity.join_keys:
            if key not in fields:
                raise ValueError(
                    f"entity {self.entity.name!r} join key {key!r} is not a field of "
                    f"{source.schema_.__name__} (fields: {', '.join(fields)})"
                )
        self._check_transform_fields()
        for index, feature in enumerate(self.features):
            if feature.field is None:
                continue
            where = f"features[{index}] ({feature.name})"
            if feature.field not in fields and feature.field not in self.transform_fields:
                hint = ""
                if self.transform is not None:
                    example = f"transform_fields={{{feature.field!r}: float}}"
                    hint = f"; if the transform adds it, declare its type, e.g. {example}"
                raise ValueError(
                    f"{where}: field {feature.field!r} is not in {source.schema_.__name__} "
                    f"(fields: {', '.join(fields)}){hint}"
                )
            base = self.field_type(feature.field)
            numeric = feature.function in NUMERIC_AGGREGATIONS and base is not None
            if numeric and base not in (int, float):
                raise ValueError(
                    f"{where}: {feature.function!r} needs a numeric field; "
                    f"{feature.field!r} is {getattr(base, '__name__', base)}"
                )
        return self

    def _check_transform_fields(self) -> None:
        schema = self.source.schema_
        if self.transform_fields and self.transform is None:
            raise ValueError("transform_fields types the fields a transform adds, but there is no transform")
        for name, kind in self.transform_fields.items():
            if name in schema.model_fields:
                raise ValueError(
                    f"transform_fields[{name!r}]: {name!r} is a field of {schema.__name__}, "
                    "which gives its type"
                )
            if kind not in STORABLE_TYPES:
                allowed = ", ".join(t.__name__ for t in STORABLE_TYPES)
                raise ValueError(
                    f"transform_fields[{name!r}]: {getattr(kind, '__name__', kind)} values cannot be stored; "
                    f"use one of {allowed}"
                )

    def field_type(self, name: str) -> type | None:
        """The base type of a field the view reads: from the source schema, else transform_fields."""
        if name in self.source.schema_.model_fields:
            return self.source.field_type(name)
        return self.transform_fields.get(name)

    def __hash__(self) -> int:
        # pydantic's frozen hash covers every field, and `tags` is a dict; equal views agree on these.
        return hash((self.name, self.version, self.entity, self.source, self.features))

    def feature(self, name: str) -> Aggregate:
        """The feature called `name`; KeyError lists the view's features."""
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(f"view {self.name!r} has no feature {name!r} (features: {self.feature_names})")

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]
