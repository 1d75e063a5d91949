"""The sync engine against real SQLite and PostgreSQL stores, driven by a scripted source."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import AppConfig, ConnectionConfig
from crm_perf_sync.connector_sdk import (
    BadRecord,
    FatalError,
    LeadRecord,
    OpportunityRecord,
    OwnerRecord,
    QuotaExhaustedError,
    RetriableError,
    SnapshotComplete,
    StageChangeRecord,
    StreamSpec,
    TeamRecord,
    Tombstone,
)
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.leases import new_holder_id, sync_lease
from crm_perf_sync.models import (
    Lead,
    Lease,
    Opportunity,
    Owner,
    StageChange,
    SyncCheckpoint,
    SyncRecordError,
    SyncRun,
    Team,
    TeamMember,
)
from crm_perf_sync.org import repository as org_repo
from crm_perf_sync.sync import repository as repo
from crm_perf_sync.sync.errors import SyncAlreadyRunning
from crm_perf_sync.sync.outcomes import SyncOutcome
from crm_perf_sync.sync.service import SyncEngine, SyncOptions
from tests.sync.scripted import Script, scripted

T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
OPPS = StreamSpec("opportunities", "opportunities", cursor_field="modified")
LEADS = StreamSpec("leads", "leads", cursor_field="modified")
OWNERS = StreamSpec("owners", "owners")
TEAMS = StreamSpec("teams", "teams")
HISTORY = StreamSpec("stage_changes", "stage_changes")


def opp(n: int, stage: str = "Prospecting", minutes: int = 0, **kw: object) -> OpportunityRecord:
    values: dict[str, object] = {
        "external_id": f"006{n:05d}",
        "owner_external_id": f"005{n % 3}",
        "name": f"Deal {n}",
        "amount": Decimal(f"{1000 + n}.50"),
        "currency": "USD",
        "stage": stage,
        "probability": 0.1,
        "created_at": T0 - timedelta(days=n),
        "close_date": date(2025, 6, 30),
        "remote_updated_at": T0 + timedelta(minutes=minutes),
        "raw": {"Id": f"006{n:05d}", "Custom__c": n},
    }
    values.update(kw)
    return OpportunityRecord(**values)  # type: ignore[arg-type]


def setup_connection(factory: sessionmaker[Session], connection_id: str = "crm") -> None:
    connections = [ConnectionConfig.model_validate({"id": connection_id, "kind": "scripted"})]
    with session_scope(factory) as session:
        repo.sync_connections(session, connections, T0)


def run(
    factory: sessionmaker[Session],
    script: Script,
    *,
    full: bool = False,
    batch_size: int = 2,
    max_retries: int = 3,
    sleeps: list[float] | None = None,
    holder: str | None = None,
) -> SyncOutcome:
    setup_connection(factory)
    engine = SyncEngine(
        session_factory=factory,
        connector=scripted(script),
        connection_id="crm",
        options=SyncOptions(batch_size=batch_size, max_retries=max_retries, retry_base_seconds=1.0),
        holder=holder or new_holder_id(),
        sleep=(sleeps.append if sleeps is not None else lambda _s: None),
    )
    return engine.run(trigger="manual", full_refresh=full)


def count(factory: sessionmaker[Session], model: type[object], *where: object) -> int:
    with session_scope(factory) as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)  # type: ignore[arg-type]


def test_first_sync_stores_every_field_and_a_second_run_changes_nothing(
    session_factory: sessionmaker[Session],
) -> None:
    script = Script(
        streams=[OPPS],
        pages={
            "opportunities": [
                [opp(1), opp(2)],
                [opp(3), opp(4)],
                [opp(5, stage="Closed Won", is_closed=True, is_won=True)],
            ]
        },
    )
    first = run(session_factory, script)
    assert first.status == "succeeded"
    stats = first.streams["opportunities"]
    assert (stats.read, stats.inserted, stats.updated, stats.unchanged) == (5, 5, 0, 0)
    assert stats.cursor_after == {"page": 2}

    with session_scope(session_factory) as session:
        stored = session.scalars(select(Opportunity).where(Opportunity.external_id == "00600003")).one()
        assert stored.amount == Decimal("1003.50")
        assert stored.currency == "USD"
        assert stored.owner_external_id == "0050"
        assert stored.created_at == T0 - timedelta(days=3)
        assert stored.created_at.tzinfo is not None
        assert stored.close_date == date(2025, 6, 30)
        assert stored.raw == {"Id": "00600003", "Custom__c": 3}
        won = session.scalars(select(Opportunity).where(Opportunity.external_id == "00600005")).one()
        assert (won.is_closed, won.is_won, won.stage) == (True, True, "Closed Won")
        checkpoint = session.get(SyncCheckpoint, ("crm", "opportunities"))
        assert checkpoint is not None
        assert checkpoint.state == {"page": 2}
        run_row = session.get(SyncRun, first.run_id)
        assert run_row is not None
        assert (run_row.status, run_row.inserted, run_row.records_read) == ("succeeded", 5, 5)
        assert run_row.streams["opportunities"]["cursor_after"] == {"page": 2}

    second = run(session_factory, script)
    assert second.status == "succeeded"
    assert script.reads[-1] == ("opportunities", {"page": 2})
    assert second.total("read") == 0

    full = run(session_factory, script, full=True)
    last_read: tuple[str, object] = script.reads[-1]
    assert last_read == ("opportunities", None)
    assert (full.total("read"), full.total("inserted"), full.total("updated"), full.total("unchanged")) == (
        5,
        0,
        0,
        5,
    )
    assert count(session_factory, Opportunity) == 5


def test_a_changed_stage_updates_the_row_and_records_one_observed_change(
    session_factory: sessionmaker[Session],
) -> None:
    script = Script(streams=[OPPS], pages={"opportunities": [[opp(1), opp(2)]]})
    run(session_factory, script)
    script.pages["opportunities"].append([opp(1, stage="Negotiation", minutes=90), opp(2)])
    outcome = run(session_factory, script)
    stats = outcome.streams["opportunities"]
    assert (stats.inserted, stats.updated, stats.unchanged, stats.stage_changes) == (0, 1, 1, 1)
    with session_scope(session_factory) as session:
        change = session.scalars(select(StageChange)).one()
        assert (change.opportunity_external_id, change.from_stage, change.to_stage, change.source) == (
            "00600001",
            "Prospecting",
            "Negotiation",
            "observed",
        )
        assert change.changed_at == T0 + timedelta(minutes=90)
    # Re-reading the same change (a lookback window, a full refresh) records nothing twice.
    again = run(session_factory, script, full=True)
    assert again.total("updated") == 0
    assert count(session_factory, StageChange) == 1


def test_crm_history_is_kept_and_replaces_observation(session_factory: sessionmaker[Session]) -> None:
    steps = [
        StageChangeRecord(opportunity_external_id="00600001", to_stage="Prospecting", changed_at=T0),
        StageChangeRecord(
            opportunity_external_id="00600001",
            from_stage="Prospecting",
            to_stage="Negotiation",
            changed_at=T0 + timedelta(days=3),
            external_id="hist-2",
        ),
    ]
    script = Script(streams=[OPPS, HISTORY], pages={"opportunities": [[opp(1)]], "stage_changes": [steps]})
    run(session_factory, script)
    script.pages["opportunities"].append([opp(1, stage="Negotiation", minutes=5)])
    script.pages["stage_changes"].append(steps)  # the CRM returns the same history again
    outcome = run(session_factory, script)
    assert outcome.streams["opportunities"].updated == 1
    with session_scope(session_factory) as session:
        rows = session.execute(
            select(StageChange.external_id, StageChange.to_stage, StageChange.source).order_by(
                StageChange.changed_at
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (f"00600001@{T0.isoformat()}>Prospecting", "Prospecting", "crm"),
        ("hist-2", "Negotiation", "crm"),
    ]


def test_tombstones_and_snapshots_soft_delete(session_factory: sessionmaker[Session]) -> None:
    snapshot = StreamSpec("leads", "leads", snapshot=True)
    leads = [LeadRecord(external_id=f"L{i}", source="Web", created_at=T0) for i in range(5)]
    script = Script(
        streams=[OPPS, snapshot],
        pages={"opportunities": [[opp(1), opp(2)]], "leads": [[*leads, SnapshotComplete()]]},
    )
    run(session_factory, script)
    assert count(session_factory, Lead, Lead.is_deleted.is_(False)) == 5

    script.pages["opportunities"].append([Tombstone("00600002", T0 + timedelta(hours=1))])
    script.pages["leads"] = [[leads[0], leads[2], leads[4], SnapshotComplete()]]  # L1 and L3 are gone
    outcome = run(session_factory, script, full=True)
    assert outcome.streams["opportunities"].deleted == 1
    assert outcome.streams["leads"].deleted == 2
    with session_scope(session_factory) as session:
        gone = session.scalars(select(Opportunity).where(Opportunity.external_id == "00600002")).one()
        assert gone.is_deleted
        assert gone.deleted_at == T0 + timedelta(hours=1)
        deleted_leads = session.scalars(select(Lead.external_id).where(Lead.is_deleted.is_(True))).all()
        assert sorted(deleted_leads) == ["L1", "L3"]
    # A record that comes back is live again.
    script.pages["leads"] = [[*leads, SnapshotComplete()]]
    back = run(session_factory, script, full=True)
    assert back.streams["leads"].updated == 2
    assert count(session_factory, Lead, Lead.is_deleted.is_(False)) == 5


def test_bad_and_invalid_records_are_reported_and_skipped(session_factory: sessionmaker[Session]) -> None:
    naive = datetime(2025, 1, 1, 12, 0)  # noqa: DTZ001 - the point of the test
    script = Script(
        streams=[OPPS],
        pages={
            "opportunities": [
                [
                    opp(1),
                    BadRecord(
                        "close_value 'abc' is not a number",
                        key="row 7",
                        field="close_value",
                        raw={"v": "abc"},
                    ),
                    opp(2, created_at=naive),
                    opp(3, probability=40.0),
                ]
            ]
        },
    )
    outcome = run(session_factory, script)
    assert outcome.status == "succeeded"
    stats = outcome.streams["opportunities"]
    assert (stats.read, stats.inserted, stats.skipped) == (4, 1, 3)
    with session_scope(session_factory) as session:
        errors = session.execute(
            select(SyncRecordError.record_key, SyncRecordError.field, SyncRecordError.message).order_by(
                SyncRecordError.id
            )
        ).all()
    assert errors[0] == ("row 7", "close_value", "close_value 'abc' is not a number")
    assert errors[1][0] == "00600002"
    assert "timezone-aware" in errors[1][2]
    assert errors[2][0] == "00600003"
    assert "probability" in errors[2][2]


def test_retriable_errors_resume_from_the_last_checkpoint(session_factory: sessionmaker[Session]) -> None:
    script = Script(
        streams=[OPPS],
        pages={"opportunities": [[opp(1), opp(2)], [opp(3), opp(4)], [opp(5), opp(6)]]},
        fail={
            ("opportunities", 2): [RetriableError("HTTP 503", retry_after=30.0), RetriableError("timeout")]
        },
    )
    sleeps: list[float] = []
    outcome = run(session_factory, script, sleeps=sleeps)
    assert outcome.status == "succeeded"
    assert outcome.retries == 2
    assert [r[1] for r in script.reads] == [None, {"page": 1}, {"page": 1}]
    assert sleeps[0] >= 30.0  # Retry-After is a floor
    assert 0.5 <= sleeps[1] <= 2.0  # second consecutive failure: 2 s step with equal jitter
    assert outcome.streams["opportunities"].inserted == 6
    assert count(session_factory, Opportunity) == 6


def test_exhausted_retries_fail_the_run_but_keep_what_was_committed(
    session_factory: sessionmaker[Session],
) -> None:
    script = Script(
        streams=[OPPS],
        pages={"opportunities": [[opp(1), opp(2)], [opp(3)]]},
        fail={("opportunities", 1): [RetriableError("connection reset")] * 10},
    )
    outcome = run(session_factory, script, max_retries=2)
    assert outcome.status == "failed"
    assert outcome.error_kind == "retriable"
    assert "connection reset" in (outcome.error or "")
    assert count(session_factory, Opportunity) == 2
    with session_scope(session_factory) as session:
        assert session.get(SyncCheckpoint, ("crm", "opportunities")).state == {"page": 0}  # type: ignore[union-attr]
        row = session.get(SyncRun, outcome.run_id)
        assert row is not None
        assert row.status == "failed"
        assert row.retries == 2
        assert "connection reset" in (row.error or "")
    # The next run resumes where the failed one stopped and ends in the full state.
    script.fail.clear()
    resumed = run(session_factory, script)
    assert (resumed.status, resumed.total("inserted")) == ("succeeded", 1)
    assert count(session_factory, Opportunity) == 3


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (FatalError("INVALID_SESSION_ID: session expired"), "failed", "fatal"),
        (QuotaExhaustedError("REQUEST_LIMIT_EXCEEDED"), "deferred", "deferred"),
        (RuntimeError("connector bug"), "failed", "fatal"),
    ],
)
def test_non_retriable_errors_end_the_run_with_a_recorded_reason(
    session_factory: sessionmaker[Session], error: Exception, status: str, kind: str
) -> None:
    script = Script(
        streams=[OPPS], pages={"opportunities": [[opp(1)], [opp(2)]]}, fail={("opportunities", 1): [error]}
    )
    outcome = run(session_factory, script)
    assert (outcome.status, outcome.error_kind) == (status, kind)
    assert str(error) in (outcome.error or "")
    with session_scope(session_factory) as session:
        row = session.get(SyncRun, outcome.run_id)
        assert row is not None
        assert row.status == status
        assert str(error) in (row.error or "")
        lease = session.get(Lease, sync_lease("crm"))
        assert lease is not None
        assert lease.holder is None
    assert count(session_factory, Opportunity) == 1


def test_duplicates_within_a_batch_keep_the_last_version(session_factory: sessionmaker[Session]) -> None:
    script = Script(
        streams=[OPPS], pages={"opportunities": [[opp(1), opp(1, stage="Proposal", minutes=1), opp(2)]]}
    )
    outcome = run(session_factory, script, batch_size=100)
    assert outcome.streams["opportunities"].inserted == 2
    with session_scope(session_factory) as session:
        assert (
            session.scalar(select(Opportunity.stage).where(Opportunity.external_id == "00600001"))
            == "Proposal"
        )


def test_a_held_lease_refuses_a_second_sync_and_an_expired_one_is_taken_over(
    session_factory: sessionmaker[Session],
) -> None:
    script = Script(streams=[OPPS], pages={"opportunities": [[opp(1)]]})
    setup_connection(session_factory)
    with session_scope(session_factory) as session:
        session.add(
            Lease(
                name=sync_lease("crm"),
                holder="otherhost:1:abc",
                expires_at=datetime.now(UTC) + timedelta(minutes=5),
            )
        )
    with pytest.raises(SyncAlreadyRunning, match="otherhost:1:abc"):
        run(session_factory, script)
    with session_scope(session_factory) as session:
        session.execute(update(Lease).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert run(session_factory, script).status == "succeeded"


def test_a_dead_local_holder_is_taken_over_at_once_and_its_run_closed(
    session_factory: sessionmaker[Session],
) -> None:
    script = Script(streams=[OPPS], pages={"opportunities": [[opp(1)]]})
    setup_connection(session_factory)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead_holder = new_holder_id().split(":")[0] + f":{dead.stdout.strip()}:deadbeef"
    with session_scope(session_factory) as session:
        session.add(
            Lease(
                name=sync_lease("crm"), holder=dead_holder, expires_at=datetime.now(UTC) + timedelta(hours=1)
            )
        )
        stale = repo.create_run(session, "crm", "schedule", False, dead_holder, T0)
    outcome = run(session_factory, script)
    assert outcome.status == "succeeded"
    with session_scope(session_factory) as session:
        old = session.get(SyncRun, stale)
        assert old is not None
        assert old.status == "abandoned"


def test_losing_the_lease_rolls_back_the_batch(session_factory: sessionmaker[Session]) -> None:
    def steal(_stream: str, page: int) -> None:
        if page == 0:
            # Another process takes over once page 0 is committed (by the engine's writer thread).
            deadline = time.monotonic() + 120
            while count(session_factory, SyncCheckpoint) == 0:
                assert time.monotonic() < deadline, "page 0 was never committed"
                time.sleep(0.01)
            with session_scope(session_factory) as session:
                session.execute(update(Lease).values(holder="thief:1:x"))

    script = Script(streams=[OPPS], pages={"opportunities": [[opp(1)], [opp(2)]]}, after_page=steal)
    # batch_size=1: page 0 commits before the hook steals the lease; page 1 must not.
    outcome = run(session_factory, script, batch_size=1)
    assert outcome.status == "failed"
    assert "taken by another process" in (outcome.error or "")
    with session_scope(session_factory) as session:
        assert sorted(session.scalars(select(Opportunity.external_id))) == ["00600001"]
        assert session.get(SyncCheckpoint, ("crm", "opportunities")).state == {"page": 0}  # type: ignore[union-attr]


def test_teams_from_the_crm_and_from_the_config(session_factory: sessionmaker[Session]) -> None:
    script = Script(
        streams=[TEAMS, OWNERS],
        pages={
            "teams": [
                [
                    TeamRecord(external_id="EMEA", name="EMEA", level="region"),
                    TeamRecord(external_id="DACH", name="DACH", parent_external_id="EMEA", level="team"),
                ]
            ],
            "owners": [
                [
                    OwnerRecord(
                        external_id="0051", name="Ana Ruiz", email="Ana@Example.com", team_external_id="DACH"
                    ),
                    OwnerRecord(
                        external_id="0052", name="Bo Li", email="bo@example.com", team_external_id="DACH"
                    ),
                ]
            ],
        },
    )
    assert run(session_factory, script).status == "succeeded"
    app = AppConfig.model_validate(
        {
            "connections": [{"id": "crm", "kind": "scripted"}],
            "teams": [
                {
                    "id": "sales",
                    "name": "Sales",
                    "teams": [{"id": "enterprise", "name": "Enterprise", "members": ["ana@example.com"]}],
                }
            ],
        }
    )
    with session_scope(session_factory) as session:
        org_repo.sync_config_teams(session, app, T0)
    with session_scope(session_factory) as session:
        dach = session.scalars(select(Team).where(Team.external_id == "DACH")).one()
        emea = session.scalars(select(Team).where(Team.external_id == "EMEA")).one()
        assert dach.parent_id == emea.id
        enterprise = session.scalars(select(Team).where(Team.external_id == "enterprise")).one()
        sales = session.scalars(select(Team).where(Team.external_id == "sales")).one()
        assert enterprise.parent_id == sales.id
        members = session.execute(
            select(Team.external_id, Owner.external_id, TeamMember.source)
            .join(TeamMember, TeamMember.team_id == Team.id)
            .join(Owner, Owner.id == TeamMember.owner_id)
            .order_by(Team.external_id, Owner.external_id)
        ).all()
    assert [tuple(m) for m in members] == [
        ("DACH", "0051", "crm"),
        ("DACH", "0052", "crm"),
        ("enterprise", "0051", "config"),
    ]
