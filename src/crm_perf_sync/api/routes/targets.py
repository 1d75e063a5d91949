"""Targets: those in force (decomposed), and the ones set through the API (admin writes)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from crm_perf_sync.api import listing
from crm_perf_sync.api.deps import Admin, ContextDep, ListerDep, Reader, RowId, SessionDep
from crm_perf_sync.api.listing import json_response
from crm_perf_sync.api.params import PERIOD_HELP, ScopeParam, period_key
from crm_perf_sync.api.problems import collection, documented
from crm_perf_sync.api.schemas import Page, TargetDefinitionOut, TargetIn, TargetOut, columns
from crm_perf_sync.kpi import targets_repository as targets_repo
from crm_perf_sync.kpi import targets_service as targets
from crm_perf_sync.models import TargetDefinition

router = APIRouter(tags=["kpis"])


@router.get(
    "/targets",
    summary="Every target in force, per KPI, period, scope and currency (decomposed)",
    description=(
        "Targets from the configuration and from the API, decomposed into quarters and months and "
        "split to reps, as the last refresh applied them (the most specific wins)."
    ),
    response_model=Page[TargetOut],
    responses=collection(400, 401, 422),
)
def list_targets(
    ctx: ContextDep,
    _key: Reader,
    page: ListerDep,
    kpi: Annotated[str | None, Query(max_length=63)] = None,
    grain: Annotated[Literal["month", "quarter", "year"] | None, Query()] = None,
    period: Annotated[str | None, Query(description=PERIOD_HELP, max_length=20)] = None,
    scope: Annotated[ScopeParam | None, Query()] = None,
    scope_id: Annotated[str | None, Query(max_length=600)] = None,
) -> Response:
    fiscal = ctx.kpi_service().business.fiscal_year_start_month
    where = targets_repo.TargetFilter(kpi, grain, period_key(period, grain, fiscal), scope, scope_id)

    def fetch(s: Any, after: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        rows, next_key = targets_repo.targets_page(s, where, after, limit)
        return [{k: r[k] for k in columns(TargetOut)} for r in rows], next_key

    return page("targets", TargetOut, fetch)


APPLIES = "at the next KPI refresh (the worker runs one within a minute)"


def _definition_out(row: TargetDefinition) -> dict[str, Any]:
    return {
        "id": row.id,
        "definition": TargetIn.model_validate(row.definition).model_dump(mode="json"),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "applies": APPLIES,
    }


@router.post(
    "/targets",
    status_code=201,
    summary="Set a target (admin)",
    description=(
        "A target for one KPI, scope and period, written as in the configuration's `kpis.targets`. "
        "It takes effect " + APPLIES + "; on a tie in specificity it wins over the configuration's."
    ),
    response_model=TargetDefinitionOut,
    responses=documented(400, 401, 403, 413, 422),
)
def create_target(body: TargetIn, session: SessionDep, ctx: ContextDep, _key: Admin) -> Response:
    row = targets.create(session, ctx.kpi_service().kpis, body.model_dump(mode="json"))
    return json_response(
        _definition_out(row), status=201, headers={"Location": f"/api/v1/targets/definitions/{row.id}"}
    )


@router.get(
    "/targets/definitions",
    summary="The targets set through the API",
    response_model=Page[TargetDefinitionOut],
    responses=collection(400, 401, 422),
)
def list_target_definitions(
    session: SessionDep,
    _key: Reader,
    page: ListerDep,
) -> Response:
    rows = [_definition_out(r) for r in targets_repo.target_definitions(session)]
    return page("target-definitions", TargetDefinitionOut, fetch=listing.in_memory(rows, "id"))


@router.get(
    "/targets/definitions/{target_id}",
    summary="One target set through the API",
    response_model=TargetDefinitionOut,
    responses=documented(401, 404, 422),
)
def get_target_definition(target_id: RowId, session: SessionDep, _key: Reader) -> Response:
    return json_response(_definition_out(targets.stored(session, target_id)))


@router.put(
    "/targets/definitions/{target_id}",
    summary="Change a target set through the API (admin)",
    response_model=TargetDefinitionOut,
    responses=documented(400, 401, 403, 404, 413, 422),
)
def update_target_definition(
    target_id: RowId, body: TargetIn, session: SessionDep, ctx: ContextDep, _key: Admin
) -> Response:
    row = targets.update(session, ctx.kpi_service().kpis, target_id, body.model_dump(mode="json"))
    return json_response(_definition_out(row))


@router.delete(
    "/targets/definitions/{target_id}",
    status_code=204,
    summary="Remove a target set through the API (admin)",
    responses=documented(401, 403, 404, 422),
)
def delete_target_definition(target_id: RowId, session: SessionDep, _key: Admin) -> Response:
    targets.remove(session, target_id)
    return Response(status_code=204)
