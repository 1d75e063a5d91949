"""KPIs: definitions, materialised values, explanations and the stage funnel."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response

from crm_perf_sync.api import listing
from crm_perf_sync.api.deps import ContextDep, ListerDep, Reader, SessionDep
from crm_perf_sync.api.listing import json_response
from crm_perf_sync.api.params import PERIOD_HELP, GrainParam, ScopeParam, period_key
from crm_perf_sync.api.problems import collection, documented
from crm_perf_sync.api.schemas import (
    Day,
    FunnelStepOut,
    KpiOut,
    Page,
    ValueOut,
)
from crm_perf_sync.kit.errors import InvalidInput
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.kpi import repository as kpi_repo
from crm_perf_sync.kpi.explain import ValueRef
from crm_perf_sync.kpi.explain import explain as explain_value
from crm_perf_sync.kpi.funnel import funnel_kpi, stage_values
from crm_perf_sync.kpi.schemas import (
    CustomerKpi,
    DerivedKpi,
    DurationKpi,
    FunnelKpi,
    Kpi,
    MeasureKpi,
    display,
)
from crm_perf_sync.kpi.service import KpiService
from crm_perf_sync.kpi.values import presented
from crm_perf_sync.org import repository as org_repo

router = APIRouter(tags=["kpis"])
KpiIdPath = Annotated[str, Path(description="A KPI id, e.g. win_rate (see /kpis)", max_length=63)]


def _kpi(service: KpiService, kpi_id: str) -> Kpi:
    return service.kpi(kpi_id)


def check_dimension(service: KpiService, kpi: Kpi, dimension: str | None) -> None:
    """A breakdown the KPI's values are materialised by (none asked for is the totals)."""
    allowed = ["stage"] if isinstance(kpi, FunnelKpi) else service.dimensions(kpi)
    if dimension and dimension not in allowed:
        raise InvalidInput(
            f"dimension: {kpi.id} is not broken down by {dimension!r} "
            f"(it is by: {', '.join(allowed) or 'nothing'})"
        )


def kpi_out(service: KpiService, kpi: Kpi) -> dict[str, Any]:
    return {
        "id": kpi.id,
        "name": kpi.name,
        "description": kpi.description,
        "type": kpi.type,
        "unit": kpi.unit,
        "direction": kpi.direction,
        "min_sample": kpi.min_sample,
        "stat": kpi.stat if isinstance(kpi, DurationKpi | CustomerKpi | MeasureKpi) else None,
        "formula": kpi.formula if isinstance(kpi, DerivedKpi) else None,
        "dimensions": ["stage"] if isinstance(kpi, FunnelKpi) else service.dimensions(kpi),
        "definition_hash": service.definition_hash(kpi),
        "definition": kpi.model_dump(mode="json"),
        "i18n": {locale: t.model_dump(mode="json") for locale, t in kpi.i18n.items()},
        "name_zh": display(kpi, "zh")[0],
    }


@router.get(
    "/kpis",
    summary="Every KPI definition: id, type, unit, direction, breakdowns",
    response_model=Page[KpiOut],
    responses=collection(400, 401, 422),
)
def list_kpis(
    ctx: ContextDep,
    _key: Reader,
    page: ListerDep,
) -> Response:
    service = ctx.kpi_service()
    rows = [kpi_out(service, kpi) for kpi in sorted(service.kpis.values(), key=lambda k: k.id)]
    return page("kpis", KpiOut, fetch=listing.in_memory(rows, "id"))


@router.get(
    "/kpis/{kpi_id}",
    summary="One KPI's definition",
    response_model=KpiOut,
    responses=documented(401, 404, 422),
)
def get_kpi(kpi_id: KpiIdPath, ctx: ContextDep, _key: Reader) -> Response:
    service = ctx.kpi_service()
    return json_response(kpi_out(service, _kpi(service, kpi_id)))


@router.get(
    "/kpis/{kpi_id}/values",
    summary="A KPI's values per period and scope, with targets, attainment and pace",
    description=(
        "The materialised values (brought up to date by every refresh). Without `dimension` the "
        "totals; with it, the breakdown by that dimension. `team` gives the team's own values "
        "and those of every rep who counts in it. Cached by version: send the ETag back as "
        "If-None-Match to get 304 when nothing was recomputed."
    ),
    response_model=Page[ValueOut],
    responses=collection(401, 404, 409, 422, cached=True),
)
def kpi_values(
    kpi_id: KpiIdPath,
    session: SessionDep,
    ctx: ContextDep,
    _key: Reader,
    page: ListerDep,
    grain: Annotated[GrainParam | None, Query(description="week, month, quarter, year or all")] = None,
    period: Annotated[str | None, Query(description=PERIOD_HELP, max_length=20)] = None,
    period_from: Annotated[
        Day | None,
        Query(alias="from", description="The first day: periods that start on this day or later"),
    ] = None,
    period_to: Annotated[
        Day | None,
        Query(alias="to", description="The last day: periods whose last day is this day or earlier"),
    ] = None,
    scope: Annotated[ScopeParam | None, Query()] = None,
    scope_id: Annotated[str | None, Query(max_length=600)] = None,
    team: Annotated[str | None, Query(max_length=600, description="A team's scope id")] = None,
    owner: Annotated[str | None, Query(max_length=600, description="A rep's scope id")] = None,
    dimension: Annotated[str | None, Query(max_length=63, description="A breakdown (see the KPI)")] = None,
    currency: Annotated[str | None, Query(max_length=3)] = None,
) -> Response:
    if period_from is not None and period_to is not None and period_from > period_to:
        raise InvalidInput(f"from ({period_from}) is after to ({period_to}): both days are included")
    service = ctx.kpi_service()
    kpi = _kpi(service, kpi_id)
    business = service.business
    check_dimension(service, kpi, dimension)
    where = kpi_repo.ValueFilter(
        grain=grain,
        period_key=period_key(period, grain, business.fiscal_year_start_month),
        period_from=period_from,
        period_to=period_to,
        scope=scope,
        scope_id=scope_id,
        team=team,
        owner=owner,
        dimension=dimension or "",
        currency=currency,
    )
    now = utc_now()

    def fetch(s: Any, after: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        found, next_key = kpi_repo.values_page(s, kpi_id, where, after, limit)
        names = org_repo.scope_names(s)  # read with the page: a cached page reads neither
        return [presented(v, names, now, business.timezone) for v in found], next_key

    version = ctx.values_version(session, kpi_id)
    return page(f"values:{kpi_id}", ValueOut, fetch=fetch, version=version, cache=ctx.responses)


@router.get(
    "/kpis/{kpi_id}/explain",
    summary="How one value was computed: formula, filters, numerator, denominator and its records",
    description=(
        "The records come a page at a time per side (numerator, denominator or measure), each with "
        "its CRM id and connection, and `crm_url`, the record's page in the CRM (null when its "
        "connector cannot say: a CSV import, a portal id not configured); follow a part's "
        "`next` for more. `part` limits the records to one side."
    ),
    responses=documented(400, 401, 404, 422),
)
def kpi_explain(
    request: Request,
    kpi_id: KpiIdPath,
    session: SessionDep,
    ctx: ContextDep,
    _key: Reader,
    grain: Annotated[GrainParam, Query()] = "all",
    period: Annotated[str, Query(description=PERIOD_HELP, max_length=20)] = "all",
    scope: Annotated[ScopeParam, Query()] = "company",
    scope_id: Annotated[str, Query(max_length=600)] = "company",
    currency: Annotated[str, Query(max_length=3)] = "",
    dimension: Annotated[str, Query(max_length=63)] = "",
    dimension_value: Annotated[str, Query(max_length=255)] = "",
    part: Annotated[
        Literal["numerator", "denominator", "measure"] | None, Query(description="Only this side's records")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[int | None, Query(ge=0, le=2**63 - 1, description="A part's `next_after`")] = None,
) -> Response:
    service = ctx.kpi_service()
    kpi = _kpi(service, kpi_id)
    business = service.business
    key = period_key(period, grain, business.fiscal_year_start_month) or "all"
    check_dimension(service, kpi, dimension)
    if (scope == "company") != (scope_id == "company"):
        raise InvalidInput("scope_id names the team or owner; it is `company` exactly for scope company")
    ref = ValueRef(kpi_id, grain, key, scope, scope_id, currency, dimension, dimension_value)
    calendar = service.calendar(session)
    membership = org_repo.load_membership(session)
    result = explain_value(session, kpi, ref, calendar, membership, role=part, after=after, limit=limit)
    body = asdict(result)
    links = ctx.record_links()
    for explained in body["parts"]:
        for record in explained["records"]:
            record["crm_url"] = (
                links(record["connection_id"], explained["entity"], record["external_id"])
                if links is not None
                else None
            )
        following = explained.get("next_after")
        explained["next"] = (
            str(request.url.include_query_params(part=explained["role"], after=following))
            if following is not None
            else None
        )
    return json_response(body)


@router.get(
    "/funnel",
    summary="A stage funnel: deals that reached each stage and the conversion from the one before",
    response_model=Page[FunnelStepOut],
    responses=collection(400, 401, 404, 422),
)
def funnel(
    session: SessionDep,
    ctx: ContextDep,
    _key: Reader,
    page: ListerDep,
    kpi: Annotated[str | None, Query(max_length=63, description="A funnel KPI (default: the first)")] = None,
    grain: Annotated[GrainParam, Query()] = "all",
    period: Annotated[str, Query(description=PERIOD_HELP, max_length=20)] = "all",
    scope: Annotated[ScopeParam, Query()] = "company",
    scope_id: Annotated[str, Query(max_length=600)] = "company",
) -> Response:
    service = ctx.kpi_service()
    found = funnel_kpi(service.kpis, kpi)
    key = period_key(period, grain, service.business.fiscal_year_start_month) or "all"
    rows = [
        {
            "kpi_id": v.kpi_id,
            "grain": v.grain,
            "period_key": v.period_key,
            "scope": v.scope,
            "scope_id": v.scope_id,
            "stage": v.dimension_value,
            "reached": round(v.numerator),
            "previous": round(v.denominator or 0),
            "conversion": v.value,
        }
        for _, v in stage_values(session, found, grain, key, scope, scope_id)
    ]
    return page(
        f"funnel:{found.id}",
        FunnelStepOut,
        fetch=listing.in_memory_by_position(rows),
        cache=ctx.responses,
        version=ctx.values_version(session, found.id),
    )
