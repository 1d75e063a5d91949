"""The Zoho CRM emulator itself, driven with plain httpx: paging, increments, deletions, auth, limits."""

from __future__ import annotations

import csv
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.connectors.rest.emulators.base import SimClock
from tests.connectors.rest.emulators.zoho import ZohoEmulator
from tests.connectors.rest.emulators.zoho_data import Org, data_dir, synthetic, zoho_org

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def sample() -> Org:
    return zoho_org()


@pytest.fixture
def clock() -> SimClock:
    return SimClock(START)


def serve(org: Org, clock: SimClock) -> tuple[ZohoEmulator, httpx.Client]:
    emulator = ZohoEmulator(org, clock=clock.now).start()
    client = httpx.Client(
        base_url=emulator.url, headers={"Authorization": f"Zoho-oauthtoken {emulator.issue_token()}"}
    )
    return emulator, client


@pytest.fixture
def deals450(clock: SimClock) -> Iterator[tuple[ZohoEmulator, httpx.Client]]:
    emulator, client = serve(synthetic(450, leads=10), clock)
    yield emulator, client
    client.close()
    emulator.stop()


def walk(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every record of a listing, by page numbers then page tokens."""
    out: list[dict[str, Any]] = []
    query: dict[str, Any] = {"page": 1, **params}
    while True:
        answer = client.get(path, params=query)
        if answer.status_code == 204:
            return out
        assert answer.status_code == 200, answer.text
        body = answer.json()
        out.extend(body["data"])
        if not body["info"]["more_records"]:
            return out
        query = {**params, "page_token": body["info"]["next_page_token"]}


# -- the dataset --------------------------------------------------------------------------------


def _csv(name: str) -> list[dict[str, str]]:
    with (data_dir() / "zoho_crm_sample" / name).open(newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def test_sample_org_matches_the_csv_files(sample: Org) -> None:
    users, deals, leads = _csv("Users.csv"), _csv("Potentials.csv"), _csv("Leads.csv")
    assert (len(sample.users), len(sample.deals), len(sample.leads)) == (len(users), len(deals), len(leads))
    assert (len(users), len(deals), len(leads)) == (11, 3632, 3900)
    first = sample.deals[0]
    assert first.values["Deal_Name"] == deals[0]["Potential Name"] == "Lewis, James"
    assert first.values["Amount"] == 22700.0
    assert first.values["Closing_Date"] == "2021-04-16"
    assert first.values["LEADID"] == deals[0]["LEADID"]
    assert first.created == datetime(2021, 4, 15, 0, 2, tzinfo=UTC)
    roger = next(u for u in users if u["Last Name"] == "Roger Terrence")
    assert first.values["Owner"]["name"] == "Roger Terrence"
    assert first.values["Owner"]["email"] == roger["Email"]
    assert {d.values["Owner"]["id"] for d in sample.deals} <= {str(u.id) for u in sample.users}
    assert sum(float(r["Amount"].strip("$").replace(",", "")) for r in deals) == pytest.approx(
        sum(d.values["Amount"] for d in sample.deals)
    )
    converted = sum(1 for r in leads if r["CONVERTED"] == "Yes")
    assert sum(1 for lead in sample.leads if lead.values["Converted__s"]) == converted == 3632
    assert len({d.id for d in sample.deals} | {lead.id for lead in sample.leads}) == 3632 + 3900


def test_leads_default_to_unconverted_as_documented(sample: Org, clock: SimClock) -> None:
    emulator, client = serve(sample, clock)
    with emulator, client:
        unconverted = walk(client, "/crm/v8/Leads", fields="Last_Name,Converted__s", per_page=200)
        both = walk(client, "/crm/v8/Leads", fields="Last_Name,Owner", converted="both")
        converted = walk(
            client, "/crm/v8/Leads", fields="Converted_Date_Time,Converted_Deal,LEADID", converted="true"
        )
    assert len(unconverted) == 268
    assert not any(r["Converted__s"] for r in unconverted)
    assert len(both) == 3900
    assert len({r["id"] for r in both}) == 3900
    assert len(converted) == 3632
    assert all(r["Converted_Date_Time"] for r in converted)
    # a converted lead names its deal, and the deal keeps the lead's LEADID
    deal_leadid = {str(deal.id): deal.values["LEADID"] for deal in sample.deals}
    assert all(deal_leadid[r["Converted_Deal"]["id"]] == r["LEADID"] for r in converted)


def test_deals_served_in_zoho_shape(sample: Org, clock: SimClock) -> None:
    emulator, client = serve(sample, clock)
    with emulator, client:
        answer = client.get(
            "/crm/v8/Deals",
            params={
                "fields": "Deal_Name,Owner,Amount,Stage,Closing_Date,Created_Time,LEADID",
                "sort_by": "id",
                "sort_order": "asc",
                "per_page": 1,
            },
        )
        deals = walk(client, "/crm/v8/Deals", fields="Amount")
    assert answer.status_code == 200
    record = answer.json()["data"][0]
    assert record == {
        "Deal_Name": "Lewis, James",
        "Owner": {"name": "Roger Terrence", "id": record["Owner"]["id"], "email": "roger@finepick.com"},
        "Amount": 22700.0,
        "Stage": "Needs Analysis",
        "Closing_Date": "2021-04-16",
        "Created_Time": "2021-04-14T17:02:00-07:00",
        "LEADID": "1832",
        "id": record["id"],
    }
    assert len(record["id"]) == 19
    assert record["id"].isdigit()
    assert len(deals) == 3632


# -- OAuth and authentication -------------------------------------------------------------------


def test_refresh_token_grant(clock: SimClock) -> None:
    with (
        ZohoEmulator(synthetic(3), clock=clock.now) as emulator,
        httpx.Client(base_url=emulator.url) as client,
    ):
        params = {
            "grant_type": "refresh_token",
            "client_id": emulator.client_id,
            "client_secret": emulator.client_secret,
            "refresh_token": emulator.refresh_token,
        }
        answer = client.post("/oauth/v2/token", params=params)
        assert answer.status_code == 200
        body = answer.json()
        assert set(body) == {"access_token", "api_domain", "token_type", "expires_in"}
        assert (body["api_domain"], body["token_type"], body["expires_in"]) == (emulator.url, "Bearer", 3600)
        headers = {"Authorization": f"Zoho-oauthtoken {body['access_token']}"}
        assert client.get("/crm/v8/Deals", params={"fields": "Stage"}, headers=headers).status_code == 200
        # a form body works as well as the query string
        assert "access_token" in client.post("/oauth/v2/token", data=params).json()
        bad_secret = client.post("/oauth/v2/token", params={**params, "client_secret": "nope"})
        assert (bad_secret.status_code, bad_secret.json()) == (200, {"error": "invalid_client"})
        bad_refresh = client.post("/oauth/v2/token", params={**params, "refresh_token": "1000.x.y"})
        assert (bad_refresh.status_code, bad_refresh.json()) == (200, {"error": "invalid_code"})
        for _ in range(8):
            assert client.post("/oauth/v2/token", params=params).status_code == 200
        blocked = client.post("/oauth/v2/token", params=params)
        assert blocked.status_code == 400
        assert blocked.json()["error"] == "Access Denied"
        clock.advance(601)
        assert client.post("/oauth/v2/token", params=params).status_code == 200
        # the access token minted first has expired meanwhile? not yet: 601 s < 3600 s
        assert client.get("/crm/v8/Deals", params={"fields": "Stage"}, headers=headers).status_code == 200
        clock.advance(3000)
        expired = client.get("/crm/v8/Deals", params={"fields": "Stage"}, headers=headers)
        assert expired.status_code == 401
        assert expired.json() == {
            "code": "INVALID_TOKEN",
            "details": {},
            "message": "invalid oauth token",
            "status": "error",
        }
        assert emulator.count("/crm/", status=401) == 1


def test_authentication_refused(deals450: tuple[ZohoEmulator, httpx.Client]) -> None:
    emulator, _ = deals450
    with httpx.Client(base_url=emulator.url) as bare:
        missing = bare.get("/crm/v8/Deals", params={"fields": "Stage"})
        bearer = bare.get("/crm/v8/Deals", params={"fields": "Stage"}, headers={"Authorization": "Bearer x"})
        unknown = bare.get(
            "/crm/v8/Deals", params={"fields": "Stage"}, headers={"Authorization": "Zoho-oauthtoken 1000.a.b"}
        )
    assert missing.status_code == bearer.status_code == 401
    assert missing.json()["code"] == bearer.json()["code"] == "AUTHENTICATION_FAILURE"
    assert (unknown.status_code, unknown.json()["code"]) == (401, "INVALID_TOKEN")


# -- Get Records --------------------------------------------------------------------------------


def test_fields_are_mandatory(deals450: tuple[ZohoEmulator, httpx.Client]) -> None:
    _, client = deals450
    answer = client.get("/crm/v8/Deals")
    assert answer.status_code == 400
    assert answer.json() == {
        "code": "REQUIRED_PARAM_MISSING",
        "details": {"param_name": "fields"},
        "message": "One of the expected parameter is missing",
        "status": "error",
    }
    too_many = client.get("/crm/v8/Deals", params={"fields": ",".join(f"F{i}" for i in range(51))})
    assert (too_many.status_code, too_many.json()["code"]) == (400, "LIMIT_EXCEEDED")
    assert client.get("/crm/v8/Deals", params={"fields": "Stage", "per_page": 201}).status_code == 400
    assert client.get("/crm/v8/Nope", params={"fields": "Stage"}).json()["code"] == "INVALID_MODULE"


def test_pages_by_number(deals450: tuple[ZohoEmulator, httpx.Client]) -> None:
    _, client = deals450
    seen: list[str] = []
    for page, (count, more) in enumerate([(200, True), (200, True), (50, False)], start=1):
        body = client.get("/crm/v8/Deals", params={"fields": "Deal_Name", "page": page}).json()
        assert (body["info"]["count"], body["info"]["more_records"], body["info"]["page"]) == (
            count,
            more,
            page,
        )
        assert (body["info"]["sort_by"], body["info"]["sort_order"], body["info"]["per_page"]) == (
            "id",
            "desc",
            200,
        )
        seen.extend(r["id"] for r in body["data"])
    assert seen == sorted(seen, key=int, reverse=True)
    assert len(set(seen)) == 450
    beyond = client.get("/crm/v8/Deals", params={"fields": "Deal_Name", "page": 4})
    assert (beyond.status_code, beyond.content) == (204, b"")


def test_exact_multiple_of_the_page_size_and_empty_module(clock: SimClock) -> None:
    emulator, client = serve(synthetic(400, leads=0), clock)
    with emulator, client:
        last = client.get("/crm/v8/Deals", params={"fields": "Stage", "page": 2}).json()
        assert (last["info"]["count"], last["info"]["more_records"], last["info"]["next_page_token"]) == (
            200,
            False,
            None,
        )
        assert client.get("/crm/v8/Deals", params={"fields": "Stage", "page": 3}).status_code == 204
        empty = client.get("/crm/v8/Leads", params={"fields": "Last_Name"})
        assert (empty.status_code, empty.content) == (204, b"")


def test_page_tokens_past_two_thousand(clock: SimClock) -> None:
    emulator, client = serve(synthetic(2_450, leads=0), clock)
    with emulator, client:
        refused = client.get("/crm/v8/Deals", params={"fields": "Stage", "page": 11})
        assert refused.status_code == 400
        assert refused.json()["code"] == "DISCRETE_PAGINATION_LIMIT_EXCEEDED"
        tenth = client.get("/crm/v8/Deals", params={"fields": "Stage", "page": 10}).json()
        assert tenth["info"]["more_records"] is True
        token = tenth["info"]["next_page_token"]
        assert tenth["info"]["page_token_expiry"] == "2025-03-02T04:00:00-08:00"
        eleventh = client.get("/crm/v8/Deals", params={"fields": "Stage", "page_token": token})
        assert eleventh.status_code == 200
        assert eleventh.json()["info"]["page"] == 11
        both = client.get("/crm/v8/Deals", params={"fields": "Stage", "page_token": token, "page": 11})
        assert both.status_code == 400
        assert both.json() == {
            "code": "AMBIGUITY_DURING_PROCESSING",
            "details": {"ambiguity_due_to": [{"param_name": "page"}, {"param_name": "page_token"}]},
            "message": "Ambiguity while processing the request",
            "status": "error",
        }
        altered = client.get("/crm/v8/Deals", params={"fields": "Stage,Amount", "page_token": token})
        assert altered.json() == {
            "code": "TOKEN_BOUND_DATA_MISMATCH",
            "details": {"param_name": "page_token"},
            "message": "The page_token given seems to be invalid or input param is added or altered or "
            "deleted",
            "status": "error",
        }
        other = httpx.get(
            f"{emulator.url}/crm/v8/Deals",
            params={"fields": "Stage", "page_token": token},
            headers={"Authorization": f"Zoho-oauthtoken {emulator.issue_token()}"},
        )
        assert other.json()["code"] == "INVALID_DATA"  # page tokens belong to the user who got them
        everything = walk(client, "/crm/v8/Deals", fields="Stage", sort_by="Created_Time", sort_order="asc")
        assert len({r["id"] for r in everything}) == 2_450


def test_page_tokens_expire_after_a_day(deals450: tuple[ZohoEmulator, httpx.Client], clock: SimClock) -> None:
    emulator, client = deals450
    emulator.token_ttl = 3 * 24 * 3600  # an access token that outlives the page token
    client.headers["Authorization"] = f"Zoho-oauthtoken {emulator.issue_token()}"
    params: dict[str, str | int] = {"fields": "Stage", "per_page": 100}
    token = client.get("/crm/v8/Deals", params=params).json()["info"]["next_page_token"]
    clock.advance(24 * 3600 - 1)
    assert client.get("/crm/v8/Deals", params={**params, "page_token": token}).status_code == 200
    clock.advance(1)
    stale = client.get("/crm/v8/Deals", params={**params, "page_token": token})
    assert stale.status_code == 400
    assert stale.json() == {
        "code": "EXPIRED_VALUE",
        "details": {"api_name": "page_token", "json_path": "$.query.page_token"},
        "message": "Page token expired",
        "status": "error",
    }


def test_modified_time_order_breaks_ties_by_id(deals450: tuple[ZohoEmulator, httpx.Client]) -> None:
    emulator, client = deals450
    first, second = client.get(
        "/crm/v8/Deals", params={"fields": "Stage", "per_page": 2, "sort_order": "asc"}
    ).json()["data"][:2]
    moment = START + timedelta(days=3)
    emulator.update(second["id"], {"Stage": "Closed Won"}, at=moment)
    emulator.update(first["id"], {"Stage": "Closed Lost"}, at=moment)
    body = client.get(
        "/crm/v8/Deals",
        params={
            "fields": "Stage,Modified_Time",
            "sort_by": "Modified_Time",
            "sort_order": "desc",
            "per_page": 3,
        },
    ).json()
    top = body["data"]
    assert [r["id"] for r in top[:2]] == sorted([first["id"], second["id"]], key=int, reverse=True)
    assert top[0]["Modified_Time"] == top[1]["Modified_Time"] == "2025-03-04T04:00:00-08:00"
    assert {r["Stage"] for r in top[:2]} == {"Closed Won", "Closed Lost"}


def test_if_modified_since(deals450: tuple[ZohoEmulator, httpx.Client]) -> None:
    emulator, client = deals450
    since = "2025-03-01T04:00:00-08:00"  # START
    nothing = client.get("/crm/v8/Deals", params={"fields": "Stage"}, headers={"If-Modified-Since": since})
    assert (nothing.status_code, nothing.content) == (304, b"")
    record_id = emulator.create("Deals", {"Deal_Name": "New", "Stage": "Prospect", "Amount": 10.0})
    emulator.update(record_id, {"Amount": 20.0}, at=START + timedelta(seconds=5))
    at_start = emulator.create("Deals", {"Deal_Name": "Boundary"}, at=START)
    changed = client.get("/crm/v8/Deals", params={"fields": "Amount"}, headers={"If-Modified-Since": since})
    assert changed.status_code == 200
    assert [r["id"] for r in changed.json()["data"]] == [record_id]  # strictly after the instant
    assert changed.json()["data"][0]["Amount"] == 20.0
    assert at_start != record_id


# -- deleted records, users, settings -----------------------------------------------------------


def test_deleted_records(deals450: tuple[ZohoEmulator, httpx.Client]) -> None:
    emulator, client = deals450
    assert client.get("/crm/v8/Deals/deleted").status_code == 204
    ids = [
        r["id"] for r in client.get("/crm/v8/Deals", params={"fields": "Stage", "per_page": 3}).json()["data"]
    ]
    emulator.delete(ids[0], at=START + timedelta(minutes=1))
    emulator.delete(ids[1], at=START + timedelta(minutes=2), permanent=True)
    emulator.delete(ids[2], at=START + timedelta(minutes=3))
    body = client.get("/crm/v8/Deals/deleted", params={"type": "all"}).json()
    assert [r["id"] for r in body["data"]] == [ids[2], ids[1], ids[0]]
    assert body["info"] == {"per_page": 200, "count": 3, "page": 1, "more_records": False}
    recycled = body["data"][0]
    assert recycled["type"] == "recycle"
    assert recycled["display_name"].startswith("Deal ")
    assert set(recycled["deleted_by"]) == {"name", "id"}
    assert recycled["deleted_time"] == "2025-03-01T04:03:00-08:00"
    assert body["data"][1] == {
        "deleted_by": None,
        "id": ids[1],
        "display_name": None,
        "type": "permanent",
        "created_by": None,
        "deleted_time": "2025-03-01T04:02:00-08:00",
    }
    permanent = client.get("/crm/v8/Deals/deleted", params={"type": "permanent"}).json()["data"]
    assert [r["id"] for r in permanent] == [ids[1]]
    later = client.get(
        "/crm/v8/Deals/deleted", headers={"If-Modified-Since": "2025-03-01T04:01:30-08:00"}
    ).json()
    assert [r["id"] for r in later["data"]] == [ids[2], ids[1]]
    assert (
        client.get("/crm/v8/Deals/deleted", params={"type": "gone"}).json()["data"][0]["code"]
        == "PATTERN_NOT_MATCHED"
    )
    remaining = walk(client, "/crm/v8/Deals", fields="Stage")
    assert len(remaining) == 447
    assert not set(ids) & {r["id"] for r in remaining}


def test_users(sample: Org, clock: SimClock) -> None:
    emulator, client = serve(sample, clock)
    with emulator, client:
        everyone = client.get("/crm/v8/users", params={"type": "AllUsers"}).json()
        assert everyone["info"] == {"per_page": 200, "count": 11, "page": 1, "more_records": False}
        david = next(u for u in everyone["users"] if u["full_name"] == "David Love")
        assert (david["email"], david["status"]) == ("david@finepick.com", "active")
        emulator.deactivate_user(david["id"])
        active = client.get("/crm/v8/users", params={"type": "ActiveUsers"}).json()["users"]
        assert len(active) == 10
        assert david["id"] not in {u["id"] for u in active}
        inactive = client.get("/crm/v8/users", params={"type": "DeactiveUsers"}).json()["users"]
        assert [u["id"] for u in inactive] == [david["id"]]
        admins = client.get("/crm/v8/users", params={"type": "AdminUsers"}).json()["users"]
        assert [(u["full_name"], u["profile"]["name"]) for u in admins] == [
            ("Rozario Diego", "Administrator")
        ]
        chosen = client.get("/crm/v8/users", params={"ids": f"{david['id']},{admins[0]['id']}"}).json()
        assert sorted(u["full_name"] for u in chosen["users"]) == ["David Love", "Rozario Diego"]
        changed = client.get(
            "/crm/v8/users",
            params={"type": "AllUsers"},
            headers={"If-Modified-Since": "2025-01-01T00:00:00Z"},
        ).json()["users"]
        assert [u["id"] for u in changed] == [david["id"]]
        bad = client.get("/crm/v8/users", params={"type": "Everyone"})
        assert (bad.status_code, bad.json()["details"]) == (400, {"param_name": "type"})


def test_pipeline_and_stage_picklist(deals450: tuple[ZohoEmulator, httpx.Client]) -> None:
    _, client = deals450
    missing = client.get("/crm/v8/settings/pipeline")
    assert (missing.status_code, missing.json()["code"]) == (400, "REQUIRED_PARAM_MISSING")
    layout = client.get("/crm/v8/settings/layouts", params={"module": "Deals"}).json()["layouts"][0]
    pipeline = client.get("/crm/v8/settings/pipeline", params={"layout_id": layout["id"]}).json()["pipeline"][
        0
    ]
    stages = [m["actual_value"] for m in pipeline["maps"]]
    assert stages[0] == "Prospect"
    assert stages[-2:] == ["Closed Won", "Closed Lost"]
    fields = client.get("/crm/v8/settings/fields", params={"module": "Deals"}).json()["fields"]
    stage = next(f for f in fields if f["api_name"] == "Stage")
    assert [v["actual_value"] for v in stage["pick_list_values"]] == stages
    assert {v["forecast_type"] for v in stage["pick_list_values"]} == {"Open", "Closed Won", "Closed Lost"}


# -- limits and faults --------------------------------------------------------------------------


def test_daily_credits(deals450: tuple[ZohoEmulator, httpx.Client], clock: SimClock) -> None:
    emulator, client = deals450
    emulator.daily_quota = 5
    params: dict[str, str | int] = {"fields": "Stage", "per_page": 1}
    assert "X-API-CREDITS-REMAINING" not in client.get("/crm/v8/Deals", params=params).headers
    assert client.get("/crm/v8/Deals/deleted").status_code == 204  # 2 credits
    third = client.get("/crm/v8/Deals", params=params)
    assert third.headers["X-API-CREDITS-REMAINING"] == "1"
    clock.advance(1800)
    assert client.get("/crm/v8/Deals", params=params).status_code == 200
    refused = client.get("/crm/v8/Deals", params=params)
    assert refused.status_code == 429
    assert refused.json() == {
        "code": "TOO_MANY_REQUESTS",
        "details": {},
        "message": "Number of API requests for the 24 hour period is exceeded or the concurrency limit of "
        "the user for the app is exceeded",
        "status": "error",
    }
    clock.advance(24 * 3600 - 1800)  # the first calls leave the rolling window
    client.headers["Authorization"] = f"Zoho-oauthtoken {emulator.issue_token()}"
    assert client.get("/crm/v8/Deals", params=params).status_code == 200


def test_concurrency_limit(deals450: tuple[ZohoEmulator, httpx.Client]) -> None:
    emulator, client = deals450
    emulator.concurrency = 2
    emulator.gate.clear()
    statuses: list[int] = []

    def call() -> None:
        statuses.append(client.get("/crm/v8/Deals", params={"fields": "Stage", "per_page": 1}).status_code)

    workers = [threading.Thread(target=call) for _ in range(2)]
    for worker in workers:
        worker.start()
    deadline = datetime.now(UTC) + timedelta(seconds=5)
    while emulator._in_flight < 2 and datetime.now(UTC) < deadline:
        threading.Event().wait(0.005)
    with httpx.Client(base_url=emulator.url, headers=dict(client.headers)) as third:
        refused = third.get("/crm/v8/Deals", params={"fields": "Stage"})
    emulator.gate.set()
    for worker in workers:
        worker.join()
    assert (refused.status_code, refused.json()["code"]) == (429, "TOO_MANY_REQUESTS")
    assert statuses == [200, 200]


def test_injected_faults(deals450: tuple[ZohoEmulator, httpx.Client]) -> None:
    emulator, client = deals450
    emulator.fail("/crm/v8/Deals", 503, times=1)
    assert client.get("/crm/v8/Deals", params={"fields": "Stage"}).status_code == 503
    emulator.fail("/crm/v8/Deals", drop=True)
    with pytest.raises(httpx.TransportError):
        client.get("/crm/v8/Deals", params={"fields": "Stage"})
    assert client.get("/crm/v8/Deals", params={"fields": "Stage"}).status_code == 200


def test_synthetic_is_fast_and_pages_cheaply(clock: SimClock) -> None:
    org = synthetic(120_000, leads=0)
    assert len(org.deals) == 120_000
    emulator, client = serve(org, clock)
    with emulator, client:
        body = client.get("/crm/v8/Deals", params={"fields": "Stage", "sort_by": "Modified_Time"}).json()
        assert body["info"]["count"] == 200
        assert body["info"]["more_records"] is True


def test_page_tokens_stop_at_the_documented_limit(clock: SimClock) -> None:
    emulator, client = serve(synthetic(700, leads=0), clock)
    with emulator, client:
        emulator.token_limit = 500  # 100,000 on Zoho; smaller here to reach it in three calls
        body = client.get("/crm/v8/Deals", params={"fields": "Stage"}).json()
        for _ in range(2):
            token = body["info"]["next_page_token"]
            body = client.get("/crm/v8/Deals", params={"fields": "Stage", "page_token": token}).json()
        assert body["info"]["count"] == 100  # cut at the limit
        assert body["info"]["more_records"] is True
        refused = client.get(
            "/crm/v8/Deals", params={"fields": "Stage", "page_token": body["info"]["next_page_token"]}
        )
        assert refused.status_code == 400
        assert refused.json()["code"] == "PAGINATION_LIMIT_EXCEEDED"


def test_a_refresh_token_keeps_thirty_access_tokens(clock: SimClock) -> None:
    with (
        ZohoEmulator(synthetic(3), clock=clock.now) as emulator,
        httpx.Client(base_url=emulator.url) as client,
    ):
        emulator.token_refresh_limit = 100
        params = {
            "grant_type": "refresh_token",
            "client_id": emulator.client_id,
            "client_secret": emulator.client_secret,
            "refresh_token": emulator.refresh_token,
        }
        tokens = [client.post("/oauth/v2/token", params=params).json()["access_token"] for _ in range(31)]

        def status(token: str) -> int:
            headers = {"Authorization": f"Zoho-oauthtoken {token}"}
            return client.get("/crm/v8/users", params={"type": "AllUsers"}, headers=headers).status_code

        assert status(tokens[0]) == 401
        assert status(tokens[1]) == 200
        assert status(tokens[30]) == 200


def test_one_record_and_ids(deals450: tuple[ZohoEmulator, httpx.Client]) -> None:
    _, client = deals450
    ids = [
        r["id"] for r in client.get("/crm/v8/Deals", params={"fields": "Stage", "per_page": 3}).json()["data"]
    ]
    one = client.get(f"/crm/v8/Deals/{ids[1]}").json()["data"]
    assert [r["id"] for r in one] == [ids[1]]
    assert {"Deal_Name", "Owner", "Amount", "Stage", "Closing_Date", "Created_Time", "Modified_Time"} <= set(
        one[0]
    )
    assert client.get("/crm/v8/Deals/4150868000000000001").status_code == 204
    chosen = client.get("/crm/v8/Deals", params={"fields": "Amount", "ids": f"{ids[2]},{ids[0]}"}).json()[
        "data"
    ]
    assert [r["id"] for r in chosen] == [ids[0], ids[2]]
    assert set(chosen[0]) == {"Amount", "id"}
