"""Targets (decomposition, attainment, gap, pace) and scorecards (normalised, renormalised, ranked)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kpi import periods
from crm_perf_sync.kpi.library import resolve
from crm_perf_sync.kpi.schemas import Grain, KpiSection, TargetConfig
from crm_perf_sync.kpi.targets import Target, TargetKey, decompose
from crm_perf_sync.kpi.values import pace
from crm_perf_sync.models import KpiTarget, ScorecardValue
from crm_perf_sync.org.schemas import Membership
from tests.kpi.store import OWNERS, TEAMS, T, closed, load, values

LIBRARY = resolve(KpiSection())
GRAIN_NAMES: dict[str, Grain] = {"month": "month", "quarter": "quarter", "year": "year"}


def target(**fields: object) -> TargetConfig:
    """A target as the configuration file would give it (``period: 2026`` or ``2026-04``)."""
    return TargetConfig.model_validate(fields)


def by_period(found: Mapping[TargetKey, Target]) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    for key, found_target in found.items():
        _, grain, index, _, scope_id, _ = key
        start, _ = periods.period_bounds(index, GRAIN_NAMES[grain])
        out[(grain, start.isoformat(), scope_id)] = found_target.value
    return out


def test_a_yearly_target_decomposes_evenly_into_quarters_and_months() -> None:
    yearly = target(kpi="won_revenue", period="2026", value=12_000_000, currency="USD")
    found = by_period(decompose([yearly], LIBRARY, Membership(()), 1))
    assert found[("year", "2026-01-01", "company")] == 12_000_000
    quarters = {k[1]: v for k, v in found.items() if k[0] == "quarter"}
    assert quarters == {f"2026-{m:02d}-01": pytest.approx(3_000_000) for m in (1, 4, 7, 10)}
    months = {k[1]: v for k, v in found.items() if k[0] == "month"}
    assert months == {f"2026-{m:02d}-01": pytest.approx(1_000_000) for m in range(1, 13)}
    assert len(found) == 1 + 4 + 12


def test_seasonal_weights_fiscal_years_and_rates() -> None:
    weights = [2.0] + [1.0] * 11  # the fiscal year's first month counts double: 13 shares
    seasonal = target(
        kpi="won_revenue",
        period="2026-04",
        value=13_000,
        seasonality=weights,
        currency="USD",
    )
    rate = target(kpi="win_rate", period="2026-04", value=0.3)
    found = by_period(decompose([seasonal], LIBRARY, Membership(()), 4))
    revenue = {k[:2]: v for k, v in found.items()}
    # The fiscal year starts in April: April gets 2 shares, its quarter 4 of 13.
    assert revenue[("month", "2026-04-01")] == pytest.approx(2_000)
    assert revenue[("month", "2027-03-01")] == pytest.approx(1_000)
    assert revenue[("quarter", "2026-04-01")] == pytest.approx(4_000)
    assert revenue[("quarter", "2027-01-01")] == pytest.approx(3_000)
    assert ("month", "2026-03-01") not in revenue
    # A rate is not divided: 30% a year is 30% in every month and quarter.
    rates = decompose([rate], LIBRARY, Membership(()), 4)
    assert {t.value for t in rates.values()} == {0.3}
    assert len(rates) == 17


def test_a_specific_target_wins_and_team_targets_split_to_reps() -> None:
    membership = Membership((("crm:dach", "crm", "ana"), ("crm:dach", "crm", "bo")))
    yearly = target(kpi="won_deals", period=2026, value=120)
    march = target(kpi="won_deals", grain="month", period="2026-03", value=30)
    team = target(
        kpi="won_deals",
        scope="team",
        scope_id="crm:dach",
        grain="quarter",
        period="2026-01",
        value=60,
        split_to_reps=True,
    )
    ana_q1 = target(
        kpi="won_deals",
        scope="owner",
        scope_id="crm:ana",
        grain="quarter",
        period="2026-02-15",  # any day inside the quarter
        value=45,
    )
    found = decompose([yearly, march, team, ana_q1], LIBRARY, membership, 1)
    table = by_period(found)
    assert table[("month", "2026-02-01", "company")] == pytest.approx(10)
    assert table[("month", "2026-03-01", "company")] == 30  # set for March: beats the yearly share
    assert table[("quarter", "2026-01-01", "crm:dach")] == 60
    assert table[("month", "2026-01-01", "crm:dach")] == pytest.approx(20)
    assert table[("quarter", "2026-01-01", "crm:bo")] == pytest.approx(30)  # half the team's
    assert table[("month", "2026-02-01", "crm:bo")] == pytest.approx(10)
    assert table[("quarter", "2026-01-01", "crm:ana")] == 45  # her own target beats the split
    assert table[("month", "2026-01-01", "crm:ana")] == pytest.approx(15)
    origins = {(k[1], k[4]): t.origin for k, t in found.items() if k[2] == 2026 * 12}
    assert origins[("month", "company")] == "period"
    assert origins[("quarter", "crm:dach")] == "set"
    assert origins[("quarter", "crm:bo")] == "team"


TARGETS = """kpis:
  targets:
    - {kpi: won_revenue, period: 2024, value: 1200, currency: USD}
    - {kpi: won_revenue, scope: team, scope_id: "crm:dach", grain: month, period: 2024-01, value: 400,
       currency: USD, split_to_reps: true}
    - {kpi: sales_cycle_days_mean, grain: month, period: 2024-01, value: 20}
"""


def test_values_carry_target_attainment_and_gap(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    deals = [
        closed(1, "ana", True, T, amount=Decimal(150)),
        closed(2, "ana", True, T, amount=Decimal(50), created_at=T - timedelta(days=30)),
        closed(3, "bo", True, T, amount=Decimal(100)),
    ]
    job = load(tmp_path, session_factory, {"teams": TEAMS, "owners": OWNERS, "opportunities": deals}, TARGETS)
    outcome = job.refresh()
    assert outcome.targets == 17 + 3 + 1  # year decomposed, the team's month and its 2 reps, a rate
    month = values(session_factory, "won_revenue", "month", "company")
    january = month[("2024-01-01", "company", "USD", "")]
    assert (january.value, january.target, january.attainment, january.gap) == (300, 100, 3.0, -200)
    # A month without a won deal still shows its target: nothing won is 0% attained.
    february = month[("2024-02-01", "company", "USD", "")]
    assert (february.value, february.target, february.attainment, february.gap) == (0, 100, 0, 100)
    assert february.sample_count == 0
    reps = values(session_factory, "won_revenue", "month", "owner")
    assert reps[("2024-01-01", "crm:ana", "USD", "")].attainment == pytest.approx(200 / 200)
    assert reps[("2024-01-01", "crm:bo", "USD", "")].attainment == pytest.approx(100 / 200)
    # Lower is better: attainment is target / actual (20 target days, 20 actual on average).
    cycle = values(session_factory, "sales_cycle_days_mean", "month", "company")
    row = cycle[("2024-01-01", "company", "", "")]
    assert row.value == pytest.approx((10 + 30 + 10) / 3)
    assert row.attainment == pytest.approx(20 / ((10 + 30 + 10) / 3))
    with session_scope(session_factory) as session:
        stored = session.scalars(select(KpiTarget).where(KpiTarget.scope == "owner")).all()
        assert {(t.scope_id, t.value, t.origin, t.source) for t in stored} == {
            ("crm:ana", 200, "team", "config"),
            ("crm:bo", 200, "team", "config"),
        }


def test_pace_is_attainment_over_the_elapsed_share_of_the_period() -> None:
    halfway = datetime(2024, 1, 16, 12, 0, tzinfo=UTC)  # 15.5 of January's 31 days
    assert pace(0.5, date(2024, 1, 1), date(2024, 2, 1), halfway, "UTC") == pytest.approx(1.0)
    assert pace(0.25, date(2024, 1, 1), date(2024, 2, 1), halfway, "UTC") == pytest.approx(0.5)
    after = datetime(2024, 3, 1, tzinfo=UTC)
    assert pace(0.8, date(2024, 1, 1), date(2024, 2, 1), after, "UTC") == pytest.approx(0.8)
    before = datetime(2023, 12, 31, tzinfo=UTC)
    assert pace(0.8, date(2024, 1, 1), date(2024, 2, 1), before, "UTC") is None
    # In Berlin the month starts an hour earlier than in UTC.
    start_berlin = datetime(2023, 12, 31, 23, 0, tzinfo=UTC)
    assert pace(0.5, date(2024, 1, 1), date(2024, 2, 1), start_berlin, "Europe/Berlin") is None


SCORECARD = """kpis:
  targets:
    - {kpi: won_revenue, scope: team, scope_id: "crm:dach", grain: month, period: 2024-01, value: 400,
       currency: USD, split_to_reps: true}
  scorecards:
    - id: reps
      name: Rep scorecard
      grains: [month]
      currency: USD
      components:
        - {kpi: won_revenue, weight: 0.5, normalise: {method: attainment, cap: 1.5}}
        - {kpi: win_rate, weight: 0.3, normalise: {method: linear, floor: 0.2, goal: 0.6}}
        - {kpi: sales_cycle_days_mean, weight: 0.2, normalise: {method: linear, floor: 60, goal: 10}}
      grades: [{grade: A, min: 1.0}, {grade: B, min: 0.7}, {grade: C, min: 0.5}, {grade: D, min: 0}]
"""


def test_scorecards_normalise_drop_renormalise_grade_and_rank(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    deals = [
        # Ana: 3 won of 5 closed, 10-day cycles, 300 won against a 200 target.
        *(closed(n, "ana", True, T) for n in (1, 2, 3)),
        *(closed(n, "ana", False, T) for n in (4, 5)),
        # Bo: 1 won of 1 (below win_rate's and the cycle's minimum samples), 100 against 200.
        closed(6, "bo", True, T),
        # Cy: 2 lost, no target for Nordics: nothing can be scored.
        closed(7, "cy", False, T),
        closed(8, "cy", False, T),
    ]
    job = load(
        tmp_path, session_factory, {"teams": TEAMS, "owners": OWNERS, "opportunities": deals}, SCORECARD
    )
    assert job.refresh().scorecards == {"reps": 4}  # Ana, Bo, Cy and Di (active, no data)
    with session_scope(session_factory) as session:
        scores = {s.scope_id: s for s in session.scalars(select(ScorecardValue))}
        ana, bo, cy, di = (scores[f"crm:{name}"] for name in ("ana", "bo", "cy", "di"))
        # Ana: 0.5 * min(1.5, 300/200) + 0.3 * (0.6-0.2)/0.4 + 0.2 * (10-60)/(10-60) = 1.25
        assert ana.score == pytest.approx(0.5 * 1.5 + 0.3 * 1.0 + 0.2 * 1.0)
        assert (ana.grade, ana.rank, ana.team_id, ana.team_rank, ana.dropped_components) == (
            "A",
            1,
            "crm:dach",
            1,
            0,
        )
        assert [c["applied_weight"] for c in ana.components] == pytest.approx([0.5, 0.3, 0.2])
        # Bo: two components below their minimum sample are dropped; revenue carries all the weight.
        assert bo.score == pytest.approx(0.5)
        assert (bo.grade, bo.rank, bo.team_rank, bo.dropped_components) == ("C", 2, 2, 2)
        dropped = {c["kpi_id"]: c["dropped"] for c in bo.components}
        assert dropped["won_revenue"] is None
        assert dropped["win_rate"] == "sample of 1 below the minimum of 5"
        assert dropped["sales_cycle_days_mean"] == "sample of 1 below the minimum of 3"
        assert bo.components[0]["applied_weight"] == pytest.approx(1.0)
        # Cy: revenue 0 has no target, 2 closed deals is too few, no won cycle: no score, no rank.
        assert (cy.score, cy.grade, cy.rank, cy.team_id, cy.dropped_components) == (
            None,
            None,
            None,
            "crm:nordics",
            3,
        )
        assert {c["kpi_id"]: c["dropped"] for c in cy.components}[
            "won_revenue"
        ] == "no target for this period"
        assert (di.score, di.team_id) == (None, None)


def test_scorecard_configuration_is_validated(tmp_path: Path) -> None:
    from crm_perf_sync.config import ConfigIssues, load_config
    from crm_perf_sync.plugins import ConnectorRegistry

    path = tmp_path / "config.yaml"
    path.write_text(
        """kpis:
  scorecards:
    - id: reps
      name: Reps
      components:
        - {kpi: won_revenue, weight: 0.5}
        - {kpi: win_rate, weight: 0.4}
    - id: cycle
      name: Cycle
      components:
        - {kpi: sales_cycle_days_mean, weight: 1, normalise: {method: linear, floor: 10, goal: 60}}
        - {kpi: no_such_kpi, weight: 0.1}
"""
    )
    with pytest.raises(ConfigIssues) as caught:
        load_config(path, ConnectorRegistry(connectors={}), {})
    text = str(caught.value)
    assert "config.yaml:3: kpis.scorecards[0]: component weights must sum to 1 (they sum to 0.9)" in text
    # Reference problems are reported once the section parses: fix the weights, see the rest.
    path.write_text(
        path.read_text().replace("weight: 0.4", "weight: 0.5").replace("weight: 1,", "weight: 0.9,")
    )
    with pytest.raises(ConfigIssues) as caught:
        load_config(path, ConnectorRegistry(connectors={}), {})
    text = str(caught.value)
    assert "config.yaml:11: kpis.scorecards[1].components[0].normalise: " in text
    assert "sales_cycle_days_mean is better lower: goal must be below floor" in text
    assert "config.yaml:12: kpis.scorecards[1].components[1].kpi: unknown KPI 'no_such_kpi'" in text


def test_an_amount_target_needs_its_currency(tmp_path: Path) -> None:
    from crm_perf_sync.config import ConfigIssues, load_config
    from crm_perf_sync.plugins import ConnectorRegistry

    path = tmp_path / "config.yaml"
    path.write_text("kpis:\n  targets:\n    - {kpi: won_revenue, period: 2026, value: 1000}\n")
    with pytest.raises(ConfigIssues) as caught:
        load_config(path, ConnectorRegistry(connectors={}), {})
    assert "config.yaml:3: kpis.targets[0]" in str(caught.value)
    assert "won_revenue is an amount: give the target's currency" in str(caught.value)


def test_a_negative_target_for_a_kpi_that_is_never_negative_is_refused(tmp_path: Path) -> None:
    from crm_perf_sync.config import ConfigIssues, load_config
    from crm_perf_sync.plugins import ConnectorRegistry

    path = tmp_path / "config.yaml"
    path.write_text(
        "kpis:\n  targets:\n"
        "    - {kpi: won_deals, period: 2026, value: 10}\n"
        "    - {kpi: won_revenue, period: 2026, value: -5, currency: USD}\n"
    )
    with pytest.raises(ConfigIssues) as caught:
        load_config(path, ConnectorRegistry(connectors={}), {})
    text = str(caught.value)
    assert "config.yaml:4: kpis.targets[1].value: won_revenue is never negative (currency)" in text
    assert "targets[0]" not in text
