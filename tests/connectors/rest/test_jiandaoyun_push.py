"""简道云's 数据推送 through the spec's ``push`` section: verified, read as changes, fetched by id.

The pushes are signed by :mod:`.jiandaoyun_pushes`, independently of the spec; the records a push
names are fetched from the emulator and must equal what a read of the form gives for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from crm_perf_sync.connector_sdk import (
    ConnectorConfigError,
    OpportunityRecord,
    PushedChange,
    PushRefused,
    Tombstone,
)
from crm_perf_sync.ingest import service as ingest
from crm_perf_sync.kit.errors import NotFound
from crm_perf_sync_rest.connector import RestConnector
from crm_perf_sync_rest.spec import load_spec, spec_path
from tests.connectors.rest.emulators.base import SimClock
from tests.connectors.rest.emulators.jiandaoyun import JiandaoyunEmulator
from tests.connectors.rest.emulators.jiandaoyun_data import synthetic
from tests.connectors.rest.jiandaoyun_pushes import Delivery, delivery
from tests.connectors.rest.support import connector, jiandaoyun_settings, of_type, read, stream

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SECRET = "jdy-push-secret-1"
FOLLOW_UPS = "5f1e0a0b0c0d0e0f10111213"
CUSTOMERS = "5f1e0a0b0c0d0e0f10111214"


@pytest.fixture
def clock() -> SimClock:
    return SimClock(START)


@pytest.fixture
def emulator(clock: SimClock) -> Iterator[JiandaoyunEmulator]:
    with JiandaoyunEmulator(synthetic(250), clock=clock.now) as found:
        yield found


def pushing(emulator: JiandaoyunEmulator, clock: SimClock, **inputs: Any) -> RestConnector:
    settings = jiandaoyun_settings(emulator, requests_per_second=0)
    settings["inputs"].update({"push_secret": SECRET, **inputs})
    return connector(settings, clock)


def verified(conn: RestConnector, sent: Delivery, clock: SimClock) -> list[PushedChange]:
    return list(conn.verify_push(sent.request(clock.now())))


def test_a_signed_push_of_each_form_names_its_record_and_its_delivery(
    emulator: JiandaoyunEmulator, clock: SimClock
) -> None:
    conn = pushing(emulator, clock, activities_entry_id=FOLLOW_UPS, customers_entry_id=CUSTOMERS)
    deal = emulator.records()[7]
    sent = delivery("data_update", deal, secret=SECRET, at=clock.now(), deliver_id="sha1=abc")

    assert verified(conn, sent, clock) == [
        PushedChange(
            "sha1=abc",
            "opportunities",
            deal["_id"],
            deleted=False,
            occurred_at=datetime.fromisoformat(deal["updateTime"]),
        )
    ]
    removed = delivery("data_remove", deal, secret=SECRET, at=clock.now(), deliver_id="sha1=def")
    assert [(c.stream, c.external_id, c.deleted) for c in verified(conn, removed, clock)] == [
        ("opportunities", deal["_id"], True)
    ]
    follow_up = {**deal, "_id": "5f1e0a0b0c0d0e0f10119999", "entryId": FOLLOW_UPS}
    created = delivery("data_create", follow_up, secret=SECRET, at=clock.now())
    assert [(c.stream, c.external_id, c.deleted) for c in verified(conn, created, clock)] == [
        ("activities", "5f1e0a0b0c0d0e0f10119999", False)
    ]
    # A customer is known by its name, not its data id: its form's pushes announce nothing.
    customer = {**deal, "entryId": CUSTOMERS}
    assert verified(conn, delivery("data_update", customer, secret=SECRET, at=clock.now()), clock) == []
    # Nor does another kind of push (the form's design changed), nor another app's form.
    assert verified(conn, delivery("form_update", deal, secret=SECRET, at=clock.now()), clock) == []
    other = {**deal, "entryId": "000000000000000000000000"}
    assert verified(conn, delivery("data_update", other, secret=SECRET, at=clock.now()), clock) == []


def test_the_follow_up_forms_pushes_announce_nothing_when_the_connection_reads_no_follow_ups(
    emulator: JiandaoyunEmulator, clock: SimClock
) -> None:
    conn = pushing(emulator, clock)  # no activities_entry_id: no activities stream
    follow_up = {**emulator.records()[0], "entryId": FOLLOW_UPS}
    assert verified(conn, delivery("data_create", follow_up, secret=SECRET, at=clock.now()), clock) == []


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            lambda d: replace(d, headers={k: v for k, v in d.headers.items() if k != "X-JDY-Signature"}),
            "no signature",
        ),
        (lambda d: replace(d, body=d.body.replace(b"data_update", b"data_remove")), "does not match"),
        (lambda d: replace(d, url=d.url.replace("nonce=0f5ade", "nonce=0f5adf")), "does not match"),
        (lambda d: replace(d, body=b"\xff\xfe"), "not UTF-8"),
        (lambda d: replace(d, url=d.url.replace("&nonce=0f5ade", "")), "not a push as the spec describes"),
        (lambda d: replace(d, url=d.url.split("?")[0] + "?nonce=0f5ade"), "timestamp is not epoch seconds"),
    ],
    ids=["unsigned", "altered body", "another nonce", "not utf-8", "no nonce", "no timestamp"],
)
def test_a_push_not_signed_with_the_connections_secret_is_refused(
    emulator: JiandaoyunEmulator, clock: SimClock, tamper: Any, message: str
) -> None:
    conn = pushing(emulator, clock)
    sent = delivery("data_update", emulator.records()[3], secret=SECRET, at=clock.now())
    assert len(verified(conn, sent, clock)) == 1
    with pytest.raises(PushRefused, match=message):
        verified(conn, tamper(sent), clock)


def test_a_push_signed_with_another_secret_or_outside_the_window_is_refused(
    emulator: JiandaoyunEmulator, clock: SimClock
) -> None:
    conn = pushing(emulator, clock)
    deal = emulator.records()[3]
    with pytest.raises(PushRefused, match="does not match"):
        verified(conn, delivery("data_update", deal, secret="another-secret", at=clock.now()), clock)
    # A replay: a push signed six minutes ago (the window is five), however well signed.
    old = delivery("data_update", deal, secret=SECRET, at=clock.now() - timedelta(minutes=6))
    with pytest.raises(PushRefused, match="a replay, or a clock that is off"):
        verified(conn, old, clock)
    early = delivery("data_update", deal, secret=SECRET, at=clock.now() + timedelta(minutes=6))
    with pytest.raises(PushRefused, match="more than 5 minutes from now"):
        verified(conn, early, clock)
    within = delivery("data_update", deal, secret=SECRET, at=clock.now() - timedelta(minutes=4))
    assert len(verified(conn, within, clock)) == 1


def test_during_a_rotation_both_secrets_are_accepted_and_without_one_every_push_is_refused(
    emulator: JiandaoyunEmulator, clock: SimClock
) -> None:
    rotating = pushing(emulator, clock, push_secret="jdy-push-secret-2", previous_push_secret=SECRET)
    deal = emulator.records()[3]
    for secret in ("jdy-push-secret-2", SECRET):
        assert (
            len(verified(rotating, delivery("data_update", deal, secret=secret, at=clock.now()), clock)) == 1
        )
    with pytest.raises(PushRefused, match="does not match"):
        verified(rotating, delivery("data_update", deal, secret="jdy-push-secret-0", at=clock.now()), clock)
    settings = jiandaoyun_settings(emulator, requests_per_second=0)
    unset = connector(settings, clock)
    with pytest.raises(PushRefused, match="no push secret"):
        verified(unset, delivery("data_update", deal, secret="", at=clock.now()), clock)


def test_the_records_a_push_names_are_fetched_in_batches_as_a_read_gives_them(
    emulator: JiandaoyunEmulator, clock: SimClock
) -> None:
    conn = pushing(emulator, clock)
    whole = {r.external_id: r for r in of_type(read(conn, "opportunities"), OpportunityRecord)}
    ids = [record["_id"] for record in emulator.records()][10:160]
    emulator.delete(ids[42])
    emulator.update(ids[7], {"销售阶段": "赢单", "金额": 4321})
    before = emulator.count("/api/v5/app/entry/data/list")

    fetched = list(conn.fetch(stream(conn, "opportunities"), [*ids, ids[3]]))

    records = {r.external_id: r for r in of_type(fetched, OpportunityRecord)}
    assert of_type(fetched, Tombstone) == [Tombstone(ids[42])]
    assert set(records) == set(ids) - {ids[42]}
    assert records[ids[7]].stage == "赢单"
    assert records[ids[7]].amount == 4321
    for key, record in records.items():
        if key != ids[7]:
            assert record == whole[key]
    # 150 ids: two requests of at most 100 ids each, the ids asked for twice fetched once.
    assert emulator.count("/api/v5/app/entry/data/list") - before == 2


def test_a_spec_whose_push_names_a_stream_it_cannot_fetch_is_refused_where_it_says_so(tmp_path: Path) -> None:
    spec = yaml.safe_load(spec_path("jiandaoyun").read_text(encoding="utf-8"))
    del spec["streams"]["activities"]["fetch"]
    path = tmp_path / "jdy.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False), encoding="utf-8")
    with pytest.raises(
        ConnectorConfigError, match=r"push\.changes\[1\]\.stream: stream 'activities' has no fetch"
    ):
        load_spec(str(path))


def test_a_connection_whose_spec_describes_no_pushes_takes_none(
    emulator: JiandaoyunEmulator, clock: SimClock, tmp_path: Path
) -> None:
    spec = yaml.safe_load(spec_path("jiandaoyun").read_text(encoding="utf-8"))
    del spec["push"]
    path = tmp_path / "no-push.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False), encoding="utf-8")
    settings = {**jiandaoyun_settings(emulator, requests_per_second=0), "spec": str(path)}
    conn = connector(settings, clock)
    assert not conn.takes_pushes()
    sent = delivery("data_update", emulator.records()[0], secret=SECRET, at=clock.now())
    with pytest.raises(NotFound, match="takes no pushes"):
        ingest.verified("jdy", conn, sent.request(clock.now()))
    with pytest.raises(PushRefused, match="describes no pushes"):
        conn.verify_push(sent.request(clock.now()))
    assert pushing(emulator, clock).takes_pushes()
