"""Each shipped spec against its CRM's emulator: increments and ties, deletions, rate limits, server
errors, tokens. The clock is simulated: every wait the connector makes moves it, none is real."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from crm_perf_sync.connector_sdk import (
    Checkpoint,
    ConnectorConfigError,
    FatalError,
    OpportunityRecord,
    QuotaExhaustedError,
    SnapshotComplete,
    Tombstone,
)
from tests.connectors.rest.emulators import huoban_data, jiandaoyun_data, pipedrive_data, zoho_data
from tests.connectors.rest.emulators.base import SimClock
from tests.connectors.rest.emulators.huoban import HuobanEmulator
from tests.connectors.rest.emulators.jiandaoyun import JiandaoyunEmulator
from tests.connectors.rest.emulators.pipedrive import PipedriveEmulator
from tests.connectors.rest.emulators.zoho import ZohoEmulator
from tests.connectors.rest.support import (
    connector,
    huoban_settings,
    jiandaoyun_settings,
    last_state,
    of_type,
    pipedrive_settings,
    read,
    zoho_settings,
)

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> SimClock:
    return SimClock(START)


def ids(messages: list[Any]) -> list[str]:
    return [r.external_id for r in of_type(messages, OpportunityRecord)]


# -- 简道云 ------------------------------------------------------------------------------------------


@pytest.fixture
def jdy(clock: SimClock) -> Iterator[JiandaoyunEmulator]:
    with JiandaoyunEmulator(jiandaoyun_data.synthetic(150), clock=clock.now) as emulator:
        yield emulator


def test_jiandaoyun_increments_read_every_record_of_a_tie_larger_than_a_page(
    jdy: JiandaoyunEmulator, clock: SimClock
) -> None:
    clock.advance(3600)
    first = read(connector(jiandaoyun_settings(jdy), clock), "opportunities")
    assert len(ids(first)) == 150
    boundary = datetime.fromisoformat(last_state(first)["since"])  # where the first read's window ended
    # 130 deals written in the very second the first read's window ended: more than a page of
    # 100 records, all with one updateTime.
    created = [jdy.create({"金额": n, "销售阶段": "需求沟通"}, at=boundary) for n in range(130)]
    clock.advance(900)
    second = read(connector(jiandaoyun_settings(jdy), clock), "opportunities", last_state(first))
    assert sorted(ids(second)) == sorted(created)
    assert {r.amount for r in of_type(second, OpportunityRecord)} == {Decimal(n) for n in range(130)}
    # And the window the second read asked for started a lookback before the first one's end.
    sent = [r for r in jdy.requests if r.path.endswith("/data/list")][-1].body
    since, until = sent["filter"]["cond"][0]["value"]
    assert since == (boundary - timedelta(minutes=5)).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )
    end = datetime.fromisoformat(last_state(second)["since"])  # and ended where the next one starts
    assert until == end.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_jiandaoyun_frequency_limits_and_server_errors_are_waited_out(
    jdy: JiandaoyunEmulator, clock: SimClock
) -> None:
    # One request a second on the data list, where the spec paces at ten: the API answers 400 with
    # code 8304, which the spec retries with backoff until the second has passed.
    jdy.rate_limit = {"/api/v5/app/entry/data/list": 1}
    jdy.fail("/api/v5/corp/department/user/list", 502, times=2)
    conn = connector(jiandaoyun_settings(jdy), clock)
    assert len(ids(read(conn, "opportunities"))) == 150
    assert jdy.count("/api/v5/app/entry/data/list", status=400) > 0
    assert len(read(conn, "owners")) > 2
    assert jdy.count("/api/v5/corp/department/user/list", status=502) == 2


# -- 伙伴云 ------------------------------------------------------------------------------------------


def test_huoban_errors_in_a_200_body_are_retried_and_ties_are_read_again(clock: SimClock) -> None:
    with HuobanEmulator(huoban_data.synthetic(120), clock=clock.now) as hb:
        hb.rate_limit = 1  # a request a second: answered HTTP 200 with a code != 0
        settings = huoban_settings(hb)
        clock.advance(400 * 24 * 3600)  # past every synthetic item's updated_on
        first = read(connector(settings, clock), "opportunities")
        assert len(ids(first)) == 120
        assert hb.count("/openapi/v1/item/list") > 2  # some answered "too frequent", then retried
        changed = sorted(ids(first), key=int)[:4]
        at = clock.now() - timedelta(seconds=1)  # before the first read's end: inside its lookback
        amount = hb.fields_by_name["金额"].field_id
        for item_id in changed:
            hb.update(item_id, {amount: 7}, at=at)
        clock.advance(60)
        second = read(connector(settings, clock), "opportunities", last_state(first))
    assert sorted(ids(second), key=int) == changed
    assert {r.amount for r in of_type(second, OpportunityRecord)} == {Decimal(7)}


# -- Pipedrive ---------------------------------------------------------------------------------------


@pytest.fixture
def pd(clock: SimClock) -> Iterator[PipedriveEmulator]:
    with PipedriveEmulator(pipedrive_data.synthetic(1200), clock=clock.now) as emulator:
        yield emulator


def test_pipedrive_rate_limit_headers_are_obeyed_without_a_429(
    pd: PipedriveEmulator, clock: SimClock
) -> None:
    pd.rate_limit = 2  # two requests per 2 s window for this token
    conn = connector(pipedrive_settings(pd), clock)
    assert len(ids(read(conn, "opportunities"))) == 1200
    assert pd.count("/api/v2/deals", status=429) == 0
    assert clock.slept, "the connector waited for the window to free a request"


def test_pipedrive_deletions_and_archived_deals(pd: PipedriveEmulator, clock: SimClock) -> None:
    clock.advance(3600)
    conn = connector(pipedrive_settings(pd), clock)
    first = read(conn, "opportunities")
    clock.advance(60)
    gone, archived = sorted(pd.deals)[:2]
    pd.delete(gone)
    pd.archive(archived)
    clock.advance(60)
    second = read(connector(pipedrive_settings(pd), clock), "opportunities", last_state(first))
    assert [t.external_id for t in of_type(second, Tombstone)] == [str(gone)]
    assert str(archived) not in ids(second)  # it left the live list, not the company
    assert ids(read(conn, "archived_opportunities")) == [str(archived)]


def test_pipedrive_through_oauth_renews_its_token(pd: PipedriveEmulator, clock: SimClock) -> None:
    pd.token_ttl = timedelta(seconds=600)
    inputs = {
        "client_id": pd.client_id,
        "client_secret": pd.client_secret,
        "refresh_token": pd.refresh_token,
        "token_url": f"{pd.url}/oauth/token",
        "company_domain": "acme",
    }
    settings = {"spec": "pipedrive", "base_url": pd.url, "inputs": inputs}
    conn = connector(settings, clock)
    assert len(ids(read(conn, "opportunities"))) == 1200
    clock.advance(900)
    assert len(ids(read(conn, "opportunities"))) == 1200
    assert pd.count("/oauth/token", status=200) == 2
    refused = connector({**settings, "inputs": {**inputs, "client_secret": "wrong"}}, clock)
    with pytest.raises(FatalError, match=r"OAuth token request .* refused"):
        refused.check()
    with pytest.raises(ConnectorConfigError, match="no way to sign in"):
        connector({**settings, "inputs": {"company_domain": "acme"}}, clock).check()


def test_pipedrive_a_spent_daily_budget_stops_the_run_until_tomorrow(
    pd: PipedriveEmulator, clock: SimClock
) -> None:
    pd.daily_quota = 25  # two requests' worth of tokens
    with pytest.raises(QuotaExhaustedError, match="daily request budget exceeded") as spent:
        read(connector(pipedrive_settings(pd), clock), "opportunities")
    midnight = datetime.combine(START.date() + timedelta(days=1), datetime.min.time(), UTC)
    assert spent.value.resume_after == pytest.approx((midnight - clock.now()).total_seconds(), abs=2)


# -- Zoho CRM ------------------------------------------------------------------------------------------


@pytest.fixture
def zoho(clock: SimClock) -> Iterator[ZohoEmulator]:
    with ZohoEmulator(zoho_data.synthetic(2300, leads=50), clock=clock.now) as emulator:
        yield emulator


def test_zoho_pages_past_2000_records_with_page_tokens_and_renews_expired_tokens(
    zoho: ZohoEmulator, clock: SimClock
) -> None:
    zoho.token_ttl = 300
    conn = connector(zoho_settings(zoho), clock)
    first = read(conn, "opportunities")
    assert len(set(ids(first))) == 2300  # 12 pages of 200, the last ones by page token
    assert zoho.count("/oauth/v2/token") == 1
    clock.advance(400)  # the token has expired: renewed before the next call, not after a 401
    second = read(conn, "opportunities", last_state(first))
    assert zoho.count("/oauth/v2/token") == 2
    assert zoho.count("/crm/v8/Deals", status=401) == 0
    # Nothing changed: If-Modified-Since is answered 304, an empty read that moves the window.
    assert ids(second) == []
    assert isinstance(second[-1], Checkpoint)
    assert second[-1].state["since"] > last_state(first)["since"]


def test_zoho_deletions_come_from_the_deleted_records_list(zoho: ZohoEmulator, clock: SimClock) -> None:
    clock.advance(3600)
    first = read(connector(zoho_settings(zoho), clock), "opportunities")
    victim = ids(first)[5]
    clock.advance(120)
    zoho.delete(victim)
    clock.advance(120)
    second = read(connector(zoho_settings(zoho), clock), "opportunities", last_state(first))
    assert [t.external_id for t in of_type(second, Tombstone)] == [victim]


def test_jiandaoyun_deletions_are_found_by_a_snapshot_when_the_connection_asks(
    jdy: JiandaoyunEmulator, clock: SimClock
) -> None:
    # 简道云 lists no deleted records: a connection may read the form whole at every sync instead.
    settings = jiandaoyun_settings(jdy, streams={"opportunities": {"snapshot": True}})
    conn = connector(settings, clock)
    (spec,) = [s for s in conn.streams() if s.name == "opportunities"]
    assert spec.snapshot
    assert spec.cursor_field is None
    first = read(conn, "opportunities")
    gone = ids(first)[7]
    jdy.delete(gone)
    second = read(connector(settings, clock), "opportunities", last_state(first))
    assert len(ids(second)) == 149
    assert gone not in ids(second)
    # The read ends complete, so the engine deletes what it did not return (with its guard).
    assert isinstance(second[-2], SnapshotComplete)
