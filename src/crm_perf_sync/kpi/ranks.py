"""Medians and percentiles (p90): ranked in the database, kept current by rank state.

A median does not add up, so it cannot be rolled up from groups like a sum. Every value a
median or p90 KPI reads is kept as a sample row (:class:`~crm_perf_sync.models.KpiSample`,
filled by :func:`compiler.sample_query`), and each (period, scope) is ranked with window
functions (:func:`compiler.percentile_query`; ordered-set aggregates on PostgreSQL).

Incrementally, a period a changed record was or is in is ranked again; the others keep their
values. All-time values hold every record, so re-ranking them would cost a full refresh: each
stores its *rank state* instead (the value ``p`` at the lower rank read, how many values are
below ``p`` and how many equal it). The change log's removed and added values move that state
(:func:`move_rank`), which then reads only the few samples next to ``p`` to find the new rank.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.kpi import repository as repo
from crm_perf_sync.kpi.compiler import (
    Calendar,
    Scope,
    cell_rank_state_query,
    equal_count_query,
    neighbour_query,
    part_for,
    percentile_query,
    rank_state_query,
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


def percentile_rows(
    conn: Connection,
    kpi: DurationKpi,
    calendar: Calendar,
    grains: list[Grain],
    dimension: str | None,
    only: Mapping[Grain, set[int | None]] | None = None,
) -> list[dict[str, Any]]:
    """The values of a median or p90 KPI for one breakdown, ranked from :class:`KpiSample`.

    Without ``only`` the samples are replaced and every grain is ranked (all-time values with
    their rank state); with it, only these periods of the grains below ``all``, from samples
    the caller brought up to date. Numerator and denominator are the values' sum and count.
    """
    assert kpi.stat != "mean"
    if only is None:
        part = part_for(kpi.measure, calendar, by_currency=False, kpi=kpi)
        repo.replace_sample(conn, kpi.id, dimension, sample_query(part, calendar, kpi.id, dimension))
    rows: list[dict[str, Any]] = []
    scopes: list[Scope] = ["company", "owner", "team"]
    for grain in grains:
        wanted = None if only is None else only.get(grain, set())
        if grain == "all":
            if only is None:
                for scope in scopes:
                    for key, (result, state) in all_time(conn, calendar, kpi, dimension, scope).items():
                        rows.append(
                            with_state(value_row(kpi, grain, scope, dimension or "", key, result), state)
                        )
            continue
        if wanted is not None and not wanted:
            continue
        indexes = None if wanted is None else sorted(p for p in wanted if p is not None)
        for scope in scopes:
            stmt = percentile_query(calendar, kpi.id, dimension, grain, scope, kpi.stat, indexes)
            for r in conn.execute(stmt):
                key = (int(r.period), str(r.scope_id), str(r.currency), str(r.dim))
                result = (float(r.value), float(r.total), float(r.records), int(r.records))
                rows.append(value_row(kpi, grain, scope, dimension or "", key, result))
    return rows


def all_time(
    conn: Connection, calendar: Calendar, kpi: DurationKpi, dimension: str | None, scope: Scope
) -> dict[Key, tuple[Computed, RankState]]:
    """Every all-time cell of one scope, ranked whole, with its rank state."""
    assert kpi.stat != "mean"
    picked: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for r in conn.execute(rank_state_query(calendar, kpi.id, dimension, scope, kpi.stat)):
        picked[(str(r.scope_id), str(r.currency), str(r.dim))].append(r)
    return {
        (None, scope_id, currency, dim): _ranked(found) for (scope_id, currency, dim), found in picked.items()
    }


def cell_all_time(
    conn: Connection, kpi: DurationKpi, dimension: str, scope: Scope, scope_id: str, currency: str, dim: str
) -> tuple[Computed, RankState] | None:
    """One all-time cell ranked whole (from its own samples) with its rank state; ``None``
    when it has no value."""
    assert kpi.stat != "mean"
    stmt = cell_rank_state_query(kpi.id, dimension, scope, scope_id, currency, dim, kpi.stat)
    found = list(conn.execute(stmt))
    return _ranked(found) if found else None


def _ranked(found: list[Any]) -> tuple[Computed, RankState]:
    """A cell's statistic and rank state from the rows :func:`rank_state_query` read of it."""
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

    A median does not add up, so each period a changed record was or is in is ranked again
    (every scope of it), from samples the log keeps current; the others keep their values.
    All-time values hold every record: each is moved from its stored rank state by the values
    the log removed and added, reading only the few samples next to it. Returns how many
    values were written; ``touched`` collects the (grain, period key) written.
    """
    conn, calendar, grains = run.conn, run.calendar, run.grains
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
        periods_touched: dict[Grain, set[int | None]] = defaultdict(set)
        for r in (*changes["new"], *changes["old"]):
            for grain in grains:
                if grain != "all" and r.month is not None:
                    periods_touched[grain].add(rollup.period(grain, r.week, r.month))
        new_rows = sample_query(
            part_for(kpi.measure, calendar, by_currency=False, kpi=kpi, changes="new"),
            calendar,
            kpi.id,
            dimension,
        )
        repo.update_sample(conn, kpi.id, dimension, kpi.measure.entity, new_rows)
        rows = percentile_rows(conn, kpi, calendar, grains, dimension, periods_touched)
        for grain, indexes in periods_touched.items():
            keys = {period_key(index, grain) for index in indexes}
            touched.update((grain, key) for key in keys)
            repo.delete_periods(conn, kpi.id, grain, dimension or "", keys)
        if "all" in grains:
            all_rows, replaced = move_all_time(conn, kpi, calendar, rollup, dimension, changes)
            rows += all_rows
            repo.replace_cells(conn, replaced, [])
            touched.add(("all", "all"))
        if dimension is None:
            apply_targets(kpi, rows, run.targets, add_missing=False)
        for row in rows:
            row["definition_hash"] = digest
            row["computed_at"] = computed_at
        repo.replace_cells(conn, [], rows)
        written += len(rows)
    return written


def move_all_time(
    conn: Connection,
    kpi: DurationKpi,
    calendar: Calendar,
    rollup: Rollup,
    dimension: str | None,
    changes: Mapping[str, Sequence[Any]],
) -> tuple[list[dict[str, Any]], list[int]]:
    """The all-time cells the changes touch, updated; and the ids of the rows they replace."""
    assert kpi.stat != "mean"
    # (scope, scope id, currency, dim) -> (values removed, values added)
    moves: dict[tuple[Scope, str, str, str], tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for side, index in (("old", 0), ("new", 1)):
        for r in changes[side]:
            currency, dim = str(r.currency), str(r.dimension_value)
            value = float(r.value)
            moves[("company", "company", currency, dim)][index].append(value)
            if r.owner_external_id is None:
                continue
            owner = f"{r.connection_id}:{r.owner_external_id}"
            moves[("owner", owner, currency, dim)][index].append(value)
            for team in rollup.teams_of(str(r.connection_id), str(r.owner_external_id)):
                moves[("team", team, currency, dim)][index].append(value)
    stored = repo.stored_cells(conn, kpi.id, dimension or "", {"all"})
    # A scope with a cell stored before there was rank state is ranked whole instead (once).
    whole: set[Scope] = set()
    for scope, scope_id, currency, dim in moves:
        before = stored.get(("all", scope, "all", scope_id, currency, dim))
        if before is not None and before.rank is None:
            whole.add(scope)
    rows: list[dict[str, Any]] = []
    replaced = [cell.id for key, cell in stored.items() if key[1] in whole]
    for scope in sorted(whole):
        for key, (result, state) in all_time(conn, calendar, kpi, dimension, scope).items():
            rows.append(with_state(value_row(kpi, "all", scope, dimension or "", key, result), state))
    for (scope, scope_id, currency, dim), (removed, added) in moves.items():
        if scope in whole:
            continue
        before = stored.get(("all", scope, "all", scope_id, currency, dim))
        if before is None:
            # A new cell (a rep's or team's first value): nothing to move from, it is ranked
            # from its own samples, already up to date.
            ranked = (
                cell_all_time(conn, kpi, dimension or "", scope, scope_id, currency, dim) if added else None
            )
            if ranked is not None:
                key = (None, scope_id, currency, dim)
                result, state = ranked
                rows.append(with_state(value_row(kpi, "all", scope, dimension or "", key, result), state))
            continue
        replaced.append(before.id)
        moved = move_rank(conn, kpi, dimension or "", scope, scope_id, currency, dim, before, removed, added)
        if moved is None:
            continue  # no value left in the cell
        statistic, n, state = moved
        total = before.numerator - sum(removed) + sum(added)
        row = value_row(
            kpi, "all", scope, dimension or "", (None, scope_id, currency, dim), (statistic, total, n, n)
        )
        rows.append(with_state(row, state))
    return rows, replaced


def move_rank(
    conn: Connection,
    kpi: DurationKpi,
    dimension: str,
    scope: Scope,
    scope_id: str,
    currency: str,
    dim: str,
    before: repo.StoredCell,
    removed: Sequence[float],
    added: Sequence[float],
) -> tuple[float, int, RankState] | None:
    """An all-time cell's statistic after ``removed`` left and ``added`` joined its values.

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
    ranks = [(n + 1) // 2, (n + 2) // 2] if kpi.stat == "median" else [(9 * n + 9) // 10]
    cell = (kpi.id, dimension, scope, scope_id, currency, dim)

    def nearest(start: float, above: bool, count: int) -> list[float]:
        found = [float(v) for v in conn.execute(neighbour_query(*cell, start, above, count)).scalars()]
        assert len(found) == count, f"rank state of {kpi.id} {scope_id} out of step with its samples"
        return found

    k = ranks[0]
    if below < k <= below + equal:
        low = pivot
    elif k <= below:
        found = nearest(pivot, False, below - k + 1)
        low = found[-1]
        equal_low = int(conn.execute(equal_count_query(*cell, low)).scalar_one())
        below, equal = below - sum(1 for v in found if v > low) - equal_low, equal_low
    else:
        found = nearest(pivot, True, k - below - equal)
        low = found[-1]
        equal_low = int(conn.execute(equal_count_query(*cell, low)).scalar_one())
        below, equal = below + equal + sum(1 for v in found if v < low), equal_low
    value = low
    if len(ranks) > 1 and ranks[1] != k:
        high = low if ranks[1] <= below + equal else nearest(low, True, 1)[0]
        value = (low + high) / 2
    return value, n, (low, below, equal)
