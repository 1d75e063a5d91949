"""The Pipedrive emulator answers as Pipedrive documents: paging, filters, auth, limits, the Zoho dataset."""

from __future__ import annotations

import base64
import csv
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from tests.connectors.rest.emulators.base import SimClock
from tests.connectors.rest.emulators.pipedrive import ZOHO_LEADID_KEY, Company, PipedriveEmulator, lead_uuid
from tests.connectors.rest.emulators.pipedrive_data import ZOHO_DIR, synthetic, zoho_company

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ERROR_INFO = "Please check developers.pipedrive.com for more information about Pipedrive API."


@pytest.fixture(scope="module")
def zoho() -> Company:
    return zoho_company()


@pytest.fixture
def clock() -> SimClock:
    return SimClock(START)


@pytest.fixture
def emulator(clock: SimClock) -> Iterator[PipedriveEmulator]:
    with PipedriveEmulator(synthetic(12, leads=7, start=START - timedelta(days=30)), clock=clock.now) as emu:
        emu.rate_limit = None
        yield emu


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def get(
    http: httpx.Client,
    emu: PipedriveEmulator,
    path: str,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> httpx.Response:
    return http.get(emu.url + path, params=params, headers=headers or {"x-api-token": emu.api_token})


def walk(http: httpx.Client, emu: PipedriveEmulator, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of a cursor-paginated list."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        query: dict[str, Any] = {**params, "cursor": cursor} if cursor else dict(params)
        response = get(http, emu, path, **query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["data"])
        cursor = body["additional_data"]["next_cursor"]
        if cursor is None:
            return pages


def walk_leads(http: httpx.Client, emu: PipedriveEmulator, path: str, **params: Any) -> list[dict[str, Any]]:
    leads: list[dict[str, Any]] = []
    start = 0
    while True:
        body = get(http, emu, path, start=start, **params).json()
        leads += body["data"]
        pagination = body["additional_data"]["pagination"]
        if not pagination["more_items_in_collection"]:
            assert "next_start" not in pagination
            return leads
        start = pagination["next_start"]


# -- the dataset -----------------------------------------------------------------------------------


def read_csv(name: str) -> list[dict[str, str]]:
    with (ZOHO_DIR / name).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_zoho_company_matches_the_csv_files(zoho: Company) -> None:
    users = read_csv("Users.csv")
    potentials = read_csv("Potentials.csv")
    leads = read_csv("Leads.csv")
    assert sorted(u.id for u in zoho.users) == sorted(int(u["USER_ID"]) for u in users)
    assert len(zoho.users) == 11
    assert [s.name for s in zoho.stages] == [
        "Prospect",
        "Qualification",
        "Needs Analysis",
        "Initial Offer",
        "Proposal/Price Quote",
        "Negotiation/Review",
    ]
    assert [p.name for p in zoho.pipelines] == ["Zoho"]
    assert len(zoho.deals) == len(potentials) == 3632
    stages = Counter(p["Stage"] for p in potentials)
    statuses = Counter(d.status for d in zoho.deals)
    assert statuses == {
        "won": stages["Closed Won"],
        "lost": stages["Closed Lost"],
        "open": len(potentials) - stages["Closed Won"] - stages["Closed Lost"],
    }
    amounts = sum(float(p["Amount"].strip("$").replace(",", "")) for p in potentials)
    assert sum(d.value for d in zoho.deals) == pytest.approx(amounts)
    names = {int(u["USER_ID"]): u["Last Name"] for u in users}
    assert Counter(names[d.owner_id] for d in zoho.deals) == Counter(p["Potential Owner"] for p in potentials)
    assert sorted(d.custom_fields[ZOHO_LEADID_KEY] for d in zoho.deals) == sorted(
        p["LEADID"] for p in potentials
    )
    assert len(zoho.leads) == len(leads) == 3900
    converted = {r["LEADID"] for r in leads if r["CONVERTED"] == "Yes"}
    assert {x.custom_fields[ZOHO_LEADID_KEY] for x in zoho.leads if x.is_deleted} == converted
    # Each deal names the lead it came from, and that lead is the converted one with its LEADID.
    by_id = {x.id: x for x in zoho.leads}
    for deal in zoho.deals:
        assert deal.source_lead_id is not None
        lead = by_id[deal.source_lead_id]
        assert lead.is_deleted
        assert lead.custom_fields[ZOHO_LEADID_KEY] == deal.custom_fields[ZOHO_LEADID_KEY]
    rejected = sum(
        1 for r in leads if r["CONVERTED"] == "No" and r["Lead Status"] in ("Junk Lead", "Lost Lead")
    )
    assert sum(1 for x in zoho.leads if x.is_archived) == rejected == 43


def test_zoho_deals_carry_the_csv_values(zoho: Company) -> None:
    row = next(p for p in read_csv("Potentials.csv") if p["LEADID"] == "1786")
    deal = next(d for d in zoho.deals if d.custom_fields[ZOHO_LEADID_KEY] == "1786")
    assert (row["Potential Name"], row["Potential Owner"], row["Stage"]) == (
        "Moore, Kevin",
        "David Love",
        "Closed Lost",
    )
    assert deal.title == "Moore, Kevin"
    assert deal.owner_id == 1007
    assert deal.value == 22400
    assert deal.status == "lost"
    assert deal.lost_time == deal.close_time == int(datetime(2021, 4, 15, 0, 3, tzinfo=UTC).timestamp())
    assert deal.add_time == int(datetime(2021, 4, 13, 0, 2, tzinfo=UTC).timestamp())
    assert deal.expected_close_date == "2021-04-15"
    assert deal.source_lead_id == lead_uuid("zoho-lead-1786")


def test_the_whole_zoho_company_over_http(zoho: Company, http: httpx.Client) -> None:
    with PipedriveEmulator(zoho) as emu:
        emu.rate_limit = None
        pages = walk(http, emu, "/api/v2/deals", limit=500)
        assert [len(p) for p in pages] == [500] * 7 + [132]
        deals = [d for page in pages for d in page]
        assert [d["id"] for d in deals] == list(range(1, 3633))
        assert Counter(d["status"] for d in deals) == {"won": 1425, "lost": 485, "open": 1722}
        assert deals[0]["add_time"].endswith("Z")
        active = walk_leads(http, emu, "/v1/leads", limit=100)
        archived = walk_leads(http, emu, "/v1/leads/archived", limit=100)
        assert (len(active), len(archived)) == (225, 43)
        assert [x["add_time"] for x in active] == sorted(x["add_time"] for x in active)
        assert all(x["is_archived"] for x in archived)
        users = get(http, emu, "/v1/users").json()["data"]
        assert [u["name"] for u in users][:2] == ["Rozario Diego", "Santa Cruz Clara"]


def test_synthetic_builds_many_deals_quickly() -> None:
    company = synthetic(100_000)
    assert len(company.deals) == 100_000
    assert len(company.leads) == 50_000
    assert len({d.id for d in company.deals}) == 100_000
    assert {d.status for d in company.deals} == {"open", "won", "lost"}


# -- deals: paging ---------------------------------------------------------------------------------


def test_deal_pages_at_an_exact_multiple_of_the_limit_end_with_a_null_cursor(
    emulator: PipedriveEmulator, http: httpx.Client
) -> None:
    pages = walk(http, emulator, "/api/v2/deals", limit=4)
    assert [[d["id"] for d in p] for p in pages] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]


def test_deal_cursor_is_the_documented_base64_json_of_the_next_pages_first_deal(
    emulator: PipedriveEmulator, http: httpx.Client
) -> None:
    body = get(http, emulator, "/api/v2/deals", limit=5).json()
    cursor = body["additional_data"]["next_cursor"]
    decoded = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    assert decoded == {"field": "id", "fieldValue": 6, "sortDirection": "asc", "id": 6}
    assert set(body) == {"success", "data", "additional_data"}


def test_an_empty_deal_list_has_no_data_and_a_null_cursor(
    emulator: PipedriveEmulator, http: httpx.Client
) -> None:
    body = get(http, emulator, "/api/v2/deals", updated_since="2030-01-01T00:00:00Z").json()
    assert body == {"success": True, "data": [], "additional_data": {"next_cursor": None}}


def test_deal_limits_default_cap_and_refusals(emulator: PipedriveEmulator, http: httpx.Client) -> None:
    with PipedriveEmulator(synthetic(150)) as emu:
        emu.rate_limit = None
        assert len(get(http, emu, "/api/v2/deals").json()["data"]) == 100
        assert len(get(http, emu, "/api/v2/deals", limit=500).json()["data"]) == 150
        emu.max_page_size = 20
        assert len(get(http, emu, "/api/v2/deals", limit=50).json()["data"]) == 20
    for bad in (
        {"limit": 501},
        {"limit": 0},
        {"sort_by": "title"},
        {"status": "closed"},
        {"cursor": "nonsense!"},
    ):
        response = get(http, emulator, "/api/v2/deals", **bad)
        assert response.status_code == 400, bad
        body = response.json()
        assert body["success"] is False
        assert body["error_info"] == ERROR_INFO
        assert body["data"] is None


def test_a_cursor_from_another_sort_is_refused(emulator: PipedriveEmulator, http: httpx.Client) -> None:
    cursor = get(http, emulator, "/api/v2/deals", limit=2).json()["additional_data"]["next_cursor"]
    response = get(http, emulator, "/api/v2/deals", limit=2, cursor=cursor, sort_by="update_time")
    assert response.status_code == 400


def test_deal_fields_are_the_v2_deal_item(emulator: PipedriveEmulator, http: httpx.Client) -> None:
    emulator.create("Big one", value=1250.5, at=START, expected_close_date="2025-04-01")
    deal = get(http, emulator, "/api/v2/deals", ids="13").json()["data"][0]
    assert deal["title"] == "Big one"
    assert deal["value"] == 1250.5
    assert deal["currency"] == "USD"
    assert deal["add_time"] == deal["update_time"] == "2025-03-01T12:00:00Z"
    assert deal["expected_close_date"] == "2025-04-01"
    assert (deal["status"], deal["won_time"], deal["lost_time"], deal["close_time"]) == (
        "open",
        None,
        None,
        None,
    )
    assert deal["is_deleted"] is False
    assert deal["is_archived"] is False
    assert deal["custom_fields"] == {}
    assert {"owner_id", "stage_id", "pipeline_id", "origin", "probability", "visible_to", "label_ids"} <= set(
        deal
    )
    assert "source_lead_id" not in deal


# -- deals: filters, increments, ties, deletions ---------------------------------------------------


def test_updated_since_is_inclusive_and_updated_until_exclusive(
    emulator: PipedriveEmulator, http: httpx.Client, clock: SimClock
) -> None:
    t1 = START + timedelta(hours=1)
    t2 = START + timedelta(hours=2)
    emulator.update(3, at=t1, title="three")
    emulator.update(5, at=t2, title="five")
    since = get(http, emulator, "/api/v2/deals", updated_since="2025-03-01T13:00:00Z").json()["data"]
    assert [d["id"] for d in since] == [3, 5]
    window = get(
        http,
        emulator,
        "/api/v2/deals",
        updated_since="2025-03-01T13:00:00Z",
        updated_until="2025-03-01T14:00:00Z",
    ).json()["data"]
    assert [d["id"] for d in window] == [3]
    assert window[0]["update_time"] == "2025-03-01T13:00:00Z"
    clock.advance(60)
    emulator.update(4, value=99)
    latest = get(http, emulator, "/api/v2/deals", updated_since="2025-03-01T12:01:00Z").json()["data"]
    assert [d["id"] for d in latest] == [3, 4, 5]
    assert latest[1]["value"] == 99
    assert latest[1]["update_time"] == "2025-03-01T12:01:00Z"


def test_ties_on_update_time_come_in_id_order_across_pages(
    emulator: PipedriveEmulator, http: httpx.Client
) -> None:
    tie = START + timedelta(days=1)
    for deal_id in (9, 2, 7, 4):
        emulator.update(deal_id, at=tie, title=f"tied {deal_id}")
    params = {"sort_by": "update_time", "updated_since": "2025-03-02T12:00:00Z", "limit": 1}
    pages = walk(http, emulator, "/api/v2/deals", **params)
    assert [p[0]["id"] for p in pages] == [2, 4, 7, 9]
    descending = walk(http, emulator, "/api/v2/deals", **params, sort_direction="desc")
    assert [p[0]["id"] for p in descending] == [9, 7, 4, 2]


def test_a_deal_updated_between_pages_moves_behind_the_cursor(
    emulator: PipedriveEmulator, http: httpx.Client, clock: SimClock
) -> None:
    first = get(http, emulator, "/api/v2/deals", sort_by="update_time", limit=6).json()
    seen = [d["id"] for d in first["data"]]
    clock.advance(5)
    emulator.update(seen[0], title="moved")
    following = get(
        http,
        emulator,
        "/api/v2/deals",
        sort_by="update_time",
        limit=100,
        cursor=first["additional_data"]["next_cursor"],
    ).json()["data"]
    assert following[-1]["id"] == seen[0]
    assert following[-1]["title"] == "moved"


def test_status_filters_and_won_lost_times(emulator: PipedriveEmulator, http: httpx.Client) -> None:
    emulator.update(1, status="won", at=START)
    emulator.update(2, status="lost", lost_reason="price", at=START)
    emulator.update(3, status="open", at=START)
    deals = {d["id"]: d for d in walk(http, emulator, "/api/v2/deals", limit=500)[0]}
    assert deals[1]["status"] == "won"
    assert deals[1]["won_time"] == deals[1]["close_time"] == "2025-03-01T12:00:00Z"
    assert deals[2]["lost_time"] == deals[2]["close_time"] == "2025-03-01T12:00:00Z"
    assert deals[2]["lost_reason"] == "price"
    closed = get(http, emulator, "/api/v2/deals", status="won,lost", limit=500).json()["data"]
    assert {d["status"] for d in closed} == {"won", "lost"}
    assert {d["id"] for d in closed} == {i for i, d in deals.items() if d["status"] != "open"}
    owner = deals[4]["owner_id"]
    owned = get(http, emulator, "/api/v2/deals", owner_id=owner).json()["data"]
    assert {d["id"] for d in owned} == {i for i, d in deals.items() if d["owner_id"] == owner}
    staged = get(http, emulator, "/api/v2/deals", stage_id=deals[4]["stage_id"], pipeline_id=1).json()["data"]
    assert 4 in {d["id"] for d in staged}
    assert all(d["stage_id"] == deals[4]["stage_id"] for d in staged)


def test_deleted_deals_leave_the_list_and_are_listed_as_deleted_for_thirty_days(
    emulator: PipedriveEmulator, http: httpx.Client, clock: SimClock
) -> None:
    emulator.delete(6)
    ids = [d["id"] for d in walk(http, emulator, "/api/v2/deals", limit=500)[0]]
    assert 6 not in ids
    assert len(ids) == 11
    deleted = get(http, emulator, "/api/v2/deals", status="deleted").json()["data"]
    assert [(d["id"], d["is_deleted"], d["status"]) for d in deleted] == [(6, True, "deleted")]
    assert deleted[0]["update_time"] == "2025-03-01T12:00:00Z"
    since = get(
        http, emulator, "/api/v2/deals", status="open,won,lost,deleted", updated_since="2025-03-01T12:00:00Z"
    )
    assert [d["id"] for d in since.json()["data"]] == [6]
    clock.advance(31 * 86400)
    assert get(http, emulator, "/api/v2/deals", status="deleted").json()["data"] == []


def test_archived_deals_are_served_apart(emulator: PipedriveEmulator, http: httpx.Client) -> None:
    emulator.archive(8, at=START)
    assert 8 not in {d["id"] for d in get(http, emulator, "/api/v2/deals").json()["data"]}
    archived = get(http, emulator, "/api/v2/deals/archived").json()
    assert [(d["id"], d["is_archived"]) for d in archived["data"]] == [(8, True)]
    assert archived["additional_data"] == {"next_cursor": None}


def test_include_fields_and_custom_fields(zoho: Company, http: httpx.Client) -> None:
    with PipedriveEmulator(zoho) as emu:
        emu.rate_limit = None
        deal = get(http, emu, "/api/v2/deals", ids="1", include_fields="source_lead_id").json()["data"][0]
        assert deal["source_lead_id"] == lead_uuid(f"zoho-lead-{deal['custom_fields'][ZOHO_LEADID_KEY]}")
        trimmed = get(http, emu, "/api/v2/deals", ids="1", custom_fields="0" * 40).json()["data"][0]
        assert trimmed["custom_fields"] == {}
        assert get(http, emu, "/api/v2/deals", include_fields="colour").status_code == 400


# -- pipelines, stages, users ----------------------------------------------------------------------


def test_pipelines_stages_and_deal_fields(zoho: Company, http: httpx.Client) -> None:
    with PipedriveEmulator(zoho) as emu:
        emu.rate_limit = None
        pipelines = get(http, emu, "/api/v2/pipelines").json()
        assert pipelines["additional_data"] == {"next_cursor": None}
        assert [(p["id"], p["name"], p["order_nr"], p["is_deleted"]) for p in pipelines["data"]] == [
            (1, "Zoho", 1, False)
        ]
        stages = walk(http, emu, "/api/v2/stages", limit=4, sort_by="order_nr")
        assert [[s["order_nr"] for s in page] for page in stages] == [[1, 2, 3, 4], [5, 6]]
        assert {s["pipeline_id"] for page in stages for s in page} == {1}
        assert get(http, emu, "/api/v2/stages", pipeline_id=2).json()["data"] == []
        fields = [f for page in walk(http, emu, "/api/v2/dealFields", limit=5) for f in page]
        custom = [f for f in fields if f["is_custom_field"]]
        assert [(f["field_code"], f["field_name"], f["field_type"]) for f in custom] == [
            (ZOHO_LEADID_KEY, "Zoho LEADID", "varchar")
        ]
        assert {"id", "title", "value", "update_time"} <= {f["field_code"] for f in fields}


def test_users_are_v1_users(emulator: PipedriveEmulator, http: httpx.Client) -> None:
    body = get(http, emulator, "/v1/users").json()
    assert body["success"] is True
    assert [u["id"] for u in body["data"]] == [1, 2, 3, 4, 5]
    first = body["data"][0]
    assert first["is_you"] is True
    assert first["created"] == "2025-01-30 12:00:00"
    assert {"name", "email", "active_flag", "access", "timezone_name", "is_deleted"} <= set(first)
    assert get(http, emulator, "/api/v1/users").json() == body


# -- leads -----------------------------------------------------------------------------------------


def test_lead_offset_pages(emulator: PipedriveEmulator, http: httpx.Client) -> None:
    first = get(http, emulator, "/v1/leads", limit=3).json()
    assert first["additional_data"] == {
        "pagination": {"start": 0, "limit": 3, "more_items_in_collection": True, "next_start": 3}
    }
    last = get(http, emulator, "/v1/leads", start=6, limit=3).json()
    assert len(last["data"]) == 1
    assert last["additional_data"]["pagination"] == {
        "start": 6,
        "limit": 3,
        "more_items_in_collection": False,
    }
    exact = get(http, emulator, "/v1/leads", start=0, limit=7).json()
    assert exact["additional_data"]["pagination"]["more_items_in_collection"] is False
    beyond = get(http, emulator, "/v1/leads", start=7, limit=7).json()
    assert beyond["data"] == []
    assert [x["title"] for x in exact["data"]] == [f"Lead {i}" for i in range(1, 8)]
    assert get(http, emulator, "/v1/leads", limit=900).json()["additional_data"]["pagination"]["limit"] == 500


def test_leads_filter_sort_archive_and_convert(
    emulator: PipedriveEmulator, http: httpx.Client, clock: SimClock
) -> None:
    lead = emulator.create_lead("Fresh", owner_id=2, source_name="Web")
    assert lead.add_time == int(START.timestamp())
    newest = get(http, emulator, "/v1/leads", sort="add_time DESC", limit=1).json()["data"][0]
    assert (newest["title"], newest["source_name"], newest["owner_id"]) == ("Fresh", "Web", 2)
    assert newest["add_time"] == "2025-03-01T12:00:00Z"
    since = get(http, emulator, "/v1/leads", updated_since="2025-03-01T12:00:00Z").json()["data"]
    assert [x["id"] for x in since] == [lead.id]
    owned = get(http, emulator, "/v1/leads", owner_id=2).json()["data"]
    assert lead.id in {x["id"] for x in owned}
    assert {x["owner_id"] for x in owned} == {2}
    first = get(http, emulator, "/v1/leads", limit=1).json()["data"][0]
    emulator.archive_lead(first["id"])
    assert first["id"] not in {x["id"] for x in get(http, emulator, "/v1/leads").json()["data"]}
    assert [x["id"] for x in get(http, emulator, "/v1/leads/archived").json()["data"]] == [first["id"]]
    clock.advance(10)
    deal = emulator.convert_lead(lead.id, value=500)
    assert lead.id not in {x["id"] for x in get(http, emulator, "/v1/leads").json()["data"]}
    served = get(http, emulator, "/api/v2/deals", ids=str(deal.id), include_fields="source_lead_id").json()[
        "data"
    ]
    assert [(d["title"], d["source_lead_id"], d["owner_id"], d["value"]) for d in served] == [
        ("Fresh", lead.id, 2, 500)
    ]
    assert get(http, emulator, "/v1/leads", sort="colour ASC").status_code == 400


# -- auth ------------------------------------------------------------------------------------------


def test_requests_without_a_valid_token_are_refused_as_documented(
    emulator: PipedriveEmulator, http: httpx.Client
) -> None:
    for headers in ({}, {"x-api-token": "0" * 40}, {"Authorization": "Bearer nope"}):
        response = http.get(emulator.url + "/api/v2/deals", headers=headers)
        assert response.status_code == 401
        assert response.json()["success"] is False
        assert response.json()["errorCode"] == 401
    response = http.get(emulator.url + "/v1/leads", headers={"x-api-token": "wrong"})
    assert response.json() == {
        "success": False,
        "error": "unauthorized access",
        "errorCode": 401,
        "error_info": ERROR_INFO,
    }
    query = http.get(emulator.url + "/api/v2/deals", params={"api_token": emulator.api_token})
    assert query.status_code == 200
    assert get(http, emulator, "/v2/deals").status_code == 404


def test_oauth_tokens_expire_on_the_clock_and_refresh(
    emulator: PipedriveEmulator, http: httpx.Client, clock: SimClock
) -> None:
    emulator.token_ttl = timedelta(minutes=60)
    token = emulator.issue_access_token()
    bearer = {"Authorization": f"Bearer {token}"}
    ok = http.get(emulator.url + "/api/v2/deals", headers=bearer)
    assert ok.status_code == 200
    assert ok.headers["x-ratelimit-limit"] == "160"
    assert "x-daily-requests-left" not in ok.headers
    clock.advance(3600)
    expired = http.get(emulator.url + "/api/v2/deals", headers=bearer)
    assert expired.status_code == 401
    assert expired.json()["error"] == "Invalid token: access_token is invalid"
    basic = base64.b64encode(f"{emulator.client_id}:{emulator.client_secret}".encode()).decode()
    refreshed = http.post(
        emulator.url + "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": emulator.refresh_token},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert refreshed.status_code == 200
    body = refreshed.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["refresh_token"] == emulator.refresh_token
    again = http.get(
        emulator.url + "/api/v2/deals", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert again.status_code == 200
    wrong = http.post(
        emulator.url + "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": "1:1:nope"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert (wrong.status_code, wrong.json()) == (
        400,
        {"success": False, "message": "Invalid grant: refresh_token is invalid"},
    )
    stranger = http.post(
        emulator.url + "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": emulator.refresh_token},
        headers={"Authorization": "Basic " + base64.b64encode(b"a:b").decode()},
    )
    assert stranger.json()["message"] == "Invalid client: client is invalid"


# -- rate limits -----------------------------------------------------------------------------------


def test_burst_limit_over_a_rolling_two_second_window(
    emulator: PipedriveEmulator, http: httpx.Client, clock: SimClock
) -> None:
    emulator.rate_limit = 3
    first = get(http, emulator, "/api/v2/deals")
    assert (first.headers["x-ratelimit-limit"], first.headers["x-ratelimit-remaining"]) == ("3", "2")
    assert first.headers["x-ratelimit-reset"] == "2"
    clock.advance(1)
    assert get(http, emulator, "/api/v2/stages").headers["x-ratelimit-remaining"] == "1"
    third = get(http, emulator, "/v1/users")
    assert (third.headers["x-ratelimit-remaining"], third.headers["x-ratelimit-reset"]) == ("0", "1")
    refused = get(http, emulator, "/api/v2/deals")
    assert refused.status_code == 429
    assert refused.json() == {
        "success": False,
        "error": "Request over limit",
        "errorCode": 429,
        "error_info": ERROR_INFO,
    }
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert refused.headers["retry-after"] == refused.headers["x-ratelimit-reset"] == "1"
    clock.advance(1)  # the first request leaves the window
    assert get(http, emulator, "/api/v2/deals").status_code == 200
    assert get(http, emulator, "/api/v2/deals").status_code == 429
    assert emulator.count("/api/v2/deals", status=429) == 2


def test_daily_token_budget_spends_documented_costs_and_resets_at_midnight(
    emulator: PipedriveEmulator, http: httpx.Client, clock: SimClock
) -> None:
    emulator.daily_quota = 45
    assert get(http, emulator, "/api/v2/deals").headers["x-daily-requests-left"] == "35"
    assert get(http, emulator, "/v1/leads").headers["x-daily-requests-left"] == "15"
    assert get(http, emulator, "/api/v2/stages").headers["x-daily-requests-left"] == "10"
    assert get(http, emulator, "/api/v2/deals").headers["x-daily-requests-left"] == "0"
    refused = get(http, emulator, "/api/v2/pipelines")
    assert refused.status_code == 429
    assert refused.json()["error"] == "daily request budget exceeded"
    assert refused.json()["errorCode"] == 429
    assert refused.headers["retry-after"] == str(12 * 3600)
    clock.advance(12 * 3600)
    assert get(http, emulator, "/api/v2/pipelines").headers["x-daily-requests-left"] == "40"


def test_default_limits_are_the_growth_plans(zoho: Company, http: httpx.Client, clock: SimClock) -> None:
    with PipedriveEmulator(zoho, clock=clock.now) as emu:
        statuses = [get(http, emu, "/api/v2/stages").status_code for _ in range(41)]
        assert statuses == [200] * 40 + [429]
        clock.advance(2)
        response = get(http, emu, "/api/v2/stages")
        assert response.headers["x-ratelimit-limit"] == "40"
        assert int(response.headers["x-daily-requests-left"]) == 30_000 * 2 * 11 - 41 * 5


# -- faults ----------------------------------------------------------------------------------------


def test_injected_faults_come_before_auth_and_limits(emulator: PipedriveEmulator, http: httpx.Client) -> None:
    emulator.fail("/api/v2/deals", 503, body={"success": False, "error": "Service Unavailable"}, times=1)
    assert get(http, emulator, "/api/v2/deals").status_code == 503
    assert get(http, emulator, "/api/v2/deals").status_code == 200
    emulator.fail("/api/v2/deals", drop=True)
    with pytest.raises(httpx.TransportError):
        get(http, emulator, "/api/v2/deals")
    assert get(http, emulator, "/api/v2/deals").status_code == 200
