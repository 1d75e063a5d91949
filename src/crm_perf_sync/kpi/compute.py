"""Full computation of the additive KPI types: counts, sums, weighted sums, ratios and means.

Each side of a KPI is one grouped query over its records (:func:`compiler.grouped_query`,
the finest groups by week, month, rep, currency and breakdown), added up in Python into every
grain and scope by :class:`~crm_perf_sync.kpi.rollup.Rollup`. A ratio is a ratio of the sums,
never an average of rates; a mean is the sum of the durations over their count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from crm_perf_sync.kpi.compiler import Calendar, Part, Scope, grouped_query, part_for
from crm_perf_sync.kpi.rollup import Key, Rollup, Totals
from crm_perf_sync.kpi.schemas import CountKpi, DurationKpi, Grain, Kpi, RatioKpi, SumKpi
from crm_perf_sync.kpi.values import Computed, TargetCell, TargetCellKey
from crm_perf_sync.org.schemas import Membership

#: A period of a KPI's values: (grain, period key).
PeriodKey = tuple[str, str]


class Touched(set[PeriodKey]):
    """The periods an incremental refresh changed a KPI's values in and, for each, the cells
    ((scope, scope id)) it changed: what the KPIs computed from it (derived KPIs) recompute.

    A period added whole (:meth:`add`, :meth:`update`: ranked again, or removed) stands for
    every cell of it; :meth:`add_cell` names one.
    """

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[PeriodKey, set[tuple[str, str]] | None] = {}

    def add(self, period: PeriodKey) -> None:
        super().add(period)
        self.cells[period] = None

    def update(self, *others: Iterable[PeriodKey]) -> None:
        for periods in others:
            for period in periods:
                self.add(period)

    def add_cell(self, period: PeriodKey, scope: str, scope_id: str) -> None:
        super().add(period)
        cells = self.cells.setdefault(period, set())
        if cells is not None:
            cells.add((scope, scope_id))


def cells_of(found: Iterable[set[PeriodKey]]) -> dict[PeriodKey, set[tuple[str, str]] | None]:
    """The cells several KPIs' changes touched, by period (``None``: every cell of it); a plain
    set of periods (or a period added whole) stands for every cell of each."""
    out: dict[PeriodKey, set[tuple[str, str]] | None] = {}
    for periods in found:
        cells = periods.cells if isinstance(periods, Touched) else dict.fromkeys(periods)
        for period, scopes in cells.items():
            if period in out and out[period] is None:
                continue
            out[period] = None if scopes is None else (out.get(period) or set()) | scopes
    return out


@dataclass(frozen=True, slots=True)
class Computation:
    """What every computation of one refresh shares: its connection (one snapshot of the store),
    the business calendar, the team membership, the grains and the stored targets."""

    conn: Connection
    calendar: Calendar
    membership: Membership
    grains: list[Grain]
    targets: Mapping[TargetCellKey, TargetCell]
    #: What several KPIs of the refresh read alike, read once (e.g. the customer KPIs' accounts).
    shared: dict[Any, Any] = field(default_factory=dict)

    def rollup(self) -> Rollup:
        return Rollup(self.grains, self.calendar.fiscal_start_month, self.membership)


def rolled(
    conn: Connection, part: Part, calendar: Calendar, rollup: Rollup, dimension: str | None
) -> dict[tuple[Grain, Scope], dict[Key, Totals]]:
    """One grouped pass over a part's records, added up into every grain and scope."""
    rows = conn.execute(grouped_query(part, calendar, dimension))
    return rollup(
        (r.week, r.month, r.connection_id, r.owner, r.currency, r.dim, r.total, r.records) for r in rows
    )


def additive_values(
    run: Computation, kpi: Kpi, dimension: str | None
) -> dict[tuple[Grain, Scope], dict[Key, Computed]]:
    """Every value of a count, sum, ratio or mean KPI for one breakdown, per grain and scope."""
    conn, calendar = run.conn, run.calendar
    rollup = run.rollup()
    out: dict[tuple[Grain, Scope], dict[Key, Computed]] = {}
    if isinstance(kpi, CountKpi | SumKpi):
        part = part_for(kpi.measure, calendar, by_currency=kpi.measure.is_money)
        for cell, totals in rolled(conn, part, calendar, rollup, dimension).items():
            out[cell] = {key: (t.total, t.total, None, t.records) for key, t in totals.items()}
    elif isinstance(kpi, RatioKpi):
        by_currency = kpi.numerator.is_money
        num = rolled(
            conn, part_for(kpi.numerator, calendar, by_currency=by_currency), calendar, rollup, dimension
        )
        den = rolled(
            conn, part_for(kpi.denominator, calendar, by_currency=by_currency), calendar, rollup, dimension
        )
        for cell in num.keys() | den.keys():
            n_cell, d_cell = num.get(cell, {}), den.get(cell, {})
            values: dict[Key, Computed] = {}
            for key in n_cell.keys() | d_cell.keys():
                n, d = n_cell.get(key, Totals()), d_cell.get(key, Totals())
                value = n.total / d.total * kpi.scale if d.total else None
                values[key] = (value, n.total, d.total, d.records)
            out[cell] = values
    elif isinstance(kpi, DurationKpi):
        if kpi.stat == "mean":  # medians and percentiles: see ranks.percentile_rows
            part = part_for(kpi.measure, calendar, by_currency=False, kpi=kpi)
            for cell, totals in rolled(conn, part, calendar, rollup, dimension).items():
                out[cell] = {
                    key: (
                        t.total / t.records if t.records else None,
                        t.total,
                        float(t.records),
                        t.records,
                    )
                    for key, t in totals.items()
                }
    return out
