"""The dashboard's pages: server-rendered HTML over the same repositories as the API.

Every page needs a session (:mod:`.auth`); the sign-in form exchanges an API key for one. Pages
are plain GET forms and links (they work without JavaScript); ``static/dashboard.js`` draws the
charts from JSON embedded in the page (``<script type="application/json">``, never executed), so
the Content-Security-Policy allows no inline script at all.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context, select_autoescape
from jinja2.runtime import Context

from crm_perf_sync import __version__
from crm_perf_sync.api.dashboard import views
from crm_perf_sync.api.dashboard.auth import (
    LANGUAGE_COOKIE,
    SESSION_COOKIE,
    WAN_COOKIE,
    Viewer,
    ViewerDep,
    check_csrf,
    form,
    formatter,
    local_path,
    same_origin,
)
from crm_perf_sync.api.dashboard.i18n import LANGUAGES, MESSAGES, display_name
from crm_perf_sync.api.deps import ContextDep, SessionDep
from crm_perf_sync.api.params import GrainParam
from crm_perf_sync.apikeys import sessions
from crm_perf_sync.apikeys.service import Unauthenticated
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.ops import status

HERE = Path(__file__).parent
STATIC = HERE / "static"
#: How long a sign-in lasts.
SESSION_LIFETIME = timedelta(hours=12)

router = APIRouter(include_in_schema=False)
templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)


def _isodate(value: str | date | None) -> date | None:
    if value is None or isinstance(value, date) or value == "all":
        return value if isinstance(value, date) else None
    return date.fromisoformat(value)


@pass_context
def _period_label(context: Context, start: date | None, grain: str) -> str:
    label: str = context["fmt"].period(grain, start)
    return label


templates.filters["isodate"] = _isodate
templates.filters["period_label"] = _period_label

#: The strictest policy the pages work under: nothing from another origin, no inline script or style.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def render(
    request: Request, name: str, viewer: Viewer | None, status_code: int = 200, **data: Any
) -> HTMLResponse:
    fmt = viewer.fmt if viewer is not None else formatter(request, request.app.state.context)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    ctx = request.app.state.context
    zone = ctx.config.app.business.timezone if ctx.config is not None else "UTC"
    html = templates.get_template(name).render(
        t=fmt.t,
        fmt=fmt,
        zone=zone,
        kpi_name=lambda kpi: display_name(kpi, fmt.language),
        viewer=viewer,
        here=here,
        path=request.url.path,
        version=__version__,
        languages=LANGUAGES,
        **data,
    )
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def _stale(ctx: Any, session: Any) -> list[dict[str, Any]]:
    """Connections whose numbers may be behind: never synced, the last run failed, or the last
    success is older than twice their interval (at least a quarter of an hour)."""
    if ctx.config is None:
        return []
    found = []
    configured = {c.id: c for c in ctx.config.app.connections}
    for row in status.connection_status(session, ctx.config, utc_now()):
        conn = configured[row["connection_id"]]
        if not conn.enabled:
            continue
        lag = row["lag_seconds"]
        interval = getattr(conn.schedule, "interval", None) if conn.schedule is not None else None
        late = interval is not None and lag is not None and lag > max(2 * interval.total_seconds(), 900)
        if lag is None or row["last_run_status"] == "failed" or late:
            found.append(row)
    return found


# --- sign-in, sign-out, language ---------------------------------------------------------------


@router.get("/", response_class=RedirectResponse)
@router.get("/ui", response_class=RedirectResponse)
async def root() -> RedirectResponse:
    return RedirectResponse("/dashboard", status_code=307)


@router.get("/dashboard/sign-in", response_class=HTMLResponse)
async def sign_in_form(
    request: Request, next: Annotated[str, Query(max_length=2000)] = "/dashboard"
) -> HTMLResponse:
    return render(request, "sign_in.html", None, next=local_path(next), error=None)


@router.post("/dashboard/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request, ctx: ContextDep) -> Response:
    fields = await form(request)
    next_path = local_path(fields.get("next"))
    if not same_origin(request):
        return render(
            request, "sign_in.html", None, 403, next=next_path, error="cross-origin sign-in refused"
        )

    def open_session() -> sessions.Opened:
        with session_scope(ctx.session_factory) as session:
            return sessions.sign_in(session, fields.get("key", ""), utc_now(), SESSION_LIFETIME)

    try:
        opened = await run_in_threadpool(open_session)
    except Unauthenticated as exc:
        return render(request, "sign_in.html", None, 401, next=next_path, error=str(exc))
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        opened.token,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/dashboard/sign-out")
async def sign_out(request: Request, ctx: ContextDep, viewer: ViewerDep) -> Response:
    fields = await form(request)
    check_csrf(request, viewer, fields)
    token = request.cookies.get(SESSION_COOKIE)

    def close() -> None:
        with session_scope(ctx.session_factory) as session:
            sessions.sign_out(session, token)

    await run_in_threadpool(close)
    if token:
        ctx.sessions.forget(token)
    response = RedirectResponse("/dashboard/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/dashboard/language")
async def language(
    to: Annotated[str, Query(max_length=5)],
    next: Annotated[str, Query(max_length=2000)] = "/dashboard",
    wan: Annotated[str | None, Query(max_length=1)] = None,
) -> Response:
    """Switch the language (and the 万 display): a preference cookie, then back to the page."""
    response = RedirectResponse(local_path(next), status_code=303)
    if to in LANGUAGES:
        response.set_cookie(LANGUAGE_COOKIE, to, max_age=365 * 86_400, samesite="strict", path="/")
    if wan in ("0", "1"):
        response.set_cookie(WAN_COOKIE, wan, max_age=365 * 86_400, samesite="strict", path="/")
    return response


# --- pages ---------------------------------------------------------------------------------------


@router.get("/dashboard", response_class=HTMLResponse)
def overview_page(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    viewer: ViewerDep,
    grain: Annotated[GrainParam, Query()] = "month",
    period: Annotated[str | None, Query(max_length=20)] = None,
) -> HTMLResponse:
    service = ctx.kpi_service()
    shown = views.overview(session, service, grain, period, utc_now())
    return render(
        request,
        "overview.html",
        viewer,
        page="overview",
        overview=shown,
        grains=views.GRAINS,
        stale=_stale(ctx, session),
    )


def message_keys() -> set[str]:
    return set(MESSAGES)
