"""The incremental rules: keyset cursor with ties, lookback, upper bound, a checkpoint per page, SOQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.connector_sdk import Checkpoint, OpportunityRecord
from tests.connectors.salesforce.emulator import SalesforceEmulator
from tests.connectors.salesforce.seed import add_opportunities, minimal_org, seed_org
from tests.connectors.salesforce.support import (
    Syncer,
    checkpoint_of,
    connector,
    read,
    settings_for,
    stored,
)


def _soql_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def test_five_thousand_rows_tied_on_one_timestamp_across_a_page_boundary(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    """The connection drops in the middle of page 2; the retry resumes after the last row of
    page 1 *within* the tie: a bare ``> timestamp`` would lose 3,000 rows, a ``>=`` without the Id
    would read 2,000 twice."""
    org = emulator.org
    minimal_org(org)
    tied = (org.now() - timedelta(hours=1)).replace(microsecond=0)
    ids = add_opportunities(org, 5000, start=tied, step=timedelta(0))
    org.add_fault("query_more", kind="drop")
    syncer = Syncer(session_factory, settings_for(emulator, streams=["opportunities"]), batch_size=1000)

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    stats = outcome.streams["opportunities"]
    assert (outcome.retries, stats.read, stats.inserted) == (1, 5000, 5000)
    assert set(stored(session_factory, "opportunities")) == set(ids)
    first, resumed = org.queries("query")
    last_of_page_one = sorted(ids)[1999]
    at = _soql_time(tied)
    assert f"(SystemModstamp > {at} OR (SystemModstamp = {at} AND Id > '{last_of_page_one}'))" in resumed
    assert "Id >" not in first


def test_a_record_committed_late_inside_the_lookback_is_read(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    """A transaction that started before the last sync's upper bound commits after it: its row
    carries a ``SystemModstamp`` older than the cursor. The lookback re-reads that window; a
    connection without one misses the row."""
    org = emulator.org
    minimal_org(org)
    add_opportunities(org, 20, start=org.now() - timedelta(hours=2), step=timedelta(minutes=1))
    with_lookback = Syncer(session_factory, settings_for(emulator, streams=["opportunities"]))
    without = Syncer(
        session_factory,
        settings_for(emulator, streams=["opportunities"], lookback=0),
        connection_id="nolookback",
    )
    assert with_lookback.run().status == "succeeded"
    assert without.run().status == "succeeded"
    checkpoint = checkpoint_of(session_factory, "opportunities")
    assert checkpoint is not None
    cursor = datetime.fromisoformat(checkpoint["cursor"])
    assert checkpoint_of(session_factory, "opportunities", "nolookback") is not None

    (late,) = add_opportunities(org, 1, start=cursor - timedelta(minutes=3))

    second = with_lookback.run()
    assert second.status == "succeeded", second.error
    assert second.streams["opportunities"].inserted == 1
    assert late in stored(session_factory, "opportunities")
    assert without.run().status == "succeeded"
    assert late not in stored(session_factory, "opportunities", "nolookback")
    # The lookback re-read is idempotent: nothing but the late row changed.
    assert second.total("updated") == 0


def test_rows_newer_than_now_minus_skew_wait_for_the_next_run(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    """The upper bound keeps the cursor behind rows still being written: with no lookback at all,
    a row stamped inside the skew and another committed a little later, with an older stamp, both
    arrive with the next run. Without the bound the first run would read the newest row, move the
    cursor to it, and the late one would be lost."""
    org = emulator.org
    minimal_org(org)
    now = org.now().replace(microsecond=0)
    add_opportunities(org, 5, start=now - timedelta(hours=1), step=timedelta(minutes=1))
    (fresh,) = add_opportunities(org, 1, start=now - timedelta(seconds=10))
    clock = [now]
    syncer = Syncer(
        session_factory,
        settings_for(emulator, streams=["opportunities"], lookback=0, skew=60),
        clock=lambda: clock[0],
    )

    first = syncer.run()

    assert first.status == "succeeded", first.error
    assert first.streams["opportunities"].inserted == 5
    assert fresh not in stored(session_factory, "opportunities")
    checkpoint = checkpoint_of(session_factory, "opportunities")
    assert checkpoint is not None
    assert datetime.fromisoformat(checkpoint["cursor"]) == now - timedelta(seconds=60)

    (late,) = add_opportunities(org, 1, start=now - timedelta(seconds=30))
    clock[0] = now + timedelta(minutes=5)
    second = syncer.run()
    assert second.status == "succeeded", second.error
    assert {fresh, late} <= set(stored(session_factory, "opportunities"))


def test_a_checkpoint_after_every_page_names_its_last_row(emulator: SalesforceEmulator) -> None:
    org = emulator.org
    minimal_org(org)
    start = (org.now() - timedelta(hours=3)).replace(microsecond=0)
    ids = add_opportunities(org, 4500, start=start, step=timedelta(seconds=1))
    conn = connector(settings_for(emulator, streams=["opportunities"], bulk_threshold=None))

    messages = read(conn, "opportunities")
    conn.close()

    records_before: list[int] = []
    states: list[dict[str, Any]] = []
    count = 0
    for message in messages:
        if isinstance(message, OpportunityRecord):
            count += 1
        elif isinstance(message, Checkpoint):
            records_before.append(count)
            states.append(dict(message.state))
    # Scan start, three pages of 2,000 / 2,000 / 500, the end of the scan.
    assert records_before == [0, 2000, 4000, 4500, 4500]
    afters = [state["scan"]["after"] for state in states[1:4]]
    assert afters == [
        [(start + timedelta(seconds=n - 1)).isoformat(), ids[n - 1]] for n in (2000, 4000, 4500)
    ]
    assert "scan" not in states[-1]
    assert states[-1]["cursor"] is not None


def test_a_resumed_scan_continues_from_its_checkpoint_without_re_reading(
    emulator: SalesforceEmulator,
) -> None:
    org = emulator.org
    minimal_org(org)
    start = (org.now() - timedelta(hours=3)).replace(microsecond=0)
    ids = add_opportunities(org, 4500, start=start, step=timedelta(seconds=1))
    conn = connector(settings_for(emulator, streams=["opportunities"], bulk_threshold=None))
    messages = read(conn, "opportunities")
    mid_scan = [m.state for m in messages if isinstance(m, Checkpoint)][1]  # after page 1

    resumed = read(conn, "opportunities", mid_scan)
    conn.close()

    read_again = [m.external_id for m in resumed if isinstance(m, OpportunityRecord)]
    assert read_again == ids[2000:]


def test_soql_is_built_by_format_soql_and_a_tampered_checkpoint_is_not_trusted(
    emulator: SalesforceEmulator,
) -> None:
    org = emulator.org
    minimal_org(org)
    now = org.now().replace(microsecond=0)
    add_opportunities(org, 3, start=now - timedelta(hours=3))
    conn = connector(
        settings_for(emulator, streams=["opportunities"], bulk_threshold=None), clock=lambda: now
    )
    done = read(conn, "opportunities")[-1]
    assert isinstance(done, Checkpoint)
    assert done.state["cursor"] == (now - timedelta(seconds=60)).isoformat()

    read(conn, "opportunities", done.state)
    # The lookback (10 minutes) before the cursor, up to now minus the skew (60 seconds).
    since, upper = _soql_time(now - timedelta(seconds=660)), _soql_time(now - timedelta(seconds=60))
    assert org.queries("query")[-1] == (
        "SELECT Id, OwnerId, Name, AccountId, Amount, StageName, Probability, ForecastCategory, "
        "ForecastCategoryName, IsClosed, IsWon, CreatedDate, CloseDate, Type, LeadSource, IsDeleted, "
        f"SystemModstamp FROM Opportunity WHERE SystemModstamp >= {since} AND SystemModstamp <= {upper} "
        "ORDER BY SystemModstamp ASC, Id ASC"
    )

    cursor = done.state["cursor"]
    tampered = {**done.state, "scan": {"since": None, "upper": cursor, "after": [cursor, "x' OR Name != '"]}}
    again = read(conn, "opportunities", tampered)
    conn.close()
    assert len([m for m in again if isinstance(m, OpportunityRecord)]) == 3  # read afresh, not injected
    assert all("OR Name" not in text for text in org.queries("query"))


def test_stage_history_is_read_incrementally_on_created_date(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    org = emulator.org
    made = seed_org(org, opportunities=10, leads=0)
    history = org.table("OpportunityHistory")
    total = len(history.rows)
    syncer = Syncer(session_factory, settings_for(emulator, streams=["stage_changes"]))
    first = syncer.run()
    assert first.status == "succeeded", first.error
    assert first.streams["stage_changes"].inserted == total

    at = (org.now() - timedelta(minutes=2)).replace(microsecond=0)
    added = history.insert(
        {
            "OpportunityId": made.opportunities[0],
            "StageName": "Closed Won",
            "CreatedDate": at,
            "SystemModstamp": at,
        },
        at=at,
    )
    second = syncer.run()

    assert second.status == "succeeded", second.error
    assert second.streams["stage_changes"].inserted == 1
    changes = stored(session_factory, "stage_changes")
    assert len(changes) == total + 1
    change = changes[added["Id"]]
    assert (change.opportunity_external_id, change.to_stage, change.changed_at) == (
        made.opportunities[0],
        "Closed Won",
        at,
    )
    assert "CreatedDate >= " in org.queries("query", "OpportunityHistory")[-1]
