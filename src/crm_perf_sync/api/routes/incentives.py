"""Incentives: the plans, their payout lines, a rep's statement, a line explained, a period closed."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy.orm import Session

from crm_perf_sync.api import listing
from crm_perf_sync.api.deps import Admin, ContextDep, ListerDep, Reader, SessionDep
from crm_perf_sync.api.incentive_schemas import (
    CloseOut,
    ExplainedLineOut,
    PayoutOut,
    PlanOut,
    StatementOut,
)
from crm_perf_sync.api.listing import CSV_MEDIA, Format, PageParams, chosen_format, csv_text, json_response
from crm_perf_sync.api.problems import collection, documented
from crm_perf_sync.api.schemas import Page, columns
from crm_perf_sync.incentives import definitions, statements
from crm_perf_sync.incentives import repository as repo
from crm_perf_sync.incentives.presented import (
    explained_out,
    line_filter,
    line_row,
    plan_out,
    statement_out,
    statement_plan,
)
from crm_perf_sync.incentives.schemas import Commission, Plan, Spiff
from crm_perf_sync.incentives.service import IncentiveService
from crm_perf_sync.jobs.incentives import close_when_current
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.kpi.schemas import CountKpi, SumKpi
from crm_perf_sync.org import repository as org_repo

router = APIRouter(tags=["incentives"])
PlanPath = Annotated[str, Path(description="A plan id (see /incentives/plans)", max_length=63)]
PERIOD_KEY_HELP = "A period of the plan: its first day, e.g. 2017-04-01 for the second quarter of 2017"
FormatParam = Annotated[
    Format | None,
    Query(description="json (default) or csv (the lines); `Accept: text/csv` also selects CSV."),
]


@router.get(
    "/incentives/plans",
    summary="Every incentive plan: what its components pay, who takes part, its periods and closes",
    response_model=Page[PlanOut],
    responses=collection(400, 401, 422),
)
def list_plans(session: SessionDep, ctx: ContextDep, _key: Reader, page: ListerDep) -> Response:
    service = ctx.incentives(session)
    today = service.today(utc_now())
    rows = [
        plan_out(service, session, plan, today) for plan in sorted(service.plans.values(), key=lambda p: p.id)
    ]
    return page("incentive-plans", PlanOut, fetch=listing.in_memory(rows, "id"))


@router.get(
    "/incentives/plans/{plan_id}",
    summary="One incentive plan: its components in words and numbers, participants, periods and closes",
    response_model=PlanOut,
    responses=documented(401, 404, 422),
)
def get_plan(plan_id: PlanPath, session: SessionDep, ctx: ContextDep, _key: Reader) -> Response:
    service = ctx.incentives(session)
    return json_response(plan_out(service, session, service.plan(plan_id), service.today(utc_now())))


APPLIES = (
    "Its payouts are computed at the next refresh (the worker runs one within a minute; "
    "`crm-perf-sync refresh` runs one now)."
)


def _written(ctx: ContextDep, session: Session, plan_id: str) -> dict[str, Any]:
    """A plan as the API returns it after a write (its periods' totals as the last refresh left them)."""
    service = ctx.incentives(session)
    ctx.versions.forget(("incentives",))
    return plan_out(service, session, service.plan(plan_id), service.today(utc_now()))


@router.post(
    "/incentives/plans",
    status_code=201,
    summary="Set an incentive plan (admin)",
    description=(
        "A plan written as in the configuration's `incentives.plans`, checked the same way (tiers "
        "contiguous from 0, rates and caps non-negative, KPIs of the right kind, scorecards scored "
        "per the plan's period) and against the store (its reps and teams exist). An id belongs to "
        "the configuration file or to the API, never both (`409`). " + APPLIES
    ),
    response_model=PlanOut,
    responses=documented(400, 401, 403, 409, 413, 422),
)
def create_plan(body: Plan, session: SessionDep, ctx: ContextDep, key: Admin) -> Response:
    service = ctx.incentives(session)
    row = definitions.create(session, service.kpis, service.configured(), _definition(body), key.name)
    return json_response(
        _written(ctx, session, row.plan_id),
        status=201,
        headers={"Location": f"/api/v1/incentives/plans/{row.plan_id}"},
    )


@router.put(
    "/incentives/plans/{plan_id}",
    summary="Change an incentive plan set through the API (admin)",
    description=(
        "The whole plan, checked as when it was set; its id stays. A plan of the configuration file "
        "is changed in the file (`409`). The lines of its open periods follow the new terms; a closed "
        "period's stay as they were paid. " + APPLIES
    ),
    response_model=PlanOut,
    responses=documented(400, 401, 403, 404, 409, 413, 422),
)
def update_plan(plan_id: PlanPath, body: Plan, session: SessionDep, ctx: ContextDep, key: Admin) -> Response:
    service = ctx.incentives(session)
    definitions.update(session, service.kpis, service.configured(), plan_id, _definition(body), key.name)
    return json_response(_written(ctx, session, plan_id))


@router.delete(
    "/incentives/plans/{plan_id}",
    status_code=204,
    summary="Remove an incentive plan set through the API (admin)",
    description=(
        "Its open lines go at the next refresh; the lines of its closed periods stay (they were "
        "paid). A plan of the configuration file is removed from the file (`409`)."
    ),
    responses=documented(401, 403, 404, 409, 422),
)
def delete_plan(plan_id: PlanPath, session: SessionDep, ctx: ContextDep, _key: Admin) -> Response:
    definitions.remove(session, ctx.incentives(session).configured(), plan_id)
    ctx.versions.forget(("incentives",))
    return Response(status_code=204)


def _definition(body: Plan) -> dict[str, Any]:
    return body.model_dump(mode="json", by_alias=True, exclude_unset=True)


@router.get(
    "/incentives/payouts",
    summary="Payout lines: per plan, period, rep and component, with adjustments to closed periods",
    description=(
        "Every statement line, brought up to date by each refresh (a closed period's lines are "
        "`frozen`). `team` gives the lines of the team's members. Cached by version: send the ETag "
        "back as If-None-Match to get 304 when no line was recomputed and no period closed."
    ),
    response_model=Page[PayoutOut],
    responses=collection(401, 404, 409, 422, cached=True),
)
def list_payouts(
    session: SessionDep,
    ctx: ContextDep,
    _key: Reader,
    page: ListerDep,
    plan: Annotated[str | None, Query(max_length=63, description="A plan id")] = None,
    owner: Annotated[str | None, Query(max_length=600, description="A rep's scope id")] = None,
    team: Annotated[
        str | None, Query(max_length=600, description="A team's scope id: its members' lines")
    ] = None,
    period: Annotated[str | None, Query(max_length=20, description=PERIOD_KEY_HELP)] = None,
    component: Annotated[str | None, Query(max_length=63, description="A component id of the plan")] = None,
    kind: Annotated[Literal["payout", "adjustment"] | None, Query()] = None,
) -> Response:
    where = line_filter(
        ctx.incentives(session),
        session,
        plan=plan,
        owner=owner,
        team=team,
        period=period,
        component=component,
        kind=kind,
    )

    def fetch(s: Session, after: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        found, next_key = repo.lines_page(s, where, after, limit)
        names = org_repo.scope_names(s)  # read with the page: a cached page reads neither
        return [line_row(line, names) for line in found], next_key

    version = ctx.incentives_version(session)
    return page("incentive-lines", PayoutOut, fetch=fetch, version=version, cache=ctx.responses)


@router.get(
    "/incentives/statements/{owner_id}",
    summary="A rep's statement for a period: the lines, the total, the tier reached and what the next needs",
    description=(
        "Without `period`, the latest period the rep has lines in; without `plan`, the only plan that "
        "pays them. `progress` says, per commission, the tier reached, how much more base the next "
        "tier needs and, while the period runs, what it would pay at the current pace. With "
        "`format=csv` (or `Accept: text/csv`), the lines as CSV."
    ),
    response_model=StatementOut,
    responses={**collection(401, 404, 422)},
)
def get_statement(
    request: Request,
    owner_id: Annotated[str, Path(max_length=600, description="The rep's scope id: <connection>:<owner id>")],
    session: SessionDep,
    ctx: ContextDep,
    _key: Reader,
    plan: Annotated[str | None, Query(max_length=63, description="A plan id")] = None,
    period: Annotated[str | None, Query(max_length=20, description=PERIOD_KEY_HELP)] = None,
    format: FormatParam = None,
) -> Response:
    service = ctx.incentives(session)
    plan_id = statement_plan(session, owner_id, plan)
    found = statements.statement(service, session, plan_id, owner_id, period, utc_now())
    body = statement_out(found, org_repo.scope_names(session), repo.closes(session, found.plan.id))
    if chosen_format(request, PageParams(None, None, format)) == "csv":
        return Response(csv_text(body["lines"], columns(PayoutOut), header=True), media_type=CSV_MEDIA)
    return json_response(body)


@router.get(
    "/incentives/explain",
    summary="One payout line explained: the records behind it, what each earned and in which tiers",
    description=(
        "For a commission, the records in the order they fell in the period fill the tiers from the "
        "first (a record that crosses a tier's end is split across both); `earned` is each one's part "
        "of the commission before any cap, so the records' `earned` add up to the line's `uncapped`. "
        "The records come a page at a time: follow `next`."
    ),
    response_model=ExplainedLineOut,
    responses=documented(401, 404, 422),
)
def explain_line(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    _key: Reader,
    plan: Annotated[str, Query(max_length=63, description="A plan id")],
    owner: Annotated[str, Query(max_length=600, description="A rep's scope id")],
    period: Annotated[str, Query(max_length=20, description=PERIOD_KEY_HELP)],
    component: Annotated[str, Query(max_length=63, description="A component id of the plan")],
    limit: Annotated[int, Query(ge=1, le=1000, description="Records per page")] = 100,
    after: Annotated[int, Query(ge=0, le=2**31, description="Records to skip: a page's `next_after`")] = 0,
) -> Response:
    service = ctx.incentives(session)
    explained = statements.explain_line(service, session, plan, owner, period, component)
    body = explained_out(explained, org_repo.scope_names(session), after, limit)
    entity = _record_entity(service, plan, component)
    links = ctx.record_links()
    for record in body["records"]:
        record["crm_url"] = (
            links(record["connection_id"], entity, record["external_id"])
            if links is not None and entity is not None
            else None
        )
    following = body.pop("next_after")
    body["next"] = (
        str(request.url.include_query_params(after=following, limit=limit)) if following is not None else None
    )
    return json_response(body)


def _record_entity(service: IncentiveService, plan_id: str, component_id: str) -> str | None:
    """What the records behind a component's lines are (deals, activities, ...)."""
    component = service.plan(plan_id).component(component_id)
    kpi_id = (
        component.base.kpi
        if isinstance(component, Commission)
        else component.kpi
        if isinstance(component, Spiff)
        else None
    )
    kpi = None if kpi_id is None else service.kpis.kpis.get(kpi_id)
    return kpi.measure.entity if isinstance(kpi, CountKpi | SumKpi) else None


@router.post(
    "/incentives/plans/{plan_id}/periods/{period_key}/close",
    status_code=201,
    summary="Close a plan's period (admin): its lines are frozen; later changes become adjustments",
    description=(
        "Periods close in order, once each, and only once they have ended; and only while the KPIs "
        "are up to date with the store (else `409`: refresh first). The lines are brought up to date "
        "and frozen with the records behind them, in this request's transaction; a later change to "
        "one of those records is paid as an adjustment in the first open period."
    ),
    response_model=CloseOut,
    responses=documented(401, 403, 404, 409, 422),
)
def close_period(
    plan_id: PlanPath,
    period_key: Annotated[str, Path(max_length=20, description=PERIOD_KEY_HELP)],
    session: SessionDep,
    ctx: ContextDep,
    key: Admin,
) -> Response:
    done = close_when_current(ctx.incentives(session), session, plan_id, period_key, key.name, utc_now())
    ctx.versions.forget(("incentives",))
    body = {k: v for k, v in asdict(done).items() if k != "close_id"}
    location = "/api/v1/incentives/payouts?" + urlencode({"plan": done.plan_id, "period": done.period_key})
    return json_response(body, status=201, headers={"Location": location})
