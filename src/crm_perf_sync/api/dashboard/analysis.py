"""The funnel page: a funnel KPI's stages for a period and scope, and the won deals' cycle times."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse

from crm_perf_sync.api.dashboard import views
from crm_perf_sync.api.dashboard.auth import ViewerDep
from crm_perf_sync.api.dashboard.pages import render, stale_connections
from crm_perf_sync.api.deps import ContextDep, SessionDep
from crm_perf_sync.api.params import GrainParam
from crm_perf_sync.kit.timeutil import utc_now

router = APIRouter(include_in_schema=False)


@router.get("/dashboard/funnel", response_class=HTMLResponse)
def funnel_page(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    viewer: ViewerDep,
    kpi: Annotated[str | None, Query(max_length=63)] = None,
    grain: Annotated[GrainParam, Query()] = "month",
    period: Annotated[str | None, Query(max_length=20)] = None,
    team: Annotated[str | None, Query(max_length=600)] = None,
    owner: Annotated[str | None, Query(max_length=600)] = None,
) -> Response:
    live = ctx.results_version(session)
    service = ctx.kpi_service()
    scope, scope_id = views.chosen_scope(session, team, owner)
    shown = views.funnel(session, service, kpi, grain, period, scope, scope_id, utc_now())
    return render(
        request,
        "funnel.html",
        viewer,
        live=live,
        page="funnel",
        funnel=shown,
        choices=views.scope_choices(session),
        grains=views.GRAINS,
        stale=stale_connections(ctx, session),
    )
