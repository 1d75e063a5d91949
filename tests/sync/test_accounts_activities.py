"""Accounts and activities go through the engine like deals: stored field by field, unchanged
re-reads skipped, changes logged with their old versions, deletions soft, bad records reported."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.connector_sdk import (
    AccountRecord,
    ActivityRecord,
    Message,
    StreamSpec,
    Tombstone,
)
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.models import PRIOR_TABLES, Account, Activity, ChangeBatch, SyncRecordError
from tests.sync.scripted import Script
from tests.sync.test_engine import count, run

ACCOUNTS = StreamSpec("accounts", "accounts", cursor_field="modified")
ACTIVITIES = StreamSpec("activities", "activities", cursor_field="modified")
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def account(n: int, **kw: object) -> AccountRecord:
    fields: dict[str, object] = {
        "external_id": f"001{n:05d}",
        "name": f"Account {n}",
        "owner_external_id": "005A",
        "industry": "Retail",
        "segment": "SMB",
        "created_at": T0 - timedelta(days=n),
        "remote_updated_at": T0,
        "raw": {"Id": f"001{n:05d}"},
    }
    fields.update(kw)
    return AccountRecord(**fields)  # type: ignore[arg-type]


def activity(n: int, **kw: object) -> ActivityRecord:
    fields: dict[str, object] = {
        "external_id": f"00T{n:05d}",
        "type": "call",
        "subtype": "Outbound call",
        "occurred_at": T0 + timedelta(hours=n),
        "owner_external_id": "005A",
        "duration_seconds": 60 * n,
        "outcome": "Connected",
        "account_external_id": "00100001",
        "opportunity_external_id": "00600001",
        "remote_updated_at": T0,
    }
    fields.update(kw)
    return ActivityRecord(**fields)  # type: ignore[arg-type]


def _script(accounts: list[Message], activities: list[Message]) -> Script:
    return Script(streams=[ACCOUNTS, ACTIVITIES], pages={"accounts": [accounts], "activities": [activities]})


def test_accounts_and_activities_are_stored_field_by_field_and_a_rerun_changes_nothing(
    session_factory: sessionmaker[Session],
) -> None:
    parent = account(1)
    child = account(2, parent_external_id="00100001", segment=None, industry="Software")
    calls = [
        activity(1),
        activity(2, type="meeting", subtype=None, duration_seconds=None, is_completed=False),
    ]
    outcome = run(session_factory, _script([parent, child], list(calls)), batch_size=10)

    assert outcome.status == "succeeded", outcome.error
    assert outcome.total("inserted") == 4
    with session_scope(session_factory) as session:
        stored = {a.external_id: a for a in session.scalars(select(Account))}
        done = {a.external_id: a for a in session.scalars(select(Activity))}
        child_row = stored["00100002"]
        assert (child_row.parent_external_id, child_row.industry) == ("00100001", "Software")
        assert stored["00100002"].segment is None
        assert stored["00100001"].created_at == T0 - timedelta(days=1)
        assert stored["00100001"].raw == {"Id": "00100001"}
        first, second = done["00T00001"], done["00T00002"]
        assert (first.type, first.subtype, first.duration_seconds, first.outcome) == (
            "call",
            "Outbound call",
            60,
            "Connected",
        )
        assert (first.account_external_id, first.opportunity_external_id, first.lead_external_id) == (
            "00100001",
            "00600001",
            None,
        )
        assert first.occurred_at == T0 + timedelta(hours=1)
        assert (second.type, second.duration_seconds, second.is_completed) == ("meeting", None, False)

    again = run(session_factory, _script([parent, child], list(calls)), batch_size=10, full=True)
    assert (again.total("inserted"), again.total("updated"), again.total("unchanged")) == (0, 0, 4)


def test_a_changed_account_or_activity_keeps_its_old_version_in_the_change_log(
    session_factory: sessionmaker[Session],
) -> None:
    run(session_factory, _script([account(1)], [activity(1)]), batch_size=10)
    with session_scope(session_factory) as session:
        # What a refresh would consume: the first load's batches and no old versions.
        assert {b.entity for b in session.scalars(select(ChangeBatch))} >= {"accounts", "activities"}
        for entity in ("accounts", "activities"):
            assert session.execute(select(PRIOR_TABLES[entity])).all() == []

    moved = account(1, owner_external_id="005B")
    rescheduled = activity(1, occurred_at=T0 + timedelta(days=3))
    outcome = run(session_factory, _script([moved], [rescheduled]), batch_size=10, full=True)

    assert outcome.total("updated") == 2
    with session_scope(session_factory) as session:
        (old_account,) = session.execute(select(PRIOR_TABLES["accounts"])).all()
        (old_activity,) = session.execute(select(PRIOR_TABLES["activities"])).all()
        assert (old_account.external_id, old_account.owner_external_id) == ("00100001", "005A")
        assert (old_activity.external_id, old_activity.occurred_at) == ("00T00001", T0 + timedelta(hours=1))
        assert session.scalars(select(Account.owner_external_id)).one() == "005B"


def test_deleted_accounts_and_activities_are_soft_deleted(session_factory: sessionmaker[Session]) -> None:
    run(session_factory, _script([account(1), account(2)], [activity(1), activity(2)]), batch_size=10)
    gone_at = T0 + timedelta(days=1)
    outcome = run(
        session_factory,
        _script([Tombstone("00100002", gone_at)], [activity(2, is_deleted=True, remote_updated_at=gone_at)]),
        batch_size=10,
        full=True,
    )

    assert outcome.status == "succeeded", outcome.error
    assert count(session_factory, Account, Account.is_deleted.is_(True)) == 1
    assert count(session_factory, Account) == 2  # kept, marked
    with session_scope(session_factory) as session:
        deleted = session.scalars(select(Activity).where(Activity.is_deleted.is_(True))).one()
        assert (deleted.external_id, deleted.deleted_at) == ("00T00002", gone_at)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (activity(1, type="Phone Call"), "type must be one of call, meeting"),
        (activity(2, duration_seconds=-5), "duration_seconds cannot be negative"),
        (activity(3, occurred_at=T0.replace(tzinfo=None)), "occurred_at must be timezone-aware"),
        (account(4, parent_external_id="00100004"), "an account cannot be its own parent"),
    ],
)
def test_an_invalid_account_or_activity_is_a_bad_record_that_names_what_is_wrong(
    session_factory: sessionmaker[Session], record: Message, message: str
) -> None:
    stream = "accounts" if isinstance(record, AccountRecord) else "activities"
    pages: dict[str, list[Message]] = {"accounts": [account(9)], "activities": [activity(9)]}
    pages[stream] = [record, *pages[stream]]
    outcome = run(session_factory, _script(pages["accounts"], pages["activities"]), batch_size=10)

    assert outcome.status == "succeeded", outcome.error
    assert (outcome.total("inserted"), outcome.total("skipped")) == (2, 1)
    with session_scope(session_factory) as session:
        (error,) = session.scalars(select(SyncRecordError))
        assert error.stream == stream
        assert error.record_key == record.external_id  # type: ignore[union-attr]
        assert message in error.message
