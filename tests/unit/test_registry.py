"""load_pipeline and Pipeline: import strings, view indexing, and every conflict rejected up front."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
from pydantic import BaseModel

from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource
from streamfs.errors import PipelineLoadError
from streamfs.registry import Pipeline, load_pipeline

PREAMBLE = """
from datetime import datetime
from pydantic import BaseModel
from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource

class Order(BaseModel):
    user_id: str
    total: float
    ts: datetime

user = Entity("user", join_keys=["user_id"])
orders = KafkaSource("orders", topic="orders", schema=Order, timestamp_field="ts")
spend = FeatureView("spend", entity=user, source=orders, features=[Aggregate("total", "sum", window="1h")])
visits = FeatureView("visits", entity=user, source=orders, features=[Aggregate(None, "count", window="1h")])
"""


class ModuleFactory(Protocol):
    def __call__(self, body: str, *, preamble: str = ...) -> str: ...


@pytest.fixture
def make_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleFactory]:
    """Write a throwaway pipeline module (PREAMBLE + body) and return its import name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def make(body: str, *, preamble: str = PREAMBLE) -> str:
        name = f"pipeline_{uuid.uuid4().hex[:12]}"
        (tmp_path / f"{name}.py").write_text(preamble + textwrap.dedent(body))
        names.append(name)
        return name

    yield make
    for name in names:
        sys.modules.pop(name, None)


def test_loads_the_example_pipeline() -> None:
    pipeline = load_pipeline("pipelines.payments")
    assert pipeline.view_names == ("card_activity", "merchant_activity")
    assert pipeline.topics == ("payments", "payments.by_merchant")
    assert [source.name for source in pipeline.sources] == ["payments", "payments_by_merchant"]
    assert pipeline.views_for_topic("payments") == pipeline.views[:1]
    assert pipeline.views_for_topic("payments.by_merchant") == pipeline.views[1:]
    assert pipeline.view("card_activity").entity.name == "card"
    assert pipeline.name == "pipelines.payments"


def test_module_scan_keeps_definition_order_and_counts_each_view_once(make_module: ModuleFactory) -> None:
    name = make_module("also_spend = spend\n")
    pipeline = load_pipeline(name)
    assert pipeline.view_names == ("spend", "visits")
    assert pipeline.view("visits") is pipeline.views[1]


def test_attribute_holding_a_view(make_module: ModuleFactory) -> None:
    name = make_module("")
    assert load_pipeline(f"{name}:visits").view_names == ("visits",)


@pytest.mark.parametrize("container", ["[visits, spend]", "(visits, spend)"])
def test_attribute_holding_a_list_or_tuple(make_module: ModuleFactory, container: str) -> None:
    name = make_module(f"views = {container}\n")
    assert load_pipeline(f"{name}:views").view_names == ("visits", "spend")


def test_dotted_attribute(make_module: ModuleFactory) -> None:
    name = make_module("class Group:\n    views = [spend]\n")
    assert load_pipeline(f"{name}:Group.views").view_names == ("spend",)


def test_module_not_found_explains_the_form() -> None:
    with pytest.raises(PipelineLoadError) as caught:
        load_pipeline("pipelines.nope")
    assert str(caught.value) == (
        "module 'pipelines.nope' not found; pipelines are Python import strings "
        "like pipelines.payments or pipelines.payments:views"
    )


def test_missing_dependency_is_not_reported_as_a_missing_pipeline(make_module: ModuleFactory) -> None:
    name = make_module("import surely_not_installed_pkg\n")
    with pytest.raises(
        PipelineLoadError, match="it imports 'surely_not_installed_pkg', which is not installed"
    ):
        load_pipeline(name)


def test_error_while_importing_names_the_module_and_keeps_the_cause(make_module: ModuleFactory) -> None:
    name = make_module('broken = Aggregate("total", "sum", window="1h", hop="7m")\n')
    with pytest.raises(
        PipelineLoadError, match=f"importing pipeline module '{name}' failed: DefinitionError"
    ) as caught:
        load_pipeline(name)
    assert caught.value.__cause__ is not None


def test_missing_attribute(make_module: ModuleFactory) -> None:
    name = make_module("")
    with pytest.raises(PipelineLoadError, match=f"module '{name}' has no attribute 'views'"):
        load_pipeline(f"{name}:views")


def test_attribute_of_the_wrong_type(make_module: ModuleFactory) -> None:
    name = make_module("views = {'spend': spend}\nmixed = [spend, user]\nnothing = []\n")
    with pytest.raises(PipelineLoadError, match="is a dict; expected a FeatureView or a list of them"):
        load_pipeline(f"{name}:views")
    with pytest.raises(PipelineLoadError, match="must hold only FeatureView objects; it also holds Entity"):
        load_pipeline(f"{name}:mixed")
    with pytest.raises(PipelineLoadError, match="is empty"):
        load_pipeline(f"{name}:nothing")


def test_module_without_views(make_module: ModuleFactory) -> None:
    name = make_module("x = 1\n", preamble="")
    with pytest.raises(PipelineLoadError, match=f"module '{name}' defines no FeatureView at its top level"):
        load_pipeline(name)


@pytest.mark.parametrize("spec", ["", "  ", ":views", "pipelines.payments:"])
def test_malformed_import_strings(spec: str) -> None:
    with pytest.raises(PipelineLoadError, match="is not a pipeline import string"):
        load_pipeline(spec)


def test_duplicate_view_names(make_module: ModuleFactory) -> None:
    name = make_module(
        'spend_again = FeatureView("spend", entity=user, source=orders, '
        'features=[Aggregate("total", "max", window="1h")])\n'
    )
    with pytest.raises(PipelineLoadError, match="two feature views are named 'spend'"):
        load_pipeline(name)


def test_one_topic_with_two_schemas(make_module: ModuleFactory) -> None:
    name = make_module(
        """
        class OrderV2(BaseModel):
            user_id: str
            total: float
            coupon: str | None = None
            ts: datetime

        orders_v2 = KafkaSource("orders_v2", topic="orders", schema=OrderV2, timestamp_field="ts")
        coupons = FeatureView(
            "coupons", entity=user, source=orders_v2, features=[Aggregate("coupon", "count_distinct")]
        )
        """
    )
    with pytest.raises(
        PipelineLoadError, match=r"topic 'orders' is read by sources 'orders' and 'orders_v2' .*schema"
    ):
        load_pipeline(name)


def test_equal_sources_for_one_topic_are_one_source(make_module: ModuleFactory) -> None:
    name = make_module(
        """
        same_orders = KafkaSource("orders", topic="orders", schema=Order, timestamp_field="ts")
        late = KafkaSource("orders_late", topic="orders", schema=Order, timestamp_field="ts",
                           allowed_lateness="1h")
        totals = FeatureView(
            "totals", entity=user, source=same_orders, features=[Aggregate("total", "max")]
        )
        late_totals = FeatureView(
            "late_totals", entity=user, source=late, features=[Aggregate("total", "min")]
        )
        """
    )
    pipeline = load_pipeline(name)
    assert pipeline.topics == ("orders",)
    assert len(pipeline.sources) == 1
    assert pipeline.source("orders") is pipeline.view("spend").source
    assert pipeline.view("late_totals").source.allowed_lateness == 3_600_000
    assert [view.name for view in pipeline.views_for_topic("orders")] == [
        "spend",
        "visits",
        "totals",
        "late_totals",
    ]


def test_one_entity_name_with_two_keys(make_module: ModuleFactory) -> None:
    name = make_module(
        """
        class Login(BaseModel):
            account: str
            ts: datetime

        logins = KafkaSource("logins", topic="logins", schema=Login, timestamp_field="ts")
        other_user = Entity("user", join_keys=["account"])
        log_ins = FeatureView(
            "log_ins", entity=other_user, source=logins, features=[Aggregate(None, "count")]
        )
        """
    )
    with pytest.raises(
        PipelineLoadError, match=r"entity 'user' has join keys \['user_id'\] .* \['account'\]"
    ):
        load_pipeline(name)


def test_lookups() -> None:
    pipeline = load_pipeline("pipelines.clickstream")
    with pytest.raises(KeyError, match="no feature view 'nope' \\(views: user_engagement, "):
        pipeline.view("nope")
    assert pipeline.views_for_topic("payments") == ()
    with pytest.raises(
        KeyError, match=r"no source reads topic 'payments' \(topics: clicks, clicks\.by_product\)"
    ):
        pipeline.source("payments")


def test_pipeline_from_views_directly() -> None:
    from pipelines import payments

    pipeline = Pipeline((payments.merchant_activity, payments.card_activity))
    assert pipeline.view_names == ("merchant_activity", "card_activity")
    with pytest.raises(PipelineLoadError, match="has no feature views"):
        Pipeline(())
    with pytest.raises(PipelineLoadError, match="expected FeatureView objects, got Entity"):
        Pipeline((payments.card,))  # type: ignore[arg-type]


def test_pipelines_are_frozen() -> None:
    pipeline = load_pipeline("pipelines.payments")
    with pytest.raises(AttributeError):
        pipeline.views = ()  # type: ignore[misc]


def test_views_from_several_topics(make_module: ModuleFactory) -> None:
    name = make_module(
        """
        from pipelines.clickstream import user_engagement
        """
    )
    pipeline = load_pipeline(name)
    assert pipeline.topics == ("orders", "clicks")
    assert [view.name for view in pipeline.views_for_topic("clicks")] == ["user_engagement"]


def test_entity_definitions_may_repeat_when_equal() -> None:
    class Event(BaseModel):
        user_id: str
        ts: int

    source = KafkaSource("events", topic="events", schema=Event, timestamp_field="ts")
    views = [
        FeatureView(
            name,
            entity=Entity("user", join_keys=["user_id"]),
            source=source,
            features=[Aggregate(None, "count")],
        )
        for name in ("a", "b")
    ]
    assert Pipeline(tuple(views)).view_names == ("a", "b")
