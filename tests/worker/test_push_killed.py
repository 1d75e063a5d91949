"""A worker killed in the middle of a burst of pushes loses nothing and stores nothing twice.

HubSpot (its emulator) changes 400 deals in eight rounds and pushes each round, signed, to the
API; a real worker process fetches them from the inbox as they come and is killed (SIGKILL) while
one of its targeted syncs runs. A second worker takes the connection's lease over once the first
one's has expired and fetches what is left: every deal then holds HubSpot's last amount, each
once, and every pushed change is done, none parked or waiting.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from crm_perf_sync.api.app import create_app
from crm_perf_sync.config import load_config
from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
from crm_perf_sync.kit.settings import Settings
from crm_perf_sync.models import IngestEvent, Opportunity, SyncRun
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.runtime import Runtime
from tests.connectors.hubspot.emulator import HubSpotEmulator
from tests.connectors.hubspot.portal import small_portal
from tests.connectors.hubspot.pushes import event, pushing_config, signed
from tests.processes import freeze_when

SECRET = "hs-app-secret-burst"
PORTAL = 5550002
DEALS = 400
ROUNDS = 8
#: The lease a killed worker leaves behind expires this soon, so the test does not wait long.
LEASE_TTL = "4"


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def emulator() -> Iterator[HubSpotEmulator]:
    portal = small_portal()
    for i in range(DEALS):
        portal.create(
            "deals",
            {
                "dealname": f"Burst {i}",
                "dealstage": "qualifiedtobuy",
                "amount": "1000",
                "pipeline": "default",
            },
            id=50_000 + i,
        )
    with HubSpotEmulator(portal) as running:
        yield running


def test_a_worker_killed_mid_burst_loses_no_pushed_change_and_stores_none_twice(
    db_url: str, tmp_path: Path, emulator: HubSpotEmulator
) -> None:
    path = pushing_config(tmp_path / "crm-perf-sync.yaml", emulator, portal=PORTAL, secret=SECRET)
    registry = ConnectorRegistry.discover()
    loaded = load_config(path, registry)
    engine = create_db_engine(db_url)
    factory = make_session_factory(engine)
    runtime = Runtime(Settings(), engine, factory, registry, loaded)
    service = runtime.sync_service()
    service.apply_config()
    assert service.sync("hs").status == "succeeded"
    client = TestClient(create_app(engine, loaded))

    def push_round(round_no: int) -> None:
        ids = range(50_000 + round_no * (DEALS // ROUNDS), 50_000 + (round_no + 1) * (DEALS // ROUNDS))
        for deal in ids:
            emulator.portal.update("deals", deal, {"amount": str(2000 + round_no * 10 + deal % 7)})
        events = [event("deal.propertyChange", deal, portal=PORTAL, propertyName="amount") for deal in ids]
        body = json.dumps(events).encode()
        url = "http://testserver/api/v1/ingest/hs"
        answer = client.post("/api/v1/ingest/hs", content=body, headers=signed(body, url, secret=SECRET))
        assert answer.status_code == 200, answer.text

    def start_worker(n: int) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "CRM_PERF_SYNC_DATABASE_URL": db_url,
            "CRM_PERF_SYNC_CONFIG": str(path),
            "CRM_PERF_SYNC_LEASE_TTL_SECONDS": LEASE_TTL,
            "CRM_PERF_SYNC_LOG_FORMAT": "json",
            "CRM_PERF_SYNC_WORKER_METRICS_PORT": "0",
        }
        with (tmp_path / f"worker-{n}.log").open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-c", "from crm_perf_sync.cli import main; main()", "worker"],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def push_runs(status: str | None = None) -> int:
        with session_scope(factory) as session:
            stmt = select(func.count()).select_from(SyncRun).where(SyncRun.trigger == "push")
            if status is not None:
                stmt = stmt.where(SyncRun.status == status)
            return session.scalar(stmt) or 0

    def inbox() -> dict[str, int]:
        with session_scope(factory) as session:
            rows = session.execute(
                select(IngestEvent.status, func.count()).group_by(IngestEvent.status)
            ).all()
        return dict(rows)

    workers: list[subprocess.Popen[bytes]] = []
    try:
        workers.append(start_worker(1))
        push_round(0)
        wait_for("a first targeted sync", lambda: push_runs("succeeded"))
        for round_no in range(1, ROUNDS - 2):
            push_round(round_no)
        # Killed while a targeted sync runs: frozen first, so it is still running when killed.
        freeze_when(workers[:1], lambda: push_runs("running") == 1, "a targeted sync under way", timeout=60)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=30)
        # The CRM goes on pushing while no worker runs; a new one takes over.
        for round_no in range(ROUNDS - 2, ROUNDS):
            push_round(round_no)
        assert inbox().get("pending", 0) > 0
        workers.append(start_worker(2))
        wait_for(
            "every pushed change fetched",
            lambda: inbox().get("pending", 0) == 0 and push_runs("running") == 0,
        )
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGKILL)
                worker.wait(timeout=30)
        client.close()

    assert inbox() == {"done": 2 * DEALS}  # each deal and its stage history, every round
    live = {str(key): obj for key, obj in emulator.portal.tables["deals"].rows.items() if not obj.archived}
    with session_scope(factory) as session:
        stored = session.execute(
            select(Opportunity.external_id, Opportunity.amount).where(Opportunity.is_deleted.is_(False))
        ).all()
    keys = [key for key, _ in stored]
    assert len(keys) == len(set(keys)) == len(live)  # none lost, none stored twice
    amounts = {key: float(amount or 0) for key, amount in stored}
    burst = [str(50_000 + i) for i in range(DEALS)]
    assert {key: amounts[key] for key in burst} == {
        key: float(live[key].props["amount"] or 0) for key in burst
    }
    assert all(amounts[key] >= 2000 for key in burst)  # every one changed, every change arrived
    with session_scope(factory) as session:
        statuses = session.execute(select(SyncRun.status).where(SyncRun.trigger == "push")).scalars().all()
    assert "abandoned" in statuses  # the killed worker's run, closed by the next one
    assert "running" not in statuses
    engine.dispose()
