"""What each page shows, read through the same repositories as the API (no second query path).

Functions here take the request's session and return plain data for the templates: values as
stored (tidied and paced by :func:`crm_perf_sync.kpi.values.presented`, as the API shows them),
the periods a grain has, the comparison periods, and the links to each number's explanation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.orm import Session

from crm_perf_sync.kpi import periods
from crm_perf_sync.kpi import repository as kpi_repo
from crm_perf_sync.kpi.schemas import FunnelKpi, Grain, Kpi
from crm_perf_sync.kpi.service import KpiService
from crm_perf_sync.kpi.values import presented
from crm_perf_sync.models import KpiValue

#: The company numbers of the overview, in the order a sales director reads them.
OVERVIEW_KPIS = (
    "won_revenue",
    "win_rate",
    "won_deals",
    "average_deal_size",
    "sales_cycle_days_mean",
    "sales_cycle_days_median",
    "lead_conversion_rate",
    "weighted_pipeline",
    "open_pipeline",
    "pipeline_coverage",
    "sales_velocity",
)
GRAINS: tuple[Grain, ...] = ("week", "month", "quarter", "year", "all")
#: How many periods a trend line shows.
TREND_PERIODS = 12


def explain_link(
    kpi_id: str, grain: str, period_key: str, scope: str, scope_id: str, currency: str = ""
) -> str:
    query = {"grain": grain, "period": period_key, "scope": scope, "scope_id": scope_id}
    if currency:
        query["currency"] = currency
    return f"/dashboard/explain/{kpi_id}?{urlencode(query)}"


def period_index(key: str, grain: Grain, fiscal: int) -> int | None:
    if key == "all":
        return None
    return periods.local_period_index(date.fromisoformat(key), "UTC", grain, fiscal)


def key_of(index: int, grain: Grain) -> str:
    return periods.period_bounds(index, grain)[0].isoformat()


def current_key(grain: Grain, now: datetime, zone: str, fiscal: int) -> str:
    if grain == "all":
        return "all"
    return key_of(periods.local_period_index(now, zone, grain, fiscal), grain)


def year_earlier(index: int, grain: Grain) -> int:
    return index - (52 if grain == "week" else 12)


@dataclass(slots=True)
class Tile:
    """One KPI on the overview, for one currency (amounts are never converted)."""

    kpi: Kpi
    currency: str
    current: dict[str, Any] | None
    previous: dict[str, Any] | None
    last_year: dict[str, Any] | None
    trend: list[tuple[str, float | None, float | None]] = field(default_factory=list)
    link: str = ""


@dataclass(slots=True)
class Overview:
    grain: Grain
    period_key: str
    period_start: date | None
    periods: list[str]
    tiles: list[Tile]


def available_periods(session: Session, service: KpiService, grain: Grain) -> list[str]:
    """The period keys of ``grain`` that have company values, newest first."""
    if grain == "all":
        return ["all"]
    return kpi_repo.company_period_keys(session, [k for k in OVERVIEW_KPIS if k in service.kpis], grain)


def overview(
    session: Session, service: KpiService, grain: Grain, period: str | None, now: datetime
) -> Overview:
    business = service.business
    fiscal = business.fiscal_year_start_month
    keys = available_periods(session, service, grain)
    if period is None or (period not in keys and grain != "all"):
        here = current_key(grain, now, business.timezone, fiscal)
        period = here if here in keys or not keys else keys[0]
    index = period_index(period, grain, fiscal)
    wanted = [k for k in OVERVIEW_KPIS if k in service.kpis]
    names: dict[tuple[str, str], str] = {("company", "company"): "company"}
    tiles: list[Tile] = []
    for kpi_id in wanted:
        kpi = service.kpis[kpi_id]
        rows = kpi_repo.values(session, kpi_id, grain=grain, scope="company", scope_id="company")
        by_currency: dict[str, dict[str, KpiValue]] = defaultdict(dict)
        for row in rows:
            by_currency[row.currency][row.period_key] = row
        if not by_currency:
            tiles.append(
                Tile(
                    kpi, "", None, None, None, link=explain_link(kpi_id, grain, period, "company", "company")
                )
            )
            continue
        for currency, found in sorted(by_currency.items()):

            def shown(key: str, found: dict[str, KpiValue] = found) -> dict[str, Any] | None:
                stored = found.get(key)
                return None if stored is None else presented(stored, names, now, business.timezone)

            previous = last_year = None
            trend: list[tuple[str, float | None, float | None]] = []
            if index is not None:
                previous = shown(key_of(periods.previous(index, grain), grain))
                last_year = shown(key_of(year_earlier(index, grain), grain))
                step = periods.STEP[grain]
                for n in range(TREND_PERIODS - 1, -1, -1):
                    key = key_of(index - n * step, grain)
                    point = found.get(key)
                    trend.append(
                        (key, None if point is None else point.value, None if point is None else point.target)
                    )
            tiles.append(
                Tile(
                    kpi,
                    currency,
                    shown(period),
                    previous,
                    last_year,
                    trend,
                    explain_link(kpi_id, grain, period, "company", "company", currency),
                )
            )
    start = None if index is None else periods.period_bounds(index, grain)[0]
    return Overview(grain, period, start, keys, tiles)


def is_funnel(kpi: Kpi) -> bool:
    return isinstance(kpi, FunnelKpi)
