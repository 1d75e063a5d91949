"""Pushes from HubSpot: signed requests land in the inbox once; anything else never reaches it.

The signatures are made as HubSpot's documentation describes them (:mod:`tests.connectors.hubspot.pushes`),
independently of the connector's own verification, which uses hubspot-api-client.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from crm_perf_sync.api.app import create_app
from crm_perf_sync.apikeys import service as keys
from crm_perf_sync.config import load_config
from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
from crm_perf_sync.kit.doorbell import INBOX
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.models import IngestEvent
from crm_perf_sync.ops import status
from crm_perf_sync.plugins import ConnectorRegistry
from tests.connectors.hubspot.pushes import event as hubspot_event
from tests.connectors.hubspot.pushes import signed as hubspot_signed

SECRET = "hs-app-secret-4c1e"
OLD_SECRET = "hs-app-secret-before-rotation"
PORTAL = 4412345
PUBLIC = "https://crm-perf-sync.example.com/api/v1/ingest/hs-proxied"

CONFIG = f"""
connections:
  - id: hs
    kind: hubspot
    settings:
      access_token: pat-na1-ingest
      portal_id: {PORTAL}
      webhook_secret: {SECRET}
      previous_webhook_secret: {OLD_SECRET}
      base_url: http://127.0.0.1:1
  - id: hs-proxied
    kind: hubspot
    settings:
      access_token: pat-na1-ingest
      webhook_secret: {SECRET}
      webhook_url: {PUBLIC}
      base_url: http://127.0.0.1:1
  - id: hs-off
    kind: hubspot
    enabled: false
    settings:
      access_token: pat-na1-ingest
      webhook_secret: {SECRET}
      base_url: http://127.0.0.1:1
  - id: hs-unsigned
    kind: hubspot
    settings:
      access_token: pat-na1-ingest
      base_url: http://127.0.0.1:1
  - id: exports
    kind: csv
    settings:
      data_dir: "{{exports}}"
      streams:
        opportunities:
          file: deals.csv
          fields: {{external_id: id, amount: amount, currency: {{value: USD}}}}
"""


@pytest.fixture(scope="module")
def engine(module_db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(module_db_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def client(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    directory = tmp_path_factory.mktemp("ingest")
    path = directory / "crm-perf-sync.yaml"
    path.write_text(CONFIG.replace("{exports}", str(directory)), encoding="utf-8")
    config = load_config(path, ConnectorRegistry.discover())
    with TestClient(create_app(engine, config)) as client:
        yield client


def event(kind: str, object_id: int, **extra: Any) -> dict[str, Any]:
    return hubspot_event(kind, object_id, portal=PORTAL, **extra)


def signed(body: bytes, url: str, *, secret: str = SECRET, **sign: Any) -> dict[str, str]:
    return hubspot_signed(body, url, secret=secret, **sign)


def push(client: TestClient, connection: str, events: list[dict[str, Any]], **sign: Any) -> Any:
    body = json.dumps(events).encode()
    url = f"http://testserver/api/v1/ingest/{connection}"
    return client.post(f"/api/v1/ingest/{connection}", content=body, headers=signed(body, url, **sign))


def inbox(client: TestClient, connection: str) -> list[tuple[str, str, bool, str]]:
    """The connection's inbox, oldest first: stream, record id, announced deleted, status."""
    engine: Engine = client.app.state.context.engine  # type: ignore[attr-defined]
    with session_scope(make_session_factory(engine)) as session:
        rows = session.execute(
            select(IngestEvent.stream, IngestEvent.external_id, IngestEvent.deleted, IngestEvent.status)
            .where(IngestEvent.connection_id == connection)
            .order_by(IngestEvent.id)
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def test_a_signed_batch_lands_in_the_inbox_once_and_a_retry_is_a_duplicate(client: TestClient) -> None:
    before = inbox(client, "hs")
    events = [
        event("deal.creation", 9001),
        event("deal.propertyChange", 9002, propertyName="dealstage", propertyValue="closedwon"),
        event("contact.propertyChange", 501, propertyName="lifecyclestage", propertyValue="lead"),
        event("company.creation", 71),
        event("deal.deletion", 9003),
        event("ticket.creation", 8),  # an object no stream reads
        event("deal.creation", 9004, portalId=PORTAL + 1),  # another portal the app is installed in
    ]
    answer = push(client, "hs", events)
    assert answer.status_code == 200, answer.text
    # A deal that changed may have moved stage: its stage history is fetched again too.
    assert answer.json() == {"connection": "hs", "changes": 7, "accepted": 7, "duplicates": 0}
    assert inbox(client, "hs")[len(before) :] == [
        ("opportunities", "9001", False, "pending"),
        ("stage_changes", "9001", False, "pending"),
        ("opportunities", "9002", False, "pending"),
        ("stage_changes", "9002", False, "pending"),
        ("leads", "501", False, "pending"),
        ("accounts", "71", False, "pending"),
        ("opportunities", "9003", True, "pending"),
    ]

    # HubSpot retries what it thinks was not acknowledged: the same events, a later attempt.
    retried = [{**e, "attemptNumber": 1} for e in events]
    again = push(client, "hs", retried)
    assert again.status_code == 200, again.text
    assert again.json() == {"connection": "hs", "changes": 7, "accepted": 0, "duplicates": 7}
    assert len(inbox(client, "hs")) == len(before) + 7


def test_a_merge_changes_the_record_kept_and_announces_the_merged_one_gone(client: TestClient) -> None:
    before = inbox(client, "hs")
    merge = event("deal.merge", 9100, primaryObjectId=9100, mergedObjectIds=[9100, 9101], newObjectId=9100)
    assert push(client, "hs", [merge]).json()["accepted"] == 3
    assert inbox(client, "hs")[len(before) :] == [
        ("opportunities", "9100", False, "pending"),
        ("stage_changes", "9100", False, "pending"),
        ("opportunities", "9101", True, "pending"),
    ]


def test_the_generic_object_subscriptions_name_the_object_by_its_type_id(client: TestClient) -> None:
    before = inbox(client, "hs")
    events = [
        event("object.propertyChange", 9200, objectTypeId="0-3"),
        event("object.deletion", 502, objectTypeId="0-1"),
        event("object.creation", 1, objectTypeId="0-5"),  # tickets: not read
    ]
    assert push(client, "hs", events).json()["accepted"] == 3
    assert inbox(client, "hs")[len(before) :] == [
        ("opportunities", "9200", False, "pending"),
        ("stage_changes", "9200", False, "pending"),
        ("leads", "502", True, "pending"),
    ]


def test_during_a_rotation_the_previous_secret_still_signs_and_no_other_does(client: TestClient) -> None:
    assert push(client, "hs", [event("deal.creation", 9300)], secret=OLD_SECRET).status_code == 200
    refused = push(client, "hs", [event("deal.creation", 9301)], secret="someone-elses-secret")
    assert refused.status_code == 401
    assert [row[1] for row in inbox(client, "hs")].count("9301") == 0


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unsigned", "no X-HubSpot-Signature-v3"),
        ("another secret", "does not match"),
        ("altered body", "does not match"),
        ("another address", "does not match"),
        ("a GET signature", "does not match"),
        ("six minutes old", "more than 0:05:00 from now"),
        ("six minutes ahead", "more than 0:05:00 from now"),
        ("not a timestamp", "not epoch milliseconds"),
    ],
)
def test_a_push_not_verifiably_from_hubspot_is_refused_before_the_store(
    client: TestClient, case: str, reason: str
) -> None:
    before = inbox(client, "hs")
    events = [event("deal.creation", 9400)]
    body = json.dumps(events).encode()
    url = "http://testserver/api/v1/ingest/hs"
    now_ms = int(time.time() * 1000)
    headers = {
        "unsigned": {"Content-Type": "application/json"},
        "another secret": signed(body, url, secret="not-the-apps"),
        "altered body": signed(json.dumps([event("deal.creation", 9401)]).encode(), url),
        "another address": signed(body, "http://testserver/api/v1/ingest/hs-proxied"),
        "a GET signature": signed(body, url, method="GET"),
        "six minutes old": signed(body, url, at_ms=now_ms - 6 * 60_000),
        "six minutes ahead": signed(body, url, at_ms=now_ms + 6 * 60_000),
        "not a timestamp": {**signed(body, url), "X-HubSpot-Request-Timestamp": "yesterday"},
    }[case]
    answer = client.post("/api/v1/ingest/hs", content=body, headers=headers)
    assert answer.status_code == 401, answer.text
    problem = answer.json()
    assert problem["type"].endswith("/push-refused")
    assert "www-authenticate" not in answer.headers  # not an API key that is missing
    assert reason in problem["detail"]
    assert SECRET not in answer.text
    assert inbox(client, "hs") == before


def test_behind_a_proxy_the_signature_covers_the_public_address(client: TestClient) -> None:
    body = json.dumps([event("deal.creation", 9500)]).encode()
    answer = client.post("/api/v1/ingest/hs-proxied", content=body, headers=signed(body, PUBLIC))
    assert answer.status_code == 200, answer.text
    assert inbox(client, "hs-proxied")[-2] == ("opportunities", "9500", False, "pending")
    # Signed for the address the service sees, it is not what HubSpot would have signed.
    body = json.dumps([event("deal.creation", 9501)]).encode()
    seen = "http://testserver/api/v1/ingest/hs-proxied"
    answer = client.post("/api/v1/ingest/hs-proxied", content=body, headers=signed(body, seen))
    assert answer.status_code == 401


def test_a_connection_without_a_secret_refuses_every_push_and_says_what_to_set(client: TestClient) -> None:
    answer = push(client, "hs-unsigned", [event("deal.creation", 9600)])
    assert answer.status_code == 401
    assert "set webhook_secret" in answer.json()["detail"]
    assert inbox(client, "hs-unsigned") == []


def test_a_disabled_connection_refuses_pushes_nothing_would_fetch(client: TestClient) -> None:
    answer = push(client, "hs-off", [event("deal.creation", 9650)])
    assert answer.status_code == 409, answer.text
    assert "'hs-off' is disabled" in answer.json()["detail"]
    assert inbox(client, "hs-off") == []


def test_connections_that_take_no_pushes_and_unknown_ones_are_404(client: TestClient) -> None:
    answer = push(client, "exports", [event("deal.creation", 9700)])
    assert answer.status_code == 404
    assert "'exports' takes no pushes" in answer.json()["detail"]
    answer = push(client, "nowhere", [event("deal.creation", 9701)])
    assert answer.status_code == 404
    assert "no connection 'nowhere'" in answer.json()["detail"]


def test_a_push_may_be_larger_than_other_requests_but_is_bounded(client: TestClient) -> None:
    # 100 events with long property values: over the 64 KiB of other requests, under 1 MiB.
    events = [event("deal.propertyChange", 20_000 + i, propertyValue="x" * 900) for i in range(100)]
    answer = push(client, "hs", events)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 200  # each deal and its stage history
    huge = [event("deal.propertyChange", 30_000 + i, propertyValue="x" * 9_000) for i in range(130)]
    before = inbox(client, "hs")
    answer = push(client, "hs", huge)
    assert answer.status_code == 413
    assert inbox(client, "hs") == before


def test_a_verified_body_that_is_not_a_list_of_events_is_refused(client: TestClient) -> None:
    body = json.dumps({"eventId": 1}).encode()
    url = "http://testserver/api/v1/ingest/hs"
    answer = client.post("/api/v1/ingest/hs", content=body, headers=signed(body, url))
    assert answer.status_code == 401
    assert "not a JSON array of events" in answer.json()["detail"]


def test_the_connections_say_when_each_was_last_pushed_to_and_what_waits(client: TestClient) -> None:
    assert push(client, "hs", [event("deal.creation", 9800), event("deal.creation", 9801)]).status_code == 200
    engine: Engine = client.app.state.context.engine  # type: ignore[attr-defined]
    with session_scope(make_session_factory(engine)) as session:
        _, read_key = keys.create(session, "ingest tests", "read")
    listed = client.get("/api/v1/connections", headers={"Authorization": f"Bearer {read_key}"})
    assert listed.status_code == 200, listed.text
    by_id = {c["id"]: c for c in listed.json()["data"]}
    waiting = [row for row in inbox(client, "hs") if row[3] == "pending"]
    assert by_id["hs"]["push_waiting"] == len(waiting) >= 2
    assert by_id["hs"]["push_parked"] == 0
    assert by_id["hs"]["push_last_received_at"] is not None
    # The operators' status (the CLI's `status` and the dashboard's operations page) says the same,
    # and of a connection the CRM never pushed to, nothing.
    config = client.app.state.context.config  # type: ignore[attr-defined]
    with session_scope(make_session_factory(engine)) as session:
        report = {c["connection_id"]: c for c in status.connection_status(session, config, utc_now())}
    assert report["hs"]["push_waiting"] == len(waiting)
    assert report["hs"]["push_last_received_at"] == datetime.fromisoformat(
        by_id["hs"]["push_last_received_at"]
    )
    assert (report["exports"]["push_last_received_at"], report["exports"]["push_waiting"]) == (None, 0)


def test_a_push_with_new_changes_rings_the_workers_and_a_duplicate_or_refused_one_does_not(
    client: TestClient, engine: Engine
) -> None:
    with INBOX.listener(engine) as listener:
        listener.wait(0)  # listening from here on; a ring from before does not count
        events = [event("deal.creation", 9300)]
        assert push(client, "hs", events).json()["accepted"] == 2
        assert listener.wait(30)  # the worker's inbox loop would look at once
        assert not listener.wait(0.2)  # one push, one ring
        assert push(client, "hs", events).json()["duplicates"] == 2
        assert not listener.wait(0.2)
        assert push(client, "hs", [event("deal.creation", 9301)], secret="not-the-secret").status_code == 401
        assert not listener.wait(0.2)


def test_pushes_waiting_for_sqlites_write_lock_leave_the_reads_their_threads_and_connections(
    tmp_path: Path, sqlite_template: Path
) -> None:
    # SQLite lets one writer in at a time and a KPI refresh holds the write lock throughout.
    # Pushes arriving meanwhile once each held a pooled connection while they waited, until
    # the reads had none left: the dashboard froze until the refresh ended. Here more pushes
    # than the pool holds wait for the lock; a read must still be answered before it is let go,
    # and then every push is stored (together: see tests/api/test_batching.py).
    shutil.copyfile(sqlite_template, tmp_path / "store.db")
    engine = create_db_engine(f"sqlite:///{tmp_path / 'store.db'}")
    path = tmp_path / "crm-perf-sync.yaml"
    path.write_text(CONFIG.replace("{exports}", str(tmp_path)), encoding="utf-8")
    config = load_config(path, ConnectorRegistry.discover())
    with session_scope(make_session_factory(engine)) as session:
        _, key = keys.create(session, "dashboard", "read")
    pool = engine.pool.size() + engine.pool._max_overflow  # type: ignore[attr-defined]
    refresh = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    answers: list[Any] = []
    try:
        with TestClient(create_app(engine, config)) as client:
            refresh.execute("BEGIN IMMEDIATE")  # the refresh's write lock
            pushes = [
                threading.Thread(
                    target=lambda n=n: answers.append(push(client, "hs", [event("deal.creation", n)]))
                )
                for n in range(9500, 9500 + pool + 5)
            ]
            for thread in pushes:
                thread.start()
            time.sleep(1.0)  # they are all waiting by now
            read: list[Any] = []
            reader = threading.Thread(
                target=lambda: read.append(
                    client.get("/api/v1/kpis/won_deals/values", headers={"Authorization": f"Bearer {key}"})
                )
            )
            reader.start()
            reader.join(timeout=20)
            answered = not reader.is_alive()
            refresh.rollback()  # the refresh ends
            for thread in pushes:
                thread.join(timeout=60)
            reader.join(timeout=60)
    finally:
        refresh.close()
    assert answered, "a read waited behind the pushes queued for the write lock"
    assert read[0].status_code == 200
    # And no push was lost meanwhile: each was taken, once.
    assert sorted(a.status_code for a in answers) == [200] * (pool + 5)
    assert sum(a.json()["accepted"] for a in answers) == 2 * (pool + 5)
    with session_scope(make_session_factory(engine)) as session:
        stored = session.scalar(select(func.count()).select_from(IngestEvent))
    engine.dispose()
    assert stored == 2 * (pool + 5)
