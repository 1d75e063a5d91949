"""The emulator speaks Salesforce: checked with simple-salesforce and requests alone (no connector)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)
from simple_salesforce.login import soap_login, token_login

from tests.connectors.salesforce.emulator import SalesforceEmulator, make_id
from tests.connectors.salesforce.seed import add_opportunities, minimal_org


@pytest.fixture
def http(emulator: SalesforceEmulator) -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
    session.verify = str(emulator.tls.ca_path)
    yield session
    session.close()


def _body(error: SalesforceError) -> Any:
    """The error body simple-salesforce kept (typed as bytes, but the parsed JSON when it parsed)."""
    return error.content


def _client(emulator: SalesforceEmulator, http: requests.Session, version: str = "59.0") -> Salesforce:
    minimal_org(emulator.org)
    token = emulator.org.new_session(emulator.org.users["admin@example.com"].user_id)
    return Salesforce(session_id=token, instance_url=emulator.url, version=version, session=http)


def test_ids_are_18_characters_with_the_case_safe_suffix() -> None:
    assert make_id("006", 1) == "0065e0000000001AAA"
    assert make_id("006", 61)[:15] == "0065e000000000z"
    assert make_id("006", 61)[15:] == "AAA"
    assert make_id("00Q", 3844)[:15] == "00Q5e0000000100"


def test_query_pages_locators_and_the_wire_format(
    emulator: SalesforceEmulator, http: requests.Session
) -> None:
    sf = _client(emulator, http)
    start = (emulator.org.now() - timedelta(hours=2)).replace(microsecond=0)
    add_opportunities(emulator.org, 4100, start=start)

    first = sf.query("SELECT Id, Amount, SystemModstamp FROM Opportunity ORDER BY SystemModstamp")

    assert (first["totalSize"], first["done"], len(first["records"])) == (4100, False, 2000)
    assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/01g")
    assert first["nextRecordsUrl"].endswith("-2000")
    record = first["records"][0]
    assert list(record) == ["attributes", "Id", "Amount", "SystemModstamp"]
    assert record["attributes"] == {
        "type": "Opportunity",
        "url": f"/services/data/v59.0/sobjects/Opportunity/{record['Id']}",
    }
    assert record["SystemModstamp"] == start.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    second = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    third = sf.query_more(second["nextRecordsUrl"], identifier_is_url=True)
    assert (len(second["records"]), len(third["records"]), third["done"]) == (2000, 100, True)
    assert "nextRecordsUrl" not in third
    # Both spellings of the resource, any API version.
    for path in ("query", "query/", "queryAll", "queryAll/"):
        page = requests.get(
            f"{emulator.url}/services/data/v26.0/{path}",
            params={"q": "SELECT COUNT() FROM Opportunity"},
            headers={"Authorization": f"Bearer {sf.session_id}"},
            verify=str(emulator.tls.ca_path),
            timeout=10,
        )
        assert page.json() == {"totalSize": 4100, "done": True, "records": []}
        assert page.headers["Sforce-Limit-Info"].startswith("api-usage=")


def test_the_soql_subset(emulator: SalesforceEmulator, http: requests.Session) -> None:
    sf = _client(emulator, http)
    start = (emulator.org.now() - timedelta(hours=2)).replace(microsecond=0)
    ids = add_opportunities(emulator.org, 10, start=start, step=timedelta(minutes=1))
    table = emulator.org.table("Opportunity")
    table.update(ids[0], {"Type": "New Customer"}, at=start)
    at = (start + timedelta(minutes=4)).isoformat()

    def ids_of(soql: str) -> list[str]:
        return [row["Id"] for row in sf.query(soql)["records"]]

    assert (
        ids_of(
            f"SELECT Id FROM Opportunity WHERE (SystemModstamp > {at} OR "
            f"(SystemModstamp = {at} AND Id > '{ids[3]}')) ORDER BY SystemModstamp, Id LIMIT 3"
        )
        == ids[4:7]
    )
    assert (
        ids_of(f"select id from opportunity where not (SystemModstamp >= {at}) order by Id desc")
        == ids[3::-1]
    )
    assert ids_of(
        f"SELECT Id FROM Opportunity WHERE Id IN ('{ids[1]}', '{ids[2]}') AND Name LIKE 'Deal _'"
    ) == [
        ids[1],
        ids[2],
    ]
    assert ids_of("SELECT Id FROM Opportunity WHERE Type != null") == [ids[0]]
    assert ids_of("SELECT Id FROM Opportunity ORDER BY Type ASC NULLS LAST LIMIT 1") == [ids[0]]
    assert sf.query("SELECT COUNT() FROM Opportunity WHERE Amount >= 1005")["totalSize"] == 5

    for soql, code in [
        (f"SELECT Id FROM Opportunity WHERE SystemModstamp > '{at}'", "INVALID_FIELD"),  # a quoted date-time
        ("SELECT Id FROM Opportunity WHERE Name = Deal", "INVALID_FIELD"),  # an unquoted string
        ("SELECT Nope FROM Opportunity", "INVALID_FIELD"),
        ("SELECT Id FROM Nothing", "INVALID_TYPE"),
        ("SELECT Id Opportunity", "MALFORMED_QUERY"),
    ]:
        with pytest.raises(SalesforceMalformedRequest) as refused:
            sf.query(soql)
        assert _body(refused.value)[0]["errorCode"] == code


def test_a_locator_belongs_to_its_session(emulator: SalesforceEmulator, http: requests.Session) -> None:
    sf = _client(emulator, http)
    add_opportunities(emulator.org, 2500, start=emulator.org.now() - timedelta(hours=1))
    first = sf.query("SELECT Id FROM Opportunity")
    emulator.org.expire_sessions()
    fresh = _client(emulator, http)

    with pytest.raises(SalesforceMalformedRequest) as refused:
        fresh.query_more(first["nextRecordsUrl"], identifier_is_url=True)

    assert _body(refused.value) == [
        {"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}
    ]


def test_the_daily_limit(emulator: SalesforceEmulator, http: requests.Session) -> None:
    sf = _client(emulator, http)
    emulator.org.api_limit = 3
    assert sf.limits()["DailyApiRequests"] == {"Max": 3, "Remaining": 2}
    assert sf.api_usage["api-usage"].used == 1
    sf.query("SELECT Id FROM Opportunity")
    sf.query("SELECT Id FROM Opportunity")
    with pytest.raises(SalesforceRefusedRequest) as refused:
        sf.query("SELECT Id FROM Opportunity")
    assert _body(refused.value) == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]


def test_logins(emulator: SalesforceEmulator, http: requests.Session) -> None:
    minimal_org(emulator.org)
    emulator.org.add_client("key", "secret", run_as="admin@example.com")
    response = http.post(
        f"{emulator.url}/services/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": "key", "client_secret": "secret"},
    )
    assert set(response.json()) == {
        "access_token",
        "instance_url",
        "token_type",
        "issued_at",
        "id",
        "signature",
    }
    token, instance = token_login(
        f"{emulator.url}/services/oauth2/token",
        {"grant_type": "client_credentials", "client_id": "key", "client_secret": "secret"},
        "login",
        "key",
        None,
        None,
        http,
    )
    assert instance == emulator.url.removeprefix("https://")
    assert token in emulator.org.sessions
    envelope = (
        '<env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:n1="urn:partner.soap.sforce.com">'
        "<env:Body><n1:login><n1:username>admin@example.com</n1:username><n1:password>{}</n1:password>"
        "</n1:login></env:Body></env:Envelope>"
    )
    session_id, soap_instance = soap_login(
        f"{emulator.url}/services/Soap/u/59.0", envelope.format("admin-passwordTOKEN"), None, None, http
    )
    assert (session_id in emulator.org.sessions, soap_instance) == (True, instance)
    with pytest.raises(SalesforceAuthenticationFailed) as refused:
        soap_login(f"{emulator.url}/services/Soap/u/59.0", envelope.format("wrong"), None, None, http)
    assert refused.value.code == "INVALID_LOGIN"


def test_bulk_query_jobs_page_their_csv_by_locator(
    emulator: SalesforceEmulator, http: requests.Session
) -> None:
    sf = _client(emulator, http)
    ids = add_opportunities(emulator.org, 2500, start=emulator.org.now() - timedelta(hours=1))
    job = sf.restful(
        "jobs/query",
        method="POST",
        json={"operation": "queryAll", "query": "SELECT Id, Name FROM Opportunity"},
    )
    assert job is not None
    assert job["state"] == "UploadComplete"
    assert sf.restful(f"jobs/query/{job['id']}")["state"] == "InProgress"  # type: ignore[index]
    assert sf.restful(f"jobs/query/{job['id']}")["state"] == "JobComplete"  # type: ignore[index]
    seen: list[str] = []
    locator = None
    while True:
        params: dict[str, str | int] = {"maxRecords": 1000}
        if locator:
            params["locator"] = locator
        response = http.get(
            f"{sf.base_url}jobs/query/{job['id']}/results", headers=sf.headers, params=params, timeout=10
        )
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert int(response.headers["Sforce-NumberOfRecords"]) == len(rows)
        seen.extend(row["Id"] for row in rows)
        locator = response.headers["Sforce-Locator"]
        if locator == "null":
            break
    assert sorted(seen) == sorted(ids)
    assert seen != ids  # chunks come in no particular order
    with pytest.raises(SalesforceMalformedRequest):
        sf.restful(
            "jobs/query",
            method="POST",
            json={"operation": "query", "query": "SELECT COUNT() FROM Opportunity"},
        )


def test_the_deleted_records_feed(emulator: SalesforceEmulator, http: requests.Session) -> None:
    sf = _client(emulator, http)
    now = emulator.org.now().replace(microsecond=0)
    (gone,) = add_opportunities(emulator.org, 1, start=now - timedelta(hours=1))
    emulator.org.table("Opportunity").soft_delete(gone, at=now - timedelta(minutes=5))
    window = {"start": (now - timedelta(days=1)).isoformat(), "end": now.isoformat()}

    feed = sf.restful("sobjects/Opportunity/deleted/", params=window)

    assert feed is not None
    assert feed["deletedRecords"] == [
        {"id": gone, "deletedDate": (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")}
    ]
    assert set(feed) == {"deletedRecords", "earliestDateAvailable", "latestDateCovered"}
    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf.restful(
            "sobjects/Opportunity/deleted/",
            params={**window, "start": (now - timedelta(days=45)).isoformat()},
        )
    assert _body(refused.value)[0]["errorCode"] == "INVALID_REPLICATION_DATE"


def test_archived_activities_only_through_query_all_and_their_derived_account(
    emulator: SalesforceEmulator, http: requests.Session
) -> None:
    sf = _client(emulator, http)
    org = emulator.org
    at = (org.now() - timedelta(days=500)).replace(microsecond=0)
    account = org.table("Account").insert({"Name": "Acme"}, at=at)
    contact = org.table("Contact").insert({"Name": "Jo", "AccountId": account["Id"]}, at=at)
    deal = org.table("Opportunity").insert({"Name": "Deal", "AccountId": account["Id"]}, at=at)
    tasks = org.table("Task")
    old = tasks.insert(
        {"Subject": "Old call", "IsClosed": True, "ActivityDate": at.date(), "WhoId": contact["Id"]}, at=at
    )
    recent = tasks.insert(
        {"Subject": "Recent", "IsClosed": True, "ActivityDate": org.now().date(), "WhatId": deal["Id"]}
    )
    event = org.table("Event").insert({"Subject": "Lunch", "ActivityDate": at.date()}, at=at)

    assert org.archive_activities(org.now() - timedelta(days=365)) == 2  # the old task and the event

    text = "SELECT Id, AccountId, IsArchived FROM Task ORDER BY Id"
    assert [row["Id"] for row in sf.query(text)["records"]] == [recent["Id"]]
    rows = {row["Id"]: row for row in sf.query_all(text, include_deleted=True)["records"]}
    assert {key: (row["AccountId"], row["IsArchived"]) for key, row in rows.items()} == {
        old["Id"]: (account["Id"], True),  # from the contact
        recent["Id"]: (account["Id"], False),  # from the deal
    }
    assert sf.query("SELECT Id FROM Event")["totalSize"] == 0
    assert sf.query_all("SELECT Id FROM Event", include_deleted=True)["records"][0]["Id"] == event["Id"]
