"""Mass deletions are held back: a sync that would soft-delete much of a stream deletes nothing.

A truncated export, a reconcile that saw only part of the CRM, or a sweep of tombstones would
otherwise wipe most of a stream's records. The engine decides every deletion of a read once the
read has ended, against the stream's live records; above the limit it deletes none, keeps what the
read stored, sets the stream to be read again (a snapshot whole) and fails the run saying how to
confirm.
"""

from __future__ import annotations

import csv
import shutil
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import ConnectionConfig
from crm_perf_sync.connector_sdk import OwnerRecord, StreamSpec, Tombstone
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.leases import new_holder_id
from crm_perf_sync.models import Lead, Opportunity, Owner, SyncCheckpoint, SyncRun
from crm_perf_sync.sync import repository as repo
from crm_perf_sync.sync.outcomes import SyncOutcome
from crm_perf_sync.sync.service import SyncEngine, SyncOptions
from tests.connectors.csv.support import connector, dataset, example_settings
from tests.sync.scripted import Script, scripted
from tests.sync.test_engine import OPPS, T0, count, opp
from tests.sync.test_engine import run as scripted_run

MAVEN = dataset("maven_crm_sales_opportunities")
OWNERS = StreamSpec("owners", "owners")


def _register(factory: sessionmaker[Session], connection_id: str, kind: str = "csv") -> None:
    connections = [ConnectionConfig.model_validate({"id": connection_id, "kind": kind})]
    with session_scope(factory) as session:
        repo.sync_connections(session, connections, utc_now())


def _maven_copy(directory: Path) -> Path:
    directory.mkdir()
    for name in ("sales_pipeline.csv", "sales_teams.csv", "products.csv", "accounts.csv"):
        shutil.copyfile(MAVEN / name, directory / name)
    return directory


def _rewrite_pipeline(
    directory: Path, keep: int, *, drop: int = 0, change: dict[str, str] | None = None
) -> None:
    """The export cut to its header and first ``keep`` rows (``drop``: leave out that many instead)."""
    with (MAVEN / "sales_pipeline.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    kept = rows[:keep] if not drop else rows[: len(rows) - drop]
    for row in kept:
        if change and row["opportunity_id"] in change:
            row["close_value"] = change[row["opportunity_id"]]
    with (directory / "sales_pipeline.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)


def _sync_maven(
    factory: sessionmaker[Session], data_dir: Path, *, allow: bool = False, **options: Any
) -> SyncOutcome:
    settings = example_settings("maven").model_copy(update={"data_dir": data_dir})
    engine = SyncEngine(
        session_factory=factory,
        connector=connector(settings),
        connection_id="maven",
        options=SyncOptions(**options),
        holder=new_holder_id(),
    )
    return engine.run(trigger="manual", full_refresh=False, allow_mass_delete=allow)


def _confirmed_scripted_run(factory: sessionmaker[Session], script: Script) -> SyncOutcome:
    engine = SyncEngine(
        session_factory=factory,
        connector=scripted(script),
        connection_id="crm",
        options=SyncOptions(batch_size=10),
        holder=new_holder_id(),
    )
    return engine.run(trigger="manual", full_refresh=False, allow_mass_delete=True)


def _live(factory: sessionmaker[Session], model: Any, connection_id: str) -> int:
    with session_scope(factory) as session:
        stmt = select(func.count()).where(model.connection_id == connection_id, model.is_deleted.is_(False))
        return int(session.scalar(stmt) or 0)


def _checkpoint(factory: sessionmaker[Session], connection_id: str, stream: str) -> dict[str, Any] | None:
    with session_scope(factory) as session:
        row = session.get(SyncCheckpoint, (connection_id, stream))
        return dict(row.state) if row is not None else None


def test_a_truncated_maven_export_deletes_nothing_until_confirmed(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    _register(session_factory, "maven")
    data = _maven_copy(tmp_path / "maven")
    first = _sync_maven(session_factory, data)
    assert first.status == "succeeded", first.error
    assert _live(session_factory, Opportunity, "maven") == 8800
    complete = _checkpoint(session_factory, "maven", "opportunities")
    assert complete is not None
    assert complete["done"] is True

    # The export was cut off after 100 rows; one of those rows has a new value.
    _rewrite_pipeline(data, 100, change={"1C1I7A6R": "1111"})
    truncated = _sync_maven(session_factory, data)

    assert (truncated.status, truncated.error_kind) == ("failed", "mass_delete")
    assert truncated.error is not None
    assert "would soft-delete 8,700 of the 8,800 live opportunities (99%)" in truncated.error
    assert "nothing was deleted" in truncated.error
    assert "crm-perf-sync sync maven --allow-mass-delete" in truncated.error
    assert "CRM_PERF_SYNC_MASS_DELETE_SHARE" in truncated.error
    assert truncated.total("deleted") == 0
    assert truncated.streams["opportunities"].status == "failed"
    assert truncated.streams["owners"].status == "succeeded"
    assert _live(session_factory, Opportunity, "maven") == 8800
    with session_scope(session_factory) as session:
        changed = session.scalars(select(Opportunity).where(Opportunity.external_id == "1C1I7A6R")).one()
        assert changed.amount == 1111  # what the read stored is kept: only the deletions are withheld
        run = session.get(SyncRun, truncated.run_id)
        assert run is not None
        assert (run.status, run.error_kind, run.deleted) == ("failed", "mass_delete", 0)
    # The next run reads the export whole again (only a whole read decides its deletions).
    assert _checkpoint(session_factory, "maven", "opportunities") is None
    again = _sync_maven(session_factory, data)
    assert (again.status, again.error_kind) == ("failed", "mass_delete")
    assert _live(session_factory, Opportunity, "maven") == 8800

    confirmed = _sync_maven(session_factory, data, allow=True)

    assert confirmed.status == "succeeded", confirmed.error
    assert confirmed.streams["opportunities"].deleted == 8700
    assert _live(session_factory, Opportunity, "maven") == 100
    done = _checkpoint(session_factory, "maven", "opportunities")
    assert done is not None
    assert (done["done"], done["row"]) == (True, 100)
    with session_scope(session_factory) as session:
        run = session.get(SyncRun, confirmed.run_id)
        assert run is not None
        assert (run.deleted, run.allow_mass_delete) == (8700, True)
    # Confirmed once, not for ever: an unchanged export afterwards reads and deletes nothing.
    after = _sync_maven(session_factory, data)
    assert (after.status, after.total("read"), after.total("deleted")) == ("succeeded", 0, 0)


def test_a_small_deletion_below_the_share_goes_through(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    _register(session_factory, "maven")
    data = _maven_copy(tmp_path / "maven")
    assert _sync_maven(session_factory, data).status == "succeeded"

    _rewrite_pipeline(data, 0, drop=50)  # 50 of 8,800 deals closed out of the export: 0.6%
    outcome = _sync_maven(session_factory, data)

    assert outcome.status == "succeeded", outcome.error
    assert outcome.streams["opportunities"].deleted == 50
    assert _live(session_factory, Opportunity, "maven") == 8750


def test_the_share_is_an_option(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    _register(session_factory, "maven")
    data = _maven_copy(tmp_path / "maven")
    assert _sync_maven(session_factory, data).status == "succeeded"
    _rewrite_pipeline(data, 0, drop=1000)  # 11.4%

    refused = _sync_maven(session_factory, data)
    assert refused.error is not None
    assert "1,000 of the 8,800 live opportunities (11%)" in refused.error
    assert "more than the 10% (880) a sync may delete" in refused.error

    allowed = _sync_maven(session_factory, data, mass_delete_share=0.2)
    assert allowed.status == "succeeded", allowed.error
    assert allowed.streams["opportunities"].deleted == 1000


def _leads_sync(
    factory: sessionmaker[Session],
    directory: Path,
    rows: list[str],
    *,
    allow: bool = False,
    batch: int = 5000,
) -> SyncOutcome:
    (directory / "leads.csv").write_text("id,source\n" + "".join(f"{key},Web\n" for key in rows))
    settings = {
        "data_dir": str(directory),
        "batch_size": batch,
        "streams": {"leads": {"file": "leads.csv", "fields": {"external_id": "id", "source": "source"}}},
    }
    engine = SyncEngine(
        session_factory=factory,
        connector=connector(settings),
        connection_id="tiny",
        options=SyncOptions(batch_size=min(batch, 500)),
        holder=new_holder_id(),
    )
    return engine.run(trigger="manual", full_refresh=False, allow_mass_delete=allow)


def test_never_all_even_in_a_tiny_stream(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    _register(session_factory, "tiny")
    assert _leads_sync(session_factory, tmp_path, ["L1", "L2", "L3"]).status == "succeeded"

    emptied = _leads_sync(session_factory, tmp_path, [])  # the header alone

    assert (emptied.status, emptied.error_kind) == ("failed", "mass_delete")
    assert emptied.error is not None
    assert "would soft-delete all 3 live leads" in emptied.error
    assert _live(session_factory, Lead, "tiny") == 3

    # A few records of a small stream are not a mass deletion, whatever their share (here 67%).
    few = _leads_sync(session_factory, tmp_path, ["L2"])
    assert few.status == "succeeded", few.error
    assert few.streams["leads"].deleted == 2
    assert _live(session_factory, Lead, "tiny") == 1

    confirmed = _leads_sync(session_factory, tmp_path, [], allow=True)
    assert confirmed.status == "succeeded", confirmed.error
    assert _live(session_factory, Lead, "tiny") == 0


def test_a_refused_export_is_read_whole_again_even_after_checkpoints_inside_it(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """The export checkpoints every 5 rows: a run that stopped short of the deletions must not
    leave a checkpoint from inside the export, or the next read would resume there and, being
    partial, could never delete anything."""
    _register(session_factory, "tiny")
    keys = [f"L{n:02d}" for n in range(40)]
    assert _leads_sync(session_factory, tmp_path, keys, batch=5).status == "succeeded"

    refused = _leads_sync(session_factory, tmp_path, keys[:12], batch=5)
    assert (refused.status, refused.error_kind) == ("failed", "mass_delete")
    assert refused.error is not None
    assert "28 of the 40 live leads" in refused.error

    confirmed = _leads_sync(session_factory, tmp_path, keys[:12], batch=5, allow=True)
    assert confirmed.status == "succeeded", confirmed.error
    assert confirmed.streams["leads"].deleted == 28
    assert _live(session_factory, Lead, "tiny") == 12


def test_a_sweep_of_tombstones_is_held_back_like_a_snapshot(session_factory: sessionmaker[Session]) -> None:
    """Tombstones for most of a stream (an archived-records sweep, a deleted-records feed) delete
    nothing unless confirmed; the other streams of the run are synced all the same."""
    script = Script(
        streams=[OPPS, OWNERS],
        pages={
            "opportunities": [[opp(n) for n in range(1, 31)]],
            "owners": [[OwnerRecord(external_id="0050", name="Ann")]],
        },
    )
    assert scripted_run(session_factory, script, batch_size=10).status == "succeeded"
    before = _checkpoint(session_factory, "crm", "opportunities")
    assert before == {"page": 0}

    script.pages["opportunities"] += [
        [opp(31)],
        [Tombstone(f"006{n:05d}", T0 + timedelta(hours=1)) for n in range(1, 21)],
    ]
    script.pages["owners"].append([OwnerRecord(external_id="0051", name="Bo")])
    refused = scripted_run(session_factory, script, batch_size=10)

    assert (refused.status, refused.error_kind) == ("failed", "mass_delete")
    assert refused.error is not None
    assert "opportunities: this sync would soft-delete 20 of the 31 live opportunities" in refused.error
    assert count(session_factory, Opportunity, Opportunity.is_deleted.is_(False)) == 31
    assert count(session_factory, Owner) == 2  # the next stream still ran
    assert refused.streams["owners"].status == "succeeded"
    assert _checkpoint(session_factory, "crm", "opportunities") == before

    confirmed = _confirmed_scripted_run(session_factory, script)

    assert confirmed.status == "succeeded", confirmed.error
    assert confirmed.streams["opportunities"].deleted == 20
    assert count(session_factory, Opportunity, Opportunity.is_deleted.is_(False)) == 11
    assert _checkpoint(session_factory, "crm", "opportunities") == {"page": 2}
    with session_scope(session_factory) as session:
        gone = session.scalars(select(Opportunity).where(Opportunity.external_id == "00600001")).one()
        assert gone.deleted_at == T0 + timedelta(hours=1)


def test_records_that_arrive_deleted_count_as_deletions(session_factory: sessionmaker[Session]) -> None:
    """Salesforce's ``queryAll`` returns deleted rows with ``IsDeleted``: that is a deletion too.
    Held back, the row's other changes are stored and it stays live."""
    script = Script(streams=[OPPS], pages={"opportunities": [[opp(n) for n in range(1, 31)]]})
    assert scripted_run(session_factory, script, batch_size=10).status == "succeeded"

    script.pages["opportunities"].append(
        [opp(n, stage="Closed Lost", minutes=30, is_deleted=True) for n in range(1, 26)]
    )
    refused = scripted_run(session_factory, script, batch_size=10)

    assert (refused.status, refused.error_kind) == ("failed", "mass_delete")
    assert refused.error is not None
    assert "25 of the 30 live opportunities" in refused.error
    with session_scope(session_factory) as session:
        rows = session.scalars(select(Opportunity).where(Opportunity.external_id == "00600001")).all()
        assert [(r.stage, r.is_deleted) for r in rows] == [("Closed Lost", False)]
    assert count(session_factory, Opportunity, Opportunity.is_deleted.is_(False)) == 30

    confirmed = _confirmed_scripted_run(session_factory, script)

    assert confirmed.status == "succeeded", confirmed.error
    assert count(session_factory, Opportunity, Opportunity.is_deleted.is_(False)) == 5
    with session_scope(session_factory) as session:
        gone = session.scalars(select(Opportunity).where(Opportunity.external_id == "00600001")).one()
        assert (gone.is_deleted, gone.deleted_at) == (True, T0 + timedelta(minutes=30))
    # Read again as they are (deleted), they stay deleted and are not counted again.
    script.pages["opportunities"].append(script.pages["opportunities"][1])
    again = scripted_run(session_factory, script, batch_size=10)
    assert (again.status, again.total("read"), again.total("deleted")) == ("succeeded", 25, 0)
    assert count(session_factory, Opportunity, Opportunity.is_deleted.is_(False)) == 5


@pytest.mark.parametrize("restored_in_same_batch", [True, False])
def test_a_record_read_again_after_its_tombstone_is_not_deleted(
    session_factory: sessionmaker[Session], restored_in_same_batch: bool
) -> None:
    script = Script(streams=[OPPS], pages={"opportunities": [[opp(n) for n in range(1, 31)]]})
    assert scripted_run(session_factory, script, batch_size=10).status == "succeeded"
    tombstones = [Tombstone("00600001"), Tombstone("00600002")]
    restored = [opp(1, minutes=5)]
    script.pages["opportunities"] += (
        [[*tombstones, *restored]] if restored_in_same_batch else [tombstones, restored]
    )

    outcome = scripted_run(session_factory, script, batch_size=100 if restored_in_same_batch else 1)

    assert outcome.status == "succeeded", outcome.error
    assert outcome.streams["opportunities"].deleted == 1
    with session_scope(session_factory) as session:
        deleted = session.scalars(
            select(Opportunity.external_id).where(Opportunity.is_deleted.is_(True))
        ).all()
    assert deleted == ["00600002"]


def test_a_soft_delete_marks_the_named_live_records_in_one_statement(
    session_factory: sessionmaker[Session],
) -> None:
    """A confirmed mass deletion removes thousands of records at once. PostgreSQL sends it as one
    statement: an UPDATE per record was a round of binding and planning each (8,700 of them for
    a truncated Maven export), and with the planner misled by a table's statistics, a scan each.
    Only the named live records of the connection change, each with its own deletion time; one
    deleted before keeps the time it went."""
    script = Script(streams=[OPPS], pages={"opportunities": [[opp(n) for n in range(1, 301)]]})
    assert scripted_run(session_factory, script, batch_size=100).status == "succeeded"
    engine = session_factory.kw["bind"]
    earlier = T0 + timedelta(days=1)
    with session_scope(session_factory) as session:
        assert repo.mark_deleted(session, "opportunities", "crm", {"00600007": earlier}, T0) == 1
    tombstones = {opp(n).external_id: T0 + timedelta(days=2, minutes=n) for n in range(1, 251)}
    tombstones["00699999"] = T0  # not stored: nothing to delete
    statements: list[tuple[str, bool]] = []

    def note(_conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, many: bool) -> None:
        statements.append((statement.split(None, 1)[0], many))

    event.listen(engine, "before_cursor_execute", note)
    try:
        with session_scope(session_factory) as session:
            deleted = repo.mark_deleted(session, "opportunities", "other", tombstones, T0)
            assert deleted == 0  # another connection's keys are not these
            statements.clear()
            deleted = repo.mark_deleted(session, "opportunities", "crm", tombstones, T0)
    finally:
        event.remove(engine, "before_cursor_execute", note)

    assert deleted == 249
    if engine.dialect.name == "postgresql":
        assert statements == [("UPDATE", False)]
    with session_scope(session_factory) as session:
        rows = session.execute(
            select(Opportunity.external_id, Opportunity.is_deleted, Opportunity.deleted_at)
        )
        state = {key: (gone, at) for key, gone, at in rows}
    assert len(state) == 300
    for n in range(1, 301):
        key = opp(n).external_id
        expected = (True, earlier) if n == 7 else (True, tombstones[key]) if n <= 250 else (False, None)
        gone, at = state[key]
        assert (gone, at and at.replace(tzinfo=UTC)) == expected, key
