"""Scopes: every scope the streams need is checked before anything is read, and a missing one is
named as HubSpot names it (``requiredGranularScopes``), for private apps and OAuth apps alike."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from crm_perf_sync.connector_sdk import ConnectorConfigError
from crm_perf_sync_hubspot import HubSpotConnector
from tests.connectors.hubspot.emulator import READ_SCOPES, HubSpotEmulator, Portal, Recorded, SimClock
from tests.connectors.hubspot.support import Harness, connector, read, settings_for

DEALS = "crm.objects.deals.read"
CONTACTS = "crm.objects.contacts.read"
OWNERS = "crm.objects.owners.read"
COMPANIES = "crm.objects.companies.read"
EMAILS = "sales-email-read"


def _connector(emulator: HubSpotEmulator, clock: SimClock, **settings: Any) -> HubSpotConnector:
    return connector(settings_for(emulator, **settings), clock)


def test_the_check_names_the_missing_scope_and_the_streams_that_need_it(
    emulator: HubSpotEmulator, portal: Portal, clock: SimClock
) -> None:
    token = portal.private_app(READ_SCOPES - {DEALS})
    conn = _connector(emulator, clock, access_token=token)

    with pytest.raises(ConnectorConfigError) as raised:
        conn.check()

    message = str(raised.value)
    assert f"lacks the scope {DEALS}" in message
    for stream in ("pipelines", "opportunities", "stage_changes"):
        assert stream in message
    assert CONTACTS not in message
    assert OWNERS not in message
    assert "MISSING_SCOPES" in message
    assert token not in message
    # One request per scope: all three were asked for, only the deals were refused.
    refused = [r.path for r in emulator.requests if r.status == 403]
    assert refused == ["/crm/v3/objects/deals"]
    assert emulator.count("GET", "/crm/v3/owners", status=200) == 1
    assert emulator.count("GET", "/crm/v3/objects/contacts", status=200) == 1


def test_the_check_names_every_missing_scope_at_once(
    emulator: HubSpotEmulator, portal: Portal, clock: SimClock
) -> None:
    conn = _connector(emulator, clock, access_token=portal.private_app({OWNERS}))

    with pytest.raises(ConnectorConfigError) as raised:
        conn.check()

    message = str(raised.value)
    assert DEALS in message
    assert CONTACTS in message
    assert OWNERS not in message


def test_optional_scopes_missing_pass_the_check_with_a_warning_naming_each(
    emulator: HubSpotEmulator, portal: Portal, clock: SimClock, caplog: pytest.LogCaptureFixture
) -> None:
    conn = _connector(emulator, clock, access_token=portal.private_app(READ_SCOPES - {COMPANIES, EMAILS}))
    caplog.set_level(logging.WARNING)

    conn.check()

    messages = [r.getMessage() for r in caplog.records]
    (warning,) = [m for m in messages if COMPANIES in m]
    assert warning.startswith(
        f"hubspot: the app lacks the scope {COMPANIES}, so companies are not read as accounts, and deals, "
        "leads and activities are not linked to them; grant it to the app to read them (HTTP 403 "
        "MISSING_SCOPES: "
    )
    assert any(EMAILS in m and "logged emails are not read as activities" in m for m in messages)
    assert sorted(r.path for r in emulator.requests if r.status == 403) == [
        "/crm/v3/objects/companies",
        "/crm/v3/objects/emails",
    ]
    # The run asks no more: the check's answer stands for it.
    emulator.requests.clear()
    assert read(conn, "accounts") == []
    assert emulator.requests == []
    conn.close()


def test_a_token_with_every_scope_passes_the_check(
    emulator: HubSpotEmulator, portal: Portal, clock: SimClock
) -> None:
    _connector(emulator, clock, access_token=portal.private_app(READ_SCOPES)).check()
    assert {r.status for r in emulator.requests} == {200}


def test_a_sync_without_a_scope_fails_as_a_config_error_before_reading_anything(
    hs: Harness, emulator: HubSpotEmulator, portal: Portal
) -> None:
    outcome = hs.sync(access_token=portal.private_app(READ_SCOPES - {CONTACTS}))

    assert (outcome.status, outcome.error_kind) == ("failed", "config")
    assert f"lacks the scope {CONTACTS}" in (outcome.error or "")
    assert "leads" in (outcome.error or "")
    # Calls, meetings, notes and tasks are read with the contacts scope.
    assert "activities" in (outcome.error or "")
    assert hs.owners() == {}
    assert hs.opportunities() == {}
    assert emulator.count("POST", "/crm/v3/objects/deals/search") == 0


def test_an_oauth_app_without_a_scope_is_named_too(
    emulator: HubSpotEmulator, portal: Portal, clock: SimClock
) -> None:
    portal.oauth_clients["app-123"] = ("client-secret", {"refresh-token"})
    portal.scopes["app-123"] = READ_SCOPES - {DEALS}
    oauth = {"client_id": "app-123", "client_secret": "client-secret", "refresh_token": "refresh-token"}
    conn = _connector(emulator, clock, access_token=None, oauth=oauth)

    with pytest.raises(ConnectorConfigError) as raised:
        conn.check()

    assert f"lacks the scope {DEALS}" in str(raised.value)
    assert emulator.count("POST", "/oauth/v1/token", status=200) == 1


def test_a_scope_removed_during_a_run_is_named_by_the_call_that_needed_it(
    hs: Harness, emulator: HubSpotEmulator, portal: Portal
) -> None:
    token = portal.private_app(READ_SCOPES)

    def revoke(_: Recorded) -> None:
        # The admin edits the private app's scopes while the run reads the owners.
        portal.scopes[token] = READ_SCOPES - {DEALS}

    def after_archived_owners(request: Recorded) -> None:
        if request.query.get("archived", [""])[0].lower() == "true":
            revoke(request)

    emulator.on("GET", "/crm/v3/owners", after_archived_owners)

    outcome = hs.sync(access_token=token)

    assert (outcome.status, outcome.error_kind) == ("failed", "config")
    assert f"lacks the scope {DEALS}" in (outcome.error or "")
    assert "pipelines of deals" in (outcome.error or "")
    assert outcome.retries == 0
    assert emulator.count("GET", "/crm/v3/pipelines/deals", status=403) == 1
