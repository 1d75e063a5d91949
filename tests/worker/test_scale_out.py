"""Real worker and API processes on one store: a worker killed mid-sync has its work taken over and
finished exactly once, every webhook event arrives (at least once, each send recorded), the metrics
show the takeover, and a worker stopped with SIGTERM mid-batch loses nothing."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
from crm_perf_sync.models import Lead, Lease, Opportunity, StageChange, SyncCheckpoint, SyncRun, WebhookEvent
from crm_perf_sync.webhooks import service
from crm_perf_sync.webhooks.security import Guard
from tests.connectors.demo.helpers import make, read
from tests.processes import freeze_when
from tests.webhooks.outbox import assert_at_least_once, delivered, recorded_sends
from tests.webhooks.receiver import Receiver, receiving

AS_OF = datetime(2026, 1, 1, tzinfo=UTC)
DEMO = {"seed": 7, "reps": 12, "opportunities": 3000, "leads": 12000, "batch_size": 500}
CONFIG = f"""
connections:
  - id: demo
    kind: demo
    schedule: {{interval: 5s}}
    settings: {{seed: 7, reps: 12, opportunities: 3000, leads: 12000, batch_size: 500,
                as_of: "{AS_OF.isoformat()}"}}
kpis: {{library: default}}
alerts:
  rules:
    - id: rep-win-rate
      kpi: win_rate
      scope: owner
      grain: all
      when: {{op: "<", value: 0.9}}
      min_sample: 5
"""


@pytest.fixture(scope="module")
def expected() -> dict[str, int]:
    """How many records of each stream the demo company holds as of ``AS_OF``: read straight
    from the connector, without the service."""
    connector = make({**DEMO, "as_of": AS_OF})
    return {
        stream: len({r.external_id for r in read(connector, stream).records})
        for stream in ("leads", "opportunities")
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Proc:
    role: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def metrics(self) -> str:
        path = "/metrics"
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=10).text


@pytest.fixture
def launch(tmp_path: Path, db_url: str) -> Iterator[Callable[[str], Proc]]:
    config = tmp_path / "crm-perf-sync.yaml"
    config.write_text(CONFIG)
    started: list[Proc] = []

    def start(role: str) -> Proc:
        port = free_port()
        log = tmp_path / f"{role}-{len(started)}.log"
        env = {
            **os.environ,
            "CRM_PERF_SYNC_DATABASE_URL": db_url,
            "CRM_PERF_SYNC_CONFIG": str(config),
            "CRM_PERF_SYNC_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
            "CRM_PERF_SYNC_LOG_FORMAT": "json",
            "CRM_PERF_SYNC_HOST": "127.0.0.1",
            # Room for the current batch to finish on a busy machine: a clean stop is the point.
            "CRM_PERF_SYNC_SHUTDOWN_GRACE_SECONDS": "120",
            "CRM_PERF_SYNC_SYNC_BATCH_SIZE": "500",
            ("CRM_PERF_SYNC_PORT" if role == "api" else "CRM_PERF_SYNC_WORKER_METRICS_PORT"): str(port),
        }
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-c", "from crm_perf_sync.cli import main; main()", role],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        proc = Proc(role, process, port, log)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.process.poll() is None:
            proc.process.send_signal(signal.SIGKILL)
            proc.process.wait(timeout=30)


def wait_for(
    what: str, condition: Callable[[], Any], timeout: float = 120, procs: Sequence[Proc] = ()
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        for proc in procs:
            if proc.process.poll() is not None:
                raise AssertionError(f"{proc.role} {proc.pid} exited: {proc.log.read_text()[-3000:]}")
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def store_counts(factory: sessionmaker[Session]) -> dict[str, int]:
    with session_scope(factory) as session:
        return {
            "leads": session.scalar(select(func.count()).select_from(Lead)) or 0,
            "opportunities": session.scalar(select(func.count()).select_from(Opportunity)) or 0,
            "stage_changes": session.scalar(select(func.count()).select_from(StageChange)) or 0,
        }


def runs(factory: sessionmaker[Session]) -> list[SyncRun]:
    with session_scope(factory) as session:
        return list(session.scalars(select(SyncRun).order_by(SyncRun.id)))


def sync_holder(factory: sessionmaker[Session]) -> str | None:
    with session_scope(factory) as session:
        return session.scalar(select(Lease.holder).where(Lease.name == "sync:demo"))


def mid_sync(factory: sessionmaker[Session]) -> SyncRun | None:
    """The running sync once it has committed a few batches (and not yet finished)."""
    for run in runs(factory):
        if run.status == "running" and (run.records_read or 0) >= 2000:
            return run
    return None


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(2))
    return 0.0


def endpoint_for(factory: sessionmaker[Session], receiver: Receiver) -> None:
    with session_scope(factory) as session:
        _, secret = service.create_endpoint(
            session, service.EndpointSpec(receiver.url), Guard(allow=("127.0.0.1",))
        )
    receiver.secrets.append(secret)


def events(factory: sessionmaker[Session]) -> list[WebhookEvent]:
    with session_scope(factory) as session:
        return list(session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


@pytest.mark.postgres
# Several workers share one PostgreSQL store; on SQLite one worker is the supported shape.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_worker_killed_mid_sync_is_taken_over_and_nothing_is_lost_or_stored_twice(
    db_url: str, launch: Callable[[str], Proc], expected: dict[str, int]
) -> None:
    engine = create_db_engine(db_url)
    factory = make_session_factory(engine)
    with receiving() as receiver:
        endpoint_for(factory, receiver)
        api = launch("api")
        workers = [launch("worker"), launch("worker")]
        # Kill whichever worker holds the sync, in the middle of it: the store is only looked at
        # while both are frozen, so the sync is still mid-way when its holder is read, however
        # fast or slow this machine is. Watched from the start (the API is waited for after).
        freeze_when([w.process for w in workers], lambda: mid_sync(factory), "a sync mid-way")
        victim_run = mid_sync(factory)
        assert victim_run is not None
        holder = sync_holder(factory) or ""
        (victim,) = [w for w in workers if f":{w.pid}:" in holder]
        (survivor,) = [w for w in workers if w is not victim]
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(timeout=30)
        survivor.process.send_signal(signal.SIGCONT)
        wait_for("the API", lambda: _answers(api), procs=[api])

        def finished() -> SyncRun | None:
            return next((r for r in runs(factory) if r.status == "succeeded"), None)

        done = wait_for("the sync taken over and finished", finished, procs=[api, survivor])
        # The KPI refresh after it raises alerts; wait until every event is delivered.
        wait_for(
            "alert events", lambda: any(e.type == "alert.firing" for e in events(factory)), procs=[survivor]
        )
        # The schedule keeps syncing (and emitting) meanwhile: these events are the ones checked.
        outbox = events(factory)
        wait_for(
            "every event delivered and recorded",
            lambda: delivered(factory, [e.message_id for e in outbox]),
            procs=[api, survivor],
        )
        survivor_metrics = survivor.metrics()
        api_metrics = api.metrics()
        all_runs = runs(factory)
        counts = store_counts(factory)
        recorded = recorded_sends(factory)
        emitted = {e.message_id for e in events(factory)}

    # The sync completed exactly once over: the killed run was abandoned, the survivor resumed it
    # from its checkpoints, and the store holds each record once, as many as the CRM has.
    by_id = {r.id: r for r in all_runs}
    assert by_id[victim_run.id].status == "abandoned"
    assert by_id[victim_run.id].holder == holder
    assert done.holder.startswith(f"{socket.gethostname()}:{survivor.pid}:")
    assert counts["leads"] == expected["leads"]
    assert counts["opportunities"] == expected["opportunities"]
    assert inserted([by_id[victim_run.id], done]) == {k: counts[k] for k in ("leads", "opportunities")}
    resumed = sum(int(done.streams[s]["read"]) for s in ("leads", "opportunities"))
    assert resumed < expected["leads"] + expected["opportunities"]  # it resumed, not restarted
    with session_scope(factory) as session:
        checkpoints = list(session.scalars(select(SyncCheckpoint)))
    assert {c.stream for c in checkpoints} >= {"leads", "opportunities", "stage_changes"}
    assert all(c.run_id is not None and c.run_id >= done.id for c in checkpoints)

    # Every event arrived, verified; a repeat only as Standard Webhooks allows it (same webhook-id,
    # same payload), each arrival a recorded send but for one in flight when the victim died; and
    # nothing arrived that the outbox does not hold. One sync.completed per succeeded run.
    assert_at_least_once(receiver, recorded, [e.message_id for e in outbox], unrecorded=1)
    assert set(Counter(r.message_id for r in receiver.accepted)) <= emitted
    succeeded = sorted(r.id for r in all_runs if r.status == "succeeded")
    completed = sorted(e.payload["data"]["run_id"] for e in outbox if e.type == "sync.completed")
    assert completed == succeeded[: len(completed)]
    assert done.id in completed

    # The metrics show it: the survivor took the claim over; the store counts an abandoned run.
    assert metric(survivor_metrics, "crm_perf_sync_claim_takeovers_total", unit="sync") >= 1
    assert metric(api_metrics, "crm_perf_sync_sync_runs_total", connection="demo", status="abandoned") == 1
    assert metric(api_metrics, "crm_perf_sync_webhook_deliveries", status="succeeded") >= len(outbox)
    engine.dispose()


def inserted(of: Sequence[SyncRun]) -> dict[str, int]:
    """Records each run inserted, per stream, summed: each record inserted once over the runs."""
    return {
        stream: sum(int(r.streams.get(stream, {}).get("inserted", 0)) for r in of)
        for stream in ("leads", "opportunities")
    }


def _answers(api: Proc) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{api.port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_sigterm_mid_batch_stops_cleanly_and_loses_nothing(
    db_url: str, launch: Callable[[str], Proc], expected: dict[str, int]
) -> None:
    engine = create_db_engine(db_url)
    factory = make_session_factory(engine)
    worker = launch("worker")
    interrupted = wait_for("a sync mid-way", lambda: mid_sync(factory), procs=[worker])
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=180) == 0  # within the grace period
    log = worker.log.read_text()
    assert "stopped cleanly" in log
    (stopped,) = [r for r in runs(factory) if r.id == interrupted.id]
    assert stopped.status == "interrupted"
    assert sync_holder(factory) is None  # the claim was released, not left to expire
    kept = store_counts(factory)
    assert 0 < kept["leads"] + kept["opportunities"] < expected["leads"] + expected["opportunities"]

    # The next worker resumes from the checkpoint: nothing lost, nothing read into the store twice.
    again = launch("worker")
    wait_for(
        "the resumed sync",
        lambda: any(r.status == "succeeded" for r in runs(factory)),
        procs=[again],
    )
    again.process.send_signal(signal.SIGTERM)
    assert again.process.wait(timeout=60) == 0
    counts = store_counts(factory)
    assert counts["leads"] == expected["leads"]
    assert counts["opportunities"] == expected["opportunities"]
    done = next(r for r in runs(factory) if r.status == "succeeded")
    both = [r for r in runs(factory) if r.id <= done.id]
    assert [r.status for r in both] == ["interrupted", "succeeded"]
    assert inserted(both) == {k: counts[k] for k in ("leads", "opportunities")}
    engine.dispose()


# SQLite refuses a second worker; PostgreSQL takes any number.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_second_worker_on_sqlite_is_refused_with_a_clear_message(
    db_url: str, launch: Callable[[str], Proc]
) -> None:
    engine = create_db_engine(db_url)
    factory = make_session_factory(engine)
    first = launch("worker")
    wait_for("the first worker at work", lambda: runs(factory), procs=[first])
    second = launch("worker")
    assert second.process.wait(timeout=60) == 2
    message = second.log.read_text()
    assert f"a worker is already running against the SQLite store {make_url_path(db_url)}" in message
    assert f"pid {first.pid}" in message
    assert "move the store to PostgreSQL to run several workers" in message
    assert first.process.poll() is None  # the first carries on, untouched
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(timeout=60) == 0
    # Once it is gone, a worker starts again (the lock left with its process).
    third = launch("worker")
    wait_for("the next worker at work", lambda: len(runs(factory)) >= 2, procs=[third])
    engine.dispose()


def make_url_path(db_url: str) -> str:
    from sqlalchemy.engine import make_url

    return str(make_url(db_url).database)
