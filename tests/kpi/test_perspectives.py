"""Scorecards with perspectives: sub-scores per perspective, dropping and renormalising within a
perspective and across perspectives, contributions that add up to the score, and validation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import ConfigIssues, load_config
from crm_perf_sync.connector_sdk import ActivityRecord
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kpi.library import default_library_path, load_library
from crm_perf_sync.kpi.schemas import ScorecardConfig
from crm_perf_sync.kpi.scorecards import Observed, score_rep
from crm_perf_sync.models import ScorecardValue
from crm_perf_sync.plugins import ConnectorRegistry
from tests.kpi.store import OWNERS, closed, load

KPIS = {kpi.id: kpi for kpi in load_library(default_library_path())}

CARD = ScorecardConfig.model_validate(
    {
        "id": "balanced",
        "name": "Balanced",
        "perspectives": [
            {"id": "financial", "name": "Financial", "weight": 0.5},
            {"id": "customer", "name": "Customer", "weight": 0.3},
            {"id": "process", "name": "Internal process", "weight": 0.2},
        ],
        "components": [
            {"kpi": "won_revenue", "perspective": "financial", "weight": 0.75},
            {
                "kpi": "win_rate",
                "perspective": "financial",
                "weight": 0.25,
                "normalise": {"method": "linear", "floor": 0.0, "goal": 0.5},
            },
            {
                "kpi": "new_customers",
                "perspective": "customer",
                "weight": 1.0,
                "normalise": {"method": "linear", "floor": 0, "goal": 4},
            },
            {
                "kpi": "visits",
                "perspective": "process",
                "weight": 0.6,
                "normalise": {"method": "linear", "floor": 0, "goal": 20},
            },
            {
                "kpi": "calls",
                "perspective": "process",
                "weight": 0.4,
                "normalise": {"method": "linear", "floor": 0, "goal": 100},
            },
        ],
    }
)


def seen(value: float, target: float | None = None, sample: int = 50, currency: str = "") -> list[Observed]:
    return [Observed(value, target, sample, currency)]


def test_each_perspective_is_scored_and_weighted_and_contributions_add_up() -> None:
    scored = score_rep(
        CARD,
        KPIS,
        "crm:ana",
        {
            "won_revenue": seen(900.0, 1000.0, currency="USD"),  # 0.9
            "win_rate": seen(0.25),  # 0.5
            "new_customers": seen(3.0),  # 0.75
            "visits": seen(10.0),  # 0.5
            "calls": seen(100.0),  # 1.0
        },
    )
    views = {p["id"]: p for p in scored.perspectives}
    assert views["financial"]["score"] == pytest.approx(0.75 * 0.9 + 0.25 * 0.5)
    assert views["customer"]["score"] == pytest.approx(0.75)
    assert views["process"]["score"] == pytest.approx(0.6 * 0.5 + 0.4 * 1.0)
    expected = 0.5 * (0.75 * 0.9 + 0.25 * 0.5) + 0.3 * 0.75 + 0.2 * (0.6 * 0.5 + 0.4)
    assert scored.score == pytest.approx(expected)
    assert sum(c["contribution"] for c in scored.components) == pytest.approx(expected)
    assert {c["kpi_id"]: c["applied_weight"] for c in scored.components} == pytest.approx(
        {"won_revenue": 0.375, "win_rate": 0.125, "new_customers": 0.3, "visits": 0.12, "calls": 0.08}
    )
    assert [p["components"] for p in scored.perspectives] == [
        ["won_revenue", "win_rate"],
        ["new_customers"],
        ["visits", "calls"],
    ]


def test_a_dropped_component_renormalises_within_its_perspective_and_an_empty_one_across() -> None:
    scored = score_rep(
        CARD,
        KPIS,
        "crm:bo",
        {
            "won_revenue": seen(500.0, 1000.0, currency="USD"),  # 0.5
            "win_rate": seen(0.5, sample=2),  # below win_rate's minimum sample: dropped
            # new_customers has no value: a count with no records is a real 0, not dropped
            "visits": seen(20.0),  # 1.0; calls: 0 (a count)
        },
    )
    views = {p["id"]: p for p in scored.perspectives}
    assert views["financial"]["score"] == pytest.approx(0.5)  # win_rate's weight went to revenue
    assert views["customer"]["score"] == 0.0
    assert views["process"]["score"] == pytest.approx(0.6)
    assert scored.score == pytest.approx(0.5 * 0.5 + 0.3 * 0.0 + 0.2 * 0.6)
    assert scored.dropped == 1

    # No won revenue target and too few closed deals: the whole financial perspective drops and
    # the customer and process perspectives share its weight (0.3 : 0.2).
    no_financial = score_rep(
        CARD,
        KPIS,
        "crm:cy",
        {"win_rate": seen(0.5, sample=1), "new_customers": seen(2.0), "visits": seen(5.0)},
    )
    views = {p["id"]: p for p in no_financial.perspectives}
    assert views["financial"]["dropped"] == "every component dropped"
    assert views["financial"]["applied_weight"] == 0.0
    assert (views["customer"]["applied_weight"], views["process"]["applied_weight"]) == pytest.approx(
        (0.6, 0.4)
    )
    assert no_financial.score == pytest.approx(0.6 * 0.5 + 0.4 * (0.6 * 0.25))
    assert sum(c["contribution"] for c in no_financial.components) == pytest.approx(no_financial.score)


@pytest.mark.parametrize(
    ("components", "perspectives", "message"),
    [
        (
            "- {kpi: won_revenue, perspective: financial, weight: 1}\n        - {kpi: calls, weight: 1}",
            "- {id: financial, name: Financial, weight: 1}",
            "component calls: name its perspective (one of financial)",
        ),
        (
            "- {kpi: won_revenue, perspective: money, weight: 1}",
            "- {id: financial, name: Financial, weight: 1}",
            "component won_revenue: unknown perspective 'money' (listed: financial)",
        ),
        (
            "- {kpi: won_revenue, perspective: financial, weight: 0.5}\n"
            "        - {kpi: calls, perspective: process, weight: 1}",
            "- {id: financial, name: Financial, weight: 0.5}\n"
            "        - {id: process, name: Process, weight: 0.5}",
            "the weights of perspective financial's components must sum to 1 (they sum to 0.5)",
        ),
        (
            "- {kpi: won_revenue, perspective: financial, weight: 1}",
            "- {id: financial, name: Financial, weight: 0.6}",
            "perspective weights must sum to 1 (they sum to 0.6)",
        ),
        (
            "- {kpi: won_revenue, perspective: financial, weight: 1}",
            "[]",
            "components name perspectives (financial) but the scorecard lists none",
        ),
    ],
)
def test_perspectives_are_validated_with_the_file_and_line(
    tmp_path: Path, components: str, perspectives: str, message: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "kpis:\n  scorecards:\n    - id: balanced\n      name: Balanced\n"
        f"      perspectives:\n        {perspectives}\n"
        f"      components:\n        {components}\n"
    )
    with pytest.raises(ConfigIssues) as caught:
        load_config(path, ConnectorRegistry(connectors={}), {})
    assert f"config.yaml:3: kpis.scorecards[0]: {message}" in str(caught.value)


def test_renaming_a_perspective_does_not_change_the_scorecards_definition() -> None:
    renamed = CARD.model_copy(
        update={"perspectives": [p.model_copy(update={"name": p.name.upper()}) for p in CARD.perspectives]}
    )
    reweighted = CARD.model_copy(
        update={
            "perspectives": [
                p.model_copy(update={"weight": w})
                for p, w in zip(CARD.perspectives, (0.4, 0.4, 0.2), strict=True)
            ]
        }
    )
    assert renamed.definition_hash() == CARD.definition_hash()
    assert reweighted.definition_hash() != CARD.definition_hash()


def test_stored_scores_keep_each_perspectives_sub_score(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    at = datetime(2024, 1, 10, tzinfo=UTC)
    deals = [closed(n, "ana", True, at, amount=Decimal(300), account_external_id=f"c{n}") for n in (1, 2)]
    deals += [closed(3, "bo", True, at, amount=Decimal(100), account_external_id="c1")]
    calls = [
        ActivityRecord(external_id=f"a{n}", type="call", occurred_at=at, owner_external_id=owner)
        for n, owner in enumerate(["ana"] * 3 + ["bo"] * 9)
    ]
    config = """kpis:
  scorecards:
    - id: balanced
      name: Balanced
      grains: [month]
      currency: USD
      perspectives:
        - {id: financial, name: Financial, i18n: {zh: {name: 财务}}, weight: 0.6}
        - {id: activity, name: Activity, weight: 0.4}
      components:
        - {kpi: won_revenue, perspective: financial, weight: 0.5,
           normalise: {method: linear, floor: 0, goal: 600}}
        - {kpi: new_customers, perspective: financial, weight: 0.5,
           normalise: {method: linear, floor: 0, goal: 4}}
        - {kpi: calls, perspective: activity, weight: 1, normalise: {method: linear, floor: 0, goal: 10}}
"""
    job = load(
        tmp_path, session_factory, {"owners": OWNERS, "opportunities": deals, "activities": calls}, config
    )
    job.refresh()
    with session_scope(session_factory) as session:
        scores = {s.scope_id: s for s in session.scalars(select(ScorecardValue))}
    ana, bo = scores["crm:ana"], scores["crm:bo"]
    # Ana: revenue 600/600 = 1, two new customers 2/4 = 0.5, 3 calls 0.3.
    assert [(p["id"], p["score"]) for p in ana.perspectives] == [
        ("financial", pytest.approx(0.75)),
        ("activity", pytest.approx(0.3)),
    ]
    assert ana.score == pytest.approx(0.6 * 0.75 + 0.4 * 0.3)
    # Bo: 100/600; his deal on c1 closed the same day as Ana's, so c1 is new for both; 9 calls.
    assert [p["score"] for p in bo.perspectives] == pytest.approx([0.5 * 100 / 600 + 0.5 * 0.25, 0.9])
    assert (ana.rank, bo.rank) == (1, 2)
