"""The example configuration's two plans pay Maven's agents what an independent computation from
the Maven CSV files says, to the cent, for every agent and quarter of 2017.

The reference reads the CSV files with the csv module and does its own arithmetic in decimals:
it shares no code with the KPI engine or the payouts.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import select

from crm_perf_sync.incentives.schemas import Plan
from crm_perf_sync.incentives.service import IncentiveService
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.models import IncentiveLine
from tests.conftest import DATA_DIR
from tests.incentives.conftest import Store

MAVEN = DATA_DIR / "maven_crm_sales_opportunities"
QUARTERS = [date(2017, 1, 1), date(2017, 4, 1), date(2017, 7, 1), date(2017, 10, 1)]
CENT = Decimal("0.01")


def cents(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class Maven:
    region: dict[str, str]  # agent -> regional office
    revenue: dict[tuple[str, date], Decimal]  # (agent, quarter) -> won revenue
    won: dict[tuple[str, date], int]  # (agent, quarter) -> won deals
    gtk: dict[tuple[str, date], int]  # (agent, quarter) -> won GTK 500 deals


def read_maven() -> Maven:
    with (MAVEN / "sales_teams.csv").open(encoding="utf-8") as f:
        region = {row["sales_agent"]: row["regional_office"] for row in csv.DictReader(f)}
    revenue: dict[tuple[str, date], Decimal] = defaultdict(Decimal)
    won: dict[tuple[str, date], int] = defaultdict(int)
    gtk: dict[tuple[str, date], int] = defaultdict(int)
    with (MAVEN / "sales_pipeline.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["deal_stage"] != "Won" or not row["close_date"]:
                continue
            closed = date.fromisoformat(row["close_date"])
            quarter = date(closed.year, (closed.month - 1) // 3 * 3 + 1, 1)
            key = (row["sales_agent"], quarter)
            revenue[key] += Decimal(row["close_value"] or 0)
            won[key] += 1
            gtk[key] += row["product"] == "GTK 500"
    return Maven(region, revenue, won, gtk)


def agents_2017(maven: Maven) -> dict[tuple[str, str, str], Decimal]:
    """5% up to quota, 8% beyond, capped at twice 5% of quota; 500 per GTK 500 deal. The quota:
    the region's yearly target split evenly over 4 quarters and the region's agents."""
    yearly = {"Central": Decimal(3_960_000), "East": Decimal(4_320_000), "West": Decimal(4_320_000)}
    size = {office: sum(1 for o in maven.region.values() if o == office) for office in yearly}
    out: dict[tuple[str, str, str], Decimal] = {}
    for agent, office in maven.region.items():
        quota = cents(yearly[office] / 4 / size[office])
        for quarter in QUARTERS:
            base = maven.revenue.get((agent, quarter), Decimal(0))
            earned = min(base, quota) * Decimal("0.05") + max(base - quota, Decimal(0)) * Decimal("0.08")
            earned = min(earned, 2 * quota * Decimal("0.05"))
            out[agent, quarter.isoformat(), "commission"] = cents(earned)
            out[agent, quarter.isoformat(), "gtk-spiff"] = 500 * Decimal(maven.gtk.get((agent, quarter), 0))
    return out


def score(maven: Maven, agent: str, quarter: date) -> float:
    """The agent scorecard: half won deals (0 to 30), half won revenue (0 to 150,000), in floats."""
    deals = float(maven.won.get((agent, quarter), 0))
    revenue = float(maven.revenue.get((agent, quarter), 0))
    parts = [0.5 * max(0.0, min(1.0, deals / 30.0)), 0.5 * max(0.0, min(1.0, revenue / 150000.0))]
    return sum(parts)


def east_2017(maven: Maven) -> dict[tuple[str, str, str], Decimal]:
    """East's agents, and Anna Snelling from 15 February (half of the first quarter: half its
    quota): all revenue at 3%, 5% from 80% of quota, 6.5% from 120%; nothing below half the
    quota; at most 20,000. Plus 2,000 times the scorecard score from a score of 0.3."""
    people = {agent: Decimal(1) for agent, office in maven.region.items() if office == "East"}
    out: dict[tuple[str, str, str], Decimal] = {}
    for agent in [*people, "Anna Snelling"]:
        for quarter in QUARTERS:
            share = (
                Decimal(45) / Decimal(90) if agent == "Anna Snelling" and quarter.month == 1 else Decimal(1)
            )
            quota = cents((Decimal(120_000) if agent == "Cassey Cress" else Decimal(80_000)) * share)
            base = maven.revenue.get((agent, quarter), Decimal(0))
            reached = base / quota
            rate = (
                Decimal("0.03")
                if reached < Decimal("0.8")
                else Decimal("0.05")
                if reached < Decimal("1.2")
                else Decimal("0.065")
            )
            earned = Decimal(0) if reached < Decimal("0.5") else min(base * rate, Decimal(20_000))
            out[agent, quarter.isoformat(), "commission"] = cents(earned)
            s = score(maven, agent, quarter)
            out[agent, quarter.isoformat(), "balanced"] = (
                cents(2000 * Decimal(repr(s))) if s >= 0.3 else Decimal(0)
            )
    return out


def stored(store: Store, plan_id: str) -> dict[tuple[str, str, str], Any]:
    with session_scope(store.session_factory) as session:
        rows = session.scalars(select(IncentiveLine).where(IncentiveLine.plan_id == plan_id)).all()
        session.expunge_all()
    assert {r.kind for r in rows} == {"payout"}
    return {(r.owner_id.removeprefix("maven:"), r.period_key, r.component_id): r for r in rows}


def test_the_commission_plan_pays_every_agent_what_the_reference_says(store: Store) -> None:
    maven = read_maven()
    expected = agents_2017(maven)
    lines = stored(store, "agents-2017")
    assert lines.keys() == expected.keys()  # every agent of the 3 regions, every quarter, both parts
    wrong = {k: (lines[k].amount, v) for k, v in expected.items() if Decimal(str(lines[k].amount)) != v}
    assert not wrong, wrong
    # The reference is not trivial: some agents beyond quota, some capped, SPIFFs paid.
    assert sum(1 for line in lines.values() if line.capped) >= 5
    assert sum(1 for k, v in expected.items() if k[2] == "commission" and v > 0) >= 80
    assert sum(expected[k] for k in expected if k[2] == "gtk-spiff") >= 2500
    # The tiers are explained: a capped agent's line shows both bands and what the cap took off.
    capped = next(line for line in lines.values() if line.capped)
    bands = capped.detail["bands"]
    assert [b["tier"] for b in bands] == [1, 2]
    assert (
        Decimal(capped.detail["uncapped"])
        > Decimal(str(capped.amount))
        == 2 * Decimal(str(capped.quota)) * Decimal("0.05")
    )


def test_the_retroactive_plan_with_a_score_bonus_pays_what_the_reference_says(store: Store) -> None:
    maven = read_maven()
    expected = east_2017(maven)
    lines = stored(store, "east-2017")
    assert lines.keys() == expected.keys()  # 12 East agents and Anna Snelling, 4 quarters, 2 parts
    wrong = {k: (lines[k].amount, v) for k, v in expected.items() if Decimal(str(lines[k].amount)) != v}
    assert not wrong, wrong
    anna = lines["Anna Snelling", "2017-01-01", "commission"]
    assert Decimal(str(anna.quota)) == Decimal(40_000)  # half the quarter, half the quota
    below = [
        k for k, line in lines.items() if k[2] == "commission" and line.note and "threshold" in line.note
    ]
    assert below  # some agents under half their quota are paid nothing, and told why
    assert sum(1 for k, v in expected.items() if k[2] == "balanced" and v > 0) >= 10


def test_a_team_pool_splits_by_contribution_to_the_cent(store: Store) -> None:
    """A 10,000 pool per quarter for the Central region, split by won revenue: every agent's share
    is their revenue over the region's (from the CSV), and the parts add up to the pool exactly."""
    plan = Plan.model_validate(
        {
            "id": "central-pool",
            "name": "Central pool",
            "period": "quarter",
            "currency": "USD",
            "from": "2017-01-01",
            "to": "2017-12-31",
            "participants": [{"team": "maven:region:Central"}],
            "components": [
                {"id": "pool", "type": "team_pool", "team": "maven:region:Central", "amount": 10000,
                 "split": "contribution", "kpi": "won_revenue"}
            ],
        }
    )  # fmt: skip
    service = IncentiveService(store.job().service, [plan])
    with session_scope(store.session_factory) as session:
        computed = service.compute(session, plan, date(2018, 1, 15))
    maven = read_maven()
    central = [agent for agent, office in maven.region.items() if office == "Central"]
    for quarter in QUARTERS:
        mine = {c.owner.removeprefix("maven:"): c.line for c in computed if c.period.start == quarter}
        assert set(mine) == set(central)  # every member of the region takes part
        assert sum(line.amount for line in mine.values()) == Decimal(10000)
        revenue = {agent: maven.revenue.get((agent, quarter), Decimal(0)) for agent in central}
        total = sum(revenue.values())
        for agent, line in mine.items():
            exact = Decimal(10000) * revenue[agent] / total
            assert abs(line.amount - exact) < CENT, (agent, quarter, line.amount, exact)
            assert line.amount == 0 if revenue[agent] == 0 else line.amount > 0
