"""Deletions: ``queryAll`` rows with ``IsDeleted``, the deleted-records feed, and reconciliation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from tests.connectors.salesforce.emulator import SalesforceEmulator
from tests.connectors.salesforce.seed import add_opportunities, minimal_org
from tests.connectors.salesforce.support import Syncer, last_run, live, settings_for, stored

STREAMS = ["opportunities"]


class Clock:
    """The connector's clock, some minutes ahead of the org's (so rows changed "now" are in range)."""

    def __init__(self) -> None:
        self.offset = timedelta(minutes=5)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def _setup(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session], count: int = 6, **settings: object
) -> tuple[list[str], Syncer, Clock]:
    minimal_org(emulator.org)
    ids = add_opportunities(emulator.org, count, start=emulator.org.now() - timedelta(hours=2))
    clock = Clock()
    syncer = Syncer(session_factory, settings_for(emulator, streams=STREAMS, **settings), clock=clock)
    first = syncer.run()
    assert first.status == "succeeded", first.error
    assert live(session_factory, "opportunities") == set(ids)
    return ids, syncer, clock


def _run(syncer: Syncer, *, full: bool = False) -> dict[str, int]:
    outcome = syncer.run(full=full)
    assert outcome.status == "succeeded", outcome.error
    return {name: stats.deleted for name, stats in outcome.streams.items()}


def test_a_deleted_row_comes_back_from_query_all_marked_deleted(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    ids, syncer, _clock = _setup(emulator, session_factory)
    emulator.org.table("Opportunity").soft_delete(ids[0])

    _run(syncer)

    deal = stored(session_factory, "opportunities")[ids[0]]
    assert deal.is_deleted
    assert deal.raw["IsDeleted"] is True  # the row itself, read through queryAll
    assert deal.deleted_at == emulator.org.table("Opportunity").rows[ids[0]]["SystemModstamp"]
    assert live(session_factory, "opportunities") == set(ids[1:])


def test_a_row_purged_from_the_recycle_bin_is_deleted_through_the_deleted_records_feed(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    ids, syncer, _clock = _setup(emulator, session_factory)
    table = emulator.org.table("Opportunity")
    # The feed answers to the minute it has fully covered: a deletion of this very minute would
    # come with the next run.
    table.soft_delete(ids[1], at=emulator.org.now() - timedelta(minutes=2))
    deleted_at = table.rows[ids[1]]["SystemModstamp"]
    table.purge(ids[1])  # queryAll no longer has it; the feed does

    deleted = _run(syncer)

    assert deleted["opportunities"] == 1
    deal = stored(session_factory, "opportunities")[ids[1]]
    assert (deal.is_deleted, deal.deleted_at) == (True, deleted_at)
    assert deal.raw["IsDeleted"] is False  # nothing but the feed said so
    assert len(emulator.org.queries("deleted", "")) == 0  # the feed is not a query
    assert [entry.route for entry in emulator.org.log].count("deleted") == 1


def test_a_hard_delete_is_caught_by_the_periodic_reconciliation(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    """Gone without a trace (no row, no feed entry): only a reconciliation of the live ids sees it,
    and only when one is due."""
    ids, syncer, clock = _setup(emulator, session_factory)
    emulator.org.table("Opportunity").hard_delete(ids[2])

    clock.offset = timedelta(hours=1)
    assert _run(syncer) == {"opportunities": 0, "opportunities_reconcile": 0}
    assert ids[2] in live(session_factory, "opportunities")

    clock.offset = timedelta(days=8)  # past reconcile_every (7 days)
    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    reconcile = outcome.streams["opportunities_reconcile"]
    assert (reconcile.deleted, reconcile.read, reconcile.updated) == (1, 5, 0)
    assert live(session_factory, "opportunities") == set(ids) - {ids[2]}
    # Not due again for another week.
    clock.offset = timedelta(days=9)
    assert _run(syncer)["opportunities_reconcile"] == 0
    assert outcome.streams["opportunities_reconcile"].read == 5


def test_a_full_refresh_reconciles(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    ids, syncer, _clock = _setup(emulator, session_factory)
    emulator.org.table("Opportunity").hard_delete(ids[3])

    deleted = _run(syncer, full=True)

    assert deleted["opportunities_reconcile"] == 1
    assert live(session_factory, "opportunities") == set(ids) - {ids[3]}


def test_a_gap_longer_than_the_feed_remembers_forces_a_reconciliation(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    ids, syncer, clock = _setup(emulator, session_factory, reconcile_every="P365D")
    emulator.org.table("Opportunity").hard_delete(ids[4])

    clock.offset = timedelta(days=40)  # the feed reaches back 30 days only
    deleted = _run(syncer)

    assert deleted["opportunities_reconcile"] == 1
    assert live(session_factory, "opportunities") == set(ids) - {ids[4]}


def test_a_row_restored_after_its_deletion_is_live_again(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    """The feed still lists the deletion, but the scan comes after it and reads the row live."""
    ids, syncer, _clock = _setup(emulator, session_factory)
    table = emulator.org.table("Opportunity")
    table.soft_delete(ids[5])
    _run(syncer)
    assert ids[5] not in live(session_factory, "opportunities")
    later: Callable[[], datetime] = lambda: emulator.org.now() + timedelta(seconds=1)  # noqa: E731
    table.undelete(ids[5], at=later())

    _run(syncer)

    assert ids[5] in live(session_factory, "opportunities")
    assert stored(session_factory, "opportunities")[ids[5]].deleted_at is None


def test_a_reconcile_that_finds_most_rows_gone_deletes_nothing_until_confirmed(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    """The reconcile reads every live id: if most are missing (rows hidden from the integration
    user by a sharing change look exactly like this), nothing is deleted without a confirmation."""
    ids, syncer, _clock = _setup(emulator, session_factory, count=30)
    table = emulator.org.table("Opportunity")
    for record_id in ids[5:]:
        table.hard_delete(record_id)

    refused = syncer.run(full=True)

    assert (refused.status, refused.error_kind) == ("failed", "mass_delete")
    assert refused.error is not None
    assert "opportunities_reconcile: this sync would soft-delete 25 of the 30 live opportunities (83%)" in (
        refused.error
    )
    assert "crm-perf-sync sync sfdc --allow-mass-delete" in refused.error
    assert refused.streams["opportunities"].status == "succeeded"
    assert refused.total("deleted") == 0
    assert live(session_factory, "opportunities") == set(ids)
    assert last_run(session_factory).error_kind == "mass_delete"

    confirmed = syncer.run(allow_mass_delete=True)  # a plain run reconciles again: no --full needed

    assert confirmed.status == "succeeded", confirmed.error
    assert confirmed.streams["opportunities_reconcile"].deleted == 25
    assert live(session_factory, "opportunities") == set(ids[:5])


def test_a_mass_delete_in_the_org_waits_for_a_confirmation(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    """25 of 30 deals deleted in Salesforce: the feed lists them and ``queryAll`` returns them with
    ``IsDeleted``. Both are deletions; together they are held back until confirmed, and then
    applied as the org reported them."""
    ids, syncer, _clock = _setup(emulator, session_factory, count=30)
    table = emulator.org.table("Opportunity")
    when = emulator.org.now() - timedelta(minutes=2)
    for record_id in ids[5:]:
        table.soft_delete(record_id, at=when)
    table.purge(ids[5])  # gone from queryAll: only the feed says so

    refused = syncer.run()

    assert (refused.status, refused.error_kind) == ("failed", "mass_delete")
    assert refused.error is not None
    assert "opportunities: this sync would soft-delete 25 of the 30 live opportunities" in refused.error
    assert live(session_factory, "opportunities") == set(ids)
    assert all(stored(session_factory, "opportunities")[i].deleted_at is None for i in ids)

    confirmed = syncer.run(allow_mass_delete=True)

    assert confirmed.status == "succeeded", confirmed.error
    assert confirmed.streams["opportunities"].deleted == 25
    assert live(session_factory, "opportunities") == set(ids[:5])
    rows = stored(session_factory, "opportunities")
    assert {rows[i].deleted_at for i in ids[5:]} == {when.replace(microsecond=0)}
    assert _run(syncer) == {"opportunities": 0, "opportunities_reconcile": 0}


def test_a_refused_reconcile_runs_again_on_the_confirmed_sync(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    """Forced by a gap the feed cannot cover, the refused reconcile is not due again by its
    schedule (a year): the confirming run must reconcile all the same, with no --full."""
    ids, syncer, clock = _setup(emulator, session_factory, count=30, reconcile_every="P365D")
    for record_id in ids[5:]:
        emulator.org.table("Opportunity").hard_delete(record_id)
    # 40 days later for the org too (the feed reaches back 30 days only): the refused run's feed
    # covers up to then, so the confirming run has no gap of its own to force a reconcile.
    emulator.org.clock = lambda: datetime.now(UTC) + timedelta(days=40)
    clock.offset = timedelta(days=40, minutes=5)

    refused = syncer.run()
    assert (refused.status, refused.error_kind) == ("failed", "mass_delete")
    assert refused.error is not None
    assert "crm-perf-sync sync sfdc --allow-mass-delete" in refused.error
    assert live(session_factory, "opportunities") == set(ids)

    confirmed = syncer.run(allow_mass_delete=True)

    assert confirmed.status == "succeeded", confirmed.error
    assert confirmed.streams["opportunities_reconcile"].deleted == 25
    assert live(session_factory, "opportunities") == set(ids[:5])
    # Reconciled now: not due again for a year.
    emulator.org.clock = lambda: datetime.now(UTC) + timedelta(days=41)
    clock.offset = timedelta(days=41, minutes=5)
    assert _run(syncer)["opportunities_reconcile"] == 0
