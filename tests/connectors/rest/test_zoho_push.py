"""Zoho CRM's notifications through the spec's ``push`` section: the channel's token, the ids a
notification names per module, and those records fetched by id as a read gives them.

A notification is written here as Zoho's documentation describes its callback body
(``server_time`` in epoch milliseconds, ``module``, ``ids``, ``operation``, ``channel_id``,
``token``), independently of the spec.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crm_perf_sync.connector_sdk import LeadRecord, OpportunityRecord, PushRefused, PushRequest, Tombstone
from crm_perf_sync_rest.connector import RestConnector
from tests.connectors.rest.emulators import zoho_data
from tests.connectors.rest.emulators.base import SimClock
from tests.connectors.rest.emulators.zoho import ZohoEmulator
from tests.connectors.rest.support import connector, of_type, read, stream, zoho_settings

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TOKEN = "TOKEN_FOR_VERIFICATION_OF_1000000068001"


@pytest.fixture
def clock() -> SimClock:
    return SimClock(START)


@pytest.fixture
def emulator(clock: SimClock) -> Iterator[ZohoEmulator]:
    with ZohoEmulator(zoho_data.synthetic(150), clock=clock.now) as found:
        yield found


def pushing(emulator: ZohoEmulator, clock: SimClock, **inputs: Any) -> RestConnector:
    settings = zoho_settings(emulator)
    settings["inputs"].update({"push_token": TOKEN, **inputs})
    return connector(settings, clock)


def notification(
    module: str, ids: list[str], operation: str, *, at: datetime, token: str | None = TOKEN
) -> PushRequest:
    body: dict[str, Any] = {
        "server_time": int(at.timestamp() * 1000),
        "query_params": {},
        "module": module,
        "resource_uri": f"https://www.zohoapis.com/crm/v8/{module}",
        "ids": ids,
        "affected_fields": [],
        "operation": operation,
        "channel_id": "1000000068001",
    }
    if token is not None:
        body["token"] = token
    raw = json.dumps(body).encode()
    return PushRequest(
        "POST", "https://crm.example.com/api/v1/ingest/zoho", {"content-type": "application/json"}, raw, at
    )


def ids_of(emulator: ZohoEmulator, module: str, count: int) -> list[str]:
    return [str(i) for i in sorted(emulator.modules[module].records)][:count]


def test_a_notification_names_each_record_of_its_module_and_the_stream_they_are_read_into(
    emulator: ZohoEmulator, clock: SimClock
) -> None:
    conn = pushing(emulator, clock)
    deals = ids_of(emulator, "Deals", 3)
    changes = conn.verify_push(notification("Deals", deals, "update", at=clock.now()))
    assert [(c.stream, c.external_id, c.deleted) for c in changes] == [
        ("opportunities", i, False) for i in deals
    ]
    assert len({c.event_id for c in changes}) == 3  # one per record, the same when Zoho sends it again
    again = conn.verify_push(notification("Deals", deals, "update", at=clock.now()))
    assert [c.event_id for c in again] == [c.event_id for c in changes]

    leads = ids_of(emulator, "Leads", 1)
    gone = conn.verify_push(notification("Leads", leads, "delete", at=clock.now()))
    assert [(c.stream, c.external_id, c.deleted) for c in gone] == [("leads", leads[0], True)]
    # A module no stream reads announces nothing.
    assert conn.verify_push(notification("Contacts", ["4150868000003787001"], "update", at=clock.now())) == []


def test_a_notification_without_the_channels_token_or_too_old_is_refused(
    emulator: ZohoEmulator, clock: SimClock
) -> None:
    conn = pushing(emulator, clock)
    deals = ids_of(emulator, "Deals", 1)
    with pytest.raises(PushRefused, match="carries no token"):
        conn.verify_push(notification("Deals", deals, "update", at=clock.now(), token=None))
    with pytest.raises(PushRefused, match="token is not the connection's push secret"):
        conn.verify_push(
            notification("Deals", deals, "update", at=clock.now(), token="TOKEN_OF_ANOTHER_CHANNEL")
        )
    with pytest.raises(PushRefused, match="a replay, or a clock that is off"):
        conn.verify_push(notification("Deals", deals, "update", at=clock.now() - timedelta(minutes=10)))
    raw = PushRequest("POST", "https://crm.example.com/api/v1/ingest/zoho", {}, b"[1, 2]", clock.now())
    with pytest.raises(PushRefused):
        conn.verify_push(raw)
    rotated = pushing(emulator, clock, push_token="TOKEN_NEW", previous_push_token=TOKEN)
    assert len(rotated.verify_push(notification("Deals", deals, "update", at=clock.now()))) == 1


def test_the_records_a_notification_names_are_fetched_as_a_read_gives_them(
    emulator: ZohoEmulator, clock: SimClock
) -> None:
    conn = pushing(emulator, clock)
    whole = {r.external_id: r for r in of_type(read(conn, "opportunities"), OpportunityRecord)}
    deals = ids_of(emulator, "Deals", 120)
    emulator.delete(deals[5])
    emulator.update(deals[9], {"Stage": "Closed Won", "Amount": 777.5})
    before = emulator.count("/crm/v8/Deals")

    fetched = list(conn.fetch(stream(conn, "opportunities"), deals))

    records = {r.external_id: r for r in of_type(fetched, OpportunityRecord)}
    assert of_type(fetched, Tombstone) == [Tombstone(deals[5])]
    assert set(records) == set(deals) - {deals[5]}
    assert (records[deals[9]].stage, str(records[deals[9]].amount)) == ("Closed Won", "777.5")
    assert all(record == whole[key] for key, record in records.items() if key != deals[9])
    assert emulator.count("/crm/v8/Deals") - before == 2  # 100 ids a request
    # A converted lead is a lead still (Zoho lists it only when asked): fetched, not taken for deleted.
    converted = ids_of(emulator, "Leads", 2)
    emulator.update(converted[0], {"Converted__s": True})
    fetched_leads = list(conn.fetch(stream(conn, "leads"), converted))
    assert {r.external_id: r.is_converted for r in of_type(fetched_leads, LeadRecord)} == {
        converted[0]: True,
        converted[1]: False,
    }
    assert of_type(fetched_leads, Tombstone) == []
