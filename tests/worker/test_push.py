"""A change HubSpot pushes reaches the numbers: verified, kept in the inbox, fetched by id, refreshed.

The HubSpot emulator serves the portal; a deal is won there, and the push HubSpot would send is
posted, signed, to the ingest endpoint. The worker's inbox job then fetches that deal (and only
it) and refreshes the KPIs, so the company's won deals move by one without any scheduled sync.
When the fetch keeps failing, the change is parked with the error after the last attempt.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from crm_perf_sync.api.app import create_app
from crm_perf_sync.apikeys import service as keys
from crm_perf_sync.config import load_config
from crm_perf_sync.jobs import ingest
from crm_perf_sync.jobs.ingest import Backoff
from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
from crm_perf_sync.kit.metrics import PROCESS
from crm_perf_sync.kit.settings import Settings
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.models import IngestEvent
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.runtime import Runtime
from crm_perf_sync.worker.scheduler import purge_inbox, refresh_kpis, run_inbox
from tests.connectors.hubspot.emulator import HubSpotEmulator
from tests.connectors.hubspot.portal import small_portal
from tests.connectors.hubspot.pushes import event, pushing_config, signed
from tests.worker.stored import sync_runs, won_deals

SECRET = "hs-app-secret-worker"
PORTAL = 5550001


@dataclass
class Pushed:
    runtime: Runtime
    client: TestClient
    emulator: HubSpotEmulator
    read: dict[str, str]

    def push(self, events: list[dict[str, Any]]) -> Any:
        body = json.dumps(events).encode()
        url = "http://testserver/api/v1/ingest/hs"
        answer = self.client.post("/api/v1/ingest/hs", content=body, headers=signed(body, url, secret=SECRET))
        assert answer.status_code == 200, answer.text
        return answer.json()

    def won_deals(self) -> float:
        return won_deals(self.runtime.session_factory)

    def inbox(self) -> list[tuple[str, str, str, int]]:
        with session_scope(self.runtime.session_factory) as session:
            rows = session.execute(
                select(
                    IngestEvent.stream, IngestEvent.external_id, IngestEvent.status, IngestEvent.attempts
                ).order_by(IngestEvent.id)
            ).all()
        return [tuple(row) for row in rows]  # type: ignore[misc]

    def runs(self) -> list[tuple[str, str]]:
        return sync_runs(self.runtime.session_factory)


@pytest.fixture
def pushed(db_url: str, tmp_path: Path) -> Iterator[Pushed]:
    with HubSpotEmulator(small_portal()) as emulator:
        path = pushing_config(
            tmp_path / "config.yaml", emulator, portal=PORTAL, secret=SECRET, max_attempts=1
        )
        registry = ConnectorRegistry.discover()
        loaded = load_config(path, registry)
        engine = create_db_engine(db_url)
        # A failing fetch is retried once within a run, without waiting.
        settings = Settings(sync_max_retries=1, sync_retry_base_seconds=0.0, sync_retry_max_seconds=0.0)
        runtime = Runtime(settings, engine, make_session_factory(engine), registry, loaded)
        with session_scope(runtime.session_factory) as session:
            _, read = keys.create(session, "tests (read)", "read")
        service = runtime.sync_service()
        service.apply_config()
        assert service.sync("hs").status == "succeeded"
        refresh_kpis(runtime, threading.Event(), reason="the first load")
        client = TestClient(create_app(engine, loaded))
        try:
            yield Pushed(runtime, client, emulator, {"Authorization": f"Bearer {read}"})
        finally:
            client.app.state.context.chores.shutdown(wait=True)  # type: ignore[attr-defined]
            engine.dispose()


def lag_count() -> float:
    value = PROCESS.get_sample_value("crm_perf_sync_ingest_lag_seconds_count", {"connection": "hs"})
    return value or 0.0


def test_a_deal_won_in_hubspot_moves_the_numbers_through_the_push_alone(pushed: Pushed) -> None:
    before = pushed.won_deals()
    runs_before = pushed.runs()
    lags_before = lag_count()
    now = utc_now().strftime("%Y-%m-%dT%H:%M:%S.000Z")
    pushed.emulator.portal.update(
        "deals", 9003, {"dealstage": "closedwon", "amount": "9100.00", "closedate": now}
    )
    receipt = pushed.push(
        [
            event(
                "deal.propertyChange",
                9003,
                portal=PORTAL,
                propertyName="dealstage",
                propertyValue="closedwon",
            )
        ]
    )
    assert receipt["accepted"] == 2  # the deal and its stage history
    assert pushed.won_deals() == before  # not before the worker fetched it

    run_inbox(pushed.runtime, threading.Event())

    assert pushed.won_deals() == before + 1
    assert [row[:3] for row in pushed.inbox()] == [
        ("opportunities", "9003", "done"),
        ("stage_changes", "9003", "done"),
    ]
    assert pushed.runs()[len(runs_before) :] == [("push", "succeeded")]
    assert lag_count() == lags_before + 2
    # Nothing waits: the next turn fetches nothing and runs no sync.
    run_inbox(pushed.runtime, threading.Event())
    assert pushed.runs()[len(runs_before) :] == [("push", "succeeded")]


def test_a_change_that_cannot_be_fetched_is_parked_with_the_error_after_the_last_attempt(
    pushed: Pushed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "MAX_ATTEMPTS", 2)
    # Each run tries twice (one retry): two runs, four failures.
    pushed.emulator.fail("/crm/v3/objects/deals/batch/read", 500, times=4)
    pushed.push([event("deal.propertyChange", 9006, portal=PORTAL)])

    run_inbox(pushed.runtime, threading.Event())
    assert [row[2:] for row in pushed.inbox()] == [("pending", 1), ("pending", 1)]
    run_inbox(pushed.runtime, threading.Event())
    assert [row[2:] for row in pushed.inbox()] == [("parked", 2), ("parked", 2)]
    with session_scope(pushed.runtime.session_factory) as session:
        errors = session.execute(select(IngestEvent.last_error)).scalars().all()
    assert all("500" in (error or "") for error in errors), errors
    # Parked, it is no longer fetched: no further run.
    runs = pushed.runs()
    run_inbox(pushed.runtime, threading.Event())
    assert pushed.runs() == runs


def test_done_changes_are_forgotten_after_the_retention_and_waiting_ones_never(pushed: Pushed) -> None:
    pushed.push([event("deal.propertyChange", 9001, portal=PORTAL)])
    run_inbox(pushed.runtime, threading.Event())
    pushed.push([event("deal.propertyChange", 9002, portal=PORTAL)])  # waits: no turn yet
    with session_scope(pushed.runtime.session_factory) as session:
        processed = session.execute(
            select(func.max(IngestEvent.processed_at)).where(IngestEvent.status == "done")
        ).scalar_one()
    assert processed is not None
    assert purge_inbox(pushed.runtime, processed) == 0  # none done before that moment
    assert purge_inbox(pushed.runtime, processed + timedelta(seconds=1)) == 2
    assert [row[:3] for row in pushed.inbox()] == [
        ("opportunities", "9002", "pending"),
        ("stage_changes", "9002", "pending"),
    ]


def test_a_connection_whose_fetch_failed_is_tried_again_only_after_a_growing_wait(pushed: Pushed) -> None:
    """A CRM down for a moment must not have its changes parked within seconds: the inbox loop
    waits 5 s after a failed fetch, then 10 s, 20 s... before trying the connection again."""
    pushed.emulator.fail("/crm/v3/objects/deals/batch/read", 500, times=100)
    pushed.push([event("deal.propertyChange", 9006, portal=PORTAL)])
    moment = [utc_now()]
    backoff = Backoff(clock=lambda: moment[0])

    def attempts() -> list[int]:
        return [row[3] for row in pushed.inbox()]

    run_inbox(pushed.runtime, threading.Event(), backoff)
    assert attempts() == [1, 1]
    run_inbox(pushed.runtime, threading.Event(), backoff)  # at once: not tried again
    assert attempts() == [1, 1]
    moment[0] += timedelta(seconds=5)
    run_inbox(pushed.runtime, threading.Event(), backoff)
    assert attempts() == [2, 2]
    moment[0] += timedelta(seconds=5)  # the wait has doubled: not yet
    run_inbox(pushed.runtime, threading.Event(), backoff)
    assert attempts() == [2, 2]
    moment[0] += timedelta(seconds=5)
    run_inbox(pushed.runtime, threading.Event(), backoff)
    assert attempts() == [3, 3]
    # Once a fetch succeeds, the connection is tried at every turn again.
    pushed.emulator.faults.clear()
    moment[0] += timedelta(seconds=20)
    run_inbox(pushed.runtime, threading.Event(), backoff)
    assert [row[2] for row in pushed.inbox()] == ["done", "done"]
    pushed.push([event("deal.propertyChange", 9006, portal=PORTAL)])
    run_inbox(pushed.runtime, threading.Event(), backoff)
    assert [row[2] for row in pushed.inbox()] == ["done"] * 4
