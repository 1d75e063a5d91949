"""KPIs on measures: entries uploaded as people enter them become KPI values per period and
scope (mean, sum, last), follow every change at the next refresh, and explain to the entries."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.jobs.refresh import RefreshJob
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kpi.explain import ValueRef, explain
from crm_perf_sync.measures import service
from crm_perf_sync.measures.library import resolve
from crm_perf_sync.measures.schemas import MeasureSection
from crm_perf_sync.org import repository as org_repo
from tests.kpi.store import OWNERS, TEAMS, load, values

NOW = datetime(2024, 7, 1, tzinfo=UTC)
CATALOG = service.Catalog(resolve(MeasureSection()), 1)
CONFIG = """kpis:
  definitions:
    - {id: training, name: Training hours, type: measure, measure_id: training_hours, stat: sum, unit: number}
    - {id: latest_bars, name: BARS level, type: measure, measure_id: bars_rating, stat: last, unit: number}
"""
ENTRIES = """measure_id,scope,scope_id,grain,period_key,value
customer_satisfaction,owner,crm:ana,month,2024-01-01,4.5
customer_satisfaction,owner,crm:ana,month,2024-02-01,3.5
customer_satisfaction,owner,crm:bo,month,2024-01-01,2
customer_satisfaction,owner,crm:cy,month,2024-03-01,5
customer_satisfaction,team,crm:dach,quarter,2024-01-01,4
training_hours,owner,crm:ana,month,2024-01-01,6
training_hours,owner,crm:ana,month,2024-02-01,2.5
training_hours,owner,crm:bo,week,2024-01-01,3
bars_rating,owner,crm:ana,quarter,2024-01-01,4
bars_rating,owner,crm:ana,quarter,2024-04-01,6
"""


@pytest.fixture
def job(tmp_path: Path, session_factory: sessionmaker[Session]) -> RefreshJob:
    job = load(tmp_path, session_factory, {"teams": TEAMS, "owners": OWNERS}, CONFIG)
    with session_scope(session_factory) as session:
        service.upload(session, CATALOG, ENTRIES, source="csv", by="hr", now=NOW)
    job.refresh()
    return job


def cell(factory: sessionmaker[Session], kpi_id: str, grain: str, scope: str) -> dict[tuple[str, str], tuple]:  # type: ignore[type-arg]
    return {
        (period, scope_id): (row.value, row.sample_count)
        for (period, scope_id, _c, _d), row in values(factory, kpi_id, grain, scope).items()
    }


@pytest.mark.usefixtures("job")
def test_the_mean_of_a_measure_per_period_and_scope(session_factory: sessionmaker[Session]) -> None:
    months = cell(session_factory, "customer_satisfaction", "month", "owner")
    assert months == {
        ("2024-01-01", "crm:ana"): (4.5, 1),
        ("2024-02-01", "crm:ana"): (3.5, 1),
        ("2024-01-01", "crm:bo"): (2.0, 1),
        ("2024-03-01", "crm:cy"): (5.0, 1),
    }
    # The quarter: Ana's two months; DACH: its own quarterly score and Ana's and Bo's months.
    assert cell(session_factory, "customer_satisfaction", "quarter", "owner")[("2024-01-01", "crm:ana")] == (
        4.0,
        2,
    )
    teams = cell(session_factory, "customer_satisfaction", "quarter", "team")
    assert teams[("2024-01-01", "crm:dach")] == (pytest.approx((4.5 + 3.5 + 2 + 4) / 4), 4)
    assert teams[("2024-01-01", "crm:nordics")] == (5.0, 1)
    # EMEA holds its teams' reps, not DACH's own team-level entry.
    assert teams[("2024-01-01", "crm:emea")] == (pytest.approx((4.5 + 3.5 + 2 + 5) / 4), 4)
    company = cell(session_factory, "customer_satisfaction", "year", "company")
    assert company == {("2024-01-01", "company"): (pytest.approx((4.5 + 3.5 + 2 + 5 + 4) / 5), 5)}
    # A month's entry never counts in a week, nor a quarter's in a month.
    assert cell(session_factory, "customer_satisfaction", "week", "owner") == {}
    # DACH's January: its reps' months only (its quarterly score is not a month's).
    assert cell(session_factory, "customer_satisfaction", "month", "team")[("2024-01-01", "crm:dach")] == (
        pytest.approx((4.5 + 2) / 2),
        2,
    )


@pytest.mark.usefixtures("job")
def test_sum_and_last(session_factory: sessionmaker[Session]) -> None:
    training = cell(session_factory, "training", "quarter", "owner")
    assert training == {("2024-01-01", "crm:ana"): (8.5, 2)}  # Bo's weekly hours are weeks only
    assert cell(session_factory, "training", "week", "owner") == {("2024-01-01", "crm:bo"): (3.0, 1)}
    bars = cell(session_factory, "latest_bars", "year", "owner")
    assert bars == {("2024-01-01", "crm:ana"): (6.0, 1)}  # the second quarter's level


def test_a_changed_entry_moves_the_value_at_the_next_refresh_and_explains_to_the_entries(
    session_factory: sessionmaker[Session], job: RefreshJob
) -> None:
    idle = job.refresh()
    assert "customer_satisfaction" not in idle.recomputed  # nothing changed
    with session_scope(session_factory) as session:
        service.upload(
            session,
            CATALOG,
            "measure_id,scope,scope_id,grain,period_key,value\ncustomer_satisfaction,owner,crm:bo,month,2024-01-01,3\n",
            source="api",
            by="manager",
            now=NOW,
        )
    moved = job.refresh()
    assert "customer_satisfaction" in moved.recomputed
    assert "training" not in moved.recomputed  # another measure: untouched
    assert cell(session_factory, "customer_satisfaction", "month", "owner")[("2024-01-01", "crm:bo")] == (
        3.0,
        1,
    )
    with session_factory() as session:
        explained = explain(
            session,
            job.service.kpi("customer_satisfaction"),
            ValueRef("customer_satisfaction", "quarter", "2024-01-01", "team", "crm:dach"),
            job.service.calendar(session),
            org_repo.load_membership(session),
        )
    (part,) = explained.parts
    assert sorted((r["scope_id"], r["period_key"], r["value"], r["entered_by"]) for r in part.records) == [
        ("crm:ana", "2024-01-01", 4.5, "hr"),
        ("crm:ana", "2024-02-01", 3.5, "hr"),
        ("crm:bo", "2024-01-01", 3.0, "manager"),
        ("crm:dach", "2024-01-01", 4.0, "hr"),
    ]


def test_a_kpi_on_an_unknown_measure_is_refused_with_the_file_and_line(tmp_path: Path) -> None:
    from crm_perf_sync.config import ConfigIssues, load_config
    from crm_perf_sync.plugins import ConnectorRegistry

    path = tmp_path / "config.yaml"
    path.write_text(
        "kpis:\n  definitions:\n"
        "    - {id: nps, name: NPS, type: measure, measure_id: net_promoter, unit: number}\n"
    )
    with pytest.raises(ConfigIssues) as caught:
        load_config(path, ConnectorRegistry(connectors={}), {})
    expected = "config.yaml:3: kpis.definitions[0].measure_id: unknown measure 'net_promoter'"
    assert expected in str(caught.value)
