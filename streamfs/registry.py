"""Load a pipeline from an import string and index its views, rejecting conflicts up front.

A pipeline is ordinary Python: a module whose top level defines FeatureViews. It is named the
way Python names it, so there is no plugin registry to keep in sync:

    load_pipeline("pipelines.payments")          every FeatureView at the module's top level
    load_pipeline("pipelines.payments:views")    one attribute: a FeatureView, or a list/tuple of them

Everything that would otherwise surface later as a confusing runtime fault is checked here and
raised as :class:`PipelineLoadError`: two views with one name (they would share Redis keys and
Parquet paths), one topic read with two schemas (a topic is consumed and decoded once), and one
entity name with two sets of join keys.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType

from streamfs.definitions import Entity, FeatureView, KafkaSource
from streamfs.errors import PipelineLoadError

__all__ = ["Pipeline", "load_pipeline"]

_HINT = "pipelines are Python import strings like pipelines.payments or pipelines.payments:views"

# The source settings that decide how a topic's bytes become events; these must agree when
# several views read one topic. Name, description and allowed_lateness may differ per view.
_DECODING_FIELDS = ("schema_", "timestamp_field", "format", "decoder", "max_message_bytes", "max_future")


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A validated set of feature views, indexed by view name and by topic.

    ``sources`` holds one source per topic (the first one seen); views keep their own source,
    so per-view settings such as ``allowed_lateness`` are read from ``view.source``.
    """

    views: tuple[FeatureView, ...]
    name: str = ""
    sources: tuple[KafkaSource, ...] = field(init=False)
    _by_name: dict[str, FeatureView] = field(init=False, repr=False, compare=False)
    _by_topic: dict[str, tuple[FeatureView, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        views = tuple(self.views)
        where = f"pipeline {self.name!r}" if self.name else "pipeline"
        if not views:
            raise PipelineLoadError(f"{where} has no feature views")
        for view in views:
            if not isinstance(view, FeatureView):
                raise PipelineLoadError(f"{where}: expected FeatureView objects, got {type(view).__name__}")
        by_name: dict[str, FeatureView] = {}
        sources: dict[str, KafkaSource] = {}
        entities: dict[str, Entity] = {}
        by_topic: dict[str, list[FeatureView]] = {}
        for view in views:
            if view.name in by_name:
                raise PipelineLoadError(
                    f"{where}: two feature views are named {view.name!r}; view names must be unique"
                )
            by_name[view.name] = view
            _check_source(where, sources.setdefault(view.source.topic, view.source), view)
            _check_entity(where, entities.setdefault(view.entity.name, view.entity), view)
            by_topic.setdefault(view.source.topic, []).append(view)
        object.__setattr__(self, "views", views)
        object.__setattr__(self, "sources", tuple(sources.values()))
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_by_topic", {topic: tuple(group) for topic, group in by_topic.items()})

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic the pipeline reads, in the order its views were defined."""
        return tuple(self._by_topic)

    @property
    def view_names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def view(self, name: str) -> FeatureView:
        """The view called `name`; KeyError lists the pipeline's views."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no feature view {name!r} (views: {', '.join(self._by_name)})") from None

    def views_for_topic(self, topic: str) -> tuple[FeatureView, ...]:
        """The views fed by `topic`, in definition order (empty if none read it)."""
        return self._by_topic.get(topic, ())

    def source(self, topic: str) -> KafkaSource:
        """The source that decodes `topic`; KeyError lists the pipeline's topics."""
        views = self._by_topic.get(topic)
        if not views:
            raise KeyError(f"no source reads topic {topic!r} (topics: {', '.join(self._by_topic)})")
        return views[0].source


def load_pipeline(spec: str) -> Pipeline:
    """Import ``module`` or ``module:attribute`` and return its views as a :class:`Pipeline`."""
    module_name, _, attribute = spec.strip().partition(":")
    if not module_name or (":" in spec and not attribute):
        raise PipelineLoadError(f"{spec!r} is not a pipeline import string; {_HINT}")
    module = _import(module_name)
    if attribute:
        views = _views_of_attribute(module, module_name, attribute)
    else:
        views = _unique(value for value in vars(module).values() if isinstance(value, FeatureView))
        if not views:
            raise PipelineLoadError(
                f"module {module_name!r} defines no FeatureView at its top level; "
                f"define some, or name the attribute that holds them ({module_name}:views)"
            )
    return Pipeline(views, name=spec.strip())


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise PipelineLoadError(f"module {module_name!r} not found; {_HINT}") from exc
        raise PipelineLoadError(
            f"importing pipeline module {module_name!r} failed: "
            f"it imports {missing!r}, which is not installed"
        ) from exc
    except Exception as exc:
        raise PipelineLoadError(
            f"importing pipeline module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _views_of_attribute(module: ModuleType, module_name: str, attribute: str) -> tuple[FeatureView, ...]:
    value: object = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise PipelineLoadError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(value, FeatureView):
        return (value,)
    if isinstance(value, list | tuple):
        strays = [type(item).__name__ for item in value if not isinstance(item, FeatureView)]
        if strays:
            raise PipelineLoadError(
                f"{module_name}:{attribute} must hold only FeatureView objects; "
                f"it also holds {', '.join(strays)}"
            )
        if not value:
            raise PipelineLoadError(
                f"{module_name}:{attribute} is empty; it must list at least one FeatureView"
            )
        return _unique(value)
    raise PipelineLoadError(
        f"{module_name}:{attribute} is a {type(value).__name__}; expected a FeatureView or a list of them"
    )


def _unique(views: Iterable[FeatureView]) -> tuple[FeatureView, ...]:
    """Views in order, each object once (a view bound to two names is still one view)."""
    unique: dict[int, FeatureView] = {}
    for view in views:
        unique.setdefault(id(view), view)
    return tuple(unique.values())


def _check_source(where: str, first: KafkaSource, view: FeatureView) -> None:
    source = view.source
    if source is first:
        return
    differing = [name for name in _DECODING_FIELDS if getattr(source, name) != getattr(first, name)]
    if differing:
        shown = ", ".join("schema" if name == "schema_" else name for name in differing)
        raise PipelineLoadError(
            f"{where}: topic {source.topic!r} is read by sources {first.name!r} and {source.name!r} "
            f"(view {view.name!r}) that differ in {shown}; a topic is decoded once, so its sources must agree"
        )


def _check_entity(where: str, first: Entity, view: FeatureView) -> None:
    entity = view.entity
    if entity is not first and entity.join_keys != first.join_keys:
        raise PipelineLoadError(
            f"{where}: entity {entity.name!r} has join keys {list(first.join_keys)} in one view and "
            f"{list(entity.join_keys)} in view {view.name!r}; one entity name must mean one key"
        )
