"""The alerts and operations pages: what is firing, what fired, and how syncs, refreshes and
webhook deliveries are doing."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse

from crm_perf_sync.api.dashboard import views
from crm_perf_sync.api.dashboard.auth import ViewerDep
from crm_perf_sync.api.dashboard.pages import render
from crm_perf_sync.api.deps import ContextDep, SessionDep
from crm_perf_sync.kit.timeutil import utc_now

router = APIRouter(include_in_schema=False)


@router.get("/dashboard/alerts", response_class=HTMLResponse)
def alerts_page(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    viewer: ViewerDep,
    after: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
) -> Response:
    rules = ctx.config.app.alerts.rules if ctx.config is not None else []
    kpis = ctx.kpi_service().kpis if ctx.config is not None else {}
    units = {}
    for rule in rules:
        # A score is a number; attainment and pace are shares; a value is in its KPI's unit.
        kpi = kpis.get(rule.kpi or "")
        units[rule.id] = "number" if kpi is None else "percent" if rule.measure != "value" else kpi.unit
    shown = views.alerts(session, {rule.id: rule.name for rule in rules}, after)
    return render(request, "alerts.html", viewer, page="alerts", alerts=shown, units=units, after=after)


@router.get("/dashboard/operations", response_class=HTMLResponse)
def operations_page(request: Request, session: SessionDep, ctx: ContextDep, viewer: ViewerDep) -> Response:
    shown = views.operations(session, ctx.config, utc_now())
    return render(request, "operations.html", viewer, page="operations", ops=shown)
