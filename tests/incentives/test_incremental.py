"""An incremental payout refresh recomputes only the plan periods whose KPI values or scores
changed, and leaves every line (payouts and the adjustments for closed periods) exactly as a full
recompute would."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import load_config
from crm_perf_sync.connector_sdk import Message, OpportunityRecord, Tombstone
from crm_perf_sync.jobs.refresh import RefreshJob
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.models import IncentiveLine
from crm_perf_sync.plugins import ConnectorRegistry
from tests.kpi.store import OWNERS, TEAMS, load
from tests.kpi.test_incremental import REPS, STAGES, deal, history, lead, sync_more
from tests.sync.scripted import ScriptedConnector

PLAN = "reps"
CLOSED = "2023-12-01"  # the plan's second month, closed (after the first) before the CRM changes
CHANGED = "2024-03-01"  # an open month the first changes to deals stay in
LEADS = "2024-04-01"  # an open month where only leads change (only the scores read them)

CONFIG = """business: {timezone: UTC, fiscal_year_start_month: 1, currency: USD}
kpis:
  scorecards:
    - id: monthly
      name: Monthly
      grains: [month]
      currency: USD
      components:
        - {kpi: won_deals, weight: 0.5, normalise: {method: linear, floor: 0, goal: 4}}
        - {kpi: won_revenue, weight: 0.3, normalise: {method: linear, floor: 0, goal: 60000}}
        - {kpi: lead_conversion_rate, weight: 0.2, normalise: {method: linear, floor: 0, goal: 0.8}}
incentives:
  plans:
    - id: reps
      name: Reps
      period: month
      currency: USD
      from: 2023-11-01
      to: 2024-08-31
      participants:
        - {team: "crm:emea"}
        - {owner: "crm:di", from: 2024-02-10}
      components:
        - id: commission
          type: commission
          base: {kpi: won_revenue}
          quota: {source: plan, amount: 30000, owners: {"crm:ana": 45000}}
          tiers:
            - {from: 0, to: 1, rate: 0.05}
            - {from: 1, to: 1.5, rate: 0.08}
            - {from: 1.5, rate: 0.1}
          cap: {on_target_multiple: 2}
        - {id: won-spiff, type: spiff, kpi: won_deals, amount: 150, cap: 450}
        - {id: scored, type: score_bonus, scorecard: monthly, amount: 1000, min_score: 0.2}
        - {id: dach-pool, type: team_pool, team: "crm:dach", amount: 2000, split: contribution,
           kpi: won_revenue}
"""

#: Lines by their key, without their id and the time they were written.
Lines = dict[tuple[str, str, str, str, str], dict[str, Any]]


def lines(
    factory: sessionmaker[Session],
) -> tuple[Lines, dict[tuple[str, str, str, str, str], tuple[int, datetime]]]:
    """The plan's lines (without id and time) and when each was written (its id and time), by
    (period, owner, component, kind, for period)."""
    with session_scope(factory) as session:
        rows = session.execute(select(IncentiveLine.__table__)).mappings().all()
    out: Lines = {}
    ids: dict[tuple[str, str, str, str, str], tuple[int, datetime]] = {}
    for row in rows:
        key = (row["period_key"], row["owner_id"], row["component_id"], row["kind"], row["for_period_key"])
        assert key not in out
        out[key] = {k: v for k, v in row.items() if k not in ("id", "computed_at")}
        ids[key] = (row["id"], row["computed_at"])
    return out, ids


def differences(incremental: Lines, full: Lines) -> list[str]:
    problems = [f"only after the incremental refresh: {k}" for k in sorted(incremental.keys() - full.keys())]
    problems += [f"only after the full recompute: {k}" for k in sorted(full.keys() - incremental.keys())]
    for key in sorted(incremental.keys() & full.keys()):
        for column, value in incremental[key].items():
            if value != full[key][column]:
                problems.append(f"{key} {column}: {value!r} != {full[key][column]!r}")
    return problems


def month(at: datetime | None) -> str:
    assert at is not None
    return date(at.year, at.month, 1).isoformat()


def closed_in(deals: list[OpportunityRecord], key: str) -> list[OpportunityRecord]:
    return [d for d in deals if d.is_closed and d.owner_external_id and month(d.closed_at) == key]


def reworked(rng: random.Random, record: OpportunityRecord) -> OpportunityRecord:
    """The deal with another rep, amount and outcome, closed at the same time."""
    won = not record.is_won
    return replace(
        record,
        owner_external_id=rng.choice([r for r in REPS if r is not None]),
        amount=Decimal(rng.randrange(1_000, 40_000)),
        currency="USD",
        is_won=won,
        stage="Won" if won else "Lost",
    )


def check_against_full(job: RefreshJob, factory: sessionmaker[Session]) -> Lines:
    """The lines the incremental refresh left equal those of a full recompute; returns them."""
    incremental, _ = lines(factory)
    outcome = job.refresh(full=True)
    assert PLAN in outcome.incentives
    full, _ = lines(factory)
    problems = differences(incremental, full)
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:30])
    return incremental


def test_an_incremental_payout_refresh_equals_a_full_recompute(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    rng = random.Random(22)
    deals = [deal(rng, n) for n in range(300)]
    leads = [lead(rng, n) for n in range(150)]
    job = load(
        tmp_path,
        session_factory,
        {
            "teams": TEAMS,
            "owners": OWNERS,
            "pipeline_stages": STAGES,
            "opportunities": deals,
            "stage_changes": [step for d in deals for step in history(rng, d, "a")],
            "leads": leads,
        },
        CONFIG,
    )
    job.refresh()
    with job.engine.begin() as conn:
        for key in ("2023-11-01", CLOSED):
            job.incentives.close(conn, PLAN, key, "finance", datetime.now(UTC))
    before, before_ids = lines(session_factory)
    assert {k[0] for k in before} == {f"{y}-{m:02d}-01" for y, m in [(2023, 11), (2023, 12)]} | {
        f"2024-{m:02d}-01" for m in range(1, 9)
    }

    # The CRM changes only deals closed in the closed month and in one open month: they move to
    # another rep, win or lose and change amount, two are deleted, a new one is won.
    in_closed, in_open = closed_in(deals, CLOSED), closed_in(deals, CHANGED)
    assert len(in_closed) >= 4
    assert len(in_open) >= 4
    page: list[Message] = [reworked(rng, d) for d in in_closed[:3] + in_open[:3]]
    page += [Tombstone(in_closed[3].external_id), Tombstone(in_open[3].external_id)]
    page += [replace(in_open[0], external_id="o900", is_won=True, stage="Won", currency="USD")]
    # Leads of another month convert (or no longer do): the conversion rate is in the scorecard.
    flipped = [
        replace(x, is_converted=not x.is_converted, converted_at=None if x.is_converted else x.created_at)
        for x in leads
        if x.owner_external_id and month(x.created_at) == LEADS
    ][:4]
    assert flipped
    sync_more(session_factory, {"opportunities": [page], "leads": [flipped]})

    outcome = job.refresh()
    assert outcome.touched["won_revenue"] is not None  # brought up to date, not recomputed
    after, after_ids = lines(session_factory)
    # The months recomputed are those whose KPI values or scores changed; of their payouts, only
    # the changed open month's were written again (the leads changed no score), with the closed
    # month's adjustments.
    rewritten = {k for k in after if after_ids[k] != before_ids.get(k)}
    assert job.incentives.changed_periods(job.incentives.plans[PLAN], outcome) == {CLOSED, CHANGED, LEADS}
    assert {k[0] for k in rewritten if k[3] == "payout"} == {CHANGED}
    assert {k[4] for k in rewritten if k[3] == "adjustment"} == {CLOSED}
    assert len(rewritten) < len(after) / 3
    # A line of those months whose numbers did not change is not written again.
    kept = {k for k in after if k[0] in (CHANGED, LEADS) and before.get(k) == after[k]}
    assert kept, "some reps' lines of the changed months stay as they were"
    assert {k for k in kept if after_ids[k] != before_ids[k]} == set()
    # A line written again keeps its id (it is the same line, with new numbers).
    again = {k for k in rewritten if k in before_ids and k[3] == "payout"}
    assert again
    assert {k for k in again if after_ids[k][0] != before_ids[k][0]} == set()
    assert outcome.incentives[PLAN].lines == len({k for k in rewritten if k[3] == "payout"})
    adjustments = {k: v for k, v in after.items() if k[3] == "adjustment"}
    assert adjustments, "changes to the closed month's deals adjust what it paid"
    assert {k[0] for k in adjustments} == {"2024-01-01"}  # paid in the first open month after it
    incremental = check_against_full(job, session_factory)
    assert len(incremental) == len(after)

    # Then anything may change, in any month: deals come and go, move and close elsewhere.
    def changed(record: OpportunityRecord) -> OpportunityRecord:
        return deal(rng, int(record.external_id[1:]))

    touched = rng.sample(deals, 40)
    page_a: list[Message] = [changed(d) for d in touched[:30]]
    page_a += [Tombstone(d.external_id) for d in touched[30:]]
    page_a += [deal(rng, n) for n in range(300, 320)]
    page_b: list[Message] = [changed(d) for d in touched[:6]]
    lead_page: list[Message] = [lead(rng, int(x.external_id[1:])) for x in rng.sample(leads, 15)]
    sync_more(session_factory, {"opportunities": [page_a, page_b], "leads": [lead_page]})
    outcome = job.refresh()
    assert outcome.recomputed == []
    assert outcome.incentives[PLAN].lines < len(incremental)
    check_against_full(job, session_factory)

    # Nothing changed since: no plan is written.
    assert job.refresh().incentives == {}


def test_a_changed_plan_or_team_recomputes_the_plan_whole(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    rng = random.Random(5)
    deals = [deal(rng, n) for n in range(120)]
    job = load(
        tmp_path,
        session_factory,
        {"teams": TEAMS, "owners": OWNERS, "pipeline_stages": STAGES, "opportunities": deals},
        CONFIG,
    )
    first = job.refresh()
    total = first.incentives[PLAN].lines
    # A new plan definition (a higher SPIFF): the store did not change, the plan is written whole.
    path = tmp_path / "config.yaml"
    path.write_text(path.read_text().replace("amount: 150", "amount: 175"))
    again = RefreshJob(
        session_factory, load_config(path, ConnectorRegistry(connectors={"scripted": ScriptedConnector}), {})
    )
    outcome = again.refresh()
    assert outcome.rows == {}  # no KPI changed
    assert outcome.incentives[PLAN].lines == total
    spiffs = {k: v for k, v in lines(session_factory)[0].items() if k[2] == "won-spiff"}
    assert any(v["units"] for v in spiffs.values())
    assert all(v["amount"] == min(175 * v["units"], 450) for v in spiffs.values())
    # Bo leaves DACH for the Nordics: every period of the pool is split again.
    moved = [replace(o, team_external_id="nordics") if o.external_id == "bo" else o for o in OWNERS]
    sync_more(session_factory, {"owners": [moved]})
    outcome = again.refresh()
    assert outcome.incentives[PLAN].lines == total - 10  # no pool line for Bo in any of 10 months
    pool = {k[1] for k in lines(session_factory)[0] if k[2] == "dach-pool"}
    assert pool == {"crm:ana"}
    check_against_full(again, session_factory)
