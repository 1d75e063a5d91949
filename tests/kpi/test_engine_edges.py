"""The KPI engine's edge cases, each with a defined answer, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.connector_sdk import LeadRecord, OwnerRecord, TeamRecord
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kpi import periods
from crm_perf_sync.models import KpiValue
from tests.kpi.store import T, closed, load, opp


def rows(
    factory: sessionmaker[Session], kpi_id: str, grain: str, scope: str
) -> dict[tuple[str, str, str], KpiValue]:
    with session_scope(factory) as session:
        found = session.scalars(
            select(KpiValue).where(
                KpiValue.kpi_id == kpi_id, KpiValue.grain == grain, KpiValue.scope == scope
            )
        )
        return {(v.period_key, v.scope_id, v.currency): v for v in found}


TEAMS = [
    TeamRecord(external_id="emea", name="EMEA", level="region"),
    TeamRecord(external_id="dach", name="DACH", parent_external_id="emea", level="team"),
]
OWNERS = [
    OwnerRecord(external_id="ana", name="Ana", team_external_id="dach"),
    OwnerRecord(external_id="bo", name="Bo", team_external_id="dach"),
    OwnerRecord(external_id="cy", name="Cy"),
]


def test_ratios_are_ratios_of_sums_and_add_up_across_scopes(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    jan = T
    deals = [
        closed(1, "ana", True, jan),
        closed(2, "ana", False, jan),
        closed(3, "ana", False, jan),
        closed(4, "bo", True, jan),  # Bo: 1/1 = 100%, Ana 1/3: the mean of rates would be 66.7%
        closed(5, None, True, jan),  # no owner: counts for the company only
        opp(6, "cy"),  # open: no win_rate row for Cy
        closed(7, "cy", True, jan, is_deleted=True),  # deleted: never counts
    ]
    job = load(tmp_path, session_factory, {"teams": TEAMS, "owners": OWNERS, "opportunities": deals})
    job.refresh(["win_rate"])
    owners = rows(session_factory, "win_rate", "month", "owner")
    assert {k[1]: (v.numerator, v.denominator, v.value) for k, v in owners.items()} == {
        "crm:ana": (1.0, 3.0, pytest.approx(1 / 3)),
        "crm:bo": (1.0, 1.0, 1.0),
    }
    teams = rows(session_factory, "win_rate", "month", "team")
    assert {k[1]: (v.numerator, v.denominator) for k, v in teams.items()} == {
        "crm:dach": (2.0, 4.0),
        "crm:emea": (2.0, 4.0),  # the region includes its teams' reps
    }
    (company,) = rows(session_factory, "win_rate", "month", "company").values()
    assert (company.numerator, company.denominator, company.value) == (3.0, 5.0, 0.6)
    assert company.period_key == "2024-01-01"
    assert (company.period_start, company.period_end) == (date(2024, 1, 1), date(2024, 2, 1))
    assert company.low_sample is False
    assert owners[("2024-01-01", "crm:bo", "")].low_sample is True  # 1 closed deal < min_sample 5


def test_zero_denominators_give_no_value(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    config = """kpis:
  definitions:
    - id: lost_share
      name: Won among lost
      type: ratio
      unit: ratio
      numerator: {period: created_at, filter: [{field: is_won, op: eq, value: true}]}
      denominator:
        period: created_at
        filter: [{field: is_closed, op: eq, value: true}, {field: is_won, op: eq, value: false}]
"""
    deals = [closed(1, "ana", True, T)]  # one won deal, no lost one: 1 / 0
    job = load(tmp_path, session_factory, {"owners": OWNERS, "opportunities": deals}, config)
    job.refresh(["lost_share"])
    (company,) = rows(session_factory, "lost_share", "all", "company").values()
    assert (company.value, company.numerator, company.denominator, company.sample_count) == (
        None,
        1.0,
        0.0,
        0,
    )


def test_currencies_are_never_summed_together(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    deals = [
        closed(1, "ana", True, T, amount=Decimal("1000.50")),
        closed(2, "ana", True, T, amount=Decimal("200.25"), currency="EUR"),
        closed(3, "ana", True, T, amount=Decimal("300.00"), currency="EUR"),
        closed(4, "ana", True, T, amount=None),  # no amount: not in sums or averages, still a won deal
    ]
    job = load(tmp_path, session_factory, {"owners": OWNERS, "opportunities": deals})
    job.refresh(["won_revenue", "average_deal_size", "won_deals"])
    revenue = rows(session_factory, "won_revenue", "all", "company")
    assert {k[2]: v.value for k, v in revenue.items()} == {"USD": 1000.5, "EUR": 500.25}
    average = rows(session_factory, "average_deal_size", "all", "company")
    assert {k[2]: (v.value, v.denominator) for k, v in average.items()} == {
        "USD": (1000.5, 1.0),
        "EUR": (pytest.approx(250.125), 2.0),
    }
    (won,) = rows(session_factory, "won_deals", "all", "company").values()
    assert (won.value, won.currency) == (4.0, "")


def test_durations_skip_impossible_cycles_and_take_true_medians(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    created = T - timedelta(days=100)
    deals = [
        closed(1, "ana", True, created + timedelta(days=10), created_at=created),
        closed(2, "ana", True, created + timedelta(days=20), created_at=created),
        closed(3, "ana", True, created + timedelta(days=40), created_at=created),
        closed(4, "ana", True, created + timedelta(days=90), created_at=created),
        closed(5, "ana", True, created - timedelta(days=5), created_at=created),  # closed before created
        closed(6, "ana", False, created + timedelta(days=1), created_at=created),  # lost: not a won cycle
    ]
    job = load(tmp_path, session_factory, {"owners": OWNERS, "opportunities": deals})
    job.refresh(["sales_cycle_days_mean", "sales_cycle_days_median"])
    (mean,) = rows(session_factory, "sales_cycle_days_mean", "all", "owner").values()
    assert (mean.value, mean.numerator, mean.denominator, mean.sample_count) == (40.0, 160.0, 4.0, 4)
    (median,) = rows(session_factory, "sales_cycle_days_median", "all", "company").values()
    assert median.value == pytest.approx(30.0)  # (20 + 40) / 2


def test_periods_follow_the_business_timezone_and_fiscal_year(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    config = "business: {timezone: Europe/Berlin, fiscal_year_start_month: 4}\n"
    late_march = datetime(2024, 3, 31, 22, 30, tzinfo=UTC)  # 00:30 on 1 April in Berlin (CEST)
    mid_march = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)
    deals = [closed(1, "ana", True, late_march), closed(2, "ana", True, mid_march)]
    job = load(tmp_path, session_factory, {"owners": OWNERS, "opportunities": deals}, config)
    job.refresh(["won_deals"])
    months = rows(session_factory, "won_deals", "month", "company")
    assert {k[0]: v.value for k, v in months.items()} == {"2024-03-01": 1.0, "2024-04-01": 1.0}
    quarters = rows(session_factory, "won_deals", "quarter", "company")
    # Fiscal quarters start in April: January-March 2024 is Q4 of the year that began April 2023.
    assert {k[0]: v.value for k, v in quarters.items()} == {"2024-01-01": 1.0, "2024-04-01": 1.0}
    years = rows(session_factory, "won_deals", "year", "company")
    assert {k[0]: (v.value, v.period_end) for k, v in years.items()} == {
        "2023-04-01": (1.0, date(2024, 4, 1)),
        "2024-04-01": (1.0, date(2025, 4, 1)),
    }


def test_records_without_a_period_date_count_only_in_all(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    leads = [
        LeadRecord(external_id="l1", owner_external_id="ana", created_at=T, is_converted=True),
        LeadRecord(external_id="l2", owner_external_id="ana"),  # no created date
    ]
    job = load(tmp_path, session_factory, {"owners": OWNERS, "leads": leads})
    job.refresh(["lead_conversion_rate"])
    assert {
        k[0]: (v.numerator, v.denominator)
        for k, v in rows(session_factory, "lead_conversion_rate", "month", "company").items()
    } == {"2024-01-01": (1.0, 1.0)}
    (everything,) = rows(session_factory, "lead_conversion_rate", "all", "company").values()
    assert (everything.numerator, everything.denominator, everything.period_start) == (1.0, 2.0, None)


def test_a_refresh_replaces_a_kpi_whole(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    job = load(tmp_path, session_factory, {"owners": OWNERS, "opportunities": [closed(1, "ana", True, T)]})
    job.refresh(["won_deals"])
    job.refresh(["won_deals"])
    with session_scope(session_factory) as session:
        hashes = set(session.scalars(select(KpiValue.definition_hash).where(KpiValue.kpi_id == "won_deals")))
        count = len(list(session.scalars(select(KpiValue.id).where(KpiValue.kpi_id == "won_deals"))))
    assert hashes == {job.service.definition_hash(job.service.kpi("won_deals"))}
    assert count == 5 * 2  # (week, month, quarter, year, all) x (company, owner) (no teams configured)


def test_sqlite_offsets_match_the_tz_database() -> None:
    steps = dict(periods.utc_offsets("Europe/Berlin"))
    assert steps[datetime(2024, 3, 31, 1, 0, tzinfo=UTC)] == 7200
    assert steps[datetime(2024, 10, 27, 1, 0, tzinfo=UTC)] == 3600
    assert periods.utc_offsets("UTC") == ((datetime(1990, 1, 1, tzinfo=UTC), 0),)


P90 = """kpis:
  definitions:
    - id: cycle_p90
      name: Sales cycle (p90 days)
      type: duration
      unit: days
      direction: lower
      stat: p90
      measure: {period: closed_at, filter: [{field: is_won, op: eq, value: true}]}
"""


def test_p90_is_the_nearest_rank_value(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    created = T - timedelta(days=100)
    # Ana: cycles of 1..10 days (p90 = the 9th); Bo: 1..7 days (p90 = the ceil(6.3) = 7th).
    deals = [closed(n, "ana", True, created + timedelta(days=n), created_at=created) for n in range(1, 11)]
    deals += [
        closed(100 + n, "bo", True, created + timedelta(days=n), created_at=created) for n in range(1, 8)
    ]
    job = load(tmp_path, session_factory, {"owners": OWNERS, "opportunities": deals}, P90)
    job.refresh(["cycle_p90"])
    owners = rows(session_factory, "cycle_p90", "all", "owner")
    assert {k[1]: v.value for k, v in owners.items()} == {
        "crm:ana": pytest.approx(9.0),
        "crm:bo": pytest.approx(7.0),
    }
    (company,) = rows(session_factory, "cycle_p90", "all", "company").values()
    assert company.value == pytest.approx(9.0)  # 17 values: the ceil(15.3) = 16th is 9 days


def test_a_kpis_version_moves_when_its_values_change_and_only_then(
    session_factory: sessionmaker[Session],
) -> None:
    """``values_changed_at`` is what readers cache against: a refresh that changed nothing keeps
    it; one that changed values, or finds none recorded, moves it to its own time."""
    from crm_perf_sync.kpi import repository as kpi_repo
    from crm_perf_sync.models import KpiRefreshState

    t0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

    def record(at: datetime, *, changed: bool, definition: str = "d1") -> tuple[datetime | None, ...]:
        with session_scope(session_factory) as session:
            kpi_repo.record_refresh(session.connection(), "won_deals", definition, "c1", at, changed=changed)
        with session_scope(session_factory) as session:
            state = session.get(KpiRefreshState, "won_deals")
            assert state is not None
            assert (state.definition_hash, state.context_hash) == (definition, "c1")
            return state.refreshed_at, state.values_changed_at, kpi_repo.results_version(session)

    assert record(t0, changed=False) == (t0, t0, t0)  # first recorded: a version
    t1, t2, t3 = (t0 + timedelta(minutes=n) for n in (1, 2, 3))
    assert record(t1, changed=False, definition="d2") == (t1, t0, t0)  # nothing changed: kept
    assert record(t2, changed=True) == (t2, t2, t2)
    with session_scope(session_factory) as session:
        session.get_one(KpiRefreshState, "won_deals").values_changed_at = None
    assert record(t3, changed=False) == (t3, t3, t3)  # none recorded: this one


def test_a_turns_cells_in_many_periods_are_read_and_deleted_in_one_statement_each(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    """Wins of deals created in many weeks touch a funnel's cells in as many periods, each in its
    own set of scopes: the stored cells are read in one statement (plus one per grain of whole
    periods), whatever the number of periods, and exactly the cells asked for come back; deleting
    them deletes those and no other. On PostgreSQL the values' statistics are fresh after a
    refresh that recomputed KPIs whole, so these lookups are planned for the table's real size."""
    from sqlalchemy import event, func, text

    from crm_perf_sync.kpi import repository as kpi_repo

    deals = [
        closed(
            10 * n + k, owner, n % 3 != 0, T + timedelta(days=7 * n), created_at=T + timedelta(days=7 * n - 3)
        )
        for n in range(1, 40)
        for k, owner in enumerate(("ana",) if n % 2 else ("bo", "cy"))
    ]
    job = load(tmp_path, session_factory, {"teams": TEAMS, "owners": OWNERS, "opportunities": deals})
    job.refresh()
    with session_scope(session_factory) as session:
        stored = session.scalars(select(KpiValue).where(KpiValue.kpi_id == "win_rate")).all()
        everything = {
            (v.grain, v.scope, v.period_key, v.scope_id, v.currency, v.dimension_value): v for v in stored
        }
        if session.get_bind().dialect.name == "postgresql":
            analyzed = session.scalar(text("SELECT reltuples FROM pg_class WHERE relname = 'kpi_value'"))
            assert analyzed == session.scalar(select(func.count()).select_from(KpiValue))
    weeks = sorted({key[2] for key in everything if key[0] == "week"})
    assert len(weeks) >= 30
    # The weeks in two alternating sets of scopes; one month whole; a year where nothing is stored.
    cells: dict[tuple[str, str], set[tuple[str, str]] | None] = {}
    for n, week in enumerate(weeks):
        alternate = {("team", "crm:dach"), ("owner", "crm:cy")}
        cells["week", week] = alternate if n % 2 else {("company", "company"), ("owner", "crm:ana")}
    month = next(key[2] for key in everything if key[0] == "month")
    cells["month", month] = None
    cells["year", "2099-01-01"] = {("company", "company")}

    def wanted(key: tuple[str, ...]) -> bool:
        if (key[0], key[2]) not in cells:
            return False
        scopes = cells[key[0], key[2]]
        return scopes is None or (key[1], key[3]) in scopes

    expected = {key for key in everything if wanted(key) and key[5] == ""}
    assert len(expected) > 40
    engine = session_factory.kw["bind"]
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:  # noqa: ARG001
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        with session_scope(session_factory) as session:
            found = kpi_repo.stored_cells(session.connection(), "win_rate", "", cells)
            read = len(statements)
            totals = kpi_repo.total_values(session.connection(), "win_rate", ["week", "month", "year"], cells)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert read == 2  # the month's whole period, and every named cell
    assert set(found) == expected
    assert all(found[key].id == everything[key].id for key in expected)
    assert all(found[key].numerator == everything[key].numerator for key in expected)
    assert {
        (r.grain, r.scope, r.period_key, r.scope_id, r.currency, r.dimension_value) for r in totals
    } == expected

    with session_scope(session_factory) as session:
        kpi_repo.delete_cells(session.connection(), "win_rate", cells)
    with session_scope(session_factory) as session:
        left = session.scalars(select(KpiValue.id).where(KpiValue.kpi_id == "win_rate")).all()
    assert set(left) == {v.id for key, v in everything.items() if key not in expected}
