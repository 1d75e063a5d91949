"""Derived KPIs: a formula over other KPIs' stored values (and targets) for the same cell.

A derived KPI is computed after the KPIs it reads (:func:`library.evaluation_order`), from
their stored totals per (grain, period, scope, currency). A missing input, a missing target or a
zero divisor gives no value rather than a guess; a count or a rate (no currency) joins every
currency of an amount. Incrementally it is recomputed only in the cells its inputs changed (a
rep's win: that rep's, their teams' and the company's values of the win's periods).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import date
from typing import Any

from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.kpi import repository as repo
from crm_perf_sync.kpi.compute import Computation, Touched
from crm_perf_sync.kpi.formula import evaluate, formula_names
from crm_perf_sync.kpi.schemas import DerivedKpi, Kpi
from crm_perf_sync.kpi.values import apply_targets, is_additive, stored_row


def derived_rows(
    run: Computation,
    kpi: DerivedKpi,
    kpis: Mapping[str, Kpi],
    only: repo.Cells | None = None,
) -> list[dict[str, Any]]:
    """The formula per (grain, period, scope, currency) over the stored values of its inputs
    (``only``: in these cells only)."""
    names, target_names = formula_names(kpi.formula)
    inputs: dict[str, dict[tuple[str, str, str, str, str], Any]] = {}
    cells: dict[tuple[str, str, str, str], set[str]] = defaultdict(set)
    bounds: dict[tuple[str, str], tuple[date | None, date | None]] = {}
    for name in names:
        found: dict[tuple[str, str, str, str, str], Any] = {}
        for row in repo.total_values(run.conn, name, run.grains, only):
            cell = (row.grain, row.period_key, row.scope, row.scope_id)
            found[(*cell, row.currency)] = row
            cells[cell].add(row.currency)
            bounds[(row.grain, row.period_key)] = (row.period_start, row.period_end)
        inputs[name] = found
    additive = {name for name in names if is_additive(kpis[name])}
    out: list[dict[str, Any]] = []
    for cell, currencies in cells.items():
        grain, period_key, scope, scope_id = cell
        for currency in sorted({c for c in currencies if c} or {""}):
            env: dict[str, float | None] = {}
            samples: list[int] = []
            for name in names:
                stored = inputs[name].get((*cell, currency))
                if stored is None and kpis[name].unit != "currency":
                    stored = inputs[name].get((*cell, ""))  # a count or rate has no currency
                if stored is None:
                    env[name] = 0.0 if name in additive else None
                else:
                    env[name] = stored.value
                    samples.append(stored.sample_count)
            for name in target_names:
                goal = run.targets.get((name, grain, period_key, scope, scope_id, currency))
                if goal is None:
                    goal = run.targets.get((name, grain, period_key, scope, scope_id, ""))
                env[f"target.{name}"] = None if goal is None else goal.value
            value = evaluate(kpi.formula, env)
            if value is None:
                continue  # an input or a target is missing, or a divisor is 0: no value
            start, end = bounds[(grain, period_key)]
            sample = min(samples) if samples else 0
            # A derived value has no denominator: its numerator is the value itself.
            out.append(
                stored_row(
                    kpi,
                    (grain, period_key, start, end),
                    (scope, scope_id, currency, "", ""),
                    (value, value, None, sample),
                )
            )
    return out


def apply_derived_changes(
    run: Computation,
    kpi: DerivedKpi,
    kpis: Mapping[str, Kpi],
    digest: str,
    only: repo.Cells,
    touched: Touched,
) -> int:
    """Recompute a derived KPI in the cells where its inputs changed; returns the rows.
    ``touched`` collects those cells."""
    if not only:
        return 0
    rows = derived_rows(run, kpi, kpis, only)
    apply_targets(kpi, rows, run.targets, add_missing=False)
    computed_at = utc_now()
    for row in rows:
        row["definition_hash"] = digest
        row["computed_at"] = computed_at
    repo.delete_cells(run.conn, kpi.id, only)
    repo.replace_cells(run.conn, [], rows)
    for period, scopes in only.items():
        if scopes is None:
            touched.add(period)
        for scope, scope_id in scopes or ():
            touched.add_cell(period, scope, scope_id)
    return len(rows)
