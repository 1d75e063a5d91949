"""Alert rules end to end: synced data, refreshed KPIs, evaluated rules, a real signed receiver.

A breach is announced once (``alert.firing``) and its recovery once (``alert.resolved``),
whatever the number of evaluations in between; ``for`` delays firing, a recovery threshold
keeps a value between the two lines firing, and thin or missing data is no data.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.jobs.refresh import RefreshJob
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.models import AlertState, AlertTransition, WebhookEvent
from crm_perf_sync.webhooks import service as webhooks
from crm_perf_sync.webhooks.delivery import Deliverer, DeliveryOptions
from crm_perf_sync.webhooks.security import Guard
from tests.kpi.store import OWNERS, TEAMS, closed, load
from tests.kpi.test_incremental import sync_more
from tests.webhooks.receiver import Receiver, receiving

AT = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
RULES = """
kpis:
  scorecards:
    - id: reps
      name: Reps
      grains: [month]
      components:
        - {kpi: win_rate, weight: 1.0, normalise: {method: linear, floor: 0, goal: 1}}
alerts:
  rules:
    - id: low-win-rate
      name: Company win rate below 40%
      kpi: win_rate
      grain: all
      when: {op: "<", value: 0.4}
      recover: {op: ">=", value: 0.5}
      for: 2
      severity: critical
    - id: rep-win-rate
      kpi: win_rate
      scope: owner
      grain: all
      when: {op: "<", value: 0.5}
      min_sample: 3
    - id: nordics-deals
      kpi: won_deals
      scope: team
      scope_ids: ["crm:nordics"]
      grain: all
      when: {op: "<", value: 1}
      no_data: breach
"""


def deals(start: int, won: int, lost: int, owner: str = "ana") -> list[Any]:
    out = [closed(start + n, owner, True, AT + timedelta(hours=n)) for n in range(won)]
    out += [closed(start + won + n, owner, False, AT + timedelta(hours=won + n)) for n in range(lost)]
    return out


class World:
    def __init__(self, tmp_path: Path, factory: sessionmaker[Session], receiver: Receiver) -> None:
        self.factory = factory
        self.receiver = receiver
        self.job: RefreshJob = load(
            tmp_path, factory, {"teams": TEAMS, "owners": OWNERS, "opportunities": deals(0, 6, 4)}, RULES
        )
        with session_scope(factory) as session:
            _, secret = webhooks.create_endpoint(
                session,
                webhooks.EndpointSpec(receiver.url, event_types=("alert.*",)),
                Guard(allow=("127.0.0.1",)),
            )
        receiver.secrets.append(secret)
        self.deliverer = Deliverer(factory, Guard(allow=("127.0.0.1",)), "tests", DeliveryOptions(timeout=5))
        self.pages = 0
        self.next_id = 100

    def add(self, won: int, lost: int, owner: str = "ana") -> None:
        """A sync bringing new closed deals, then a refresh (which evaluates the rules)."""
        sync_more(
            self.factory, {"opportunities": [*([[]] * self.pages), deals(self.next_id, won, lost, owner)]}
        )
        self.pages += 1
        self.next_id += won + lost
        self.job.refresh()
        self.deliver()

    def evaluate(self) -> None:
        """An evaluation with nothing new (the worker's every-minute check)."""
        self.job.evaluate_alerts()
        self.deliver()

    def deliver(self) -> None:
        while self.deliverer.run_once():
            pass

    def state(self, rule: str, scope_id: str = "company") -> Any:
        with session_scope(self.factory) as session:
            return session.scalars(
                select(AlertState).where(AlertState.rule_id == rule, AlertState.scope_id == scope_id)
            ).one()

    def events(self, rule: str) -> list[tuple[str, str]]:
        return [
            (r.payload["type"], r.payload["data"]["scope_id"])
            for r in self.receiver.accepted
            if r.payload["data"]["rule"]["id"] == rule
        ]


@pytest.fixture
def world(tmp_path: Path, session_factory: sessionmaker[Session]) -> Any:
    with receiving() as receiver:
        found = World(tmp_path, session_factory, receiver)
        found.job.refresh()
        found.deliver()
        yield found
        found.deliverer.close()


def test_a_breach_fires_once_and_its_recovery_resolves_once(world: World) -> None:
    assert world.state("low-win-rate").state == "ok"  # 6 of 10 won
    world.add(won=0, lost=4)  # 6 of 14: 0.43, above the line
    assert world.state("low-win-rate").state == "ok"
    world.add(won=0, lost=2)  # 6 of 16: 0.375, a first breach
    first = world.state("low-win-rate")
    assert (first.state, first.breaches, first.outcome) == ("pending", 1, "breach")
    assert world.events("low-win-rate") == []  # for: 2
    world.evaluate()  # the second breach in a row
    assert world.state("low-win-rate").state == "firing"
    for _ in range(3):
        world.evaluate()  # still breaching: nothing new to say
    assert world.events("low-win-rate") == [("alert.firing", "company")]
    world.add(won=2, lost=0)  # 8 of 18: 0.44, back above 0.4 but below the 0.5 recovery line
    assert world.state("low-win-rate").state == "firing"
    world.add(won=4, lost=0)  # 12 of 22: 0.545, recovered
    assert world.state("low-win-rate").state == "resolved"
    world.evaluate()
    assert world.state("low-win-rate").state == "ok"
    assert world.events("low-win-rate") == [("alert.firing", "company"), ("alert.resolved", "company")]
    firing, resolved = (
        r for r in world.receiver.accepted if r.payload["data"]["rule"]["id"] == "low-win-rate"
    )
    assert firing.payload["data"]["value"] == pytest.approx(6 / 16)
    assert firing.payload["data"]["threshold"] == 0.4
    assert firing.payload["data"]["rule"]["severity"] == "critical"
    assert firing.payload["data"]["links"]["explain"].startswith("/api/v1/kpis/win_rate/explain?grain=all")
    assert resolved.payload["data"]["value"] == pytest.approx(12 / 22)
    assert resolved.payload["data"]["threshold"] == 0.5
    assert firing.message_id != resolved.message_id
    assert world.receiver.rejected == []
    with session_scope(world.factory) as session:
        path = [
            (t.from_state, t.to_state)
            for t in session.scalars(
                select(AlertTransition)
                .where(AlertTransition.rule_id == "low-win-rate")
                .order_by(AlertTransition.id)
            )
        ]
    assert path == [("ok", "pending"), ("pending", "firing"), ("firing", "resolved"), ("resolved", "ok")]


def test_a_rep_with_too_few_deals_is_no_data(world: World) -> None:
    world.add(won=0, lost=2, owner="bo")  # bo: 0 of 2, below the line but below the minimum sample
    bo = world.state("rep-win-rate", "crm:bo")
    assert (bo.state, bo.outcome) == ("ok", "low_sample")
    world.add(won=0, lost=1, owner="bo")  # 0 of 3: enough to judge
    assert world.state("rep-win-rate", "crm:bo").state == "firing"
    assert world.events("rep-win-rate") == [("alert.firing", "crm:bo")]
    assert world.state("rep-win-rate", "crm:ana").state == "ok"  # 6 of 10


def test_no_data_is_its_own_outcome(world: World) -> None:
    # Nobody in the Nordics team (cy) has won a deal: no value at all, which this rule treats
    # as a breach (a team that sells nothing is what it is there to catch).
    nordics = world.state("nordics-deals", "crm:nordics")
    assert (nordics.state, nordics.outcome) == ("firing", "no_data")
    assert world.events("nordics-deals") == [("alert.firing", "crm:nordics")]
    world.add(won=1, lost=0, owner="cy")
    assert world.state("nordics-deals", "crm:nordics").state == "resolved"


def test_evaluations_from_two_workers_announce_a_breach_once(world: World) -> None:
    world.add(won=0, lost=6)  # 6 of 16 → pending
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def evaluate() -> None:
        try:
            barrier.wait()
            world.job.evaluate_alerts_exclusive(ttl=timedelta(minutes=1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=evaluate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    world.evaluate()
    world.evaluate()
    with session_scope(world.factory) as session:
        firing = session.scalars(
            select(WebhookEvent).where(
                WebhookEvent.type == "alert.firing", WebhookEvent.rule_id == "low-win-rate"
            )
        ).all()
    assert len(firing) == 1
    assert world.events("low-win-rate") == [("alert.firing", "company")]


def test_a_finished_periods_scorecard_is_published_once(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    with receiving() as receiver:
        world = World(tmp_path, session_factory, receiver)
        with session_scope(session_factory) as session:
            _, secret = webhooks.create_endpoint(
                session,
                webhooks.EndpointSpec(receiver.url, event_types=("score.published",)),
                Guard(allow=("127.0.0.1",)),
            )
        receiver.secrets.append(secret)
        try:
            from crm_perf_sync.alerts import service as alerts

            april = datetime(2024, 4, 2, tzinfo=UTC)  # March 2024 is over
            world.job.refresh()
            for _ in range(2):
                engine = session_factory.kw["bind"]
                with engine.begin() as conn:
                    alerts.evaluate(conn, world.job.config.app.alerts.rules, world.job.service.config, april)
                world.deliver()
        finally:
            world.deliverer.close()
    published = [r.payload for r in receiver.accepted if r.payload["type"] == "score.published"]
    assert len(published) == 1
    data = published[0]["data"]
    assert (data["scorecard"]["id"], data["grain"], data["period_key"]) == ("reps", "month", "2024-03-01")
    assert data["top"][0]["scope_id"] == "crm:ana"
    assert data["top"][0]["rank"] == 1
