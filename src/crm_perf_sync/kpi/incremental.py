"""Incremental maintenance of the additive KPIs from the store's change log.

Every sync batch logs the versions of the rows it replaced (``PRIOR_TABLES``) and which records
it touched. For counts, sums, ratios and means, a refresh aggregates the touched records' *old*
versions and their *new* ones with the same grouped queries a full computation uses, and adds
the difference to the stored cells: ``stored + new - old``. A cell whose last record left is
removed (a total with a target stays, at 0). Medians and percentiles (:mod:`.ranks`), funnels
(:mod:`.funnel`) and derived KPIs (:mod:`.derived`) have their own incremental paths.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.kpi import repository as repo
from crm_perf_sync.kpi.compiler import Calendar, Part, Scope, part_for
from crm_perf_sync.kpi.compute import Computation, Touched, rolled
from crm_perf_sync.kpi.rollup import Key, Rollup, Totals
from crm_perf_sync.kpi.schemas import CountKpi, DurationKpi, Grain, Kpi, Measure, RatioKpi, SumKpi
from crm_perf_sync.kpi.values import apply_targets, value_row
from crm_perf_sync.models import PRIOR_TABLES


def change_totals(
    run: Computation, kpi: Kpi, rollup: Rollup, dimension: str | None, changes: Literal["new", "old"]
) -> tuple[dict[tuple[Grain, Scope], dict[Key, Totals]], dict[tuple[Grain, Scope], dict[Key, Totals]]]:
    """Numerator and denominator totals of the change log's new or old record versions."""
    conn, calendar = run.conn, run.calendar
    if isinstance(kpi, RatioKpi):
        by_currency = kpi.numerator.is_money
        num, den = (change_part(m, calendar, by_currency, changes) for m in (kpi.numerator, kpi.denominator))
        return (
            rolled(conn, num, calendar, rollup, dimension),
            rolled(conn, den, calendar, rollup, dimension),
        )
    if isinstance(kpi, DurationKpi):
        part = change_part(kpi.measure, calendar, False, changes, kpi)
    else:
        assert isinstance(kpi, CountKpi | SumKpi)
        part = change_part(kpi.measure, calendar, kpi.measure.is_money, changes)
    return rolled(conn, part, calendar, rollup, dimension), {}


def change_part(
    measure: Measure,
    calendar: Calendar,
    by_currency: bool,
    changes: Literal["new", "old"],
    duration: DurationKpi | None = None,
) -> Part:
    table = PRIOR_TABLES[measure.entity] if changes == "old" else None
    return part_for(measure, calendar, by_currency=by_currency, kpi=duration, table=table, changes=changes)


def apply_changes(
    run: Computation,
    kpi: Kpi,
    dimensions: Sequence[str],
    digest: str,
    touched: Touched,
) -> int:
    """Update a KPI's stored values by the change log; returns how many values changed.

    ``touched`` collects the cells of every value changed.
    """
    conn = run.conn
    computed_at = utc_now()
    changed = 0
    rollup = run.rollup()
    for dimension in [None, *dimensions]:
        new_num_all, new_den_all = change_totals(run, kpi, rollup, dimension, "new")
        old_num_all, old_den_all = change_totals(run, kpi, rollup, dimension, "old")
        cells = new_num_all.keys() | new_den_all.keys() | old_num_all.keys() | old_den_all.keys()
        deltas: dict[repo.CellKey, tuple[dict[str, Any], Totals, Totals]] = {}
        for grain, scope in sorted(cells):
            new_num, new_den = new_num_all.get((grain, scope), {}), new_den_all.get((grain, scope), {})
            old_num, old_den = old_num_all.get((grain, scope), {}), old_den_all.get((grain, scope), {})
            for key in new_num.keys() | new_den.keys() | old_num.keys() | old_den.keys():
                template = value_row(kpi, grain, scope, dimension or "", key, (None, 0.0, None, 0))
                num, den = Totals(), Totals()
                for side, new, old in ((num, new_num, old_num), (den, new_den, old_den)):
                    plus, minus = new.get(key, Totals()), old.get(key, Totals())
                    side.total = plus.total - minus.total
                    side.records = plus.records - minus.records
                if (num.total, num.records, den.total, den.records) == (0.0, 0, 0.0, 0):
                    continue  # the records left it as it was (a renamed deal): not rewritten
                cell: repo.CellKey = (grain, scope, template["period_key"], key[1], key[2], key[3])
                deltas[cell] = (template, num, den)
        if not deltas:
            continue
        # Of the periods changed, only the scopes changed (a rep's win: not every other rep's).
        scopes: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
        for cell in deltas:
            scopes[(cell[0], cell[2])].add((cell[1], cell[3]))
        stored = repo.stored_cells(conn, kpi.id, dimension or "", scopes)
        replaced: list[int] = []
        rows: list[dict[str, Any]] = []
        for cell, (template, num, den) in deltas.items():
            touched.add_cell((cell[0], cell[2]), cell[1], cell[3])
            before = stored.get(cell)
            row = merge(kpi, template, before, num, den)
            if before is not None:
                replaced.append(before.id)
            if row is None:
                continue
            if not row["dimension"]:
                apply_targets(kpi, [row], run.targets, add_missing=False)
            if row["sample_count"] == 0 and row["target"] is None and not isinstance(kpi, RatioKpi):
                continue  # no record left (a total with a target stays, at 0)
            row["definition_hash"] = digest
            row["computed_at"] = computed_at
            rows.append(row)
        repo.replace_cells(conn, replaced, rows)
        changed += len(deltas)
    return changed


def merge(
    kpi: Kpi, template: dict[str, Any], before: repo.StoredCell | None, num: Totals, den: Totals
) -> dict[str, Any] | None:
    """A stored value plus a change (``num``/``den``); ``None`` when no record is left in it."""
    row = dict(template)
    numerator = (before.numerator if before else 0.0) + num.total
    if isinstance(kpi, RatioKpi):
        denominator = (before.denominator or 0.0 if before else 0.0) + den.total
        records = (before.sample_count if before else 0) + den.records
        if records <= 0 and abs(numerator) < 1e-9:
            return None
        value = numerator / denominator * kpi.scale if abs(denominator) > 1e-12 else None
        row.update(numerator=numerator, denominator=denominator, value=value)
    elif isinstance(kpi, DurationKpi):
        records = (before.sample_count if before else 0) + num.records
        if records <= 0:
            return None
        row.update(numerator=numerator, denominator=float(records), value=numerator / records)
    else:
        records = (before.sample_count if before else 0) + num.records
        if records <= 0:
            row.update(numerator=0.0, value=0.0)
        else:
            row.update(numerator=numerator, value=numerator)
    row["sample_count"] = max(records, 0)
    row["low_sample"] = row["sample_count"] < kpi.min_sample
    return row
