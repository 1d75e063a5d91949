"""KPI values as rows: the ``kpi_value`` row built from a computed cell, targets applied to it,
and how a stored value is presented (pace, tidy sums).

Everything that computes values (full, incremental, ranks, funnels, derived) builds its rows
here, and everything that shows them (API, CLI, alerts) reads them through here: one shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from crm_perf_sync.kpi import periods
from crm_perf_sync.kpi.rollup import Key
from crm_perf_sync.kpi.schemas import CountKpi, Grain, Kpi, SumKpi

# (value, numerator, denominator, sample count)
Computed = tuple[float | None, float, float | None, int]

#: A median or percentile's rank state (see :mod:`crm_perf_sync.kpi.ranks`): the
#: value at the lower rank read, how many values are below it and how many equal it.
RankState = tuple[float, int, int]
NO_RANK_STATE: dict[str, Any] = {"rank_pivot": None, "rank_below": None, "rank_equal": None}

#: (kpi id, grain, period key, scope, scope id, currency) of a stored target
TargetCellKey = tuple[str, str, str, str, str, str]


@dataclass(frozen=True, slots=True)
class TargetCell:
    value: float
    start: date
    end: date


def value_row(
    kpi: Kpi, grain: Grain, scope: str, dimension: str, key: Key, result: Computed
) -> dict[str, Any]:
    period_index, scope_id, currency, dim_value = key
    if period_index is None:
        period_key, start, end = "all", None, None
    else:
        start, end = periods.period_bounds(period_index, grain)
        period_key = start.isoformat()
    return stored_row(
        kpi, (grain, period_key, start, end), (scope, scope_id, currency, dimension, dim_value), result
    )


def stored_row(
    kpi: Kpi,
    period: tuple[str, str, date | None, date | None],
    cell: tuple[str, str, str, str, str],
    result: Computed,
) -> dict[str, Any]:
    """The ``kpi_value`` row of one result: ``period`` is (grain, key, start, end), ``cell`` is
    (scope, scope id, currency, dimension, dimension value); no target yet, no rank state."""
    grain, period_key, start, end = period
    scope, scope_id, currency, dimension, dim_value = cell
    value, numerator, denominator, sample = result
    return {
        "kpi_id": kpi.id,
        "grain": grain,
        "period_key": period_key,
        "period_start": start,
        "period_end": end,
        "scope": scope,
        "scope_id": scope_id,
        "currency": currency,
        "dimension": dimension,
        "dimension_value": dim_value,
        "value": value,
        "numerator": numerator,
        "denominator": denominator,
        "sample_count": sample,
        "low_sample": sample < kpi.min_sample,
        "target": None,
        "attainment": None,
        "gap": None,
        **NO_RANK_STATE,
    }


def with_state(row: dict[str, Any], state: RankState) -> dict[str, Any]:
    row["rank_pivot"], row["rank_below"], row["rank_equal"] = state
    return row


def period_key(period: int | None, grain: Grain) -> str:
    return "all" if period is None else periods.period_bounds(period, grain)[0].isoformat()


def is_additive(kpi: Kpi) -> bool:
    """Whether a KPI's values add up across periods and reps (so targets divide)."""
    return isinstance(kpi, CountKpi | SumKpi)


def apply_targets(
    kpi: Kpi,
    out: list[dict[str, Any]],
    target_values: Mapping[TargetCellKey, TargetCell],
    *,
    add_missing: bool = True,
) -> None:
    """Set target, attainment and gap; an additive KPI with a target but no records scores 0."""
    if not target_values:
        return
    mine = {key[1:]: value for key, value in target_values.items() if key[0] == kpi.id}
    if not mine:
        return
    matched: set[tuple[str, str, str, str, str]] = set()
    for row in out:
        if row["dimension"]:
            continue
        base = (row["grain"], row["period_key"], row["scope"], row["scope_id"])
        key = (*base, row["currency"])
        if key not in mine:
            key = (*base, "")
        cell = mine.get(key)
        if cell is None:
            continue
        matched.add(key)
        set_attainment(kpi, row, cell.value)
    if not add_missing or not is_additive(kpi):
        return
    for key, cell in mine.items():
        if key in matched:
            continue
        grain, period, scope, scope_id, currency = key
        row = value_row(kpi, "all", scope, "", (None, scope_id, currency, ""), (0.0, 0.0, None, 0))
        row.update(grain=grain, period_key=period, period_start=cell.start, period_end=cell.end)
        set_attainment(kpi, row, cell.value)
        out.append(row)


def set_attainment(kpi: Kpi, row: dict[str, Any], target: float) -> None:
    row["target"] = target
    value = row["value"]
    if value is None:
        return
    row["gap"] = target - value
    if kpi.direction == "higher":
        row["attainment"] = value / target if target else None
    else:
        row["attainment"] = target / value if value else None


def pace(
    attainment: float | None, start: date | None, end: date | None, now: datetime, zone: str
) -> float | None:
    """Attainment ÷ the elapsed fraction of the period: above 1 is ahead of a straight line."""
    if attainment is None or start is None or end is None:
        return None
    elapsed = periods.elapsed_fraction(start, end, now, zone)
    return attainment / elapsed if elapsed > 0 else None


def tidy(number: float | None) -> float | None:
    """A stored sum as people read it: 12 significant digits, without binary floating-point noise.

    Amounts are summed as doubles, so a total of cents can come back as ``222128.38999999998``;
    12 digits keep every cent of a trillion while dropping the noise in the last bits.
    """
    return None if number is None else float(f"{number:.12g}")


def presented(v: Any, names: Mapping[tuple[str, str], str], now: datetime, zone: str) -> dict[str, Any]:
    """A stored value as people read it, in the API and the CLI alike: its scope's name, numbers
    without float noise, and the pace towards its target at ``now``."""
    return {
        "kpi_id": v.kpi_id,
        "grain": v.grain,
        "period_key": v.period_key,
        "period_start": v.period_start,
        "period_end": v.period_end,
        "scope": v.scope,
        "scope_id": v.scope_id,
        "scope_name": names.get((v.scope, v.scope_id), v.scope_id),
        "currency": v.currency,
        "dimension": v.dimension,
        "dimension_value": v.dimension_value,
        "value": tidy(v.value),
        "numerator": tidy(v.numerator),
        "denominator": tidy(v.denominator),
        "sample_count": v.sample_count,
        "low_sample": v.low_sample,
        "target": tidy(v.target),
        "attainment": tidy(v.attainment),
        "gap": tidy(v.gap),
        "pace": tidy(pace(v.attainment, v.period_start, v.period_end, now, zone)),
        "computed_at": v.computed_at,
    }
