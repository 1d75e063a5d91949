"""Medians and percentiles (p90): ranked from their samples, kept current by rank state.

A median does not add up, so it cannot be rolled up from groups like a sum. Every value a
median or p90 KPI reads is kept as a sample row (:class:`~crm_perf_sync.models.KpiSample`,
filled by :func:`compiler.sample_query`). A full refresh reads a KPI's samples once and ranks
every (period, scope) from them (:func:`rank_samples`); a period ranked again whole by an
incremental refresh is ranked in the database (:func:`compiler.percentile_query`: window
functions, ordered-set aggregates on PostgreSQL).

Ranking a period again for every change would read all of its records (a year's holds tens of
thousands at a million deals), so a value stores its *rank state* instead: the value ``p`` at
the lower rank read, how many values are below ``p`` and how many equal it. An incremental
refresh moves that state by the values the change log removed and added (:func:`move_rank`),
reading only the few samples next to ``p``; a value with no state yet (new, or computed by a
full refresh, which stores state for all-time values only) is ranked from its own samples.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from math import fsum
from typing import Any, Literal

from sqlalchemy import Connection

from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.kpi import repository as repo
from crm_perf_sync.kpi.compiler import (
    SCOPES,
    Calendar,
    SampleCell,
    Scope,
    cell_rank_state_query,
    equal_count_query,
    neighbour_query,
    part_for,
    percentile_query,
    sample_query,
)
from crm_perf_sync.kpi.compute import Computation
from crm_perf_sync.kpi.rollup import Key, Rollup
from crm_perf_sync.kpi.schemas import DurationKpi, Grain
from crm_perf_sync.kpi.values import (
    Computed,
    RankState,
    apply_targets,
    period_key,
    value_row,
    with_state,
)
from crm_perf_sync.models import PRIOR_TABLES


def percentile_rows(run: Computation, kpi: DurationKpi, dimension: str | None) -> list[dict[str, Any]]:
    """The values of a median or p90 KPI for one breakdown, ranked from :class:`KpiSample`.

    The samples are replaced, and ranked here for every grain and scope
    (:func:`rank_samples`; all-time values with their rank state). Numerator and denominator
    are the values' sum and count.
    """
    assert kpi.stat != "mean"
    conn, calendar = run.conn, run.calendar
    part = part_for(kpi.measure, calendar, by_currency=False, kpi=kpi)
    samples = repo.replace_sample(conn, kpi.id, dimension, sample_query(part, calendar, kpi.id, dimension))
    rows: list[dict[str, Any]] = []
    ranked = rank_samples(samples, run.rollup(), kpi.stat)
    for (grain, scope), cells in ranked.items():
        for key, (result, state) in cells.items():
            row = value_row(kpi, grain, scope, dimension or "", key, result)
            rows.append(with_state(row, state) if grain == "all" else row)
    return rows


def rank_samples(
    samples: Iterable[repo.SampleRow], rollup: Rollup, stat: Literal["median", "p90"]
) -> dict[tuple[Grain, Scope], dict[Key, tuple[Computed, RankState]]]:
    """Every cell's statistic and rank state, per grain and scope, from all of a KPI's samples.

    One pass over the samples; the database's alternative, a window function ranking every
    sample once per grain and scope, cost several seconds a query at a million deals on SQLite
    (see ``bench/optimisations.md``). The samples are first grouped per period, rep, currency and
    breakdown and each group sorted; a team's or the company's values are its reps' sorted groups
    put together (sorting sorted runs merges them). The statistic reads the same ranks as
    :func:`~crm_perf_sync.kpi.compiler.percentile_query`, and the sum is exact (``fsum``).
    """
    per_rep: dict[Grain, dict[tuple[int | None, str, str | None, str, str], list[float]]] = {
        grain: {} for grain in rollup.grains
    }
    for week, month, connection_id, owner, currency, dim, value in samples:
        for grain in rollup.grains:
            if grain == "all":
                index = None
            elif month is None:
                continue  # no period date: counted in "all" only
            else:
                index = rollup.period(grain, week, month)
            per_rep[grain].setdefault((index, connection_id, owner, currency, dim), []).append(float(value))
    out: dict[tuple[Grain, Scope], dict[Key, tuple[Computed, RankState]]] = {}
    for grain, groups in per_rep.items():
        company: dict[Key, list[list[float]]] = defaultdict(list)
        owners: dict[Key, list[float]] = {}
        teams: dict[Key, list[list[float]]] = defaultdict(list)
        for (index, connection_id, owner, currency, dim), values in groups.items():
            values.sort()
            company[(index, "company", currency, dim)].append(values)
            if owner is None:
                continue
            owners[(index, f"{connection_id}:{owner}", currency, dim)] = values
            for team in rollup.teams_of(connection_id, owner):
                teams[(index, team, currency, dim)].append(values)
        out[(grain, "company")] = {key: _statistic(_merged(runs), stat) for key, runs in company.items()}
        out[(grain, "owner")] = {key: _statistic(values, stat) for key, values in owners.items()}
        if rollup.membership.rows:
            out[(grain, "team")] = {key: _statistic(_merged(runs), stat) for key, runs in teams.items()}
    return out


def _merged(runs: list[list[float]]) -> list[float]:
    """Sorted lists put together, sorted (the sort merges the runs)."""
    return runs[0] if len(runs) == 1 else sorted(chain.from_iterable(runs))


def _ranks_read(n: int, stat: Literal["median", "p90"]) -> list[int]:
    """The 1-based ranks a statistic of ``n`` values reads (as :func:`compiler.percentile_query`
    does): the middle one or two for the median, the nearest rank ceil(0.9 n) for p90."""
    return [(n + 1) // 2, (n + 2) // 2] if stat == "median" else [(9 * n + 9) // 10]


def _statistic(values: list[float], stat: Literal["median", "p90"]) -> tuple[Computed, RankState]:
    """A cell's statistic from its sorted values, with its rank state: the value at the lower
    rank read, and how many values are below it and equal to it."""
    n = len(values)
    ranks = _ranks_read(n, stat)
    low, high = values[ranks[0] - 1], values[ranks[-1] - 1]
    value = (low + high) / 2 if ranks[-1] != ranks[0] else low
    below = bisect_left(values, low)
    return (value, fsum(values), float(n), n), (low, below, bisect_right(values, low) - below)


def _ranked_periods(
    conn: Connection,
    kpi: DurationKpi,
    calendar: Calendar,
    dimension: str | None,
    grain: Grain,
    indexes: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Every value of one grain below ``all`` (``indexes``: of these periods only), every scope,
    ranked whole from the samples (without rank state)."""
    assert kpi.stat != "mean"
    rows: list[dict[str, Any]] = []
    for scope in SCOPES:
        for r in conn.execute(percentile_query(calendar, kpi.id, dimension, grain, scope, kpi.stat, indexes)):
            key = (int(r.period), str(r.scope_id), str(r.currency), str(r.dim))
            result = (float(r.value), float(r.total), float(r.records), int(r.records))
            rows.append(value_row(kpi, grain, scope, dimension or "", key, result))
    return rows


def ranked_cell(conn: Connection, kpi: DurationKpi, cell: SampleCell) -> tuple[Computed, RankState] | None:
    """One cell ranked whole, from its own samples, with its rank state; ``None`` when it has
    no value."""
    assert kpi.stat != "mean"
    found = list(conn.execute(*cell_rank_state_query(cell, kpi.stat)))
    return _ranked(found) if found else None


def _ranked(found: list[Any]) -> tuple[Computed, RankState]:
    """A cell's statistic and rank state from the rows :func:`compiler.cell_rank_state_query`
    read of it."""
    found.sort(key=lambda r: int(r.rn))
    low, high = found[0], found[-1]
    value = (float(low.v) + float(high.v)) / 2 if len(found) > 1 else float(low.v)
    n = int(low.n)
    state = (float(low.v), int(low.below), int(low.equal))
    return (value, float(low.total), float(n), n), state


def apply_percentile_changes(
    run: Computation,
    kpi: DurationKpi,
    dimensions: Sequence[str],
    digest: str,
    touched: set[tuple[str, str]],
) -> int:
    """Bring a median or percentile KPI up to date with the change log.

    The samples are updated from the log first; then every value a changed record was or is in
    (each grain, period and scope) is moved from its stored rank state by the values the log
    removed and added, or ranked from its own samples when it has no state; values no change
    touched keep their rows. A period in which many values changed is ranked whole instead (see
    :data:`MOVE_COST_SAMPLES`). Returns how many values were written; ``touched`` collects the
    (grain, period key) written.
    """
    conn, calendar = run.conn, run.calendar
    computed_at = utc_now()
    rollup = run.rollup()
    written = 0
    for dimension in [None, *dimensions]:
        changes = {
            side: list(
                conn.execute(
                    sample_query(
                        part_for(kpi.measure, calendar, by_currency=False, kpi=kpi, changes=side,
                                 table=PRIOR_TABLES[kpi.measure.entity] if side == "old" else None),
                        calendar, kpi.id, dimension,
                    )
                )
            )
            for side in ("new", "old")
        }  # fmt: skip
        if not changes["new"] and not changes["old"]:
            continue
        new_rows = sample_query(
            part_for(kpi.measure, calendar, by_currency=False, kpi=kpi, changes="new"),
            calendar,
            kpi.id,
            dimension,
        )
        repo.update_sample(conn, kpi.id, dimension, kpi.measure.entity, new_rows)
        moves = _moves(kpi.id, dimension or "", run.grains, rollup, changes)
        periods = {(cell.grain, period_key(cell.period, cell.grain)) for cell in moves}
        touched.update(periods)
        stored = repo.stored_cells(conn, kpi.id, dimension or "", periods)
        whole = _ranked_whole(moves, stored)
        rows: list[dict[str, Any]] = []
        for grain, indexes in whole.items():
            rows += _ranked_periods(conn, kpi, calendar, dimension, grain, sorted(indexes))
            repo.delete_periods(conn, kpi.id, grain, dimension or "", {period_key(i, grain) for i in indexes})
        moved = {cell: move for cell, move in moves.items() if cell.period not in whole.get(cell.grain, ())}
        moved_rows, replaced = move_cells(conn, kpi, moved, stored)
        rows += moved_rows
        if dimension is None:
            apply_targets(kpi, rows, run.targets, add_missing=False)
        for row in rows:
            row["definition_hash"] = digest
            row["computed_at"] = computed_at
        repo.replace_cells(conn, replaced, rows)
        written += len(rows)
    return written


def _moves(
    kpi_id: str, dimension: str, grains: Sequence[Grain], rollup: Rollup, changes: Mapping[str, Sequence[Any]]
) -> dict[SampleCell, tuple[list[float], list[float]]]:
    """Every cell the changed samples were (``old``) or are (``new``) in, with the values that
    left it and the values that joined it."""
    moves: dict[SampleCell, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for side, index in (("old", 0), ("new", 1)):
        for r in changes[side]:
            currency, dim, value = str(r.currency), str(r.dimension_value), float(r.value)
            scopes: list[tuple[Scope, str]] = [("company", "company")]
            if r.owner_external_id is not None:
                scopes.append(("owner", f"{r.connection_id}:{r.owner_external_id}"))
                scopes += [
                    ("team", team) for team in rollup.teams_of(str(r.connection_id), str(r.owner_external_id))
                ]
            for grain in grains:
                if grain != "all" and r.month is None:
                    continue  # no period date: counted in "all" only
                period = None if grain == "all" else rollup.period(grain, r.week, r.month)
                for scope, scope_id in scopes:
                    cell = SampleCell(kpi_id, dimension, grain, period, scope, scope_id, currency, dim)
                    moves[cell][index].append(value)
    # A cell that lost the values it gained (a record changed in what this KPI does not read)
    # keeps its value and rank state.
    return {cell: move for cell, move in moves.items() if sorted(move[0]) != sorted(move[1])}


#: Moving one value's rank state costs a few indexed reads next to its pivot, about as much as
#: ranking this many samples afresh (measured on SQLite at a million deals: 0.1-0.5 ms a move
#: against about 11 us a sample and scope). A period in which so many values changed that
#: moving them costs more (:func:`_ranked_whole`) is ranked whole instead, every scope in one
#: query each: a rewrite of history touches most values of most periods.
MOVE_COST_SAMPLES = 100


def _ranked_whole(
    moves: Mapping[SampleCell, Any], stored: Mapping[repo.CellKey, repo.StoredCell]
) -> dict[Grain, set[int]]:
    """The periods (by grain) cheaper to rank whole than to move value by value: those whose
    touched values, at :data:`MOVE_COST_SAMPLES` each, cost more than ranking their samples (the
    company's count) once per scope."""
    touched: dict[tuple[Grain, int], int] = defaultdict(int)
    for cell in moves:
        if cell.period is not None:
            touched[(cell.grain, cell.period)] += 1
    samples: dict[tuple[str, str], int] = defaultdict(int)
    for (grain, scope, key, *_), found in stored.items():
        if scope == "company":
            samples[(grain, key)] += found.sample_count
    whole: dict[Grain, set[int]] = defaultdict(set)
    for (grain, period), cells in touched.items():
        if cells * MOVE_COST_SAMPLES > 3 * samples[(grain, period_key(period, grain))]:
            whole[grain].add(period)
    return whole


def move_cells(
    conn: Connection,
    kpi: DurationKpi,
    moves: Mapping[SampleCell, tuple[list[float], list[float]]],
    stored: Mapping[repo.CellKey, repo.StoredCell],
) -> tuple[list[dict[str, Any]], list[int]]:
    """The cells in ``moves`` updated from their ``stored`` rows (and samples already up to
    date); and the ids of the rows they replace."""
    assert kpi.stat != "mean"
    rows: list[dict[str, Any]] = []
    replaced: list[int] = []
    for cell, (removed, added) in moves.items():
        key = (cell.period, cell.scope_id, cell.currency, cell.dim_value)
        before = stored.get(
            (cell.grain, cell.scope, period_key(cell.period, cell.grain), cell.scope_id, cell.currency,
             cell.dim_value)
        )  # fmt: skip
        if before is not None:
            replaced.append(before.id)
        if before is None or before.rank is None:
            # Nothing to move from (a new value, or one a full refresh ranked without keeping
            # state): it is ranked from its own samples.
            ranked = ranked_cell(conn, kpi, cell) if added or before is not None else None
            if ranked is not None:
                result, state = ranked
                rows.append(
                    with_state(value_row(kpi, cell.grain, cell.scope, cell.dimension, key, result), state)
                )
            continue
        moved = move_rank(conn, kpi, cell, before, removed, added)
        if moved is None:
            continue  # no value left in the cell
        statistic, n, state = moved
        total = before.numerator - sum(removed) + sum(added)
        row = value_row(kpi, cell.grain, cell.scope, cell.dimension, key, (statistic, total, n, n))
        rows.append(with_state(row, state))
    return rows, replaced


def move_rank(
    conn: Connection,
    kpi: DurationKpi,
    cell: SampleCell,
    before: repo.StoredCell,
    removed: Sequence[float],
    added: Sequence[float],
) -> tuple[float, int, RankState] | None:
    """A cell's statistic after ``removed`` left and ``added`` joined its values.

    The stored state says the value ``p`` at the lower rank read had ``below`` values under
    it and ``equal`` values equal to it. Counting the changes against ``p`` gives both
    anew; the rank now read is either within the values equal to ``p``, or a few values
    away from it, which are read from the samples nearest to ``p`` (already up to date).
    Returns ``(value, count, new state)``, ``None`` when no value is left.
    """
    assert before.rank is not None
    assert kpi.stat != "mean"
    pivot, below, equal = before.rank
    below += sum(1 for v in added if v < pivot) - sum(1 for v in removed if v < pivot)
    equal += sum(1 for v in added if v == pivot) - sum(1 for v in removed if v == pivot)
    n = before.sample_count + len(added) - len(removed)
    if n <= 0:
        return None
    ranks = _ranks_read(n, kpi.stat)

    def nearest(start: float, above: bool, count: int) -> list[float]:
        found = [float(v) for v in conn.execute(*neighbour_query(cell, start, above, count)).scalars()]
        assert len(found) == count, f"rank state of {kpi.id} {cell} out of step with its samples"
        return found

    k = ranks[0]
    if below < k <= below + equal:
        low = pivot
    elif k <= below:
        found = nearest(pivot, False, below - k + 1)
        low = found[-1]
        equal_low = int(conn.execute(*equal_count_query(cell, low)).scalar_one())
        below, equal = below - sum(1 for v in found if v > low) - equal_low, equal_low
    else:
        found = nearest(pivot, True, k - below - equal)
        low = found[-1]
        equal_low = int(conn.execute(*equal_count_query(cell, low)).scalar_one())
        below, equal = below + equal + sum(1 for v in found if v < low), equal_low
    value = low
    if len(ranks) > 1 and ranks[1] != k:
        high = low if ranks[1] <= below + equal else nearest(low, True, 1)[0]
        value = (low + high) / 2
    return value, n, (low, below, equal)
