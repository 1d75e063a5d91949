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

from crm_perf_sync.alerts import repository as alerts_repo
from crm_perf_sync.config import LoadedConfig
from crm_perf_sync.kit.errors import NotFound
from crm_perf_sync.kpi import periods
from crm_perf_sync.kpi import repository as kpi_repo
from crm_perf_sync.kpi.cycle import BUCKETS, CycleTimes, cycle_times
from crm_perf_sync.kpi.explain import ValueRef
from crm_perf_sync.kpi.funnel import funnel_kpi, stage_values
from crm_perf_sync.kpi.schemas import DurationKpi, FunnelKpi, Grain, Kpi
from crm_perf_sync.kpi.service import KpiService
from crm_perf_sync.kpi.values import presented
from crm_perf_sync.models import KpiValue
from crm_perf_sync.ops import status
from crm_perf_sync.org import repository as org_repo
from crm_perf_sync.sync import repository as sync_repo
from crm_perf_sync.webhooks import repository as webhooks_repo

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
    kpi_id: str,
    grain: str,
    period_key: str,
    scope: str,
    scope_id: str,
    currency: str = "",
    dimension: str = "",
    dimension_value: str = "",
) -> str:
    query = {"grain": grain, "period": period_key, "scope": scope, "scope_id": scope_id}
    if currency:
        query["currency"] = currency
    if dimension:
        query["dimension"] = dimension
        query["dimension_value"] = dimension_value
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


# --- funnel and cycle times ----------------------------------------------------------------------

#: The duration KPI whose records the cycle-time histogram spreads out, and its median sibling.
CYCLE_KPI = "sales_cycle_days_mean"


def choose_period(
    session: Session, business: Any, kpi_ids: list[str], grain: Grain, period: str | None, now: datetime
) -> tuple[list[str], str]:
    """The periods of ``grain`` with company values of these KPIs (newest first), and the one to
    show: ``period`` when it has values, else the current one when it has, else the newest."""
    if grain == "all":
        return ["all"], "all"
    keys = kpi_repo.company_period_keys(session, kpi_ids, grain)
    if period is None or period not in keys:
        here = current_key(grain, now, business.timezone, business.fiscal_year_start_month)
        period = here if here in keys or not keys else keys[0]
    return keys, period


@dataclass(frozen=True, slots=True)
class ScopeChoices:
    """The teams and reps a page can be narrowed to, as ``(scope id, name)`` sorted by name."""

    teams: list[tuple[str, str]]
    owners: list[tuple[str, str]]


def scope_choices(session: Session) -> ScopeChoices:
    teams = [(str(t["id"]), str(t["name"] or t["id"])) for t in org_repo.teams(session)]
    owners: list[tuple[str, str]] = []
    after: Any = None
    while True:
        rows, after = org_repo.owners_page(session, after, 1000)
        owners += [(str(o["id"]), str(o["name"] or o["id"])) for o in rows]
        if after is None:
            break
    return ScopeChoices(
        sorted(teams, key=lambda t: (t[1].casefold(), t[0])),
        sorted(owners, key=lambda o: (o[1].casefold(), o[0])),
    )


def chosen_scope(session: Session, team: str | None, owner: str | None) -> tuple[str, str]:
    """``(scope, scope id)`` of the selects: a rep when one is chosen, else a team, else the company."""
    scope, scope_id = ("owner", owner) if owner else ("team", team) if team else ("company", "company")
    if not org_repo.known_scope(session, scope, scope_id):
        raise NotFound(f"no {'rep' if scope == 'owner' else 'team'} {scope_id!r}")
    return scope, scope_id


@dataclass(frozen=True, slots=True)
class FunnelStage:
    pipeline: str
    stage: str
    reached: int
    previous: int
    conversion: float | None
    low_sample: bool
    link: str

    @property
    def name(self) -> str:
        """The stage as its pipeline's table shows it (without the ``"<pipeline>: "`` prefix)."""
        prefix = f"{self.pipeline}: "
        return self.stage[len(prefix) :] if self.pipeline and self.stage.startswith(prefix) else self.stage


@dataclass(frozen=True, slots=True)
class CycleBucket:
    first: int
    last: int | None
    deals: int

    @property
    def label(self) -> str:
        """``0-7`` days (with an en dash), or ``>365`` for the last bucket."""
        return f"{self.first}\u2013{self.last}" if self.last is not None else f">{self.first - 1}"


@dataclass(slots=True)
class FunnelView:
    kpi: FunnelKpi
    funnels: list[str]
    grain: Grain
    period_key: str
    period_start: date | None
    periods: list[str]
    scope: str
    scope_id: str
    scope_name: str
    pipelines: list[tuple[str, list[FunnelStage]]]
    cycle_kpi: DurationKpi | None = None
    cycle: CycleTimes | None = None
    buckets: list[CycleBucket] = field(default_factory=list)
    cycle_link: str = ""


def funnel(
    session: Session,
    service: KpiService,
    kpi_id: str | None,
    grain: Grain,
    period: str | None,
    scope: str,
    scope_id: str,
    now: datetime,
) -> FunnelView:
    """A funnel's stages for one period and scope, read as GET /api/v1/funnel reads them, and the
    cycle times of the won deals of the same period and scope."""
    kpi = funnel_kpi(service.kpis, kpi_id)
    business = service.business
    cycle_kpi = service.kpis.get(CYCLE_KPI)
    duration = cycle_kpi if isinstance(cycle_kpi, DurationKpi) else None
    keys, period = choose_period(
        session, business, [kpi.id, *([duration.id] if duration else [])], grain, period, now
    )
    pipelines: dict[str, list[FunnelStage]] = defaultdict(list)
    for pipeline, v in stage_values(session, kpi, grain, period, scope, scope_id):
        pipelines[pipeline].append(
            FunnelStage(
                pipeline,
                v.dimension_value,
                round(v.numerator),
                round(v.denominator or 0),
                v.value,
                v.low_sample,
                explain_link(kpi.id, grain, period, scope, scope_id, "", "stage", v.dimension_value),
            )
        )
    index = period_index(period, grain, business.fiscal_year_start_month)
    names = org_repo.scope_names(session)
    shown = FunnelView(
        kpi,
        sorted(k.id for k in service.kpis.values() if isinstance(k, FunnelKpi)),
        grain,
        period,
        None if index is None else periods.period_bounds(index, grain)[0],
        keys,
        scope,
        scope_id,
        names.get((scope, scope_id), scope_id),
        list(pipelines.items()),
    )
    if duration is not None:
        ref = ValueRef(duration.id, grain, period, scope, scope_id)
        calendar = service.calendar(session)
        cycle = cycle_times(session, duration, ref, calendar, org_repo.load_membership(session))
        shown.cycle_kpi = duration
        shown.cycle = cycle
        counted = zip(BUCKETS, cycle.counts, strict=True)
        shown.buckets = [CycleBucket(first, last, deals) for (first, last), deals in counted]
        shown.cycle_link = explain_link(duration.id, grain, period, scope, scope_id)
    return shown


# --- alerts and operations -----------------------------------------------------------------------

#: Rows of alert history per page.
HISTORY_PAGE = 50
#: Sync runs and webhook deliveries the operations page lists.
RECENT_RUNS = 20
LISTED_DELIVERIES = 50


@dataclass(slots=True)
class Alerts:
    firing: list[dict[str, Any]]
    history: list[dict[str, Any]]
    next_after: int | None
    rule_names: dict[str, str]


def _named(row: Any, names: dict[tuple[str, str], str]) -> dict[str, Any]:
    found = dict(row._mapping)
    scope = (found["scope"], found["scope_id"])
    found["scope_name"] = "" if found["scope"] == "company" else names.get(scope, found["scope_id"])
    return found


def alerts(session: Session, rule_names: dict[str, str], after: int | None) -> Alerts:
    """The firing alerts (by rule and scope) and a page of the history, newest first."""
    names = org_repo.scope_names(session)
    firing = [_named(r, names) for r in alerts_repo.current_states(session, None, "firing")]
    rows, next_after = alerts_repo.transitions_page(session, None, None, after, HISTORY_PAGE)
    return Alerts(firing, [_named(r, names) for r in rows], next_after, rule_names)


@dataclass(slots=True)
class Operations:
    connections: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    refresh: dict[str, Any]
    deliveries: dict[str, Any]
    failed: list[dict[str, Any]]
    waiting: list[dict[str, Any]]


def operations(session: Session, config: LoadedConfig | None, now: datetime) -> Operations:
    connections = [] if config is None else status.connection_status(session, config, now)
    runs, _ = sync_repo.sync_runs_page(session, None, RECENT_RUNS)
    failed, _ = webhooks_repo.deliveries_page(
        session, endpoint_id=None, event_type=None, status="failed", after=None, limit=LISTED_DELIVERIES
    )
    waiting, _ = webhooks_repo.deliveries_page(
        session, endpoint_id=None, event_type=None, status="pending", after=None, limit=LISTED_DELIVERIES
    )
    return Operations(
        connections,
        runs,
        status.refresh_status(session),
        status.delivery_status(session, now),
        [dict(r._mapping) for r in failed],
        [dict(r._mapping) for r in waiting],
    )
