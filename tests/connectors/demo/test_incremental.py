"""The demo company evolves with the clock: incremental reads, keyset cursors, resuming."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crm_perf_sync.connector_sdk import (
    FatalError,
    LeadRecord,
    OpportunityRecord,
    Record,
    StageChangeRecord,
    StreamSpec,
)
from crm_perf_sync_demo import generate_opportunities
from tests.connectors.demo.helpers import (
    HISTORY_END,
    SMALL,
    by_id,
    key_of,
    make,
    read,
    updated_of,
    upsert,
)

INCREMENTAL = ("leads", "opportunities", "activities", "stage_changes")
CLOCKED: dict[str, Any] = {**SMALL, "increment": "PT1H", "lookback": "PT2H"}
T1 = HISTORY_END - timedelta(days=30) + timedelta(minutes=17)  # a run a month before the end
AS_OF_1 = HISTORY_END - timedelta(days=30)  # T1 rounded down to the hour
T2 = HISTORY_END + timedelta(days=20)  # the next run, three weeks later


def key(record: Record) -> tuple[datetime, str]:
    moment = updated_of(record)
    assert moment is not None
    return moment, key_of(record)


def test_the_clock_is_rounded_down_to_the_increment() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    assert make(CLOCKED, clock=start + timedelta(hours=2, minutes=30)).as_of == start + timedelta(hours=2)
    assert make(SMALL, clock=datetime(2025, 3, 4, 10, 7, 59, tzinfo=UTC)).as_of == datetime(
        2025, 3, 4, 10, 5, tzinfo=UTC
    )
    assert make(CLOCKED, clock=T1).as_of == AS_OF_1
    pinned = make({**CLOCKED, "as_of": "2025-05-05T05:05:05Z"}, clock=T2)
    assert pinned.as_of == datetime(2025, 5, 5, 5, 5, 5, tzinfo=UTC)


def test_the_instant_is_fixed_for_the_life_of_a_connector() -> None:
    ticks = iter([T1, T2])
    connector = make(CLOCKED, clock=lambda: next(ticks))
    first = read(connector, "opportunities").records
    assert connector.as_of == AS_OF_1
    assert read(connector, "opportunities").records == first  # the clock was not asked again
    assert next(ticks) == T2


def test_before_the_company_starts_there_is_nothing() -> None:
    connector = make(CLOCKED, clock=datetime(2023, 6, 1, tzinfo=UTC))
    for stream in ("owners", "accounts", *INCREMENTAL):
        result = read(connector, stream)
        assert result.records == []
        assert result.checkpoints, f"{stream} still checkpoints"
    assert len(read(connector, "teams").records) == 9
    assert len(read(connector, "pipeline_stages").records) == 7


def test_a_first_run_brings_the_whole_history_up_to_now() -> None:
    connector = make(CLOCKED, clock=T1)
    opps = [r for r in read(connector, "opportunities").records if isinstance(r, OpportunityRecord)]
    expected = list(generate_opportunities(connector.settings, AS_OF_1))
    assert opps == expected
    assert 560 <= len(opps) < 600  # a month before the end of a 600-deal history
    assert all(o.created_at and o.created_at <= AS_OF_1 for o in opps)
    assert all(o.remote_updated_at and o.remote_updated_at <= AS_OF_1 for o in opps)
    assert any(not o.is_closed for o in opps)


@pytest.mark.parametrize("stream", INCREMENTAL)
def test_a_later_run_brings_the_new_and_changed_records_only(stream: str) -> None:
    first = read(make(CLOCKED, clock=T1), stream)
    before = by_id(first.records)
    second = read(make(CLOCKED, clock=T2), stream, first.final)
    after = by_id(read(make(CLOCKED, clock=T2), stream).records)

    window_start = AS_OF_1 - timedelta(hours=2)  # the lookback
    assert all(key(record)[0] >= window_start for record in second.records)
    assert [key(r) for r in second.records] == sorted(key(r) for r in second.records)
    emitted = by_id(second.records)
    new = emitted.keys() - before.keys()
    changed = {k for k in emitted.keys() & before.keys() if emitted[k] != before[k]}
    assert new, "three weeks bring new records"
    if stream in ("leads", "opportunities"):  # history rows never change; activities rarely do
        assert changed, "three weeks move some records on"
    assert len(emitted) < len(after) // 4
    # Nothing that changed is missing, and what was emitted is the latest version.
    for external_id, record in after.items():
        if before.get(external_id) != record:
            assert emitted.get(external_id) == record
    assert upsert(dict(before), second.records) == after


def test_open_deals_move_on_between_runs() -> None:
    first = by_id(read(make(CLOCKED, clock=T1), "opportunities").records)
    checkpoint = read(make(CLOCKED, clock=T1), "opportunities").final
    second = by_id(read(make(CLOCKED, clock=T2), "opportunities", checkpoint).records)
    moves: set[tuple[str | None, str | None]] = set()
    for external_id, record in second.items():
        old = first.get(external_id)
        assert isinstance(record, OpportunityRecord)
        if isinstance(old, OpportunityRecord) and old.stage != record.stage:
            assert not old.is_closed, "a closed deal stays closed"
            assert record.remote_updated_at
            assert old.remote_updated_at
            assert record.remote_updated_at > AS_OF_1 >= old.remote_updated_at
            moves.add((old.stage, record.stage))
    assert any(stage == "Closed Won" for _, stage in moves)
    assert any(stage == "Closed Lost" for _, stage in moves)
    assert any(stage not in {"Closed Won", "Closed Lost"} for _, stage in moves)


def test_converted_leads_arrive_with_their_opportunities() -> None:
    store: dict[str, dict[str, Record]] = {}
    checkpoints: dict[str, dict[str, Any] | None] = dict.fromkeys(INCREMENTAL)
    for clock in (T1, T1 + timedelta(days=9), T2):
        connector = make(CLOCKED, clock=clock)
        for stream in INCREMENTAL:
            result = read(connector, stream, checkpoints[stream])
            upsert(store.setdefault(stream, {}), result.records)
            checkpoints[stream] = result.final
        for lead in store["leads"].values():
            assert isinstance(lead, LeadRecord)
            if lead.is_converted:
                assert lead.converted_opportunity_external_id in store["opportunities"]


def test_a_run_within_the_same_increment_reads_the_same_company() -> None:
    later = T2 + timedelta(minutes=40)
    assert make(CLOCKED, clock=later).as_of == make(CLOCKED, clock=T2).as_of
    for stream in INCREMENTAL:
        full = read(make(CLOCKED, clock=T2), stream)
        assert read(make(CLOCKED, clock=later), stream).records == full.records
        again = read(make(CLOCKED, clock=later), stream, full.final)
        # Only the lookback window comes again, unchanged.
        window_start = T2 - timedelta(hours=2)
        assert all(key(record)[0] >= window_start for record in again.records)
        reference = by_id(full.records)
        assert all(reference[key_of(record)] == record for record in again.records)
        assert again.final == full.final


@pytest.mark.parametrize("stream", INCREMENTAL)
def test_an_interrupted_first_run_resumes_from_its_last_checkpoint(stream: str) -> None:
    full = read(make(CLOCKED, clock=T1), stream)
    partial = read(make(CLOCKED, clock=T1), stream, stop_after=3)
    assert len(partial.checkpoints) == 3
    assert "snapshot" in partial.final
    resumed = read(make(CLOCKED, clock=T1), stream, partial.final)
    assert 0 < len(resumed.records) < len(full.records)
    store = upsert({}, partial.records)
    assert upsert(store, resumed.records) == by_id(full.records)
    assert resumed.final == full.final


@pytest.mark.parametrize("stream", INCREMENTAL)
def test_a_first_run_resumed_later_ends_up_at_the_later_instant(stream: str) -> None:
    partial = read(make(CLOCKED, clock=T1), stream, stop_after=2)
    resumed = read(make(CLOCKED, clock=T2), stream, partial.final)
    store = upsert(upsert({}, partial.records), resumed.records)
    assert store == by_id(read(make(CLOCKED, clock=T2), stream).records)
    assert resumed.final["cursor"] == [T2.isoformat(), ""]


@pytest.mark.parametrize("stream", INCREMENTAL)
def test_an_interrupted_incremental_run_resumes_from_its_last_checkpoint(stream: str) -> None:
    settings = {**CLOCKED, "batch_size": 10}
    first = read(make(settings, clock=T1), stream)
    partial = read(make(settings, clock=T2), stream, first.final, stop_after=3)
    assert "cursor" in partial.final
    resumed = read(make(settings, clock=T2), stream, partial.final)
    store = upsert(upsert(by_id(first.records), partial.records), resumed.records)
    assert store == by_id(read(make(settings, clock=T2), stream).records)


def test_the_cursor_start_is_closed() -> None:
    """Without a lookback the resumed read starts with the very record the cursor names."""
    settings = {**CLOCKED, "batch_size": 10, "lookback": 0}
    first = read(make(settings, clock=T1), "opportunities")
    partial = read(make(settings, clock=T2), "opportunities", first.final, stop_after=2)
    at, external_id = partial.final["cursor"]
    assert key(partial.records[-1]) == (datetime.fromisoformat(at), external_id)
    resumed = read(make(settings, clock=T2), "opportunities", partial.final)
    assert resumed.records[0] == partial.records[-1]
    assert key_of(resumed.records[1]) not in {key_of(r) for r in partial.records}


@pytest.mark.parametrize("stream", INCREMENTAL)
def test_checkpoints_come_every_batch_and_are_well_formed(stream: str) -> None:
    first = read(make(CLOCKED, clock=T1), stream)
    second = read(make({**CLOCKED, "batch_size": 10}, clock=T2), stream, first.final)
    for result, batch_size in ((first, 100), (second, 10)):
        gaps = [b - a for a, b in zip([0, *result.positions], result.positions, strict=False)]
        assert max(gaps) <= batch_size
        assert result.positions[-1] == len(result.records)
        assert len(result.checkpoints) >= len(result.records) // batch_size
        for state in result.checkpoints:
            assert state["model"] == first.final["model"]
            if "snapshot" in state:
                at, next_index = state["snapshot"]
                assert datetime.fromisoformat(at) == AS_OF_1
                assert isinstance(next_index, int)
            else:
                at, external_id = state["cursor"]
                assert datetime.fromisoformat(at).tzinfo is not None
                assert isinstance(external_id, str)
    assert first.final == {"cursor": [AS_OF_1.isoformat(), ""], "model": first.final["model"]}
    assert second.final["cursor"] == [T2.isoformat(), ""]


@pytest.mark.parametrize(
    "checkpoint",
    [
        {"cursor": ["2025-12-01T00:00:00+00:00", ""], "model": "written-for-another-company"},
        {"cursor": "not a cursor"},
        {"snapshot": ["yesterday", 5]},
    ],
)
def test_a_foreign_or_broken_checkpoint_means_reading_everything(checkpoint: dict[str, Any]) -> None:
    connector = make(CLOCKED, clock=T2)
    if "model" not in checkpoint:
        checkpoint = {**checkpoint, "model": connector.model}
    full = read(make(CLOCKED, clock=T2), "opportunities")
    assert read(connector, "opportunities", checkpoint).records == full.records


def test_another_seed_does_not_trust_the_checkpoint() -> None:
    first = read(make(CLOCKED, clock=T1), "leads")
    other = {**CLOCKED, "seed": 43}
    assert (
        read(make(other, clock=T2), "leads", first.final).records
        == read(make(other, clock=T2), "leads").records
    )


def test_a_full_refresh_ignores_the_checkpoint() -> None:
    first = read(make(CLOCKED, clock=T1), "stage_changes")
    refreshed = read(make(CLOCKED, clock=T2, full_refresh=True), "stage_changes", first.final)
    assert refreshed.records == read(make(CLOCKED, clock=T2), "stage_changes").records
    assert all(isinstance(r, StageChangeRecord) for r in refreshed.records)


@pytest.mark.parametrize("stream", ["teams", "owners", "pipeline_stages"])
def test_small_streams_are_read_whole_as_snapshots(stream: str) -> None:
    first = read(make(CLOCKED, clock=T1), stream)
    again = read(make(CLOCKED, clock=T1), stream, first.final)
    assert first.snapshot_complete
    assert again.snapshot_complete
    assert again.records == first.records
    assert first.final["as_of"] == AS_OF_1.isoformat()


def test_reps_leave_as_time_passes() -> None:
    early = read(make(CLOCKED, clock=datetime(2024, 2, 1, tzinfo=UTC)), "owners").records
    late = read(make(CLOCKED, clock=T2), "owners").records
    assert [o.external_id for o in early] == [o.external_id for o in late]
    assert all(getattr(o, "active", None) for o in early)
    assert sum(not getattr(o, "active", True) for o in late) == 2


def test_an_unknown_stream_is_a_fatal_error() -> None:
    connector = make(CLOCKED, clock=T1)
    with pytest.raises(FatalError, match="no stream 'deals'"):
        list(connector.read(StreamSpec("deals", "opportunities"), None))
