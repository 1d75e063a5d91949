"""Links from stored records to their pages in the HubSpot portal, built from the settings alone."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from crm_perf_sync.connector_sdk import ConnectorContext
from crm_perf_sync_hubspot import HubSpotConnector, HubSpotSettings

TOKEN = "pat-na1-links"


def connector(**settings: Any) -> HubSpotConnector:
    context = ConnectorContext(
        connection_id="hubspot", base_dir=Path.cwd(), logger=logging.getLogger("tests.hubspot.links")
    )
    return HubSpotConnector(HubSpotSettings.model_validate({"access_token": TOKEN, **settings}), context)


def test_deals_and_contacts_link_to_their_record_pages_in_the_portal() -> None:
    hs = connector(portal_id=4_412_345)
    assert hs.record_url("opportunities", "9876543210") == (
        "https://app.hubspot.com/contacts/4412345/record/0-3/9876543210"
    )
    assert hs.record_url("leads", "151") == "https://app.hubspot.com/contacts/4412345/record/0-1/151"


def test_companies_link_to_their_pages_and_activities_have_none() -> None:
    hs = connector(portal_id=4_412_345)
    assert hs.record_url("accounts", "303") == "https://app.hubspot.com/contacts/4412345/record/0-2/303"
    # An engagement is shown on the timelines of its records, without a page of its own.
    assert hs.record_url("activities", "7001") is None


def test_an_eu_portal_links_to_its_own_host() -> None:
    hs = connector(portal_id=25_000_001, app_host="App-EU1.hubspot.com")
    assert (
        hs.record_url("opportunities", "42") == "https://app-eu1.hubspot.com/contacts/25000001/record/0-3/42"
    )
    assert hs.record_url("leads", "7") == "https://app-eu1.hubspot.com/contacts/25000001/record/0-1/7"


def test_without_a_portal_id_nothing_links() -> None:
    hs = connector()
    assert hs.record_url("opportunities", "9876543210") is None
    assert hs.record_url("leads", "151") is None


def test_owners_teams_stages_and_odd_ids_have_no_page() -> None:
    hs = connector(portal_id=4_412_345)
    assert hs.record_url("owners", "31337") is None
    assert hs.record_url("teams", "5") is None
    assert hs.record_url("pipeline_stages", "default:appointmentscheduled") is None
    assert hs.record_url("stage_changes", "9876543210:1700000000000") is None
    assert hs.record_url("opportunities", "12/../../settings") is None


@pytest.mark.parametrize("value", ["https://app-eu1.hubspot.com", "app.hubspot.com/contacts", "localhost"])
def test_app_host_is_a_host_name(value: str) -> None:
    with pytest.raises(ValidationError, match="app_host"):
        HubSpotSettings.model_validate({"access_token": TOKEN, "portal_id": 1, "app_host": value})


def test_portal_id_is_a_positive_number() -> None:
    with pytest.raises(ValidationError, match="portal_id"):
        HubSpotSettings.model_validate({"access_token": TOKEN, "portal_id": 0})
