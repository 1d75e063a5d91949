"""Funnels (skipped stages count as passed), derived KPIs, breakdowns, weeks and explanations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import ConfigIssues, load_config
from crm_perf_sync.connector_sdk import LeadRecord, PipelineStageRecord, StageChangeRecord
from crm_perf_sync.kpi.explain import ValueRef, explain
from crm_perf_sync.kpi.formula import evaluate
from crm_perf_sync.org import repository as org_repo
from crm_perf_sync.plugins import ConnectorRegistry
from tests.kpi.store import OWNERS, TEAMS, T, closed, load, opp, values

STAGES = [
    PipelineStageRecord(pipeline="sales", stage="P", sort_order=0, probability=0.1),
    PipelineStageRecord(pipeline="sales", stage="Q", sort_order=1, probability=0.3),
    PipelineStageRecord(pipeline="sales", stage="N", sort_order=2, probability=0.6),
    PipelineStageRecord(pipeline="sales", stage="Won", sort_order=3, is_closed=True, is_won=True),
    PipelineStageRecord(pipeline="sales", stage="Lost", sort_order=4, is_closed=True),
]


def moves(deal: int, *stages: str) -> list[StageChangeRecord]:
    return [
        StageChangeRecord(
            opportunity_external_id=f"o{deal}", to_stage=stage, changed_at=T + timedelta(hours=i)
        )
        for i, stage in enumerate(stages)
    ]


def test_the_funnel_counts_a_skipped_stage_as_passed(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    deals = [
        closed(1, "ana", True, T, stage="Won", pipeline="sales"),  # P > Q > N > Won
        closed(2, "ana", True, T, stage="Won", pipeline="sales"),  # no history: passed every stage
        closed(3, "bo", False, T, stage="Lost", pipeline="sales"),  # P > Q > Lost: reached Q
        opp(4, "bo", stage="N", pipeline="sales"),  # P > N: skipped Q, still passed it
        opp(5, "cy", stage="P", pipeline="sales"),
        closed(6, "cy", False, T, stage="Lost", pipeline="sales"),  # lost with no history: not in it
        opp(7, "cy", stage="Q", pipeline="sales", is_deleted=True),  # deleted: never counts
    ]
    history = [*moves(1, "P", "Q", "N", "Won"), *moves(3, "P", "Q", "Lost"), *moves(4, "P", "N")]
    job = load(
        tmp_path,
        session_factory,
        {
            "teams": TEAMS,
            "owners": OWNERS,
            "pipeline_stages": STAGES,
            "opportunities": deals,
            "stage_changes": history,
        },
    )
    job.refresh(["stage_funnel"])
    stages = values(session_factory, "stage_funnel", "all", "company", "stage")
    reached = {key[3]: (row.numerator, row.denominator, row.value) for key, row in stages.items()}
    assert reached == {
        "P": (5, 5, 1.0),
        "Q": (4, 5, 0.8),
        "N": (3, 4, 0.75),
        "Won": (2, 3, pytest.approx(2 / 3)),
    }
    (total,) = values(session_factory, "stage_funnel", "all", "company").values()
    assert (total.numerator, total.denominator, total.value) == (2, 5, 0.4)
    # Per rep and per team the same rule; Cy's only counted deal sits in P.
    owners = values(session_factory, "stage_funnel", "all", "owner", "stage")
    assert {(k[1], k[3]): row.numerator for k, row in owners.items()} == {
        ("crm:ana", "P"): 2,
        ("crm:ana", "Q"): 2,
        ("crm:ana", "N"): 2,
        ("crm:ana", "Won"): 2,
        ("crm:bo", "P"): 2,
        ("crm:bo", "Q"): 2,
        ("crm:bo", "N"): 1,
        ("crm:cy", "P"): 1,
    }
    teams = values(session_factory, "stage_funnel", "all", "team", "stage")
    assert teams[("all", "crm:dach", "", "Q")].numerator == 4
    assert teams[("all", "crm:emea", "", "P")].numerator == 5


def test_derived_kpis_combine_stored_values_per_period_scope_and_currency(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    jan = datetime(2024, 1, 20, tzinfo=UTC)
    deals = [
        closed(1, "ana", True, jan, amount=Decimal(200), created_at=jan - timedelta(days=20)),
        closed(2, "ana", True, jan, amount=Decimal(100), created_at=jan - timedelta(days=10)),
        closed(3, "ana", False, jan, created_at=jan - timedelta(days=5)),
        opp(4, "ana", amount=Decimal(600), close_date=jan.date(), created_at=jan - timedelta(days=3)),
        opp(5, "bo", amount=Decimal(800), close_date=jan.date(), created_at=jan - timedelta(days=3)),
        opp(6, "bo", amount=Decimal(999), currency="EUR", close_date=jan.date(), created_at=jan),
    ]
    config = """kpis:
  targets:
    - {kpi: won_revenue, grain: month, period: 2024-01, value: 1000, currency: USD}
"""
    job = load(tmp_path, session_factory, {"owners": OWNERS, "opportunities": deals}, config)
    job.refresh()
    coverage = values(session_factory, "pipeline_coverage", "month", "company")
    # Open USD pipeline closing in January (1,400) over what is left to win (1,000 - 300).
    assert {k: row.value for k, row in coverage.items()} == {
        ("2024-01-01", "company", "USD", ""): pytest.approx(1400 / 700)
    }
    assert values(session_factory, "pipeline_coverage", "month", "owner") == {}  # no rep targets
    velocity = values(session_factory, "sales_velocity", "all", "company")
    created = values(session_factory, "opportunities_created", "all", "company")[("all", "company", "", "")]
    size = values(session_factory, "average_deal_size", "all", "company")[("all", "company", "USD", "")]
    rate = values(session_factory, "win_rate", "all", "company")[("all", "company", "", "")]
    cycle = values(session_factory, "sales_cycle_days_mean", "all", "company")[("all", "company", "", "")]
    assert (created.value, size.value, cycle.value) == (6, 150, 15)
    assert rate.value == pytest.approx(2 / 3)
    # Only USD has an average deal size: no EUR velocity (never mixed).
    assert {k[2]: row.value for k, row in velocity.items()} == {"USD": pytest.approx(6 * 150 * (2 / 3) / 15)}
    # Its explanation lists the stored inputs it was computed from.
    with session_factory() as session:
        explained = explain(
            session,
            job.service.kpi("sales_velocity"),
            ValueRef("sales_velocity", "all", "all", "company", "company", "USD"),
            job.service.calendar(session),
            org_repo.load_membership(session),
        )
        coverage_inputs = explain(
            session,
            job.service.kpi("pipeline_coverage"),
            ValueRef("pipeline_coverage", "month", "2024-01-01", "company", "company", "USD"),
            job.service.calendar(session),
            org_repo.load_membership(session),
        ).inputs
    assert explained.parts == []
    assert {i["kpi_id"]: (i["currency"], i["value"]) for i in explained.inputs} == {
        "average_deal_size": ("USD", 150),
        "opportunities_created": ("", 6),
        "sales_cycle_days_mean": ("", 15),
        "win_rate": ("", pytest.approx(2 / 3)),
    }
    assert {i["kpi_id"]: (i["used_as"], i["value"], i["target"]) for i in coverage_inputs} == {
        "open_pipeline": (["open_pipeline"], 1400, None),
        "won_revenue": (["target.won_revenue", "won_revenue"], 300, 1000),
    }


def test_formulas_are_arithmetic_only_and_missing_inputs_give_no_value() -> None:
    assert evaluate("a * (b - 1) / -c", {"a": 2.0, "b": 4.0, "c": 3.0}) == pytest.approx(-2.0)
    assert evaluate("a / b", {"a": 1.0, "b": 0.0}) is None
    assert evaluate("a + target.a", {"a": 1.0, "target.a": None}) is None


def test_broken_formulas_and_cycles_are_configuration_errors(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        """kpis:
  definitions:
    - {id: a, name: A, type: derived, unit: number, formula: "b + 1"}
    - {id: b, name: B, type: derived, unit: number, formula: "a * 2"}
    - {id: c, name: C, type: derived, unit: number, formula: "won_deals + nothing"}
    - {id: d, name: D, type: derived, unit: number, formula: "__import__('os').getcwd()"}
    - {id: e, name: E, type: count, unit: count, measure: {period: created_at}, dimensions: [colour]}
"""
    )
    with pytest.raises(ConfigIssues) as caught:
        load_config(path, ConnectorRegistry(connectors={}), {})
    text = str(caught.value)
    assert "config.yaml:6: kpis.definitions[3].formula: formula may only use KPI ids" in text
    assert "config.yaml:7: kpis.definitions[4].dimensions: unknown dimension(s) 'colour'" in text
    path.write_text("\n".join(line for line in path.read_text().splitlines() if "id: d," not in line))
    path.write_text("\n".join(line for line in path.read_text().splitlines() if "id: e," not in line))
    with pytest.raises(ConfigIssues) as caught:
        load_config(path, ConnectorRegistry(connectors={}), {})
    text = str(caught.value)
    assert (
        "config.yaml:3: kpis.definitions[0].formula: a: derived KPIs depend on each other in a cycle" in text
    )
    assert (
        "config.yaml:4: kpis.definitions[1].formula: b: derived KPIs depend on each other in a cycle" in text
    )
    assert "config.yaml:5: kpis.definitions[2].formula: c: formula names unknown KPI 'nothing'" in text


BREAKDOWNS = "kpis:\n  dimensions: [lead_source, region, custom.segment]\n"


def test_breakdowns_split_totals_exactly(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    deals = [
        closed(1, "ana", True, T, lead_source="Web", custom={"segment": "smb"}),
        closed(2, "bo", True, T, lead_source="Web", custom={"segment": "ent"}),
        closed(3, "cy", False, T, lead_source="Partner", custom={"segment": "smb"}),
        closed(4, "di", True, T),  # no source, no segment, no region
    ]
    leads = [
        LeadRecord(external_id="l1", owner_external_id="ana", source="Web", created_at=T, is_converted=True),
        LeadRecord(external_id="l2", owner_external_id="ana", source="Event", created_at=T),
    ]
    job = load(
        tmp_path,
        session_factory,
        {"teams": TEAMS, "owners": OWNERS, "opportunities": deals, "leads": leads},
        BREAKDOWNS,
    )
    job.refresh(["win_rate", "lead_conversion_rate"])
    by_source = values(session_factory, "win_rate", "all", "company", "lead_source")
    assert {k[3]: (r.numerator, r.denominator) for k, r in by_source.items()} == {
        "Web": (2, 2),
        "Partner": (0, 1),
        "": (1, 1),
    }
    by_region = values(session_factory, "win_rate", "all", "company", "region")
    assert {k[3]: (r.numerator, r.denominator) for k, r in by_region.items()} == {
        "crm:emea": (2, 3),
        "": (1, 1),
    }
    segments = values(session_factory, "win_rate", "all", "owner", "custom.segment")
    assert {(k[1], k[3]): r.denominator for k, r in segments.items()} == {
        ("crm:ana", "smb"): 1,
        ("crm:bo", "ent"): 1,
        ("crm:cy", "smb"): 1,
        ("crm:di", ""): 1,
    }
    # lead_source reads the lead's own source column on leads.
    leads_by_source = values(session_factory, "lead_conversion_rate", "all", "company", "lead_source")
    assert {k[3]: r.value for k, r in leads_by_source.items()} == {"Web": 1.0, "Event": 0.0}


def test_weeks_run_monday_to_sunday_in_the_business_timezone(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    config = "business: {timezone: America/New_York}\n"
    sunday_night = datetime(2024, 1, 8, 3, 0, tzinfo=UTC)  # Sunday 7 January, 22:00 in New York
    monday = datetime(2024, 1, 8, 6, 0, tzinfo=UTC)  # Monday 8 January, 01:00 in New York
    deals = [closed(1, "ana", True, sunday_night), closed(2, "ana", True, monday)]
    job = load(tmp_path, session_factory, {"owners": OWNERS, "opportunities": deals}, config)
    job.refresh(["won_deals"])
    weeks = values(session_factory, "won_deals", "week", "company")
    assert {
        (k[0], row.period_end.isoformat() if row.period_end else None): row.value for k, row in weeks.items()
    } == {
        ("2024-01-01", "2024-01-08"): 1,
        ("2024-01-08", "2024-01-15"): 1,
    }


def test_an_explanation_lists_exactly_the_records_behind_a_value(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    deals = [
        *(closed(n, "ana", n % 3 != 0, T) for n in range(1, 8)),  # 7 closed, 5 won (3 and 6 lost)
        closed(8, "bo", True, T),
        closed(9, "ana", True, T + timedelta(days=40)),  # February: not in January's value
        closed(10, "ana", True, T, is_deleted=True),
    ]
    job = load(tmp_path, session_factory, {"teams": TEAMS, "owners": OWNERS, "opportunities": deals})
    job.refresh(["win_rate"])
    ref = ValueRef("win_rate", "month", "2024-01-01", "owner", "crm:ana")
    with session_factory() as session:
        calendar = job.service.calendar(session)
        membership = org_repo.load_membership(session)
        seen: dict[str, list[str]] = {"numerator": [], "denominator": []}
        after: int | None = None
        pages = 0
        while True:
            result = explain(
                session, job.service.kpi("win_rate"), ref, calendar, membership, after=after, limit=2
            )
            pages += 1
            for part in result.parts:
                seen[part.role] += [str(r["external_id"]) for r in part.records]
                assert all(r["contribution"] == 1 for r in part.records)
            cursors = [p.next_after for p in result.parts if p.next_after is not None]
            if not cursors:
                break
            after = min(cursors)
            if pages > 10:
                pytest.fail("pagination does not end")
        assert result.value is not None
        assert (result.value["numerator"], result.value["denominator"]) == (5, 7)
        # Each side's records, every page together, are exactly the deals behind the value, once.
        assert sorted(set(seen["numerator"])) == ["o1", "o2", "o4", "o5", "o7"]
        assert sorted(set(seen["denominator"])) == [f"o{n}" for n in range(1, 8)]
        assert result.parts[0].filters == ["not deleted", "is_won = True"]
        team = explain(
            session,
            job.service.kpi("win_rate"),
            ValueRef("win_rate", "all", "all", "team", "crm:dach"),
            calendar,
            membership,
            role="numerator",
            limit=100,
        )
        assert sorted(r["external_id"] for r in team.parts[0].records) == sorted(
            ["o1", "o2", "o4", "o5", "o7", "o8", "o9"]
        )
        assert team.parts[1].records == []  # only the numerator's records were asked for
