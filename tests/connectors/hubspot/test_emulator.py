"""The emulator speaks HubSpot's wire format: what other clients send, what the real client reads."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import urllib3
from hubspot import HubSpot  # type: ignore[import-untyped]

from tests.connectors.hubspot.emulator import HubSpotEmulator


def call(emulator: HubSpotEmulator, method: str, path: str, body: Any = None) -> tuple[int, Any, Any]:
    # retries=False: urllib3 would otherwise answer a 429 with Retry-After by itself.
    with urllib3.PoolManager(retries=False) as http:
        response = http.request(
            method,
            emulator.url + path,
            headers={"Authorization": f"Bearer {emulator.portal.token}", "Content-Type": "application/json"},
            body=orjson.dumps(body) if body is not None else None,
        )
        return response.status, orjson.loads(response.data), response.headers


def test_search_takes_filter_groups_or_top_level_filters_and_after_as_text_or_number(
    emulator: HubSpotEmulator,
) -> None:
    stage = {"propertyName": "dealstage", "operator": "EQ", "value": "appointmentscheduled"}
    grouped = call(
        emulator, "POST", "/crm/v3/objects/deals/search", {"filterGroups": [{"filters": [stage]}], "limit": 3}
    )
    flat = call(emulator, "POST", "/crm/v3/objects/deals/search", {"filters": [stage], "limit": 3})
    assert grouped[0] == flat[0] == 200
    assert grouped[1] == flat[1]
    assert grouped[1]["total"] == 8
    assert grouped[1]["paging"] == {"next": {"after": "3"}}
    page_text = call(
        emulator, "POST", "/crm/v3/objects/deals/search", {"filters": [stage], "limit": 3, "after": "3"}
    )
    page_number = call(
        emulator, "POST", "/crm/v3/objects/deals/search", {"filters": [stage], "limit": 3, "after": 3}
    )
    assert page_text[1] == page_number[1]
    assert {r["id"] for r in page_text[1]["results"]}.isdisjoint(r["id"] for r in grouped[1]["results"])
    # Every property is a string or null; the defaults come with any selection.
    result = grouped[1]["results"][0]
    assert set(result) == {"id", "properties", "createdAt", "updatedAt", "archived"}
    assert {"createdate", "hs_lastmodifieddate", "hs_object_id"} <= set(result["properties"])
    assert all(v is None or isinstance(v, str) for v in result["properties"].values())


def test_search_refuses_to_page_past_ten_thousand_results(emulator: HubSpotEmulator) -> None:
    status, body, _ = call(emulator, "POST", "/crm/v3/objects/deals/search", {"limit": 200, "after": 9900})
    assert status == 400
    assert body["status"] == "error"
    assert body["category"] == "VALIDATION_ERROR"
    assert set(body) == {"status", "message", "category", "correlationId"}
    status, body, _ = call(
        emulator, "POST", "/crm/v3/objects/deals/search", {"limit": 1, "sorts": ["a", "b"]}
    )
    assert (status, body["message"]) == (400, "Only one sort is supported")


@pytest.mark.parametrize(
    ("flag", "archived"), [("True", True), ("true", True), ("False", False), ("false", False)]
)
def test_lists_read_archived_either_way_and_properties_repeated_or_joined(
    emulator: HubSpotEmulator, flag: str, archived: bool
) -> None:
    repeated = call(
        emulator, "GET", f"/crm/v3/objects/deals?archived={flag}&properties=dealname&properties=amount"
    )
    joined = call(emulator, "GET", f"/crm/v3/objects/deals?archived={flag}&properties=dealname,amount")
    assert repeated[1] == joined[1]
    results = repeated[1]["results"]
    assert results
    assert all(r["archived"] is archived for r in results)
    assert {"dealname", "amount"} <= set(results[0]["properties"])
    if archived:
        assert [r["id"] for r in results] == ["9099"]
        assert results[0]["archivedAt"]


def test_429_bodies_with_and_without_retry_after(emulator: HubSpotEmulator) -> None:
    emulator.fail("/crm/v3/owners", 429, retry_after=3, policy="SECONDLY")
    emulator.fail("/crm/v3/owners", 429, policy="TEN_SECONDLY_ROLLING")
    status, body, headers = call(emulator, "GET", "/crm/v3/owners")
    assert (status, headers.get("Retry-After")) == (429, "3")
    assert (body["errorType"], body["policyName"], body["status"]) == ("RATE_LIMIT", "SECONDLY", "error")
    assert body["message"] == "You have reached your secondly limit."
    status, body, headers = call(emulator, "GET", "/crm/v3/owners")
    assert (status, headers.get("Retry-After"), body["policyName"]) == (429, None, "TEN_SECONDLY_ROLLING")
    status, _, headers = call(emulator, "GET", "/crm/v3/owners")
    assert status == 200
    assert int(headers["X-HubSpot-RateLimit-Remaining"]) > 0
    assert int(headers["X-HubSpot-RateLimit-Daily-Remaining"]) > 0


def test_the_real_client_reads_every_endpoint(emulator: HubSpotEmulator) -> None:
    client = HubSpot(access_token=emulator.portal.token, host=emulator.url)
    owners = client.crm.owners.owners_api.get_page(limit=2)
    assert [o.type for o in owners.results] == ["PERSON", "PERSON"]
    assert owners.paging.next.after == "2"
    assert owners.results[1].teams[1].primary is True
    pipelines = client.crm.pipelines.pipelines_api.get_all("deals")
    stage = pipelines.results[0].stages[5]
    assert (stage.id, stage.metadata, stage.write_permissions) == (
        "closedwon",
        {"isClosed": "true", "probability": "1.0"},
        "CRM_PERMISSIONS_ENFORCEMENT",
    )
    found = client.crm.deals.search_api.do_search(
        public_object_search_request={
            "filters": [{"propertyName": "hs_object_id", "operator": "EQ", "value": "9001"}]
        }
    )
    assert (found.total, found.results[0].properties["amount"]) == (1, "12000.00")
    history = client.crm.deals.batch_api.read(
        batch_read_input_simple_public_object_id={
            "inputs": [{"id": "9001"}],
            "properties": ["dealstage"],
            "propertiesWithHistory": ["dealstage"],
        }
    )
    assert [h.value for h in history.results[0].properties_with_history["dealstage"]] == [
        "closedwon",
        "contractsent",
        "appointmentscheduled",
    ]
    associations = client.crm.associations.v4.batch_api.get_page(
        "deals",
        "contacts",
        batch_input_public_fetch_associations_batch_request={"inputs": [{"id": "9001"}, {"id": "9002"}]},
    )
    assert [(r._from.id, [t.to_object_id for t in r.to]) for r in associations.results] == [("9001", ["505"])]
    assert associations.num_errors == 1  # 9002 has no contact: a 207 with an error for it
    listed = client.crm.contacts.basic_api.get_page(limit=2, properties=["lifecyclestage"], archived=False)
    assert [c.properties["lifecyclestage"] for c in listed.results] == ["subscriber", "lead"]
    assert listed.paging.next.after == "503"


def test_a_call_beyond_the_tokens_scopes_is_refused_naming_the_scope_it_needs(
    emulator: HubSpotEmulator,
) -> None:
    token = emulator.portal.private_app({"crm.objects.owners.read", "crm.objects.deals.read"})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with urllib3.PoolManager(retries=False) as http:
        owners = http.request("GET", emulator.url + "/crm/v3/owners?limit=1", headers=headers)
        linked = http.request(
            "POST",
            emulator.url + "/crm/v4/associations/deals/contacts/batch/read",
            headers=headers,
            body=orjson.dumps({"inputs": [{"id": "1"}]}),
        )
    assert owners.status == 200
    assert linked.status == 403
    assert "X-HubSpot-RateLimit-Remaining" not in linked.headers  # refused before it is counted
    body = orjson.loads(linked.data)
    assert (body["status"], body["category"]) == ("error", "MISSING_SCOPES")
    assert body["errors"] == [
        {
            "message": "One or more of the following scopes are required.",
            "context": {"requiredGranularScopes": ["crm.objects.contacts.read"]},
        }
    ]
    assert set(body) == {"status", "message", "correlationId", "category", "errors", "links"}
