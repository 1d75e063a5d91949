"""Alert rules removed or changed while they fire, and endpoints added while alerts fire.

A consumer opens an incident on ``alert.firing`` and closes it on ``alert.resolved``: whatever
happens to the rule in between (removed from the configuration, narrowed to other scopes, given
another threshold), every incident it opened is closed once, with the reason, and an endpoint
added later can be sent the incidents open now.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.api.app import create_app
from crm_perf_sync.apikeys import service as keys
from crm_perf_sync.config import load_config
from crm_perf_sync.jobs.refresh import RefreshJob
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.models import AlertState, AlertTransition, WebhookEvent
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.webhooks import service as webhooks
from crm_perf_sync.webhooks.security import Guard
from tests.alerts.test_rules import RULES, World
from tests.sync.scripted import ScriptedConnector
from tests.webhooks.receiver import Receiver, receiving

LOCAL = Guard(allow=("127.0.0.1",))
SCORECARD = RULES[: RULES.index("alerts:")]
LOW_WIN_RATE = """
    - id: low-win-rate
      name: Company win rate below 40%
      kpi: win_rate
      grain: all
      when: {op: "<", value: 0.4}
      recover: {op: ">=", value: 0.5}
      for: 2
      severity: critical
"""
REP_WIN_RATE = """
    - id: rep-win-rate
      kpi: win_rate
      scope: owner
      grain: all
      when: {op: "<", value: 0.5}
      min_sample: 3
"""
NORDICS_DEALS = """
    - id: nordics-deals
      kpi: won_deals
      scope: team
      scope_ids: ["crm:nordics"]
      grain: all
      when: {op: "<", value: 1}
      no_data: breach
"""


def rules(*blocks: str) -> str:
    return SCORECARD + "alerts:\n  rules:" + "".join("\n" + block.strip("\n") for block in blocks) + "\n"


def test_the_rule_blocks_are_the_rules_of_the_world() -> None:
    assert rules(LOW_WIN_RATE, REP_WIN_RATE, NORDICS_DEALS).strip() == RULES.strip()


def reconfigure(world: World, tmp_path: Path, config: str) -> None:
    """The service restarted on another configuration (the store stays)."""
    path = tmp_path / "config.yaml"
    path.write_text("connections:\n  - {id: crm, kind: scripted}\n" + config)
    loaded = load_config(path, ConnectorRegistry(connectors={"scripted": ScriptedConnector}), {})
    world.job = RefreshJob(world.factory, loaded)


def outbox(world: World, event_type: str, rule: str | None = None) -> list[WebhookEvent]:
    with session_scope(world.factory) as session:
        stmt = select(WebhookEvent).where(WebhookEvent.type == event_type).order_by(WebhookEvent.id)
        if rule is not None:
            stmt = stmt.where(WebhookEvent.rule_id == rule)
        return list(session.scalars(stmt))


def states(world: World, rule: str) -> dict[str, str]:
    with session_scope(world.factory) as session:
        found = session.scalars(select(AlertState).where(AlertState.rule_id == rule))
        return {s.scope_id: s.state for s in found}


def history(world: World, rule: str) -> list[tuple[str, str, str, str | None]]:
    with session_scope(world.factory) as session:
        rows = session.scalars(
            select(AlertTransition).where(AlertTransition.rule_id == rule).order_by(AlertTransition.id)
        )
        return [(t.scope_id, t.from_state, t.to_state, t.reason) for t in rows]


@pytest.fixture
def world(tmp_path: Path, session_factory: sessionmaker[Session]) -> Iterator[World]:
    with receiving() as receiver:
        found = World(tmp_path, session_factory, receiver)
        found.job.refresh()
        found.deliver()
        yield found
        found.deliverer.close()


def firing_reps(world: World) -> None:
    """bo and di lose three deals each: both breach rep-win-rate (0 of 3) and the company's win
    rate falls to 6 of 16, a first breach of low-win-rate (pending: it needs two)."""
    world.add(won=0, lost=3, owner="bo")
    world.add(won=0, lost=3, owner="di")
    assert states(world, "rep-win-rate") == {"crm:ana": "ok", "crm:bo": "firing", "crm:di": "firing"}
    assert states(world, "low-win-rate") == {"company": "pending"}
    assert states(world, "nordics-deals") == {"crm:nordics": "firing"}


def test_a_removed_rule_resolves_each_alert_it_fired_once(world: World, tmp_path: Path) -> None:
    firing_reps(world)
    fired = {e.payload["data"]["scope_id"]: e for e in outbox(world, "alert.firing", "rep-win-rate")}
    assert set(fired) == {"crm:bo", "crm:di"}

    reconfigure(world, tmp_path, rules(NORDICS_DEALS))
    world.evaluate()

    resolved = outbox(world, "alert.resolved")
    assert sorted(e.payload["data"]["scope_id"] for e in resolved) == ["crm:bo", "crm:di"]
    for event in resolved:
        data = event.payload["data"]
        assert event.rule_id == "rep-win-rate"
        assert event.severity == "warning"  # routed like the alert.firing it closes
        assert data["reason"] == "rule_removed"
        assert (data["state"], data["previous_state"]) == ("resolved", "firing")
        assert data["value"] == 0.0  # the last value known: 0 of 3 won
        assert data["outcome"] == "breach"
        assert data["threshold"] == 0.5
        assert data["rule"] == fired[data["scope_id"]].payload["data"]["rule"]
        assert data["scope_name"] == {"crm:bo": "Bo", "crm:di": "Di"}[data["scope_id"]]
        assert data["period_key"] == "all"
        assert data["links"] == fired[data["scope_id"]].payload["data"]["links"]
    # The receiver verified the signatures (standardwebhooks) and got each once.
    assert sorted(world.events("rep-win-rate")) == [
        ("alert.firing", "crm:bo"),
        ("alert.firing", "crm:di"),
        ("alert.resolved", "crm:bo"),
        ("alert.resolved", "crm:di"),
    ]
    assert world.receiver.rejected == []
    # A pending alert never announced itself: it goes without an event.
    assert outbox(world, "alert.firing", "low-win-rate") == []
    assert states(world, "rep-win-rate") == {}
    assert states(world, "low-win-rate") == {}
    assert states(world, "nordics-deals") == {"crm:nordics": "firing"}
    # The history keeps every change, with why the last one happened.
    assert sorted(history(world, "rep-win-rate")) == [
        ("crm:bo", "firing", "resolved", "rule_removed"),
        ("crm:bo", "ok", "firing", None),
        ("crm:di", "firing", "resolved", "rule_removed"),
        ("crm:di", "ok", "firing", None),
    ]
    assert history(world, "low-win-rate") == [
        ("company", "ok", "pending", None),
        ("company", "pending", "ok", "rule_removed"),
    ]

    world.evaluate()
    world.job.refresh()
    world.deliver()
    assert len(outbox(world, "alert.resolved")) == 2
    assert len(world.events("rep-win-rate")) == 4


def test_removing_the_last_rule_resolves_its_alerts_at_the_next_refresh(world: World, tmp_path: Path) -> None:
    reconfigure(world, tmp_path, "")  # no alerts section and no scorecard left at all
    world.job.refresh()
    world.deliver()
    (resolved,) = outbox(world, "alert.resolved")
    assert resolved.payload["data"]["scope_id"] == "crm:nordics"
    assert resolved.payload["data"]["reason"] == "rule_removed"
    assert resolved.payload["data"]["outcome"] == "no_data"
    assert resolved.payload["data"]["value"] is None
    assert world.events("nordics-deals") == [
        ("alert.firing", "crm:nordics"),
        ("alert.resolved", "crm:nordics"),
    ]
    assert states(world, "nordics-deals") == {}


def test_the_history_api_says_why_an_alert_was_resolved(world: World, tmp_path: Path) -> None:
    reconfigure(world, tmp_path, rules(LOW_WIN_RATE, REP_WIN_RATE))
    world.evaluate()
    with session_scope(world.factory) as session:
        _, key = keys.create(session, "tests", "read")
    client = TestClient(create_app(world.factory.kw["bind"], world.job.config, LOCAL))
    found = client.get(
        "/api/v1/alerts/history?rule=nordics-deals", headers={"Authorization": f"Bearer {key}"}
    ).json()["data"]
    assert [(h["from_state"], h["to_state"], h["reason"]) for h in found] == [
        ("firing", "resolved", "rule_removed"),
        ("ok", "firing", None),
    ]


def test_a_rule_narrowed_to_other_scopes_resolves_the_scopes_it_left(world: World, tmp_path: Path) -> None:
    reconfigure(world, tmp_path, rules(NORDICS_DEALS.replace("crm:nordics", "crm:dach")))
    world.evaluate()
    (resolved,) = outbox(world, "alert.resolved")
    assert (resolved.payload["data"]["scope_id"], resolved.payload["data"]["reason"]) == (
        "crm:nordics",
        "scope_removed",
    )
    assert states(world, "nordics-deals") == {"crm:dach": "ok"}  # 6 deals won in DACH
    assert history(world, "nordics-deals") == [
        ("crm:nordics", "ok", "firing", None),
        ("crm:nordics", "firing", "resolved", "scope_removed"),
    ]
    world.evaluate()
    assert len(outbox(world, "alert.resolved")) == 1


def test_a_rule_changed_while_firing_resolves_if_the_new_rule_sees_no_breach(
    world: World, tmp_path: Path
) -> None:
    # Nobody in the Nordics won a deal: no data, which this rule called a breach; now it does not.
    reconfigure(world, tmp_path, rules(NORDICS_DEALS.replace("no_data: breach", "no_data: clear")))
    world.evaluate()
    (resolved,) = outbox(world, "alert.resolved")
    data = resolved.payload["data"]
    assert (data["scope_id"], data["reason"], data["outcome"]) == ("crm:nordics", "rule_changed", "no_data")
    assert states(world, "nordics-deals") == {"crm:nordics": "resolved"}
    world.evaluate()
    assert states(world, "nordics-deals") == {"crm:nordics": "ok"}
    assert history(world, "nordics-deals") == [
        ("crm:nordics", "ok", "firing", None),
        ("crm:nordics", "firing", "resolved", "rule_changed"),
        ("crm:nordics", "resolved", "ok", None),
    ]
    assert len(outbox(world, "alert.resolved")) == 1


def test_a_rule_changed_while_firing_stays_firing_while_the_new_rule_sees_a_breach(
    world: World, tmp_path: Path
) -> None:
    firing_reps(world)
    before = {s: world.state("rep-win-rate", s) for s in ("crm:bo", "crm:di")}
    # A lower line, a new name and severity: bo and di (0 of 3) are still below it.
    lower = REP_WIN_RATE.replace("0.5}", "0.3}") + "      name: Reps below 30%\n      severity: critical\n"
    reconfigure(world, tmp_path, rules(lower))
    world.evaluate()
    for scope_id, was in before.items():
        now = world.state("rep-win-rate", scope_id)
        assert (now.state, now.threshold, now.since) == ("firing", 0.3, was.since)  # the same breach
    assert len(outbox(world, "alert.firing", "rep-win-rate")) == 2  # not announced again
    assert outbox(world, "alert.resolved", "rep-win-rate") == []
    # The recovery is judged by the new rule and announced with its severity.
    world.add(won=2, lost=0, owner="bo")  # 2 of 5: 0.4, above the new line (not the old one)
    (resolved,) = outbox(world, "alert.resolved", "rep-win-rate")
    assert (resolved.payload["data"]["scope_id"], resolved.payload["data"]["reason"]) == (
        "crm:bo",
        "recovered",
    )
    assert (resolved.severity, resolved.payload["data"]["threshold"]) == ("critical", 0.3)
    assert resolved.payload["data"]["rule"]["name"] == "Reps below 30%"


def test_a_pending_rule_changed_counts_its_breaches_again_without_a_phantom_transition(
    world: World, tmp_path: Path
) -> None:
    firing_reps(world)  # low-win-rate pending: one breach of the two it needs
    reconfigure(world, tmp_path, rules(LOW_WIN_RATE.replace("for: 2", "for: 3"), REP_WIN_RATE, NORDICS_DEALS))
    world.evaluate()  # counted again from this evaluation: 1 of 3
    assert (world.state("low-win-rate").state, world.state("low-win-rate").breaches) == ("pending", 1)
    world.evaluate()
    assert world.state("low-win-rate").state == "pending"
    world.evaluate()
    assert world.state("low-win-rate").state == "firing"
    assert history(world, "low-win-rate") == [
        ("company", "ok", "pending", None),
        ("company", "pending", "firing", None),
    ]
    assert len(outbox(world, "alert.firing", "low-win-rate")) == 1


def test_a_pending_rule_changed_to_see_no_breach_records_the_return_to_ok(
    world: World, tmp_path: Path
) -> None:
    firing_reps(world)  # company at 6 of 16, 0.375
    reconfigure(world, tmp_path, rules(LOW_WIN_RATE.replace("value: 0.4}", "value: 0.3}"), NORDICS_DEALS))
    world.evaluate()
    assert world.state("low-win-rate").state == "ok"
    assert history(world, "low-win-rate") == [
        ("company", "ok", "pending", None),
        ("company", "pending", "ok", "rule_changed"),
    ]
    assert outbox(world, "alert.firing", "low-win-rate") == []
    assert outbox(world, "alert.resolved", "low-win-rate") == []


@pytest.fixture
def second() -> Iterator[Receiver]:
    with receiving() as found:
        yield found


def add_endpoint(world: World, receiver: Receiver, *, send_firing: bool, **spec: Any) -> int:
    with session_scope(world.factory) as session:
        row, secret = webhooks.create_endpoint(
            session, webhooks.EndpointSpec(receiver.url, **spec), LOCAL, send_firing=send_firing
        )
        endpoint_id = row.id
    receiver.secrets.append(secret)
    return endpoint_id


def test_an_endpoint_added_while_alerts_fire_is_sent_them_with_their_webhook_ids(
    world: World, second: Receiver
) -> None:
    firing_reps(world)
    add_endpoint(world, second, send_firing=True, event_types=("alert.*",))
    world.deliver()
    assert second.accepted == []  # sent by the next evaluation, with the states it reads
    world.evaluate()  # which also finds low-win-rate's second breach in a row: it fires
    first = {
        (r.payload["data"]["rule"]["id"], r.payload["data"]["scope_id"]): r for r in world.receiver.accepted
    }
    got = {(r.payload["data"]["rule"]["id"], r.payload["data"]["scope_id"]): r for r in second.accepted}
    assert set(got) == {
        ("rep-win-rate", "crm:bo"),
        ("rep-win-rate", "crm:di"),
        ("nordics-deals", "crm:nordics"),
        ("low-win-rate", "company"),
    }
    for key, received in got.items():
        assert received.payload["type"] == "alert.firing"
        assert received.message_id == first[key].message_id  # the event itself: deduplicated by id
        assert received.payload == first[key].payload
    assert second.rejected == []
    world.evaluate()  # sent once
    assert len(second.accepted) == 4
    # Later changes reach it like any subscriber.
    world.add(won=3, lost=0, owner="bo")  # bo: 3 of 6, recovered
    assert [(r.payload["type"], r.payload["data"]["scope_id"]) for r in second.accepted[4:]] == [
        ("alert.resolved", "crm:bo")
    ]


def test_the_firing_set_respects_the_endpoints_filters(world: World, second: Receiver) -> None:
    firing_reps(world)
    add_endpoint(world, second, send_firing=True, event_types=("alert.*",), rule_ids=("nordics-deals",))
    world.evaluate()
    assert [(r.payload["type"], r.payload["data"]["scope_id"]) for r in second.accepted] == [
        ("alert.firing", "crm:nordics")
    ]


def test_without_the_option_an_endpoint_gets_only_what_happens_next(world: World, second: Receiver) -> None:
    firing_reps(world)
    add_endpoint(world, second, send_firing=False, event_types=("alert.*",))
    world.evaluate()
    assert [(r.payload["type"], r.payload["data"]["scope_id"]) for r in second.accepted] == [
        ("alert.firing", "company")
    ]


def test_replaying_the_firing_set_sends_the_alerts_firing_now(world: World, second: Receiver) -> None:
    endpoint_id = add_endpoint(world, second, send_firing=False, event_types=("alert.firing",))
    firing_reps(world)
    world.add(won=3, lost=0, owner="di")  # di: 3 of 6, recovered
    assert sorted(r.payload["data"]["scope_id"] for r in second.accepted) == ["crm:bo", "crm:di"]
    sent = {r.payload["data"]["scope_id"]: r.message_id for r in second.accepted}
    with session_scope(world.factory) as session:
        webhooks.request_firing(session, endpoint_id)
    world.evaluate()
    replayed = {r.payload["data"]["scope_id"]: r.message_id for r in second.accepted[2:]}
    assert set(replayed) == {"crm:bo", "crm:nordics"}  # what fires now, not what fired once
    assert replayed["crm:bo"] == sent["crm:bo"]
    (nordics,) = outbox(world, "alert.firing", "nordics-deals")
    assert replayed["crm:nordics"] == nordics.message_id
    world.evaluate()
    assert len(second.accepted) == 4


def test_a_state_fired_before_its_webhook_id_was_kept_is_found_in_the_outbox(
    world: World, tmp_path: Path
) -> None:
    firing_reps(world)
    with session_scope(world.factory) as session:
        session.execute(update(AlertState).values(message_id=None))
    reconfigure(world, tmp_path, rules(NORDICS_DEALS))
    world.evaluate()
    resolved = outbox(world, "alert.resolved")
    assert sorted(e.payload["data"]["scope_id"] for e in resolved) == ["crm:bo", "crm:di"]
    assert all(e.payload["data"]["rule"]["id"] == "rep-win-rate" for e in resolved)
    assert all(e.payload["data"]["scope_name"] in ("Bo", "Di") for e in resolved)


def test_a_removed_rule_within_a_rolled_back_evaluation_announces_nothing(
    world: World, tmp_path: Path
) -> None:
    from crm_perf_sync.alerts import service as alerts

    firing_reps(world)
    reconfigure(world, tmp_path, rules(NORDICS_DEALS))
    engine = world.factory.kw["bind"]
    with engine.connect() as conn, conn.begin() as transaction:
        evaluation = alerts.evaluate(
            conn,
            world.job.config.app.alerts.rules,
            world.job.service.config,
            world.state("rep-win-rate", "crm:bo").since + timedelta(minutes=1),
        )
        assert len(evaluation.events) == 2
        transaction.rollback()
    assert outbox(world, "alert.resolved") == []
    assert states(world, "rep-win-rate") == {"crm:ana": "ok", "crm:bo": "firing", "crm:di": "firing"}
