"""What each page shows, read through the same repositories as the API (no second query path).

Functions here take the request's session and return plain data for the templates: values as
stored (tidied and paced by :func:`crm_perf_sync.kpi.values.presented`, as the API shows them),
the periods a grain has, the comparison periods, and the links to each number's explanation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any
from urllib.parse import quote_plus, urlencode

from sqlalchemy.orm import Session

from crm_perf_sync.alerts import repository as alerts_repo
from crm_perf_sync.api.routes.scorecards import score_row
from crm_perf_sync.config import LoadedConfig
from crm_perf_sync.incentives import repository as incentives_repo
from crm_perf_sync.incentives import statements
from crm_perf_sync.incentives.schemas import Commission, Component, Plan, Spiff
from crm_perf_sync.incentives.service import IncentiveService, PlanPeriod
from crm_perf_sync.kit.errors import NotFound
from crm_perf_sync.kpi import periods
from crm_perf_sync.kpi import repository as kpi_repo
from crm_perf_sync.kpi import scores_repository as scores_repo
from crm_perf_sync.kpi import targets_repository as targets_repo
from crm_perf_sync.kpi.cycle import BUCKETS, CycleTimes, cycle_times
from crm_perf_sync.kpi.explain import Explanation, ValueRef
from crm_perf_sync.kpi.explain import explain as explain_value
from crm_perf_sync.kpi.funnel import funnel_kpi, stage_values
from crm_perf_sync.kpi.schemas import DurationKpi, FunnelKpi, Grain, Kpi, ScorecardConfig
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
    "new_customers",
    "repeat_revenue_share",
    "customer_retention_rate",
    "activities",
    "activities_per_won_deal",
)
GRAINS: tuple[Grain, ...] = ("week", "month", "quarter", "year", "all")
#: How many periods a trend line shows.
TREND_PERIODS = 12


#: ``quote_plus``, remembered: a 500-rep leaderboard links 1,500 values, quoting the same few
#: names, periods and rep ids again and again.
_quoted = lru_cache(maxsize=8192)(quote_plus)


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
    return f"/dashboard/explain/{kpi_id}?{urlencode(query, quote_via=_quoted)}"


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
    # The period, the one before, the same one a year earlier and the trend: one query.
    trend_keys: list[str] = []
    previous_key = last_year_key = None
    if index is not None:
        step = periods.STEP[grain]
        trend_keys = [key_of(index - n * step, grain) for n in range(TREND_PERIODS - 1, -1, -1)]
        previous_key = key_of(periods.previous(index, grain), grain)
        last_year_key = key_of(year_earlier(index, grain), grain)
    needed = {period, *trend_keys} | {k for k in (previous_key, last_year_key) if k is not None}
    stored: dict[str, dict[str, dict[str, KpiValue]]] = defaultdict(lambda: defaultdict(dict))
    for row in kpi_repo.scope_values(session, wanted, grain, "company", "company", sorted(needed)):
        stored[row.kpi_id][row.currency][row.period_key] = row
    names: dict[tuple[str, str], str] = {("company", "company"): "company"}
    tiles: list[Tile] = []
    for kpi_id in wanted:
        kpi = service.kpis[kpi_id]
        by_currency = stored.get(kpi_id) or {"": {}}
        for currency, found in sorted(by_currency.items()):

            def shown(key: str | None, found: dict[str, KpiValue] = found) -> dict[str, Any] | None:
                row = found.get(key) if key is not None else None
                return None if row is None else presented(row, names, now, business.timezone)

            trend: list[tuple[str, float | None, float | None]] = []
            for key in trend_keys:
                point = found.get(key)
                if point is None and not trend:
                    continue  # the trend starts where the data does
                trend.append(
                    (key, None if point is None else point.value, None if point is None else point.target)
                )
            tiles.append(
                Tile(
                    kpi,
                    currency,
                    shown(period),
                    shown(previous_key),
                    shown(last_year_key),
                    trend,
                    explain_link(kpi_id, grain, period, "company", "company", currency),
                )
            )
    start = None if index is None else periods.period_bounds(index, grain)[0]
    return Overview(grain, period, start, keys, tiles)


# --- leaderboard and rep -----------------------------------------------------------------------

#: A rep's KPIs over time on their page.
REP_KPIS = (
    "won_revenue",
    "won_deals",
    "win_rate",
    "average_deal_size",
    "sales_cycle_days_median",
    "lead_conversion_rate",
    "open_pipeline",
    "new_customers",
    "activities",
    "calls",
    "meetings",
    "visits",
)
#: How many of a rep's open deals their page lists (largest first).
OPEN_DEALS = 50
#: How many of a rep's latest activities their page lists.
RECENT_ACTIVITIES = 20


def all_pages(fetch: Any, limit: int = 1000) -> list[Any]:
    """Every row of a keyset-paged repository function ``fetch(after, limit)``."""
    out: list[Any] = []
    after = None
    while True:
        rows, after = fetch(after, limit)
        out.extend(rows)
        if after is None:
            return out


@dataclass(slots=True)
class Leaderboard:
    card: ScorecardConfig | None
    cards: list[ScorecardConfig]
    grain: str
    period_key: str | None
    period_start: date | None
    periods: list[str]
    team: str | None
    teams: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    names: dict[tuple[str, str], str]


def leaderboard(
    session: Session,
    service: KpiService,
    scorecard: str | None,
    grain: str | None,
    period: str | None,
    team: str | None,
    names: dict[tuple[str, str], str] | None = None,
) -> Leaderboard:
    """A scorecard's ranked reps for a period; ``names``: the scope names, if already read."""
    cards = list(service.section.scorecards)
    names = org_repo.scope_names(session) if names is None else names
    teams = sorted(
        ({"id": sid, "name": name} for (scope, sid), name in names.items() if scope == "team"),
        key=lambda team: team["name"],
    )
    if not cards:
        return Leaderboard(None, [], "month", None, None, [], team, teams, [], names)
    card = service.scorecard(scorecard) if scorecard else cards[0]
    chosen = grain if grain in card.grains else card.grains[0]
    keys = scores_repo.period_keys(session, card.id, chosen)
    key = period if period in keys else (keys[0] if keys else None)
    rows: list[dict[str, Any]] = []
    if key is not None:
        found = all_pages(
            lambda after, limit: scores_repo.scores_page(
                session,
                card.id,
                grain=chosen,
                period_key=key,
                scope_id=None,
                team=team,
                after=after,
                limit=limit,
            )
        )
        rows = [score_row(s, names) for s in found]
    start = date.fromisoformat(key) if key else None
    return Leaderboard(card, cards, chosen, key, start, keys, team, teams, rows, names)


@dataclass(slots=True)
class RepView:
    owner_id: str
    name: str
    grain: Grain
    series: list[dict[str, Any]]
    periods: list[str]
    open_deals: list[dict[str, Any]]
    open_total: dict[str, float]
    open_count: int
    scores: list[dict[str, Any]]
    activities: list[dict[str, Any]]


def rep(session: Session, service: KpiService, owner_id: str, grain: Grain, now: datetime) -> RepView:
    names = org_repo.scope_names(session)
    if ("owner", owner_id) not in names:
        raise NotFound(f"no rep {owner_id!r} (rep ids are <connection>:<owner id>)")
    zone = service.business.timezone
    series: list[dict[str, Any]] = []
    keys: set[str] = set()
    for kpi_id in [k for k in REP_KPIS if k in service.kpis]:
        kpi = service.kpis[kpi_id]
        rows = kpi_repo.values(session, kpi_id, grain=grain, scope="owner", scope_id=owner_id)
        for currency in sorted({r.currency for r in rows}) or [""]:
            points = {r.period_key: presented(r, names, now, zone) for r in rows if r.currency == currency}
            keys.update(points)
            series.append({"kpi": kpi, "currency": currency, "points": points})
    shown = sorted(keys, reverse=True)[:TREND_PERIODS]
    for entry in series:
        entry["links"] = {
            key: explain_link(entry["kpi"].id, grain, key, "owner", owner_id, entry["currency"])
            for key in shown
        }
    where = sync_repo.RecordFilter(owner=owner_id, is_closed=False)
    deals = all_pages(lambda after, limit: sync_repo.opportunities_page(session, where, after, limit))
    totals: dict[str, float] = defaultdict(float)
    for deal in deals:
        if deal["amount"] is not None:
            totals[deal["currency"] or ""] += deal["amount"]
    deals.sort(key=lambda d: -(d["amount"] or 0))
    scores: list[dict[str, Any]] = []
    for card in service.section.scorecards:
        found = all_pages(
            lambda after, limit, card_id=card.id: scores_repo.scores_page(
                session,
                card_id,
                grain=None,
                period_key=None,
                scope_id=owner_id,
                team=None,
                after=after,
                limit=limit,
            )
        )
        scores.extend({"card": card, **score_row(s, names)} for s in found if s.grain == grain)
    scores.sort(key=lambda s: s["period_key"], reverse=True)
    return RepView(
        owner_id,
        names[("owner", owner_id)],
        grain,
        series,
        shown,
        deals[:OPEN_DEALS],
        dict(totals),
        len(deals),
        scores[: TREND_PERIODS * max(1, len(service.section.scorecards))],
        sync_repo.latest_activities(session, owner_id, RECENT_ACTIVITIES),
    )


# --- explanation -------------------------------------------------------------------------------


def explanation(
    session: Session,
    service: KpiService,
    kpi_id: str,
    ref: ValueRef,
    part: str | None,
    after: int | None,
    limit: int,
) -> Explanation:
    """One value's explanation, as GET /api/v1/kpis/{id}/explain computes it."""
    kpi = service.kpi(kpi_id)
    calendar = service.calendar(session)
    membership = org_repo.load_membership(session)
    return explain_value(session, kpi, ref, calendar, membership, role=part, after=after, limit=limit)


# --- targets -----------------------------------------------------------------------------------


@dataclass(slots=True)
class TargetRow:
    scope: str
    scope_id: str
    name: str
    depth: int
    cells: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class TargetsView:
    kpi: Kpi | None
    kpis: list[str]
    year_start: date | None
    years: list[str]
    columns: list[tuple[str, str]]
    rows: list[TargetRow]
    currencies: list[str]
    definitions: list[Any]
    teams: list[dict[str, Any]]
    owners: list[tuple[str, str]]


def targets(session: Session, service: KpiService, kpi_id: str | None, year: str | None) -> TargetsView:
    """Targets in force for one KPI and fiscal year: year → quarters → months, company → teams →
    reps, each with the attainment the last refresh stored."""
    fiscal = service.business.fiscal_year_start_month
    names = org_repo.scope_names(session)
    teams = org_repo.teams(session)
    owners = sorted(
        ((sid, name) for (scope, sid), name in names.items() if scope == "owner"), key=lambda o: o[1]
    )
    definitions = targets_repo.target_definitions(session)
    found = targets_repo.targeted(session)
    kpi_ids = sorted({k for k, _ in found if k in service.kpis})
    empty = TargetsView(None, kpi_ids, None, [], [], [], [], definitions, teams, owners)
    if not kpi_ids:
        return empty
    chosen = kpi_id if kpi_id in kpi_ids else kpi_ids[0]
    years = sorted(
        {
            key_of(periods.local_period_index(date.fromisoformat(s), "UTC", "year", fiscal), "year")
            for k, s in found
            if k == chosen
        },
        reverse=True,
    )
    year_key = year if year in years else years[0]
    start_index = periods.local_period_index(date.fromisoformat(year_key), "UTC", "year", fiscal)
    columns: list[tuple[str, str]] = [("year", year_key)]
    columns += [("quarter", key_of(start_index + 3 * n, "quarter")) for n in range(4)]
    columns += [("month", key_of(start_index + n, "month")) for n in range(12)]
    rows: dict[tuple[str, str], TargetRow] = {}
    currencies: set[str] = set()
    for grain in ("year", "quarter", "month"):
        keys = [key for g, key in columns if g == grain]
        where_rows = all_pages(
            lambda after, limit, grain=grain: targets_repo.targets_page(
                session, targets_repo.TargetFilter(kpi_id=chosen, grain=grain), after, limit
            )
        )
        stored = {
            (v.scope, v.scope_id, v.period_key, v.currency): v
            for v in kpi_repo.values_in_periods(session, chosen, grain, keys)
        }
        for target in where_rows:
            if target["period_key"] not in keys:
                continue
            scope, scope_id = target["scope"], target["scope_id"]
            row = rows.setdefault(
                (scope, scope_id), TargetRow(scope, scope_id, names.get((scope, scope_id), scope_id), 0)
            )
            value = stored.get((scope, scope_id, target["period_key"], target["currency"]))
            currencies.add(target["currency"])
            row.cells[(grain, target["period_key"], target["currency"])] = {
                **target,
                "attainment": None if value is None else value.attainment,
                "actual": None if value is None else value.value,
                "link": explain_link(
                    chosen, grain, target["period_key"], scope, scope_id, target["currency"]
                ),
            }
    team_of = org_repo.direct_teams(session)
    parents = {t["id"]: t["parent_id"] for t in teams}

    def depth(team: str | None) -> int:
        level = 0
        while team is not None and level < 20:
            team = parents.get(team)
            level += 1
        return level

    def order(row: TargetRow) -> tuple[Any, ...]:
        if row.scope == "company":
            return (0,)
        team = row.scope_id if row.scope == "team" else team_of.get(row.scope_id, "")
        return (1, team, row.scope != "team", row.name)

    ordered = sorted(rows.values(), key=order)
    for row in ordered:
        if row.scope == "team":
            row.depth = depth(row.scope_id)
        elif row.scope == "owner":
            row.depth = depth(team_of.get(row.scope_id)) + 1
    return TargetsView(
        service.kpis[chosen],
        kpi_ids,
        date.fromisoformat(year_key),
        years,
        columns,
        ordered,
        sorted(currencies),
        definitions,
        teams,
        owners,
    )


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


# --- incentives ----------------------------------------------------------------------------------


def statement_link(plan_id: str, owner_id: str, period_key: str | None = None) -> str:
    query = {"plan": plan_id, "owner": owner_id}
    if period_key:
        query["period"] = period_key
    return f"/dashboard/incentives/statement?{urlencode(query, quote_via=_quoted)}"


def line_link(plan_id: str, owner_id: str, period_key: str, component_id: str) -> str:
    query = {"plan": plan_id, "owner": owner_id, "period": period_key, "component": component_id}
    return f"/dashboard/incentives/explain?{urlencode(query, quote_via=_quoted)}"


@dataclass(slots=True)
class IncentivesView:
    plans: list[Plan]
    board: statements.Board | None
    names: dict[tuple[str, str], str]


def incentives(
    session: Session, service: IncentiveService, plan_id: str | None, period: str | None, now: datetime
) -> IncentivesView:
    """A plan's period: every rep paid in it, the most first (the first plan and its latest
    period unless chosen; a period that is not the plan's falls back to its latest)."""
    plans = list(service.plans.values())
    names = org_repo.scope_names(session)
    if not plans:
        return IncentivesView([], None, names)
    plan = service.plan(plan_id) if plan_id else plans[0]
    keys = {p.key for p in service.periods(plan, service.today(now))}
    chosen = period if period in keys else None
    return IncentivesView(plans, statements.board(service, session, plan.id, chosen, now), names)


@dataclass(slots=True)
class StatementView:
    statement: statements.Statement
    name: str
    close: Any | None  # who closed the period and when, once it is closed
    plans: list[tuple[Plan, str]]  # every plan the rep has lines in, with their latest period


def incentive_statement(
    session: Session,
    service: IncentiveService,
    plan_id: str,
    owner_id: str,
    period: str | None,
    now: datetime,
) -> StatementView:
    """A rep's statement for a period of a plan (by default the latest they have lines in), who
    closed the period, and the other plans they are paid by."""
    names = org_repo.scope_names(session)
    found = statements.statement(service, session, plan_id, owner_id, period or None, now)
    close = next(
        (row for row in incentives_repo.closes(session, plan_id) if row.period_key == found.period.key),
        None,
    )
    latest: dict[str, str] = {}
    for plan, key in incentives_repo.owner_statements(session, owner_id):
        if plan in service.plans:
            latest[plan] = key
    return StatementView(
        found,
        names.get(("owner", owner_id), owner_id),
        close,
        [(service.plans[plan], key) for plan, key in latest.items()],
    )


@dataclass(slots=True)
class LineView:
    plan: Plan
    component: Component
    owner_id: str
    name: str
    period: PlanPeriod
    lines: list[dict[str, Any]]
    payout: dict[str, Any] | None
    records: list[dict[str, Any]]
    earned: Decimal | None  # what the records earned together, before any cap
    entity: str  # what the records are (opportunities, activities...)


def incentive_line(
    session: Session,
    service: IncentiveService,
    plan_id: str,
    owner_id: str,
    period: str,
    component_id: str,
) -> LineView:
    """One statement line and the records behind it, each with what it earned (a SPIFF's record
    earns the amount per unit)."""
    found = statements.explain_line(service, session, plan_id, owner_id, period, component_id)
    plan = service.plan(plan_id)
    component = plan.component(component_id)
    assert component is not None  # explain_line checked it
    payout = next((row for row in found["lines"] if row["kind"] == "payout"), None)
    records = found["records"]
    if isinstance(component, Spiff):
        for record in records:
            record["earned"] = str(Decimal(repr(record["contribution"])) * component.amount)
    earned = None
    if records and all("earned" in record for record in records):
        earned = sum((Decimal(record["earned"]) for record in records), Decimal(0))
    names = org_repo.scope_names(session)
    # What the records are, for their links into the CRM: the entity of the KPI they count.
    kpi_id = (
        component.base.kpi
        if isinstance(component, Commission)
        else component.kpi
        if isinstance(component, Spiff)
        else None
    )
    measure = getattr(service.kpis.kpis.get(kpi_id or ""), "measure", None)
    return LineView(
        plan,
        component,
        owner_id,
        names.get(("owner", owner_id), owner_id),
        service.period_of(plan, found["period_key"]),
        found["lines"],
        payout,
        records,
        earned,
        str(getattr(measure, "entity", "opportunities")),
    )


def owner_statements(session: Session, service: IncentiveService, owner_id: str) -> list[tuple[Plan, str]]:
    """The plans a rep has statements in, each with the periods (newest first)."""
    by_plan: dict[str, list[str]] = defaultdict(list)
    for plan, key in incentives_repo.owner_statements(session, owner_id):
        if plan in service.plans:
            by_plan[plan].append(key)
    return [(service.plans[plan], key) for plan, keys in by_plan.items() for key in reversed(keys)]
