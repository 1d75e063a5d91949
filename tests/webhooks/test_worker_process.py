"""The real worker process delivering the outbox: killed while the receiver is down, restarted,
and every event still arrives exactly once."""

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
from crm_perf_sync.models import WebhookAttempt
from crm_perf_sync.webhooks import service
from crm_perf_sync.webhooks.security import Guard
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
    }
    return subprocess.Popen(
        [sys.executable, "-c", "from crm_perf_sync.cli import main; main()", "worker"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def attempts(factory: sessionmaker[Session]) -> int:
    with session_scope(factory) as session:
        return int(session.scalar(select(func.count()).select_from(WebhookAttempt)) or 0)


def test_a_killed_worker_loses_nothing_and_sends_nothing_twice(tmp_path: Path, db_url: str) -> None:
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
        deadline = time.monotonic() + 60
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
            deadline = time.monotonic() + 60
            while len(receiver.attempts) < len(ids):
                assert second.poll() is None
                assert time.monotonic() < deadline, f"{len(receiver.attempts)} of {len(ids)} arrived"
                time.sleep(0.1)
            time.sleep(1.0)  # time for anything sent twice to arrive too
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=60)
    assert sorted(r.message_id for r in receiver.accepted) == sorted(ids)
    assert len(receiver.attempts) == len(ids)  # no duplicate webhook-id
    assert receiver.rejected == []
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
            time.sleep(2.0)  # both are up and polling before the events land
            with session_scope(factory) as session:
                ids = [service.emit(session, "sync.completed", {"n": n}) for n in range(600)]
            deadline = time.monotonic() + 90
            while len(receiver.attempts) < len(ids):
                assert all(w.poll() is None for w in workers)
                assert time.monotonic() < deadline, f"{len(receiver.attempts)} of {len(ids)} arrived"
                time.sleep(0.1)
            time.sleep(1.0)  # time for anything sent twice to arrive too
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(timeout=60)
    assert sorted(r.message_id for r in receiver.accepted) == sorted(ids)
    assert len(receiver.attempts) == len(ids)  # no webhook-id sent twice
    with session_scope(factory) as session:
        senders = set(session.scalars(select(WebhookAttempt.sent_by).distinct()))
    assert len(senders) == 2, f"both workers took a share: {senders}"
    engine.dispose()
