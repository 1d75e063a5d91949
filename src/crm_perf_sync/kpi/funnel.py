"""Stage funnels: how many deals reached each stage of their pipeline, and the conversion between.

A deal that reached a stage reached every stage before it in its pipeline's order (skipped stages
count as passed). The database returns one row per group of deals with the furthest step they
reached (:func:`compiler.funnel_grouped_query`), spread here over the steps up to it, so there is
never a join of deals by steps. Per stage the value is reached(stage) / reached(previous stage); the
total is deals that reached the last step over those that entered.

Step counts are additive, so the change log updates them like sums: the touched deals' old
contributions are taken out and their new ones added (:func:`apply_funnel_changes`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, cast

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from crm_perf_sync.kit.errors import InvalidInput, NotFound
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.kpi import repository as repo
from crm_perf_sync.kpi.compiler import (
    FUNNEL_OPPORTUNITY,
    Calendar,
    FunnelDeals,
    Scope,
    funnel_grouped_query,
    funnel_steps_query,
    part_for,
)
from crm_perf_sync.kpi.compute import Computation, Touched
from crm_perf_sync.kpi.rollup import Key, Rollup, Totals
from crm_perf_sync.kpi.schemas import FunnelKpi, Grain, Kpi
from crm_perf_sync.kpi.values import Computed, apply_targets, period_key, value_row
from crm_perf_sync.models import PRIOR_TABLES, KpiValue

#: (grain, scope, period index, scope id) of a funnel's values
_FunnelGroup = tuple[str, str, int | None, str]


def funnel_values(
    run: Computation, kpi: FunnelKpi
) -> dict[tuple[Grain, Scope], list[tuple[str, dict[Key, Computed]]]]:
    """Per stage: reached(stage) / reached(previous stage); the total: last / first stage."""
    steps = funnel_steps(run.conn, kpi)
    rolled = funnel_reached(run.conn, kpi, run.calendar, run.rollup(), steps, ("all",))
    several = len({pipeline for _, pipeline in steps}) > 1
    out: dict[tuple[Grain, Scope], list[tuple[str, dict[Key, Computed]]]] = {}
    for cell, totals in rolled.items():
        groups: dict[tuple[int | None, str], dict[str, list[tuple[int, str, int]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for (period, scope_id, _, (pipeline, order, stage)), t in totals.items():
            groups[(period, scope_id)][pipeline].append((order, stage, round(t.total)))
        stages: dict[Key, Computed] = {}
        overall: dict[Key, Computed] = {}
        for (period, scope_id), pipelines in groups.items():
            total, per_stage = funnel_group(period, scope_id, pipelines, several)
            stages.update(per_stage)
            if total is not None:
                overall[(period, scope_id, "", "")] = total
        out[cell] = [("", overall), ("stage", stages)]
    return out


def funnel_steps(conn: Connection, kpi: FunnelKpi) -> dict[tuple[str, str], list[tuple[int, str]]]:
    """Each (connection, pipeline)'s steps in order: ``[(sort order, stage)]``."""
    pipeline_steps: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for step in conn.execute(funnel_steps_query(kpi)):
        pipeline_steps[(step.connection_id, step.pipeline)].append((int(step.sort_order), str(step.stage)))
    return pipeline_steps


def stage_order(conn: Connection, kpi: FunnelKpi) -> list[tuple[str, str]]:
    """Every step as ``(pipeline, stage value)`` in funnel order: by pipeline, then its sort order.

    The stage value is the ``dimension_value`` its stored ``stage`` row has: the stage's name, or
    ``"<pipeline>: <stage>"`` when the funnel spans several pipelines (their pipeline is then set,
    and '' when there is only one).
    """
    steps = funnel_steps(conn, kpi)
    several = len({pipeline for _, pipeline in steps}) > 1
    ordered = sorted(
        (pipeline, order, stage) for (_, pipeline), found in steps.items() for order, stage in found
    )
    return [(pipeline, f"{pipeline}: {stage}") if several else ("", stage) for pipeline, _, stage in ordered]


def funnel_kpi(kpis: Mapping[str, Kpi], kpi_id: str | None) -> FunnelKpi:
    """The funnel KPI ``kpi_id``, or the first funnel by id when it is None."""
    funnels = sorted(k.id for k in kpis.values() if isinstance(k, FunnelKpi))
    if kpi_id is None:
        if not funnels:
            raise NotFound("no funnel KPI is defined")
        kpi_id = funnels[0]
    found = kpis.get(kpi_id)
    if found is None:
        raise NotFound(f"no KPI {kpi_id!r} (defined: {', '.join(sorted(kpis)) or 'none'})")
    if not isinstance(found, FunnelKpi):
        raise InvalidInput(
            f"{kpi_id} is a {found.type} KPI, not a funnel (funnels: {', '.join(funnels) or 'none'})"
        )
    return found


def stage_values(
    session: Session, kpi: FunnelKpi, grain: str, period_key: str, scope: str, scope_id: str
) -> list[tuple[str, KpiValue]]:
    """A funnel's stored stage rows of one period and scope in funnel order, each with its
    pipeline ('' for one pipeline); stages no longer in a pipeline's order come last by name."""
    steps = stage_order(session.connection(), kpi)
    order = {stage: n for n, (_, stage) in enumerate(steps)}
    pipelines = {stage: pipeline for pipeline, stage in steps}
    stored = repo.values(
        session, kpi.id, grain=grain, scope=scope, period_key=period_key, scope_id=scope_id, dimension="stage"
    )
    ordered = sorted(stored, key=lambda v: (order.get(v.dimension_value, len(order)), v.dimension_value))
    return [(pipelines.get(v.dimension_value, ""), v) for v in ordered]


def funnel_reached(
    conn: Connection,
    kpi: FunnelKpi,
    calendar: Calendar,
    rollup: Rollup,
    steps: Mapping[tuple[str, str], list[tuple[int, str]]],
    sources: Iterable[FunnelDeals],
) -> dict[tuple[Grain, Scope], dict[Key, Totals]]:
    """Deals that reached each step, keyed ``(period, scope id, "", (pipeline, order, stage))``.

    ``sources`` are added up (see :data:`FunnelDeals`); each group of deals reached every
    step up to its furthest one.
    """

    def rows() -> Iterator[tuple[int | None, int | None, str, str | None, str, Any, float, int]]:
        for deals in sources:
            table = {"prior": PRIOR_TABLES[kpi.measure.entity], "all": None}.get(deals, FUNNEL_OPPORTUNITY)
            part = part_for(kpi.measure, calendar, by_currency=False, table=table)
            for r in conn.execute(funnel_grouped_query(kpi, part, calendar, deals)):
                for order, stage in steps.get((r.connection_id, r.pipeline), ()):
                    if order <= r.max_order:
                        yield (
                            r.week, r.month, r.connection_id, r.owner, "",
                            (r.pipeline, order, stage), r.total, r.total,
                        )  # fmt: skip

    return rollup(rows())


def funnel_group(
    period: int | None, scope_id: str, pipelines: Mapping[str, list[tuple[int, str, int]]], several: bool
) -> tuple[Computed | None, dict[Key, Computed]]:
    """One period and scope of a funnel from the deals that reached each step of each pipeline.

    Returns the total (deals that reached the last step over those that entered, summed over
    the pipelines) and one value per stage (reached it / reached the step before). Steps no deal
    reached have no value; deals that reached a step reached every one before it.
    """
    stages: dict[Key, Computed] = {}
    first = last = 0.0
    for pipeline, steps in sorted(pipelines.items()):
        reached_steps = sorted(step for step in steps if step[2] > 0)
        if not reached_steps:
            continue
        previous = reached_steps[0][2]
        for _, stage, reached in reached_steps:
            label = f"{pipeline}: {stage}" if several else stage
            value = reached / previous if previous else None
            stages[(period, scope_id, "", label)] = (value, float(reached), float(previous), previous)
            previous = reached
        first += reached_steps[0][2]
        last += reached_steps[-1][2]
    if not stages:
        return None, stages
    return (last / first if first else None, last, first, int(first)), stages


def apply_funnel_changes(run: Computation, kpi: FunnelKpi, digest: str, touched: Touched) -> int:
    """Update a funnel's stored values by the change log; returns how many values changed.

    The deals that reached each step are additive: the touched deals' old contributions (as
    the stored values counted them) are taken out and their new ones added, and each
    touched period and scope is recomputed from its updated step counts.
    """
    conn = run.conn
    steps = funnel_steps(conn, kpi)
    several = len({pipeline for _, pipeline in steps}) > 1
    labels = {
        (f"{pipeline}: {stage}" if several else stage): (pipeline, order, stage)
        for (_, pipeline), ordered in steps.items()
        for order, stage in ordered
    }
    rollup = run.rollup()
    new = funnel_reached(conn, kpi, run.calendar, rollup, steps, ("changed",))
    old = funnel_reached(conn, kpi, run.calendar, rollup, steps, ("prior", "unchanged"))
    # (grain, scope, period, scope id) -> step -> change in the deals that reached it
    deltas: dict[_FunnelGroup, dict[tuple[str, int, str], int]] = defaultdict(dict)
    for grain, scope in new.keys() | old.keys():
        plus, minus = new.get((grain, scope), {}), old.get((grain, scope), {})
        for key in plus.keys() | minus.keys():
            period, scope_id, _, step = key
            change = round(plus.get(key, Totals()).total - minus.get(key, Totals()).total)
            if change:
                deltas[(grain, scope, period, scope_id)][step] = change
    if not deltas:
        return 0
    keys = {(grain, period_key(period, cast(Grain, grain))): period for grain, _, period, _ in deltas}
    cells: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)  # the scopes changed
    for group in deltas:
        cells[(group[0], period_key(group[2], cast(Grain, group[0])))].add((group[1], group[3]))
    reached: dict[_FunnelGroup, dict[tuple[str, int, str], int]] = defaultdict(dict)
    replaced: list[int] = []
    for dimension in ("stage", ""):
        for (grain_name, scope_name, stored_key, scope_id, _, label), cell in repo.stored_cells(
            conn, kpi.id, dimension, cells
        ).items():
            group = (grain_name, scope_name, keys[(grain_name, stored_key)], scope_id)
            if group not in deltas:
                continue
            if dimension:
                reached[group][labels[label]] = round(cell.numerator)
            replaced.append(cell.id)
    computed_at = utc_now()
    rows: list[dict[str, Any]] = []
    for group, group_deltas in deltas.items():
        grain_name, scope_name, period, scope_id = group
        grain, scope = cast(Grain, grain_name), cast(Scope, scope_name)
        touched.add_cell((grain, period_key(period, grain)), scope, scope_id)
        counts = reached[group]
        for step, amount in group_deltas.items():
            counts[step] = counts.get(step, 0) + amount
        pipelines: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
        for (pipeline, order, stage), count in counts.items():
            pipelines[pipeline].append((order, stage, count))
        total, per_stage = funnel_group(period, scope_id, pipelines, several)
        if total is not None:
            rows.append(value_row(kpi, grain, scope, "", (period, scope_id, "", ""), total))
        rows += [value_row(kpi, grain, scope, "stage", k, v) for k, v in per_stage.items()]
    apply_targets(kpi, rows, run.targets, add_missing=False)
    for row in rows:
        row["definition_hash"] = digest
        row["computed_at"] = computed_at
    repo.replace_cells(conn, replaced, rows)
    return len(rows)
