"""Targets: configured per KPI, scope and period, decomposed to smaller periods and to reps.

A yearly target decomposes into its fiscal quarters and months, evenly or by 12 seasonal weights
(listed from the first month of the fiscal year); a quarterly one into its months. Additive KPIs
(counts and sums) divide; a rate or a duration keeps its value in every part (a 30% win-rate
target is 30% in each month). A team target can be split to the team's reps the same way.
The most specific target wins: one set for a period and scope beats one decomposed into it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crm_perf_sync.kpi import periods
from crm_perf_sync.kpi.schemas import Grain, Kpi, TargetConfig
from crm_perf_sync.kpi.values import is_additive
from crm_perf_sync.org.schemas import Membership

TargetKey = tuple[str, str, int, str, str, str]  # (kpi, grain, period index, scope, scope id, currency)

#: Specificity penalties: lower wins.
_FROM_QUARTER, _FROM_YEAR, _FROM_TEAM = 1, 2, 10


@dataclass(frozen=True, slots=True)
class Target:
    key: TargetKey
    value: float
    origin: str  # set, period, team
    rank: int  # lower is more specific
    source: str = "config"  # config, api


def decompose(
    configured: Iterable[TargetConfig],
    kpis: Mapping[str, Kpi],
    membership: Membership,
    fiscal_start_month: int,
    from_api: Iterable[TargetConfig] = (),
) -> dict[TargetKey, Target]:
    """Every target in force, keyed by KPI, grain, period index, scope, scope id and currency.

    ``from_api`` are the targets set through the API: on a tie in specificity they win over the
    configuration's (they were set later, by someone who could see both).
    """
    team_reps: dict[str, list[str]] = {}
    for team_key, connection_id, owner_id in membership.rows:
        team_reps.setdefault(team_key, []).append(f"{connection_id}:{owner_id}")
    found: dict[TargetKey, Target] = {}

    def offer(target: Target) -> None:
        current = found.get(target.key)
        if current is None or target.rank < current.rank:
            found[target.key] = target
        elif target.rank == current.rank and target.source == "api" and current.source != "api":
            found[target.key] = target

    sourced = [(item, "config") for item in configured] + [(item, "api") for item in from_api]
    for item, source in sourced:
        kpi = kpis.get(item.kpi)
        if kpi is None:
            continue
        additive = is_additive(kpi)
        grain: Grain = item.grain
        first_month = periods.local_period_index(item.period, "UTC", grain, fiscal_start_month)
        parts = _split_periods(item, first_month, additive)
        scopes: list[tuple[str, str, float, int, str]] = [(item.scope, item.scope_id, 1.0, 0, "")]
        if item.split_to_reps:
            reps = team_reps.get(item.scope_id, [])
            share = 1.0 / len(reps) if additive and reps else 1.0
            scopes += [("owner", rep, share, _FROM_TEAM, "team") for rep in reps]
        for scope, scope_id, share, penalty, scope_origin in scopes:
            for part_grain, index, fraction, rank in parts:
                origin = scope_origin or ("set" if rank == 0 else "period")
                key = (item.kpi, part_grain, index, scope, scope_id, item.currency)
                offer(Target(key, item.value * fraction * share, origin, rank + penalty, source))
    return found


def _split_periods(
    item: TargetConfig, first_month: int, additive: bool
) -> list[tuple[Grain, int, float, int]]:
    """``(grain, period index, fraction of the value, specificity)`` for the target and its parts."""
    out: list[tuple[Grain, int, float, int]] = [(item.grain, first_month, 1.0, 0)]
    months = periods.STEP[item.grain]
    if months == 1:
        return out
    if item.grain == "year" and item.seasonality is not None:
        weights = list(item.seasonality)
    else:
        weights = [1.0] * months
    total = sum(weights)
    month_fraction = [w / total if additive else 1.0 for w in weights]
    from_rank = _FROM_YEAR if item.grain == "year" else _FROM_QUARTER
    for m in range(months):
        out.append(("month", first_month + m, month_fraction[m], from_rank))
    if item.grain == "year":
        for q in range(4):
            fraction = sum(month_fraction[3 * q : 3 * q + 3]) if additive else 1.0
            out.append(("quarter", first_month + 3 * q, fraction, _FROM_YEAR))
    return out


def rows(targets: Mapping[TargetKey, Target], now: datetime) -> list[dict[str, Any]]:
    """``kpi_target`` rows for the decomposed targets."""
    out: list[dict[str, Any]] = []
    for target in targets.values():
        kpi_id, grain, index, scope, scope_id, currency = target.key
        start, end = periods.period_bounds(index, grain)  # type: ignore[arg-type]
        out.append(
            {
                "kpi_id": kpi_id,
                "grain": grain,
                "period_key": start.isoformat(),
                "period_start": start,
                "period_end": end,
                "scope": scope,
                "scope_id": scope_id,
                "currency": currency,
                "value": target.value,
                "origin": target.origin,
                "source": target.source,
                "updated_at": now,
            }
        )
    return out
