"""Events written by the changes that cause them: a sync's end, a queued test."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.connector_sdk import BadRecord, FatalError, Tombstone
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.models import WebhookDelivery, WebhookEvent
from crm_perf_sync.webhooks import service
from crm_perf_sync.webhooks.security import Guard
from tests.sync.scripted import Script
from tests.sync.test_engine import OPPS, opp, run


def events(factory: sessionmaker[Session]) -> list[Any]:
    with session_scope(factory) as session:
        return list(session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


def test_a_sync_announces_its_end_in_the_transaction_that_records_it(
    session_factory: sessionmaker[Session],
) -> None:
    with session_scope(session_factory) as session:
        endpoint, _ = service.create_endpoint(
            session, service.EndpointSpec("https://hooks.example.com/crm", event_types=("sync.*",)), Guard()
        )
        endpoint_id = endpoint.id
    done = run(session_factory, Script(streams=[OPPS], pages={"opportunities": [[opp(1), opp(2)], [opp(3)]]}))
    assert done.status == "succeeded"
    (completed,) = events(session_factory)
    assert completed.type == "sync.completed"
    data = completed.payload["data"]
    assert (data["run_id"], data["connection_id"], data["status"]) == (done.run_id, "crm", "succeeded")
    assert (data["read"], data["inserted"], data["updated"]) == (3, 3, 0)
    assert data["links"]["run"] == f"/api/v1/sync-runs/{done.run_id}"
    assert completed.payload["type"] == "sync.completed"

    failing = Script(
        streams=[OPPS],
        pages={"opportunities": [[], [], [opp(4)]]},
        fail={("opportunities", 2): [FatalError("the CRM refused the credentials")]},
    )
    failed = run(session_factory, failing)
    assert failed.status == "failed"
    last = events(session_factory)[-1]
    assert last.type == "sync.failed"
    assert "the CRM refused the credentials" in last.payload["data"]["error"]
    assert last.payload["data"]["error_kind"] == "fatal"
    with session_scope(session_factory) as session:
        routed = session.scalars(select(WebhookDelivery.endpoint_id)).all()
    assert routed == [endpoint_id, endpoint_id]  # one delivery per event to the subscriber


def test_a_sync_event_counts_rejected_records_and_names_a_held_back_mass_deletion(
    session_factory: sessionmaker[Session],
) -> None:
    script = Script(
        streams=[OPPS],
        pages={"opportunities": [[*(opp(n) for n in range(1, 31)), BadRecord("no stage", key="006X")]]},
    )
    done = run(session_factory, script)
    assert done.status == "succeeded"
    (completed,) = events(session_factory)
    assert completed.type == "sync.completed"
    assert (completed.payload["data"]["status"], completed.payload["data"]["skipped"]) == ("succeeded", 1)

    script.pages["opportunities"].append([Tombstone(f"006{n:05d}") for n in range(1, 21)])
    refused = run(session_factory, script)
    assert refused.status == "failed"
    last = events(session_factory)[-1]
    assert last.type == "sync.failed"
    data = last.payload["data"]
    assert (data["error_kind"], data["deleted"], data["skipped"]) == ("mass_delete", 0, 0)
    assert "would soft-delete 20 of the 30 live opportunities" in data["error"]
