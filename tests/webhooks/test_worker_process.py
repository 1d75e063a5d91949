"""The real worker process delivering the outbox: killed while the receiver is down, restarted,
and every event still arrives, each send recorded; two workers never send one delivery both."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.models import WebhookAttempt, WebhookDelivery
from crm_perf_sync.webhooks import service
from crm_perf_sync.webhooks.security import Guard
from tests.webhooks.outbox import assert_at_least_once, delivered, recorded_sends
from tests.webhooks.receiver import receiving_on


def worker(tmp_path: Path, db_url: str) -> subprocess.Popen[bytes]:
    config = tmp_path / "config.yaml"
    config.write_text("connections: []\n")
    env = {
        **os.environ,
        "CRM_PERF_SYNC_DATABASE_URL": db_url,
        "CRM_PERF_SYNC_CONFIG": str(config),
        "CRM_PERF_SYNC_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "CRM_PERF_SYNC_WORKER_METRICS_PORT": "0",  # several workers on one host: no shared port
        # The receiver is local: a short send timeout, so a dead worker's claims expire in a minute.
        "CRM_PERF_SYNC_WEBHOOK_TIMEOUT_SECONDS": "2",
    }
    with (tmp_path / "worker.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", "from crm_perf_sync.cli import main; main()", "worker"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def started(tmp_path: Path) -> bool:
    """The worker in ``tmp_path`` has started its scheduler and its delivery loop."""
    log = tmp_path / "worker.log"
    return log.exists() and "worker started" in log.read_text()


def claims_expire_in(factory: sessionmaker[Session]) -> float:
    """Seconds until the last claim on a delivery expires (0 when none is claimed)."""
    with session_scope(factory) as session:
        until = session.scalar(select(func.max(WebhookDelivery.claimed_until)))
    return max(0.0, (until - utc_now()).total_seconds()) if until is not None else 0.0


def attempts(factory: sessionmaker[Session]) -> int:
    with session_scope(factory) as session:
        return int(session.scalar(select(func.count()).select_from(WebhookAttempt)) or 0)


def test_a_killed_worker_loses_nothing_and_every_arrival_is_a_recorded_send(
    tmp_path: Path, db_url: str
) -> None:
    engine = create_db_engine(db_url)
    factory = make_session_factory(engine)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here yet: the receiver is down
    with session_scope(factory) as session:
        _, secret = service.create_endpoint(
            session, service.EndpointSpec(f"http://127.0.0.1:{port}/hooks"), Guard(allow=("127.0.0.1",))
        )
        ids = [service.emit(session, "sync.completed", {"n": n}) for n in range(20)]
    first = worker(tmp_path, db_url)
    try:
        deadline = time.monotonic() + 120
        while attempts(factory) < len(ids):  # every delivery tried once, refused, retry scheduled
            assert first.poll() is None
            assert time.monotonic() < deadline, "the worker never tried"
            time.sleep(0.1)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    with receiving_on(port, [secret]) as receiver:
        second = worker(tmp_path, db_url)
        try:
            # On a busy machine the kill may have come during a retry round: deliveries the dead
            # worker had claimed wait for their claim to expire, as they would in production.
            deadline = time.monotonic() + 120 + claims_expire_in(factory)
            while not delivered(factory, ids):
                assert second.poll() is None
                assert time.monotonic() < deadline, f"{len(set(receiver.attempts))} of {len(ids)} arrived"
                time.sleep(0.1)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=60)
    # The kill came while nothing could arrive: every arrival is a recorded send.
    assert_at_least_once(receiver, recorded_sends(factory), ids)
    assert sorted({r.message_id for r in receiver.accepted}) == sorted(ids)
    engine.dispose()


@pytest.mark.postgres
# Several workers share one PostgreSQL store; on SQLite one worker is the supported shape.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_worker_processes_on_postgresql_never_send_a_delivery_twice(tmp_path: Path, db_url: str) -> None:
    engine = create_db_engine(db_url)
    factory = make_session_factory(engine)
    with receiving_on(0, []) as receiver:
        with session_scope(factory) as session:
            _, secret = service.create_endpoint(
                session, service.EndpointSpec(receiver.url), Guard(allow=("127.0.0.1",))
            )
        receiver.secrets.append(secret)
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        workers = [worker(tmp_path / "a", db_url), worker(tmp_path / "b", db_url)]
        try:
            # Both are up and polling before the events land, so both take a share.
            deadline = time.monotonic() + 120
            while not (started(tmp_path / "a") and started(tmp_path / "b")):
                assert all(w.poll() is None for w in workers)
                assert time.monotonic() < deadline, "the workers never started"
                time.sleep(0.1)
            with session_scope(factory) as session:
                ids = [service.emit(session, "sync.completed", {"n": n}) for n in range(600)]
            deadline = time.monotonic() + 300
            while not delivered(factory, ids):
                assert all(w.poll() is None for w in workers)
                assert time.monotonic() < deadline, f"{len(set(receiver.attempts))} of {len(ids)} arrived"
                time.sleep(0.1)
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(timeout=60)
    # No kill: every arrival is a send the store recorded, and no delivery was sent by both.
    recorded = recorded_sends(factory)
    assert_at_least_once(receiver, recorded, ids)
    assert sorted({r.message_id for r in receiver.accepted}) == sorted(ids)
    with session_scope(factory) as session:
        senders = set(session.scalars(select(WebhookAttempt.sent_by).distinct()))
    assert len(senders) == 2, f"both workers took a share: {senders}"
    engine.dispose()
