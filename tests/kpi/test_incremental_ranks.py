"""Medians and percentiles moved by the change log equal a recount from the records, every grain.

An incremental refresh does not rank a period (or all time) again: it moves each touched value's
stored statistic by the values the change log removed and added (see ``ranks.move_rank``), or
ranks that one value from its own samples when it has no state yet. Cycle lengths here are
whole days from a handful of values, so cells are full of ties, the case that rank bookkeeping
gets wrong first; several rounds of changes run in a row, each starting from the state the
previous one left, and every round is checked against a plain-Python recount of the records.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.connector_sdk import Message, OpportunityRecord, Tombstone
from crm_perf_sync.jobs.refresh import RefreshJob
from crm_perf_sync.kpi import ranks
from crm_perf_sync.kpi.service import RefreshOutcome
from crm_perf_sync.models import KpiSample, KpiValue
from tests.kpi.store import OWNERS, TEAMS, load, values
from tests.kpi.test_incremental import same, snapshot, sync_more

START = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
REPS = ["ana", "bo", "cy", "di", None]
CYCLES = [3, 5, 5, 8, 13, 13, 13, 21]  # days: few values, many ties
CONFIG = """kpis:
  library: none
  definitions:
    - {id: cycle_median, name: Cycle median, type: duration, unit: days, direction: lower,
       stat: median, start: created_at, end: closed_at, min_sample: 1,
       measure: {period: closed_at, filter: [{field: is_won, op: eq, value: true}]}}
    - {id: cycle_p90, name: Cycle p90, type: duration, unit: days, direction: lower,
       stat: p90, start: created_at, end: closed_at, min_sample: 1,
       measure: {period: closed_at, filter: [{field: is_won, op: eq, value: true}]}}
"""
# The store's team tree (tests.kpi.store): DACH (ana, bo) and Nordics (cy) under EMEA.
TEAMS_OF = {
    "ana": ["crm:dach", "crm:emea"],
    "bo": ["crm:dach", "crm:emea"],
    "cy": ["crm:nordics", "crm:emea"],
}


def deal(rng: random.Random, n: int) -> OpportunityRecord:
    created = START + timedelta(days=rng.randrange(0, 300))
    won = rng.random() < 0.8
    closed_at = created + timedelta(days=rng.choice(CYCLES))
    return OpportunityRecord(
        external_id=f"o{n}",
        owner_external_id=rng.choice(REPS),
        currency="USD",
        stage="Won" if won else "Lost",
        created_at=created,
        closed_at=closed_at,
        close_date=closed_at.date(),
        is_closed=True,
        is_won=won,
    )


GRAINS = ("week", "month", "quarter", "year", "all")


def period_of(grain: str, day: date) -> str:
    """The period key of ``day`` (UTC, calendar fiscal year): its first day, or "all"."""
    if grain == "week":
        return (day - timedelta(days=day.weekday())).isoformat()  # ISO weeks start on Monday
    if grain == "month":
        return day.replace(day=1).isoformat()
    if grain == "quarter":
        return date(day.year, (day.month - 1) // 3 * 3 + 1, 1).isoformat()
    return date(day.year, 1, 1).isoformat() if grain == "year" else "all"


def expected(deals: dict[str, OpportunityRecord]) -> dict[tuple[str, str, str], tuple[float, float, int]]:
    """(grain, period key, scope id) -> (median, p90, count) of the won deals' cycles, recounted
    in Python."""
    cells: dict[tuple[str, str, str], list[float]] = {}
    for record in deals.values():
        if not record.is_won:
            continue
        assert record.closed_at is not None
        assert record.created_at is not None
        days = (record.closed_at - record.created_at).total_seconds() / 86400
        scopes = ["company"]
        if record.owner_external_id is not None:
            scopes.append(f"crm:{record.owner_external_id}")
            scopes += TEAMS_OF.get(record.owner_external_id, [])
        for grain in GRAINS:
            for scope_id in scopes:
                cells.setdefault((grain, period_of(grain, record.closed_at.date()), scope_id), []).append(
                    days
                )
    out: dict[tuple[str, str, str], tuple[float, float, int]] = {}
    for key, found in cells.items():
        ordered = sorted(found)
        p90 = ordered[math.ceil(0.9 * len(ordered)) - 1]
        out[key] = (statistics.median(ordered), p90, len(ordered))
    return out


def stored(factory: sessionmaker[Session]) -> dict[tuple[str, str, str], tuple[float, float, int]]:
    out: dict[tuple[str, str, str], tuple[float, float, int]] = {}
    for grain in GRAINS:
        for scope in ("company", "team", "owner"):
            medians = values(factory, "cycle_median", grain, scope)
            p90s = values(factory, "cycle_p90", grain, scope)
            assert medians.keys() == p90s.keys()
            for key, row in medians.items():
                other: KpiValue = p90s[key]
                assert row.value is not None
                assert other.value is not None
                assert row.sample_count == other.sample_count
                out[(grain, key[0], key[1])] = (row.value, other.value, row.sample_count)
    return out


def check(factory: sessionmaker[Session], deals: dict[str, OpportunityRecord]) -> None:
    found, recount = stored(factory), expected(deals)
    assert found.keys() == recount.keys()
    for key, (median, p90, count) in recount.items():
        got_median, got_p90, got_count = found[key]
        assert got_median == pytest.approx(median, rel=1e-9), key
        assert got_p90 == pytest.approx(p90, rel=1e-9), key
        assert got_count == count, key


def refreshed(
    tmp_path: Path, factory: sessionmaker[Session], deals: dict[str, OpportunityRecord]
) -> RefreshJob:
    """The deals synced and the KPIs computed whole (and checked); the job, for later refreshes."""
    job = load(
        tmp_path, factory, {"teams": TEAMS, "owners": OWNERS, "opportunities": list(deals.values())}, CONFIG
    )
    job.refresh()
    check(factory, deals)
    return job


def changed_some(
    rng: random.Random, deals: dict[str, OpportunityRecord], next_id: int
) -> tuple[list[Message], int]:
    """A page of changes to ``deals`` (applied to it too): a dozen deals deleted or given a new
    cycle, owner or outcome, and a few new ones; and the next free deal number."""
    page: list[Message] = []
    for external_id in rng.sample(sorted(deals), 12):
        if rng.random() < 0.2:
            page.append(Tombstone(external_id))
            del deals[external_id]
        else:  # a new cycle, owner or outcome
            changed = deal(rng, int(external_id[1:]))
            deals[external_id] = changed
            page.append(changed)
    for _ in range(rng.randrange(0, 8)):
        fresh = deal(rng, next_id)
        next_id += 1
        deals[fresh.external_id] = fresh
        page.append(fresh)
    return page, next_id


class Rounds:
    """80 deals refreshed whole; each :meth:`next` changes some (:func:`changed_some`), syncs the
    change and refreshes."""

    def __init__(self, tmp_path: Path, factory: sessionmaker[Session], seed: int) -> None:
        self.rng = random.Random(seed)
        self.factory = factory
        self.deals = {f"o{n}": deal(self.rng, n) for n in range(80)}
        self.job = refreshed(tmp_path, factory, self.deals)
        self.next_id = len(self.deals)
        self.done = 0

    def next(self, *, full: bool = False) -> RefreshOutcome:
        page, self.next_id = changed_some(self.rng, self.deals, self.next_id)
        # The scripted CRM resumes after the pages earlier syncs read.
        sync_more(self.factory, {"opportunities": [*([[]] * self.done), page]})
        self.done += 1
        return self.job.refresh(full=full)


@pytest.fixture(params=["moved", "ranked whole"])
def periods_are(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How the touched periods are brought up to date: every value moved from its rank state, or
    every period ranked whole. Which is cheaper depends on how many of a period's values changed
    (``ranks.MOVE_COST_SAMPLES``); both must give the recount."""
    monkeypatch.setattr(ranks, "MOVE_COST_SAMPLES", 0 if request.param == "moved" else 10**9)
    return str(request.param)


@pytest.mark.parametrize("seed", [3, 11, 2024])
def test_moved_medians_and_p90_equal_a_recount(
    tmp_path: Path, session_factory: sessionmaker[Session], seed: int, periods_are: str
) -> None:
    rounds = Rounds(tmp_path, session_factory, seed)
    for _ in range(4):
        outcome = rounds.next()
        assert {"cycle_median", "cycle_p90"} <= set(outcome.updated), outcome
        check(session_factory, rounds.deals)

    # The moved state leaves exactly what ranking everything again gives, every grain included.
    # (The periods the rounds touched were moved, or ranked alone, and keep their rank state.)
    year_2024 = values(session_factory, "cycle_median", "year", "company")[("2024-01-01", "company", "", "")]
    assert (year_2024.rank_pivot is not None) == (periods_are == "moved")
    skip = {"id", "computed_at"}
    moved = snapshot(session_factory, KpiValue.__table__, skip)
    rounds.job.refresh(full=True)
    problems = same(moved, snapshot(session_factory, KpiValue.__table__, skip))
    assert not problems, "\n".join(problems[:20])


def test_a_reps_first_value_ranks_only_their_cell_and_leaves_the_others_as_stored(
    tmp_path: Path, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ana and Bo have won deals; Cy (team Nordics) and Di (no team) win their first ones later:
    # their cells are new, so there is no rank state to move. Only the new cells are ranked: the
    # cells no change touched keep their rows, in the periods the new deals fall in as well (a
    # refresh at a million deals once ranked every rep's values again for one new rep's first
    # deal, and every rep's year again for one deal in it).
    monkeypatch.setattr(ranks, "MOVE_COST_SAMPLES", 0)  # a few changes in a big year, as at scale
    rng = random.Random(5)
    deals = {}
    for n in range(40):
        record = replace(deal(rng, n), owner_external_id=("ana", "bo")[n % 2])
        deals[record.external_id] = record
    job = refreshed(tmp_path, session_factory, deals)

    def rows(scope: str) -> dict[tuple[str, str, str], int]:
        return {
            (kpi_id, grain, key[1]): row.id
            for kpi_id in ("cycle_median", "cycle_p90")
            for grain in ("year", "all")
            for key, row in values(session_factory, kpi_id, grain, scope).items()
            if key[0] in ("all", "2024-01-01")
        }

    before = {**rows("owner"), **rows("team")}
    page: list[Message] = []
    for n, owner in ((100, "cy"), (101, "di"), (102, "di")):
        record = replace(deal(rng, n), owner_external_id=owner, stage="Won", is_won=True)
        assert record.closed_at is not None
        assert record.closed_at.year == 2024
        deals[record.external_id] = record
        page.append(record)
    sync_more(session_factory, {"opportunities": [page]})
    outcome = job.refresh()
    assert {"cycle_median", "cycle_p90"} <= set(outcome.updated), outcome
    check(session_factory, deals)

    after = {**rows("owner"), **rows("team")}
    untouched = {
        (kpi_id, grain, scope_id)
        for kpi_id in ("cycle_median", "cycle_p90")
        for grain in ("year", "all")
        for scope_id in ("crm:ana", "crm:bo", "crm:dach")
    }
    assert untouched <= before.keys()
    assert {cell: after[cell] for cell in untouched} == {cell: before[cell] for cell in untouched}
    # The new reps' and team's cells exist; EMEA, which Cy's deal joined, was moved (a new row).
    for grain in ("year", "all"):
        assert {
            ("cycle_median", grain, "crm:cy"),
            ("cycle_median", grain, "crm:di"),
            ("cycle_median", grain, "crm:nordics"),
        } <= after.keys()
        assert after[("cycle_median", grain, "crm:emea")] != before[("cycle_median", grain, "crm:emea")]


@pytest.mark.parametrize("seed", [5, 17])
def test_a_full_refresh_after_changes_keeps_the_samples_of_the_records_as_they_are(
    tmp_path: Path, session_factory: sessionmaker[Session], seed: int
) -> None:
    # A full refresh writes only the samples that differ from the stored ones: deals deleted,
    # lost, moved to another rep or cycle, and new ones, round after round, must each leave
    # exactly the won deals' samples and the recount's values.
    rounds = Rounds(tmp_path, session_factory, seed)
    for _ in range(3):
        rounds.next(full=True)
        check(session_factory, rounds.deals)
        with session_factory() as session:
            found = {
                (s.external_id, s.owner_external_id): s.value
                for s in session.query(KpiSample).filter_by(kpi_id="cycle_median")
            }
        won = {
            (d.external_id, d.owner_external_id): (d.closed_at - d.created_at).total_seconds() / 86400
            for d in rounds.deals.values()
            if d.is_won and d.closed_at is not None and d.created_at is not None
        }
        assert found == pytest.approx(won, rel=1e-9)
