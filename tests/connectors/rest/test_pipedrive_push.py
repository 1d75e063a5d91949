"""Pipedrive's webhooks (v2) through the spec's ``push`` section: HTTP basic authentication, one
event per request, and the deals, organizations and activities they name fetched by id, an
archived deal from the archived list rather than taken for deleted.

A webhook is written here as Pipedrive's guide for webhooks v2 shows one (``meta.id``,
``meta.action``, ``meta.entity``, ``meta.entity_id``, ``meta.timestamp``), independently of the spec.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from crm_perf_sync.connector_sdk import (
    AccountRecord,
    ActivityRecord,
    OpportunityRecord,
    PushRefused,
    PushRequest,
    Tombstone,
)
from crm_perf_sync_rest.connector import RestConnector
from tests.connectors.rest.emulators import pipedrive_data
from tests.connectors.rest.emulators.base import SimClock
from tests.connectors.rest.emulators.pipedrive import PipedriveEmulator
from tests.connectors.rest.support import connector, of_type, pipedrive_settings, read, stream

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
USER, PASSWORD = "crm-perf-sync", "pd-hook-password-1"


@pytest.fixture
def clock() -> SimClock:
    return SimClock(START)


@pytest.fixture
def emulator(clock: SimClock) -> Iterator[PipedriveEmulator]:
    company = pipedrive_data.with_activities(pipedrive_data.synthetic(150))
    with PipedriveEmulator(company, clock=clock.now) as found:
        found.rate_limit = None
        found.daily_quota = None
        yield found


def pushing(emulator: PipedriveEmulator, clock: SimClock, **inputs: Any) -> RestConnector:
    settings = pipedrive_settings(emulator)
    settings["inputs"].update({"push_secret": PASSWORD, **inputs})
    return connector(settings, clock)


def webhook(
    entity: str,
    entity_id: int,
    action: str,
    *,
    at: datetime,
    auth: tuple[str, str] | None = (USER, PASSWORD),
    event_id: str | None = None,
) -> PushRequest:
    body = {
        "meta": {
            "id": event_id or str(uuid.uuid4()),
            "action": action,
            "entity": entity,
            "entity_id": str(entity_id),
            "company_id": "123123",
            "correlation_id": str(uuid.uuid4()),
            "is_bulk_edit": False,
            "timestamp": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "type": "general",
            "user_id": "123123",
            "version": "2.0",
            "webhook_id": "77",
            "attempt": 1,
            "host": "acme.pipedrive.com",
        },
        "data": {"id": entity_id},
        "previous": None,
    }
    headers = {"content-type": "application/json"}
    if auth is not None:
        headers["authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    return PushRequest(
        "POST", "https://crm.example.com/api/v1/ingest/pd", headers, json.dumps(body).encode(), at
    )


def test_a_webhook_names_its_deal_organization_or_activity(
    emulator: PipedriveEmulator, clock: SimClock
) -> None:
    conn = pushing(emulator, clock)
    deal = min(emulator.deals)
    (change,) = conn.verify_push(webhook("deal", deal, "change", at=clock.now(), event_id="e-1"))
    assert (change.event_id, change.stream, change.external_id, change.deleted) == (
        "e-1",
        "opportunities",
        str(deal),
        False,
    )
    assert change.occurred_at == clock.now()
    (gone,) = conn.verify_push(webhook("organization", 42, "delete", at=clock.now()))
    assert (gone.stream, gone.external_id, gone.deleted) == ("accounts", "42", True)
    (done,) = conn.verify_push(webhook("activity", 7, "create", at=clock.now()))
    assert (done.stream, done.external_id) == ("activities", "7")
    # A lead, a person: not read by id (see the spec), so not taken.
    assert conn.verify_push(webhook("lead", 5, "change", at=clock.now())) == []
    assert conn.verify_push(webhook("person", 5, "change", at=clock.now())) == []


def test_a_webhook_without_the_connections_basic_authentication_is_refused(
    emulator: PipedriveEmulator, clock: SimClock
) -> None:
    conn = pushing(emulator, clock)
    with pytest.raises(PushRefused, match="no Authorization header"):
        conn.verify_push(webhook("deal", 1, "change", at=clock.now(), auth=None))
    for auth in ((USER, "guessed"), ("someone", PASSWORD)):
        with pytest.raises(PushRefused, match="not the connection's user and push secret"):
            conn.verify_push(webhook("deal", 1, "change", at=clock.now(), auth=auth))
    rotating = pushing(emulator, clock, push_secret="pd-hook-password-2", previous_push_secret=PASSWORD)
    for password in ("pd-hook-password-2", PASSWORD):
        assert (
            len(rotating.verify_push(webhook("deal", 1, "change", at=clock.now(), auth=(USER, password))))
            == 1
        )


def test_deals_are_fetched_from_either_list_and_only_a_deleted_one_is_gone(
    emulator: PipedriveEmulator, clock: SimClock
) -> None:
    conn = pushing(emulator, clock)
    whole = {r.external_id: r for r in of_type(read(conn, "opportunities"), OpportunityRecord)}
    ids = sorted(emulator.deals)[:120]
    emulator.archive(ids[3])
    emulator.delete(ids[4])
    emulator.update(ids[5], title="Renamed by the push test")
    before = (emulator.count("/api/v2/deals/archived"), emulator.count("/api/v2/deals"))

    fetched = list(conn.fetch(stream(conn, "opportunities"), [str(i) for i in ids]))

    records = {r.external_id: r for r in of_type(fetched, OpportunityRecord)}
    assert of_type(fetched, Tombstone) == [Tombstone(str(ids[4]))]
    assert set(records) == {str(i) for i in ids} - {str(ids[4])}
    assert records[str(ids[5])].name == "Renamed by the push test"
    # Archived (which stamps update_time): the same deal, still there.
    archived, before_archive = records[str(ids[3])], whole[str(ids[3])]
    assert replace(archived, remote_updated_at=None, raw=None) == replace(
        before_archive, remote_updated_at=None, raw=None
    )
    assert all(
        record == whole[key] for key, record in records.items() if key not in (str(ids[3]), str(ids[5]))
    )
    # The first batch's two missing ids were asked for in the archived list; the second had none.
    assert emulator.count("/api/v2/deals/archived") - before[0] == 1
    assert emulator.count("/api/v2/deals") - before[1] - 1 == 2


def test_organizations_and_activities_are_fetched_by_id(emulator: PipedriveEmulator, clock: SimClock) -> None:
    conn = pushing(emulator, clock)
    kinds: list[tuple[str, str, type[AccountRecord] | type[ActivityRecord]]] = [
        ("accounts", "organization", AccountRecord),
        ("activities", "activity", ActivityRecord),
    ]
    for name, kind, record_type in kinds:
        whole = {r.external_id: r for r in of_type(read(conn, name), record_type)}
        ids = sorted(whole)[:3]
        emulator.change(kind, int(ids[1]), is_deleted=True)
        fetched = list(conn.fetch(stream(conn, name), [*ids, "999999"]))
        assert {r.external_id: r for r in of_type(fetched, record_type)} == {
            ids[0]: whole[ids[0]],
            ids[2]: whole[ids[2]],
        }
        assert sorted(t.external_id for t in of_type(fetched, Tombstone)) == sorted([ids[1], "999999"])
