"""The incentive events reach a real Standard Webhooks consumer, signed, from the transaction that
caused them: a rep crossing into a higher tier, a period closed, an adjustment to a closed period;
and an alert rule on a plan's pace fires for the reps behind it.

Every test starts from its own copy of the Maven example store (refreshed, its plans computed).
A change to the CRM is made to the stored deal and followed by a refresh of the KPIs the plans
read; the expected
numbers come from the Maven CSV files (the reference of test_maven_plans) or from the stored
lines and the clock the test passes, never from the code under test.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import ValidationError
from sqlalchemy import CursorResult, func, select, update

from crm_perf_sync.alerts import service as alerts
from crm_perf_sync.alerts.schemas import AlertRule
from crm_perf_sync.config import ConfigIssues, load_config
from crm_perf_sync.jobs.refresh import Refreshed
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.models import IncentiveLine, KpiValue, Opportunity, WebhookDelivery, WebhookEvent
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.webhooks import service as webhooks
from crm_perf_sync.webhooks.delivery import Deliverer, DeliveryOptions
from crm_perf_sync.webhooks.security import Guard
from tests.conftest import DATA_DIR, REPO_ROOT
from tests.incentives.conftest import Store, store_copy
from tests.incentives.test_maven_plans import MAVEN, QUARTERS, Maven, agents_2017, cents, read_maven
from tests.webhooks.receiver import Receiver, receiving

LOCAL = Guard(allow=("127.0.0.1",))
Q1, Q2, Q4 = "2017-01-01", "2017-04-01", "2017-10-01"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh(request: pytest.FixtureRequest, tmp_path: Path, pg_admin_url: str | None) -> Iterator[Store]:
    """A copy of the refreshed Maven example store for one test, on each backend in turn."""
    with store_copy(request, tmp_path, pg_admin_url, "cps_incentive_events") as found:
        yield found


def subscribe(store: Store, receiver: Receiver, *patterns: str) -> None:
    with session_scope(store.session_factory) as session:
        _, secret = webhooks.create_endpoint(
            session, webhooks.EndpointSpec(receiver.url, event_types=patterns), LOCAL
        )
    receiver.secrets.append(secret)


def deliver(store: Store) -> None:
    """Send every queued delivery, waiting for the retries of those that failed (a busy receiver
    may reset a connection) until none is left."""
    deliverer = Deliverer(store.session_factory, LOCAL, "worker-a", DeliveryOptions(timeout=5))
    deadline = time.monotonic() + 120
    try:
        while deliverer.run_once() or pending(store):
            assert time.monotonic() < deadline, "deliveries still pending after two minutes"
            time.sleep(0.2)
    finally:
        deliverer.close()


def pending(store: Store) -> int:
    with session_scope(store.session_factory) as session:
        return int(session.scalar(select(func.count()).where(WebhookDelivery.status != "succeeded")) or 0)


def received(receiver: Receiver, event_type: str) -> list[dict[str, Any]]:
    assert receiver.rejected == []
    return [r.payload["data"] for r in receiver.accepted if r.payload["type"] == event_type]


def set_deal(store: Store, external_id: str, **values: Any) -> None:
    """A change in the CRM, as the next sync would store it."""
    with session_scope(store.session_factory) as session:
        done = session.execute(
            update(Opportunity)
            .where(Opportunity.connection_id == "maven", Opportunity.external_id == external_id)
            .values(**values)
        )
        assert cast(CursorResult[Any], done).rowcount == 1


def refresh(store: Store) -> Refreshed:
    """Recompute what the plans read of the deals (their quarterly won revenue and deals) whole,
    as a refresh after a sync does by the change log, and the plans with them."""
    return store.job().refresh(["won_revenue", "won_deals"], ["quarter"])


def deals(quarter: str) -> list[dict[str, str]]:
    with (MAVEN / "sales_pipeline.csv").open(encoding="utf-8") as f:
        return [
            row
            for row in csv.DictReader(f)
            if row["deal_stage"] == "Won" and row["close_date"] and _quarter(row["close_date"]) == quarter
        ]


def _quarter(day: str) -> str:
    closed = date.fromisoformat(day)
    return date(closed.year, (closed.month - 1) // 3 * 3 + 1, 1).isoformat()


def teams_of(agent: str) -> list[str]:
    """The rep's own team (its manager's) and its region, from sales_teams.csv."""
    with (MAVEN / "sales_teams.csv").open(encoding="utf-8") as f:
        row = next(r for r in csv.DictReader(f) if r["sales_agent"] == agent)
    return [f"maven:team:{row['manager']}", f"maven:region:{row['regional_office']}"]


def quota(maven: Maven, agent: str) -> Decimal:
    yearly = {"Central": Decimal(3_960_000), "East": Decimal(4_320_000), "West": Decimal(4_320_000)}
    office = maven.region[agent]
    return cents(yearly[office] / 4 / sum(1 for o in maven.region.values() if o == office))


def incentive_events(store: Store) -> int:
    with session_scope(store.session_factory) as session:
        return int(session.scalar(select(func.count()).where(WebhookEvent.type.like("incentive.%"))) or 0)


def test_a_deal_that_lifts_an_agent_over_quota_announces_one_tier_reached(fresh: Store) -> None:
    maven = read_maven()
    # The agent outside East (so the East plan does not move) closest under quota in a quarter.
    candidates = [
        (quota(maven, agent) - maven.revenue.get((agent, q), Decimal(0)), agent, q.isoformat())
        for agent, office in maven.region.items()
        if office != "East" and agent != "Anna Snelling"
        for q in QUARTERS
        if Decimal(0) < maven.revenue.get((agent, q), Decimal(0)) < quota(maven, agent)
    ]
    gap, agent, quarter = min(candidates)
    deal = max(
        (d for d in deals(quarter) if d["sales_agent"] == agent), key=lambda d: Decimal(d["close_value"])
    )
    raised = Decimal(deal["close_value"]) + gap + Decimal(1000)
    assert incentive_events(fresh) == 0  # the plans' first computation announced nothing

    with receiving() as receiver:
        subscribe(fresh, receiver, "incentive.*")
        quiet = refresh(fresh)  # nothing changed: nothing crosses
        assert quiet.incentive_events == []
        set_deal(fresh, deal["opportunity_id"], amount=raised)
        done = refresh(fresh)
        assert len(done.incentive_events) == 1
        deliver(fresh)

    (event,) = received(receiver, "incentive.tier_reached")
    assert receiver.types() == ["incentive.tier_reached"]
    base = maven.revenue[agent, date.fromisoformat(quarter)] - Decimal(deal["close_value"]) + raised
    q = quota(maven, agent)
    expected = min(q * Decimal("0.05") + (base - q) * Decimal("0.08"), 2 * q * Decimal("0.05"))
    assert event["plan"] == {"id": "agents-2017", "name": "Agent commission 2017", "period": "quarter"}
    assert (event["period_key"], event["component"]["id"]) == (quarter, "commission")
    assert event["tier"] == {"from": 1, "to": 2}
    assert event["rate"] == "0.08"
    assert event["rep"]["id"] == f"maven:{agent}"
    assert event["rep"]["name"] == agent
    assert [t["id"] for t in event["rep"]["teams"]] == teams_of(agent)
    assert (Decimal(event["base"]), Decimal(event["quota"])) == (base, q)
    assert event["attainment"] == pytest.approx(float(base / q))
    assert Decimal(event["amount"]) == cents(expected)


def test_a_close_announces_the_frozen_lines_once(fresh: Store) -> None:
    maven = read_maven()
    reference = agents_2017(maven)
    with receiving() as receiver:
        subscribe(fresh, receiver, "incentive.period_closed")
        closed = fresh.job().close_incentive_period(
            "agents-2017", Q1, "payroll@maven", ttl=timedelta(minutes=5)
        )
        assert closed.other_events == []  # nothing had changed since the refresh
        deliver(fresh)
    (event,) = received(receiver, "incentive.period_closed")
    assert receiver.accepted[0].message_id == closed.event
    with session_scope(fresh.session_factory) as session:
        frozen = session.scalars(
            select(IncentiveLine).where(
                IncentiveLine.plan_id == "agents-2017", IncentiveLine.period_key == Q1
            )
        ).all()
        assert frozen
        assert all(line.frozen for line in frozen)
        stored = sorted(
            (line.owner_id, line.component_id, line.kind, Decimal(str(line.amount))) for line in frozen
        )
        bases = {(line.owner_id, line.component_id): line.base for line in frozen}
    sent = sorted(
        (x["rep"]["id"], x["component_id"], x["kind"], Decimal(x["amount"])) for x in event["lines"]
    )
    assert sent == stored
    # And they are what the plan pays by the reference.
    assert {(o.removeprefix("maven:"), Q1, c): a for o, c, _, a in sent} == {
        k: v for k, v in reference.items() if k[1] == Q1
    }
    for line in event["lines"]:
        base = bases[line["rep"]["id"], line["component_id"]]
        assert line["base"] == (None if base is None else str(cents(Decimal(str(base)))))
        assert line["rep"]["name"] == line["rep"]["id"].removeprefix("maven:")
    total = sum(a for *_, a in stored)
    assert Decimal(event["totals"]["amount"]) == total
    assert event["totals"]["lines"] == len(stored)
    assert Decimal(event["totals"]["by_component"]["gtk-spiff"]) == sum(
        v for k, v in reference.items() if k[1] == Q1 and k[2] == "gtk-spiff"
    )
    assert (event["period_start"], event["period_end"], event["closed_by"]) == (Q1, Q2, "payroll@maven")


def test_a_closed_quarters_deal_turned_lost_announces_the_clawback(fresh: Store) -> None:
    maven = read_maven()
    before = agents_2017(maven)
    # A won Q1 deal (not a GTK 500: the SPIFF stays) whose loss changes its agent's commission.
    for deal in sorted(deals(Q1), key=lambda d: d["opportunity_id"]):
        agent, amount = deal["sales_agent"], Decimal(deal["close_value"])
        if deal["product"] == "GTK 500" or agent not in maven.region:
            continue
        lost = replace(maven, revenue={**maven.revenue})
        lost.revenue[agent, QUARTERS[0]] -= amount
        after = agents_2017(lost)
        delta = after[agent, Q1, "commission"] - before[agent, Q1, "commission"]
        if delta != 0:
            break
    else:
        pytest.fail("no Q1 deal changes a commission")
    job = fresh.job()
    job.close_incentive_period("agents-2017", Q1, "payroll@maven", ttl=timedelta(minutes=5))
    with receiving() as receiver:
        subscribe(fresh, receiver, "incentive.adjusted")
        set_deal(fresh, deal["opportunity_id"], is_won=False, stage="Lost")
        refresh(fresh)
        again = refresh(fresh)  # the same adjustment again: no second event
        assert again.incentive_events == []
        deliver(fresh)

    (event,) = received(receiver, "incentive.adjusted")
    assert event["plan"]["id"] == "agents-2017"
    assert (event["period_key"], event["for_period_key"]) == (Q2, Q1)  # paid in Q2, corrects Q1
    assert event["rep"]["id"] == f"maven:{agent}"
    assert [t["id"] for t in event["rep"]["teams"]] == teams_of(agent)
    assert event["component"] == {
        "id": "commission",
        "name": "Commission on won revenue",
        "type": "commission",
    }
    assert (event["change"], event["previous_amount"]) == ("new", None)
    assert Decimal(event["amount"]) == delta < 0
    assert Decimal(event["paid"]) == before[agent, Q1, "commission"]
    assert Decimal(event["now"]) == after[agent, Q1, "commission"]
    assert event["note"] == f"clawback for {Q1}"
    (record,) = event["records"]
    assert (record["external_id"], record["change"], record["now"]) == (deal["opportunity_id"], "gone", None)
    assert Decimal(str(record["was"])) == amount


def test_an_alert_on_pace_reminds_the_reps_behind_it_in_the_last_weeks(fresh: Store) -> None:
    rule = AlertRule.model_validate(
        {
            "id": "behind-pace",
            "incentive": {"plan": "agents-2017", "component": "commission"},
            "measure": "pace",
            "scope": "owner",
            "when": {"op": "<", "value": 0.8},
            "days_left": {"op": "<=", "value": 21},
        }
    )
    # A KPI rule with the same window: each rep's quarterly won revenue under 20,000.
    low = AlertRule.model_validate(
        {
            "id": "low-revenue",
            "kpi": "won_revenue",
            "currency": "USD",
            "scope": "owner",
            "grain": "quarter",
            "when": {"op": "<", "value": 20000},
            "days_left": {"op": "<=", "value": 21},
        }
    )
    kpis = fresh.config.kpi_config()
    plans = {plan.id: plan for plan in fresh.config.app.incentives.plans}
    with session_scope(fresh.session_factory) as session:
        lines = {
            line.owner_id: (float(line.base or 0), float(line.quota or 0))
            for line in session.scalars(
                select(IncentiveLine).where(
                    IncentiveLine.plan_id == "agents-2017",
                    IncentiveLine.period_key == Q4,
                    IncentiveLine.component_id == "commission",
                )
            )
        }
    now = datetime(2017, 12, 12, 18, 0, tzinfo=UTC)  # the business calendar is UTC: 20 days left
    start, end = datetime(2017, 10, 1, tzinfo=UTC), datetime(2018, 1, 1, tzinfo=UTC)
    elapsed = (now - start) / (end - start)
    pace = {owner: base / q / elapsed for owner, (base, q) in lines.items()}
    behind = {owner for owner, p in pace.items() if p < 0.8}
    with session_scope(fresh.session_factory) as session:
        revenue = session.execute(
            select(KpiValue.scope_id, KpiValue.value).where(
                KpiValue.kpi_id == "won_revenue",
                KpiValue.grain == "quarter",
                KpiValue.period_key == Q4,
                KpiValue.scope == "owner",
                KpiValue.currency == "USD",
                KpiValue.dimension == "",
            )
        ).all()
    short = {owner for owner, value in revenue if value is not None and value < 20000}
    assert short
    assert 0 < len(behind) < len(lines)  # some ahead, some behind
    assert all(abs(p - 0.8) > 1e-6 for p in pace.values())

    with receiving() as receiver:
        subscribe(fresh, receiver, "alert.*")
        with fresh.engine.begin() as conn:
            early = alerts.evaluate(conn, [rule, low], kpis, now - timedelta(days=22), plans)  # 42 left
        assert early.events == []
        with fresh.engine.begin() as conn:
            fired = alerts.evaluate(conn, [rule, low], kpis, now, plans)
        assert len(fired.events) == len(behind) + len(short)
        with fresh.engine.begin() as conn:
            # The plan's next quarter (past its end: no lines) is outside the last weeks: all clear.
            cleared = alerts.evaluate(conn, [rule, low], kpis, datetime(2018, 1, 2, tzinfo=UTC), plans)
        assert len(cleared.events) == len(behind) + len(short)
        deliver(fresh)

    firing = [event for event in received(receiver, "alert.firing") if event["rule"]["id"] == "behind-pace"]
    assert {event["scope_id"] for event in firing} == behind
    kpi_firing = [
        event for event in received(receiver, "alert.firing") if event["rule"]["id"] == "low-revenue"
    ]
    assert {event["scope_id"] for event in kpi_firing} == short
    assert {event["days_left"] for event in kpi_firing} == {20}
    for event in firing:
        owner = event["scope_id"]
        agent = owner.removeprefix("maven:")
        assert event["value"] == pytest.approx(pace[owner], rel=1e-9)
        assert (event["days_left"], event["period_key"], event["grain"]) == (20, Q4, "quarter")
        assert event["rule"]["incentive"] == {"plan": "agents-2017", "component": "commission"}
        assert event["rep"]["name"] == agent
        assert [t["id"] for t in event["rep"]["teams"]] == teams_of(agent)
        base, q = lines[owner]
        assert event["incentive"]["attainment"] == pytest.approx(base / q, rel=1e-6)
        assert Decimal(event["incentive"]["base"]) == cents(Decimal(repr(base)))
    resolved = [
        event for event in received(receiver, "alert.resolved") if event["rule"]["id"] == "behind-pace"
    ]
    assert {event["scope_id"] for event in resolved} == behind
    assert {event["reason"] for event in resolved} == {"recovered"}


def test_an_incentive_rule_names_a_plan_component_and_measure_that_exist(tmp_path: Path) -> None:
    text = (REPO_ROOT / "config" / "examples" / "maven.yaml").read_text(encoding="utf-8")
    text = text.replace("${CRM_DATA_DIR:-../shared/data}", str(DATA_DIR))
    rules = """
alerts:
  rules:
    - {id: a, incentive: {plan: agents-2018, component: commission}, scope: owner, when: {op: "<", value: 1}}
    - {id: b, incentive: {plan: agents-2017, component: bonus}, scope: owner, when: {op: "<", value: 1}}
    - id: c
      incentive: {plan: agents-2017, component: gtk-spiff}
      measure: pace
      scope: owner
      when: {op: "<", value: 1}
    - {id: d, incentive: {plan: east-2017, component: commission}, measure: projected_payout, scope: owner,
       when: {op: "<", value: 100}, days_left: {op: "<=", value: 21}}
"""
    path = tmp_path / "maven.yaml"
    path.write_text(text + rules, encoding="utf-8")
    with pytest.raises(ConfigIssues) as raised:
        load_config(path, ConnectorRegistry.discover())
    first = len(text.splitlines())
    tails = [issue.render().split(".yaml:", 1)[1] for issue in raised.value.issues]
    assert tails == [
        f"{first + 4}: alerts.rules[0].incentive.plan: unknown incentive plan 'agents-2018' "
        "(defined: agents-2017, east-2017)",
        f"{first + 5}: alerts.rules[1].incentive.component: plan agents-2017 has no component 'bonus' "
        "(components: commission, gtk-spiff)",
        f"{first + 8}: alerts.rules[2].measure: agents-2017 gtk-spiff is a spiff and gives value, not pace",
    ]


def test_rules_written_before_incentive_rules_keep_their_definition_hash() -> None:
    """A rule's hash decides whether its breaches count again: the new fields must not move it."""
    rule = AlertRule.model_validate(
        {
            "id": "rep-win-rate-low",
            "kpi": "win_rate",
            "scope": "owner",
            "grain": "quarter",
            "when": {"op": "<", "value": 0.2},
            "recover": {"op": ">=", "value": 0.25},
            "for": 2,
            "min_sample": 5,
        }
    )
    assert rule.definition_hash() == "64a21b3d8633e9a3"  # as computed before incentive rules existed
    windowed = rule.model_copy(update={"days_left": rule.when.model_copy(update={"value": 21})})
    assert windowed.definition_hash() != rule.definition_hash()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"kpi": "win_rate"}, "name exactly one of kpi, scorecard or incentive"),
        ({"scope": "team"}, "an incentive rule's scope must be owner"),
        ({"grain": "month"}, "an incentive rule watches its plan's periods: leave grain out"),
        ({"period": "previous"}, "period must be current"),
        ({"currency": "USD"}, "an incentive rule takes its plan's currency"),
    ],
)
def test_an_incentive_rule_watches_reps_in_its_plans_current_period(
    extra: dict[str, Any], message: str
) -> None:
    rule = {
        "id": "r",
        "incentive": {"plan": "agents-2017", "component": "commission"},
        "scope": "owner",
        "when": {"op": "<", "value": 1},
    }
    with pytest.raises(ValidationError, match=re.escape(message)):
        AlertRule.model_validate({**rule, **extra})


def test_projected_payout_is_an_incentives_and_days_left_needs_a_period_end() -> None:
    with pytest.raises(ValidationError, match="projected_payout is an incentive's"):
        AlertRule.model_validate(
            {"id": "r", "kpi": "won_deals", "measure": "projected_payout", "when": {"op": "<", "value": 1}}
        )
    with pytest.raises(ValidationError, match="the grain all has no end"):
        AlertRule.model_validate(
            {
                "id": "r",
                "kpi": "won_deals",
                "grain": "all",
                "when": {"op": "<", "value": 1},
                "days_left": {"op": "<=", "value": 21},
            }
        )
