"""Accounts, tasks and events: mapped field by field, counted independently, kept incrementally
(changes, deletions, archived activities), and read the same through Bulk API as through REST."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.models import SyncRecordError
from crm_perf_sync_salesforce.settings import SalesforceSettings
from tests.connectors.salesforce.emulator import Org, SalesforceEmulator
from tests.connectors.salesforce.seed import seed_org
from tests.connectors.salesforce.support import (
    PASSWORD_AUTH,
    Syncer,
    comparable,
    live,
    settings_for,
    stored,
)

ZONE = ZoneInfo("America/Los_Angeles")  # the emulated org's TimeZoneSidKey
STREAMS = ["accounts", "leads", "opportunities", "tasks", "events"]
KINDS = {"Site Visit": "visit", "proposal": "proposal", "Demo": "demo"}


class Clock:
    """The connector's clock, some minutes ahead of the org's (so rows changed "now" are in range)."""

    def __init__(self) -> None:
        self.offset = timedelta(minutes=5)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ZONE).astimezone(UTC)


def _sync(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session], **settings: Any
) -> tuple[Syncer, Clock]:
    clock = Clock()
    options: dict[str, Any] = {"streams": STREAMS, "activity_types": KINDS, **settings}
    syncer = Syncer(session_factory, settings_for(emulator, **options), clock=clock)
    outcome = syncer.run()
    assert outcome.status == "succeeded", outcome.error
    return syncer, clock


def _activity_rows(org: Org) -> dict[str, dict[str, Any]]:
    return {**org.table("Task").rows, **org.table("Event").rows}


def test_accounts_and_the_links_of_deals_and_leads(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    org = emulator.org
    made = seed_org(org, opportunities=10, leads=12, accounts=8, activities=0)
    table = org.table("Account")

    _sync(emulator, session_factory)

    accounts = stored(session_factory, "accounts")
    assert set(accounts) == set(made.accounts)
    for key in made.accounts:
        row, account = table.rows[key], accounts[key]
        assert (account.name, account.owner_external_id, account.industry, account.segment) == (
            row["Name"],
            row["OwnerId"],
            row["Industry"],
            row["Type"],
        )
        assert account.parent_external_id == row["ParentId"]
        assert (account.created_at, account.remote_updated_at) == (row["CreatedDate"], row["SystemModstamp"])
        assert account.is_deleted is False
    # Every fourth account (from the eighth on) is a subsidiary: the seed's own arithmetic.
    assert accounts[made.accounts[7]].parent_external_id == made.accounts[0]
    assert accounts[made.accounts[3]].parent_external_id is None
    assert accounts[made.accounts[1]].segment == "Customer - Direct"
    deals = stored(session_factory, "opportunities")
    assert {key: deal.account_external_id for key, deal in deals.items()} == {
        key: made.accounts[n % 8] for n, key in enumerate(made.opportunities)
    }
    leads = stored(session_factory, "leads")
    converted = made.leads[::3]
    assert {key: leads[key].account_external_id for key in converted} == {
        key: made.accounts[n % 8] for n, key in enumerate(converted)
    }
    assert {leads[key].account_external_id for key in set(made.leads) - set(converted)} == {None}


def test_the_account_segment_from_a_custom_field_and_account_custom_fields(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    org = emulator.org
    table = org.table("Account")
    table.add_field("Segment__c", "picklist")
    table.add_field("Employees__c", "double")
    made = seed_org(org, opportunities=2, leads=0, accounts=3, activities=0)
    first = made.accounts[0]
    table.update(
        first, {"Segment__c": "Enterprise", "Employees__c": 1200.0}, at=table.rows[first]["SystemModstamp"]
    )

    _sync(
        emulator,
        session_factory,
        streams=["accounts"],
        account_segment="segment__c",
        custom_fields={"accounts": {"employees": "Employees__c"}},
    )

    accounts = stored(session_factory, "accounts")
    assert (accounts[first].segment, accounts[first].custom) == ("Enterprise", {"employees": 1200})
    assert (accounts[made.accounts[1]].segment, accounts[made.accounts[1]].custom) == (
        None,
        {"employees": None},
    )


def test_a_misnamed_segment_field_is_a_config_error(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    seed_org(emulator.org, opportunities=1, leads=0, accounts=1, activities=0)
    syncer = Syncer(session_factory, settings_for(emulator, streams=["accounts"], account_segment="Tier__c"))

    outcome = syncer.run()

    assert (outcome.status, outcome.error_kind) == ("failed", "config")
    assert outcome.error is not None
    assert "account_segment: the Account object has no field Tier__c" in outcome.error


def test_tasks_and_events_field_by_field(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    org = emulator.org
    made = seed_org(org, opportunities=6, leads=6, accounts=4, activities=0)
    rep, deal, account, lead, contact = (
        made.users[1],
        made.opportunities[2],
        made.accounts[1],
        made.leads[4],
        made.contacts[5],
    )
    at = (org.now() - timedelta(days=3)).replace(microsecond=0)
    tasks, events = org.table("Task"), org.table("Event")
    call = tasks.insert(
        {
            "Subject": "Discovery call",
            "TaskSubtype": "Call",
            "Type": "Call",
            "Status": "Completed",
            "IsClosed": True,
            "ActivityDate": at.date(),
            "CompletedDateTime": at,
            "CallDurationInSeconds": 754,
            "CallDisposition": "Meeting booked",
            "CallType": "Outbound",
            "OwnerId": rep,
            "WhatId": deal,
            "WhoId": contact,
        },
        at=at,
    )
    mass_email = tasks.insert(
        {
            "Subject": "Newsletter",
            "TaskSubtype": "ListEmail",
            "Status": "Completed",
            "IsClosed": True,
            "CompletedDateTime": at,
            "OwnerId": rep,
            "WhoId": lead,
        },
        at=at,
    )
    due = date(2026, 7, 14)
    visit = tasks.insert(
        {
            "Subject": "Visit the plant",
            "TaskSubtype": "Task",
            "Type": "site visit",  # the settings say "Site Visit": picklists ignore case
            "Status": "Not Started",
            "IsClosed": False,
            "ActivityDate": due,
            "OwnerId": rep,
            "WhatId": account,
        },
        at=at,
    )
    linkedin = tasks.insert(
        {"Subject": "Connect", "TaskSubtype": "LinkedIn", "Status": "Completed", "IsClosed": True},
        at=at,
    )
    meeting = events.insert(
        {
            "Subject": "Demo",
            "Type": "Demo",
            "EventSubtype": "Event",
            "StartDateTime": at,
            "EndDateTime": at + timedelta(minutes=45),
            "ActivityDateTime": at,
            "ActivityDate": at.date(),
            "DurationInMinutes": 45,
            "IsAllDayEvent": False,
            "OwnerId": rep,
            "WhoId": lead,
            "WhatId": deal,
        },
        at=at,
    )
    all_day = events.insert(
        {
            "Subject": "Trade fair",
            "EventSubtype": "Event",
            "StartDateTime": datetime(2026, 3, 2, tzinfo=UTC),
            "EndDateTime": datetime(2026, 3, 3, tzinfo=UTC),
            "ActivityDate": date(2026, 3, 2),
            "DurationInMinutes": 1440,
            "IsAllDayEvent": True,
            "OwnerId": rep,
        },
        at=at,
    )

    _sync(emulator, session_factory)

    activities = stored(session_factory, "activities")
    assert set(activities) == {
        call["Id"],
        mass_email["Id"],
        visit["Id"],
        linkedin["Id"],
        meeting["Id"],
        all_day["Id"],
    }
    got = activities[call["Id"]]
    deal_account = org.table("Opportunity").rows[deal]["AccountId"]
    assert (got.type, got.subtype, got.subject, got.owner_external_id) == (
        "call",
        "Call",
        "Discovery call",
        rep,
    )
    assert (got.occurred_at, got.duration_seconds, got.outcome, got.is_completed) == (
        at,
        754,
        "Meeting booked",
        True,
    )
    # The deal's account (Salesforce derives it), the deal; a contact is not a lead.
    assert (got.account_external_id, got.opportunity_external_id, got.lead_external_id) == (
        deal_account,
        deal,
        None,
    )
    assert (got.created_at, got.remote_updated_at, got.is_deleted) == (at, at, False)
    assert got.raw["CallType"] == "Outbound"
    got = activities[mass_email["Id"]]
    assert (got.type, got.subtype, got.lead_external_id, got.account_external_id) == (
        "email",
        "ListEmail",
        lead,
        None,
    )
    got = activities[visit["Id"]]
    # Open: placed on its due date, midnight in the org's zone (July: UTC-7).
    assert (got.type, got.subtype, got.is_completed) == ("visit", "site visit", False)
    assert got.occurred_at == datetime(2026, 7, 14, 7, 0, tzinfo=UTC)
    assert (got.account_external_id, got.opportunity_external_id, got.duration_seconds) == (
        account,
        None,
        None,
    )
    got = activities[linkedin["Id"]]
    # Closed without a CompletedDateTime nor a due date: when it was created.
    assert (got.type, got.subtype, got.occurred_at) == ("task", "LinkedIn", at)
    got = activities[meeting["Id"]]
    assert (got.type, got.subtype, got.occurred_at, got.duration_seconds) == ("demo", "Demo", at, 2700)
    assert (got.lead_external_id, got.opportunity_external_id, got.account_external_id, got.outcome) == (
        lead,
        deal,
        deal_account,
        None,
    )
    got = activities[all_day["Id"]]
    # All day: the day's start where the org is (March 2: UTC-8), not midnight GMT.
    assert (got.type, got.subtype, got.occurred_at, got.duration_seconds) == (
        "meeting",
        "Event",
        _midnight(date(2026, 3, 2)),
        86400,
    )


def test_an_unreadable_activity_or_account_is_a_bad_record_named_by_its_id(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    org = emulator.org
    made = seed_org(org, opportunities=3, leads=3, accounts=3, activities=12)
    tasks, accounts = org.table("Task"), org.table("Account")
    call = next(key for key in made.tasks if tasks.rows[key]["TaskSubtype"] == "Call")
    # What a broken integration might leave behind: a fractional duration, a loop of one.
    tasks.rows[call] = {**tasks.rows[call], "CallDurationInSeconds": "61.5"}
    own = made.accounts[1]
    accounts.rows[own] = {**accounts.rows[own], "ParentId": own}

    syncer = Syncer(session_factory, settings_for(emulator, streams=STREAMS))
    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    assert (outcome.streams["tasks"].skipped, outcome.streams["accounts"].skipped) == (1, 1)
    with session_scope(session_factory) as session:
        errors = {
            (e.stream, e.record_key, e.field): e.message for e in session.scalars(select(SyncRecordError))
        }
    assert set(errors) == {("tasks", call, "CallDurationInSeconds"), ("accounts", own, None)}
    assert (
        "CallDurationInSeconds '61.5' is not a whole number" in errors["tasks", call, "CallDurationInSeconds"]
    )
    assert "an account cannot be its own parent" in errors["accounts", own, None]
    assert live(session_factory, "activities") == set(made.tasks + made.events) - {call}
    assert live(session_factory, "accounts") == set(made.accounts) - {own}


def _kind(row: dict[str, Any]) -> str:
    """The kind the README promises, written out for the seed's values."""
    if row["Type"] in ("Site Visit", "Demo"):
        return {"Site Visit": "visit", "Demo": "demo"}[row["Type"]]
    if row["Type"] == "Proposal":
        return "proposal"
    if "EventSubtype" in row:
        return "meeting"
    return {"Call": "call", "Email": "email", "ListEmail": "email"}.get(row["TaskSubtype"], "task")


def test_activities_per_kind_and_owner_agree_with_the_org(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    """The store's counts by (kind, owner) and by (account, kind) against the org's rows counted
    in plain Python, archived activities included."""
    org = emulator.org
    made = seed_org(org, opportunities=30, leads=30, accounts=10, activities=240)
    rows = _activity_rows(org)
    assert sum(1 for row in rows.values() if row["IsArchived"]) == 24

    _sync(emulator, session_factory)

    activities = stored(session_factory, "activities")
    expected = Counter((_kind(row), row["OwnerId"]) for row in rows.values())
    assert Counter((a.type, a.owner_external_id) for a in activities.values()) == expected
    assert {kind for kind, _owner in expected} == {
        "call",
        "email",
        "task",
        "visit",
        "proposal",
        "meeting",
        "demo",
    }
    by_account = Counter((row["AccountId"], _kind(row)) for row in rows.values() if row["AccountId"])
    assert Counter((a.account_external_id, a.type) for a in activities.values() if a.account_external_id) == (
        by_account
    )
    leads = Counter(row["WhoId"] for row in rows.values() if (row["WhoId"] or "").startswith("00Q"))
    assert Counter(a.lead_external_id for a in activities.values() if a.lead_external_id) == leads
    completed = sum(1 for row in rows.values() if row.get("IsClosed", True))
    assert sum(1 for a in activities.values() if a.is_completed) == completed
    assert len(activities) == len(made.tasks) + len(made.events) == 240


def test_changes_and_deletions_of_accounts_and_activities(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    org = emulator.org
    made = seed_org(org, opportunities=8, leads=8, accounts=6, activities=30)
    syncer, _clock = _sync(emulator, session_factory)
    accounts, tasks, events = org.table("Account"), org.table("Task"), org.table("Event")
    open_task = next(key for key in made.tasks if not tasks.rows[key]["IsClosed"])
    now = org.now().replace(microsecond=0)
    accounts.update(made.accounts[2], {"Industry": "Energy", "Name": "Renamed Co"})
    tasks.update(
        open_task,
        {"Status": "Completed", "IsClosed": True, "CompletedDateTime": now, "Subject": "Done at last"},
    )
    events.soft_delete(made.events[0], at=now - timedelta(minutes=2))
    tasks.soft_delete(made.tasks[1], at=now - timedelta(minutes=2))
    tasks.purge(made.tasks[1])  # only the deleted-records feed says so
    accounts.soft_delete(made.accounts[5], at=now - timedelta(minutes=2))

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    assert {name: outcome.streams[name].deleted for name in ("accounts", "tasks", "events")} == {
        "accounts": 1,
        "tasks": 1,
        "events": 1,
    }
    account = stored(session_factory, "accounts")[made.accounts[2]]
    assert (account.industry, account.name) == ("Energy", "Renamed Co")
    done = stored(session_factory, "activities")[open_task]
    assert (done.is_completed, done.occurred_at, done.subject) == (True, now, "Done at last")
    assert live(session_factory, "activities") == set(made.tasks + made.events) - {
        made.tasks[1],
        made.events[0],
    }
    assert live(session_factory, "accounts") == set(made.accounts) - {made.accounts[5]}


@pytest.mark.parametrize("bulk_threshold", [None, 10], ids=["rest", "bulk"])
def test_one_reconciliation_covers_tasks_and_events_archived_ones_included(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session], bulk_threshold: int | None
) -> None:
    """Hard deletes of a task and an event are found by ``activities_reconcile``, which reads both
    objects before its snapshot ends; the archived activities, which ``query`` does not return,
    stay live (over REST and through Bulk API ``queryAll`` jobs alike)."""
    org = emulator.org
    made = seed_org(org, opportunities=8, leads=8, accounts=6, activities=60)
    syncer, _clock = _sync(emulator, session_factory, bulk_threshold=bulk_threshold)
    rows = _activity_rows(org)
    archived = {key for key, row in rows.items() if row["IsArchived"]}
    assert len(archived) == 6
    org.table("Task").hard_delete(made.tasks[3])
    org.table("Event").hard_delete(made.events[3])

    outcome = syncer.run(full=True)

    assert outcome.status == "succeeded", outcome.error
    assert "tasks_reconcile" not in outcome.streams
    assert "events_reconcile" not in outcome.streams
    reconcile = outcome.streams["activities_reconcile"]
    assert (reconcile.read, reconcile.deleted) == (58, 2)
    assert live(session_factory, "activities") == set(made.tasks + made.events) - {
        made.tasks[3],
        made.events[3],
    }
    assert archived <= live(session_factory, "activities")
    # Both objects were read with queryAll, deleted rows left out by the query itself.
    route = "query" if bulk_threshold is None else "bulk_create"
    for sobject in ("Task", "Event"):
        (path,) = [
            entry.path
            for entry in org.log
            if entry.route == route and f"FROM {sobject} WHERE IsDeleted = false" in (entry.soql or "")
        ]
        if bulk_threshold is None:
            assert path.rstrip("/").endswith("/queryAll")


def test_archiving_changes_nothing_in_the_store(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    """Salesforce's archiving job runs between two syncs: every activity is still read (queryAll)."""
    org = emulator.org
    made = seed_org(org, opportunities=4, leads=4, accounts=3, activities=30, seed=2)
    syncer, _clock = _sync(emulator, session_factory)
    assert org.archive_activities(org.now() - timedelta(days=30)) > 0

    outcome = syncer.run(full=True)

    assert outcome.status == "succeeded", outcome.error
    assert live(session_factory, "activities") == set(made.tasks + made.events)
    assert outcome.total("deleted") == 0


def test_tasks_and_events_through_bulk_are_stored_as_through_rest(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    org = emulator.org
    seed_org(org, opportunities=20, leads=10, accounts=10, activities=150)
    rest = Syncer(session_factory, settings_for(emulator, streams=STREAMS, activity_types=KINDS))
    bulk = Syncer(
        session_factory,
        settings_for(emulator, streams=STREAMS, activity_types=KINDS, bulk_threshold=20),
        connection_id="sfdc-bulk",
    )

    assert rest.run().status == "succeeded"
    outcome = bulk.run()

    assert outcome.status == "succeeded", outcome.error
    # A job for each scan of 20 rows or more: deals (20), tasks (100), events (50).
    assert [
        len(org.queries("bulk_create", name)) for name in ("Account", "Opportunity", "Task", "Event")
    ] == [
        0,
        1,
        1,
        1,
    ]
    assert comparable(session_factory, "activities", "sfdc-bulk") == comparable(
        session_factory, "activities", "sfdc"
    )
    assert comparable(session_factory, "accounts", "sfdc-bulk") == comparable(
        session_factory, "accounts", "sfdc"
    )
    assert len(comparable(session_factory, "activities", "sfdc")) == 150


def test_activity_kinds_in_the_settings_are_checked() -> None:
    base: dict[str, Any] = {"auth": PASSWORD_AUTH}
    with pytest.raises(ValidationError, match="'Site Visit': 'Visit' is not a kind of activity"):
        SalesforceSettings.model_validate({**base, "activity_types": {"Site Visit": "Visit"}})
    with pytest.raises(ValidationError, match="given twice"):
        SalesforceSettings.model_validate({**base, "activity_types": {"Demo": "demo", "DEMO": "meeting"}})
    settings = SalesforceSettings.model_validate({**base, "activity_types": {"Webinar": "webinar_attended"}})
    assert settings.activity_types == {"Webinar": "webinar_attended"}
    assert settings.streams[-2:] == ("tasks", "events")
