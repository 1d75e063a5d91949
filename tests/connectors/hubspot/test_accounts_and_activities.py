"""Companies as accounts and engagements as activities, synced through the engine into the store:
mapping field by field, company links, incremental reads, deletions, bad records and scopes."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from crm_perf_sync.connector_sdk import BadRecord
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.models import Account, Activity
from tests.connectors.hubspot.emulator import ENGAGEMENTS, READ_SCOPES, HubSpotEmulator, Portal, ms
from tests.connectors.hubspot.portal import CUSTOM_OUTCOME, add_random_engagements
from tests.connectors.hubspot.support import Harness, read

HOUR = 3600
#: The portal's own kinds of call and meeting, mapped as a sales team would map them.
ACTIVITY_TYPES = {"Site visit": "visit", "Proposal sent": "proposal"}
COMPANIES = "crm.objects.companies.read"
EMAILS = "sales-email-read"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def accounts(hs: Harness) -> dict[str, dict[str, Any]]:
    return hs.rows(Account)


def activities(hs: Harness) -> dict[str, dict[str, Any]]:
    return hs.rows(Activity)


ACTIVITY_FIELDS = (
    "type",
    "subtype",
    "occurred_at",
    "owner_external_id",
    "subject",
    "duration_seconds",
    "outcome",
    "is_completed",
    "account_external_id",
    "opportunity_external_id",
    "lead_external_id",
)


def test_companies_become_accounts_field_by_field(hs: Harness) -> None:
    hs.settings["company_properties"] = {"tier": "account_tier"}
    hs.ok()
    stored = accounts(hs)
    # 399 was archived before the first read: never stored.
    assert sorted(stored) == ["301", "302", "303", "304"]
    summary = {
        key: (
            row["name"],
            row["owner_external_id"],
            row["industry"],
            row["segment"],
            row["parent_external_id"],
            row["created_at"],
            row["remote_updated_at"],
            row["is_deleted"],
            row["custom"],
        )
        for key, row in stored.items()
    }
    assert summary == {
        "301": (
            "Example GmbH",
            "101",
            "COMPUTER_SOFTWARE",
            "CUSTOMER",
            None,
            at("2025-05-03T09:00:00"),
            at("2025-05-05T09:00:00"),
            False,
            {"tier": "gold"},
        ),
        "302": (
            "Sample Inc",
            "102",
            "RETAIL",
            "PROSPECT",
            None,
            at("2025-05-04T09:00:00"),
            at("2025-05-06T09:00:00"),
            False,
            {"tier": None},
        ),
        # A subsidiary: its parent from hs_parent_company_id.
        "303": (
            "Sample Inc Europe",
            "102",
            "RETAIL",
            "CUSTOMER",
            "302",
            at("2025-05-05T09:00:00"),
            at("2025-05-07T09:00:00"),
            False,
            {"tier": "silver"},
        ),
        "304": (
            "Northwind Traders",
            "103",
            None,
            "PARTNER",
            None,
            at("2025-05-06T09:00:00"),
            at("2025-05-08T09:00:00"),
            False,
            {"tier": None},
        ),
    }
    assert stored["303"]["raw"]["properties"]["domain"] == "sample303.example.com"


def test_the_segment_is_a_configurable_company_property(hs: Harness) -> None:
    hs.settings["company_segment"] = "account_tier"
    hs.ok()
    assert {key: row["segment"] for key, row in accounts(hs).items()} == {
        "301": "gold",
        "302": None,
        "303": "silver",
        "304": None,
    }


def test_deals_and_leads_belong_to_their_primary_company_else_the_earliest(hs: Harness) -> None:
    hs.ok()
    deals = {key: row["account_external_id"] for key, row in hs.opportunities().items()}
    # 9001: its only (primary) company; 9003: 303 is primary although 302 is older; 9004: none
    # primary, the earliest (lowest id) of its two.
    assert {key: value for key, value in deals.items() if value is not None} == {
        "9001": "301",
        "9003": "303",
        "9004": "302",
    }
    assert hs.opportunities()["9004"]["raw"]["company"] == "302"
    leads = {key: row["account_external_id"] for key, row in hs.leads().items()}
    assert {key: value for key, value in leads.items() if value is not None} == {
        "504": "304",
        "505": "301",
        "506": "303",
    }


def test_engagements_become_activities_field_by_field(hs: Harness) -> None:
    hs.settings["activity_types"] = ACTIVITY_TYPES
    hs.ok()
    stored = activities(hs)
    # 7099 was archived before the first read: never stored.
    assert {key: tuple(row[f] for f in ACTIVITY_FIELDS) for key, row in stored.items()} == {
        # A connected call of 125.4 s; HubSpot's outcome ids become their labels.
        "7001": (
            "call",
            None,
            at("2025-06-03T10:00:00"),
            "101",
            "Discovery call",
            125,
            "Connected",
            True,
            "301",
            "9001",
            "505",
        ),
        "7002": (
            "call",
            None,
            at("2025-06-04T10:00:00"),
            "102",
            "Follow-up",
            0,
            "No answer",
            True,
            "302",
            None,
            None,
        ),
        # The portal's own call type, mapped to proposal; 61.5 s round up; an outcome the portal
        # defined itself stays its id unless the settings name it.
        "7003": (
            "proposal",
            "Proposal sent",
            at("2025-06-05T10:00:00"),
            "101",
            "Pricing questions",
            62,
            CUSTOM_OUTCOME,
            True,
            "301",
            "9001",
            None,
        ),
        # Queued, not made yet: no outcome but its status, not completed.
        "7004": (
            "call",
            None,
            at("2025-06-06T10:00:00"),
            "103",
            "Scheduled call",
            None,
            "QUEUED",
            False,
            "304",
            "9006",
            None,
        ),
        # A meeting of the portal's "Site visit" type is a visit; 90 minutes from start to end.
        "7101": (
            "visit",
            "Site visit",
            at("2025-06-07T10:00:00"),
            "102",
            "Onsite workshop",
            5400,
            "COMPLETED",
            True,
            "303",
            "9003",
            "504",
        ),
        "7102": (
            "meeting",
            None,
            at("2025-06-08T10:00:00"),
            "103",
            "Quarterly review",
            5400,
            "SCHEDULED",
            False,
            "304",
            None,
            None,
        ),
        "7201": (
            "email",
            "EMAIL",
            at("2025-06-09T10:00:00"),
            "101",
            "Your quote",
            None,
            "SENT",
            True,
            "301",
            "9001",
            "505",
        ),
        "7202": (
            "email",
            "INCOMING_EMAIL",
            at("2025-06-10T10:00:00"),
            "102",
            "Re: Your quote",
            None,
            None,
            True,
            "302",
            "9003",
            None,
        ),
        "7301": ("note", None, at("2025-06-11T10:00:00"), "103", None, None, None, True, "304", None, None),
        # A completed task counts when it was completed (two hours after it was due).
        "7401": (
            "task",
            "EMAIL",
            at("2025-06-12T12:00:00"),
            "101",
            "Send the contract",
            None,
            None,
            True,
            "301",
            "9001",
            None,
        ),
        "7402": (
            "task",
            "CALL",
            at("2025-06-13T10:00:00"),
            "102",
            "Call back",
            None,
            None,
            False,
            None,
            "9003",
            "504",
        ),
        "7403": (
            "task",
            "TODO",
            at("2025-06-14T10:00:00"),
            None,
            "Tidy up",
            None,
            None,
            False,
            None,
            None,
            None,
        ),
    }
    call = stored["7001"]
    assert call["created_at"] == at("2025-06-03T09:00:00")
    assert call["remote_updated_at"] == at("2025-06-03T11:00:00")
    assert (call["raw"]["object"], call["raw"]["properties"]["hs_call_direction"]) == ("calls", "OUTBOUND")


def test_without_mapped_kinds_calls_and_meetings_keep_their_type_and_outcomes_can_be_named(
    hs: Harness,
) -> None:
    hs.settings["call_outcomes"] = {CUSTOM_OUTCOME: "Pricing sent"}
    hs.ok()
    stored = activities(hs)
    assert (stored["7101"]["type"], stored["7101"]["subtype"]) == ("meeting", "Site visit")
    assert (stored["7003"]["type"], stored["7003"]["subtype"]) == ("call", "Proposal sent")
    assert stored["7003"]["outcome"] == "Pricing sent"
    assert stored["7001"]["outcome"] == "Connected"


def test_activity_counts_per_type_and_owner_agree_with_the_portal(hs: Harness, portal: Portal) -> None:
    """Hundreds of random engagements over several pages, ties included: what the store holds,
    counted in SQL, equals the portal's data counted in plain Python."""
    hs.settings.update(activity_types=ACTIVITY_TYPES, page_size=50)
    start = ms(at("2025-07-01T00:00:00"))
    add_random_engagements(
        portal,
        600,
        owners=["101", "102", "103", "104"],
        companies=[301, 302, 303, 304],
        deals=[9001, 9003, 9004],
        start=start,
        span=90 * 86_400_000,
    )
    hs.ok()

    singular = {"calls": "call", "meetings": "meeting", "emails": "email", "notes": "note", "tasks": "task"}
    expected: Counter[tuple[str, str | None]] = Counter()
    call_seconds: Counter[str | None] = Counter()
    for kind in ENGAGEMENTS:
        for obj in portal.tables[kind].rows.values():
            if obj.archived:
                continue
            own = obj.props.get("hs_activity_type")
            kind_type = ACTIVITY_TYPES.get(own, singular[kind]) if own else singular[kind]
            expected[(kind_type, obj.props.get("hubspot_owner_id"))] += 1
            millis = obj.props.get("hs_call_duration") if kind == "calls" else None
            if millis:
                # Milliseconds to the nearest second, half up.
                call_seconds[obj.props.get("hubspot_owner_id")] += (int(millis) + 500) // 1000

    with session_scope(hs.session_factory) as session:
        rows = session.execute(
            select(Activity.type, Activity.owner_external_id, func.count())
            .where(Activity.connection_id == "hs", Activity.is_deleted.is_(False))
            .group_by(Activity.type, Activity.owner_external_id)
        ).all()
        seconds = session.execute(
            select(Activity.owner_external_id, func.sum(Activity.duration_seconds))
            .where(Activity.connection_id == "hs", Activity.external_id.in_(_call_ids(portal)))
            .group_by(Activity.owner_external_id)
        ).all()
    assert Counter({(t, o): n for t, o, n in rows}) == expected
    assert sum(expected.values()) == 612
    assert {o: int(s) for o, s in seconds if s} == {o: s for o, s in call_seconds.items() if s}


def _call_ids(portal: Portal) -> list[str]:
    return [str(key) for key, obj in portal.tables["calls"].rows.items() if not obj.archived]


def test_changed_and_archived_companies_and_activities_are_read_again(
    hs: Harness, emulator: HubSpotEmulator, portal: Portal
) -> None:
    hs.ok()
    portal.update("companies", 302, {"name": "Sample Incorporated", "type": "CUSTOMER"})
    archived_at = portal.now()
    portal.archive("companies", 304)
    portal.update(
        "calls",
        7002,
        {"hs_call_disposition": "f240bbac-87c9-4f6e-bf70-924b57d47db7", "hs_call_duration": "300000"},
    )
    portal.archive("meetings", 7102)
    portal.create(
        "tasks", {"hs_timestamp": "2026-01-05T08:00:00.000Z", "hs_task_status": "NOT_STARTED"}, id=7404
    )
    portal.associate("tasks", 7404, "companies", 302)
    hs.clock.advance(HOUR)
    emulator.requests.clear()

    outcome = hs.ok()

    assert (outcome.streams["accounts"].updated, outcome.streams["accounts"].deleted) == (1, 1)
    stored = accounts(hs)
    assert (stored["302"]["name"], stored["302"]["segment"]) == ("Sample Incorporated", "CUSTOMER")
    assert stored["304"]["is_deleted"] is True
    assert stored["304"]["deleted_at"] == datetime.fromtimestamp(archived_at / 1000, tz=UTC)
    assert stored["301"]["is_deleted"] is False

    stats = outcome.streams["activities"]
    assert (stats.inserted, stats.updated, stats.deleted) == (1, 1, 1)
    acts = activities(hs)
    assert (acts["7002"]["outcome"], acts["7002"]["duration_seconds"]) == ("Connected", 300)
    assert acts["7102"]["is_deleted"] is True
    task = acts["7404"]
    assert (task["type"], task["is_completed"], task["account_external_id"]) == ("task", False, "302")
    assert task["occurred_at"] == at("2026-01-05T08:00:00")
    # Only the windows since the last run were searched, one engagement object after the other.
    searched = [r.path for r in emulator.requests if r.path.endswith("/search")]
    assert [p for p in searched if "/companies/" in p or any(f"/{k}/" in p for k in ENGAGEMENTS)] == [
        "/crm/v3/objects/companies/search",
        "/crm/v3/objects/calls/search",
        "/crm/v3/objects/meetings/search",
        "/crm/v3/objects/emails/search",
        "/crm/v3/objects/notes/search",
        "/crm/v3/objects/tasks/search",
    ]


def test_the_activities_checkpoint_keeps_a_window_per_engagement_object(hs: Harness, portal: Portal) -> None:
    hs.ok()
    checkpoint = hs.checkpoint("activities")
    assert checkpoint is not None
    assert sorted(checkpoint["objects"]) == sorted(ENGAGEMENTS)
    calls = checkpoint["objects"]["calls"]
    assert (calls["open"], calls["tie_after"]) == (False, None)
    conn = hs.connector()
    # From the stored checkpoint a read finds only what changed since: one updated note.
    portal.update("notes", 7301, {"hubspot_owner_id": "101"})
    hs.clock.advance(HOUR)
    records = [m for m in read(conn, "activities", checkpoint) if hasattr(m, "external_id")]
    assert [m.external_id for m in records] == ["7301"]
    conn.close()


def test_a_burst_of_engagements_in_one_millisecond_is_read_whole(hs: Harness, portal: Portal) -> None:
    hs.settings["page_size"] = 3
    stamp = ms(at("2025-09-01T12:00:00"))
    for key in range(8001, 8008):
        portal.create("notes", {"hs_timestamp": "2025-09-01T11:00:00.000Z"}, id=key, at=stamp)
    hs.ok()
    notes = {key for key, row in activities(hs).items() if row["type"] == "note"}
    assert notes == {"7301", *(str(key) for key in range(8001, 8008))}


def test_an_engagement_that_cannot_be_mapped_is_a_bad_record_naming_it(hs: Harness, portal: Portal) -> None:
    portal.update("calls", 7002, {"hs_call_duration": "about a minute"}, at=portal.now() - HOUR * 1000)
    portal.update(
        "meetings", 7102, {"hs_meeting_start_time": None, "hs_timestamp": None}, at=portal.now() - HOUR * 1000
    )
    outcome = hs.ok()
    assert outcome.streams["activities"].skipped == 2
    assert "7002" not in activities(hs)
    assert "7001" in activities(hs)
    conn = hs.connector()
    bad = sorted(
        ((m.key, m.field, m.message) for m in read(conn, "activities") if isinstance(m, BadRecord)),
        key=lambda b: str(b[0]),
    )
    conn.close()
    assert bad == [
        ("7002", "hs_call_duration", "hs_call_duration: not a duration in milliseconds: 'about a minute'"),
        ("7102", "hs_meeting_start_time", "hs_meeting_start_time is missing: the meeting has no time"),
    ]


def test_without_the_companies_scope_the_rest_syncs_and_the_run_says_what_it_left_out(
    hs: Harness, emulator: HubSpotEmulator, portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    token = portal.private_app(READ_SCOPES - {COMPANIES})
    hs.settings["access_token"] = token
    caplog.set_level(logging.WARNING)

    outcome = hs.ok()

    assert accounts(hs) == {}
    assert outcome.streams["opportunities"].inserted == 29
    assert all(row["account_external_id"] is None for row in hs.opportunities().values())
    assert activities(hs)["7001"]["account_external_id"] is None
    assert activities(hs)["7001"]["opportunity_external_id"] == "9001"
    warnings = [r.getMessage() for r in caplog.records if COMPANIES in r.getMessage()]
    assert len(warnings) == 1
    assert "companies are not read as accounts" in warnings[0]
    assert emulator.count("POST", "/crm/v3/objects/companies/search") == 0
    assert [r.path for r in emulator.requests if r.status == 403] == ["/crm/v3/objects/companies"]

    # Once the scope is granted, accounts are read, and every deal afresh with its company.
    portal.scopes[token] = READ_SCOPES
    hs.clock.advance(HOUR)
    hs.ok()
    assert sorted(accounts(hs)) == ["301", "302", "303", "304"]
    assert hs.opportunities()["9003"]["account_external_id"] == "303"
    assert hs.leads()["506"]["account_external_id"] == "303"
    assert activities(hs)["7001"]["account_external_id"] == "301"


def test_without_the_email_scope_other_activities_still_sync(
    hs: Harness, emulator: HubSpotEmulator, portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    hs.settings["access_token"] = portal.private_app(READ_SCOPES - {EMAILS})
    caplog.set_level(logging.WARNING)
    hs.ok()
    types = Counter(row["type"] for row in activities(hs).values())
    assert types == Counter({"call": 4, "meeting": 2, "note": 1, "task": 3})
    assert emulator.count("POST", "/crm/v3/objects/emails/search") == 0
    assert any(
        EMAILS in r.getMessage() and "logged emails are not read" in r.getMessage() for r in caplog.records
    )


def test_the_periodic_refresh_finds_an_open_deals_new_primary_company(hs: Harness, portal: Portal) -> None:
    hs.ok()
    assert hs.opportunities()["9006"]["account_external_id"] is None
    # Linking a company moves no modified date: the association refresh (every 24 h) finds it.
    portal.associate("deals", 9006, "companies", 302)
    portal.associate("deals", 9006, "companies", 304, primary=True)
    hs.clock.advance(HOUR)
    hs.ok()
    assert hs.opportunities()["9006"]["account_external_id"] is None
    hs.clock.advance(24 * HOUR)
    hs.ok()
    assert hs.opportunities()["9006"]["account_external_id"] == "304"


def test_a_run_failing_in_the_meetings_resumes_without_reading_the_calls_again(
    hs: Harness, emulator: HubSpotEmulator
) -> None:
    hs.settings["max_attempts"] = 1
    # Every try of the meetings' search fails: the engine's retries too, and the run fails.
    emulator.fail("/crm/v3/objects/meetings/search", 503, times=1000)
    failed = hs.sync()
    assert failed.status == "failed"
    assert sorted(activities(hs)) == ["7001", "7002", "7003", "7004"]
    checkpoint = hs.checkpoint("activities")
    assert checkpoint is not None
    calls_since = checkpoint["objects"]["calls"]["since"]
    assert checkpoint["objects"]["meetings"]["since"] is None

    emulator.faults.clear()
    emulator.requests.clear()
    hs.clock.advance(60)
    hs.ok()
    assert len(activities(hs)) == 12
    calls = [r.body for r in emulator.requests if r.path == "/crm/v3/objects/calls/search"]
    meetings = [r.body for r in emulator.requests if r.path == "/crm/v3/objects/meetings/search"]
    lower = [f for f in calls[0]["filterGroups"][0]["filters"] if f["operator"] == "GTE"]
    # The calls resume at their stored position less the lookback; the meetings from the start.
    assert int(lower[0]["value"]) == ms(datetime.fromisoformat(calls_since)) - 5 * 60_000
    assert [f["value"] for f in meetings[0]["filterGroups"][0]["filters"] if f["operator"] == "GTE"] == ["0"]
