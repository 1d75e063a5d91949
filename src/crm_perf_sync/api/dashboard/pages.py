"""The dashboard's pages: server-rendered HTML over the same repositories as the API.

Every page needs a session (:mod:`.auth`); the sign-in form exchanges an API key for one. Pages
are plain GET forms and links (they work without JavaScript); ``static/dashboard.js`` draws the
charts from JSON embedded in the page (``<script type="application/json">``, never executed), so
the Content-Security-Policy allows no inline script at all.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context, select_autoescape
from jinja2.runtime import Context
from markupsafe import Markup
from pydantic import ValidationError

from crm_perf_sync import __version__
from crm_perf_sync.api.cache import GZIP_MIN_BYTES, Rendered, accepts_gzip
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
from crm_perf_sync.api.dashboard.i18n import (
    LANGUAGES,
    MESSAGES,
    activity_type,
    display_name,
    filter_text,
    formula,
    note_text,
    perspective_name,
)
from crm_perf_sync.api.deps import ContextDep, SessionDep
from crm_perf_sync.api.params import GrainParam, ScopeParam, period_key
from crm_perf_sync.api.routes.kpis import check_dimension
from crm_perf_sync.api.schemas import TargetIn
from crm_perf_sync.apikeys import sessions
from crm_perf_sync.apikeys.service import Unauthenticated
from crm_perf_sync.kit.db import WRITE_LOCK, session_scope
from crm_perf_sync.kit.errors import InvalidInput
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.kpi import targets_service
from crm_perf_sync.kpi.explain import ValueRef
from crm_perf_sync.kpi.schemas import Kpi
from crm_perf_sync.ops import status
from crm_perf_sync.org import repository as org_repo

HERE = FilePath(__file__).parent
STATIC = HERE / "static"
#: Records per side an explanation page lists (follow "more" for the next).
EXPLAIN_PAGE = 100
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


def _day(value: str | date | None) -> date | None:
    """A record's date or moment (an ISO text, a date or a datetime) as its day."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(value[:10])


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _point(key: str, points: dict[str, Any], name: str) -> Any:
    found = points.get(key)
    return None if found is None else found[name]


templates.filters["isodate"] = _isodate
templates.filters["isodate_or_none"] = _day
templates.filters["scaled"] = _scaled
templates.filters["point"] = _point
templates.globals["explain_link"] = views.explain_link
templates.globals["statement_link"] = views.statement_link
templates.globals["line_link"] = views.line_link
templates.globals["formula"] = formula
templates.globals["filter_text"] = filter_text
templates.globals["messages"] = MESSAGES
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


def _context(request: Request, viewer: Viewer | None) -> dict[str, Any]:
    """What every template may use: the words and formats of the viewer's language, who they are."""
    fmt = viewer.fmt if viewer is not None else formatter(request, request.app.state.context)
    ctx = request.app.state.context
    return {
        "t": fmt.t,
        "fmt": fmt,
        "zone": ctx.config.app.business.timezone if ctx.config is not None else "UTC",
        "kpi_name": lambda kpi: display_name(kpi, fmt.language),
        "activity_type": lambda kind: activity_type(kind, fmt.language),
        "perspective_name": lambda card, p: perspective_name(card, p, fmt.language),
        "note_text": lambda note: note_text(note, fmt.language),
        "viewer": viewer,
        "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        "path": request.url.path,
        "version": __version__,
        "languages": LANGUAGES,
    }


def render(
    request: Request, name: str, viewer: Viewer | None, status_code: int = 200, **data: Any
) -> Response:
    """A page in the viewer's language, compressed for a browser that accepts gzip."""
    html = templates.get_template(name).render(**_context(request, viewer), **data)
    body = html.encode()
    headers = {**SECURITY_HEADERS, "Vary": "Accept-Encoding, Accept-Language, Cookie"}
    if len(body) >= GZIP_MIN_BYTES and accepts_gzip(request.headers):
        # Level 4: a 500-rep leaderboard shrinks about tenfold in a few milliseconds.
        body = gzip.compress(body, compresslevel=4, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return Response(body, status_code=status_code, media_type="text/html; charset=utf-8", headers=headers)


def stale_connections(ctx: Any, session: Any) -> list[dict[str, Any]]:
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
) -> Response:
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
            # It reads the key, then writes: on SQLite it takes the write lock first, so that a
            # writer committing in between makes it wait instead of fail (as every write request).
            session.connection(execution_options={WRITE_LOCK: True})
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
            session.connection(execution_options={WRITE_LOCK: True})
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
) -> Response:
    live = ctx.results_version(session)  # before the values: never newer than what is shown
    service = ctx.kpi_service()
    shown = views.overview(session, service, grain, period, utc_now())
    return render(
        request,
        "overview.html",
        viewer,
        live=live,
        page="overview",
        overview=shown,
        grains=views.GRAINS,
        stale=stale_connections(ctx, session),
    )


def _format_leaderboard(board: views.Leaderboard, viewer: Viewer, kpis: Mapping[str, Kpi]) -> None:
    """Each row's team, score and components as the page shows them (``row["cells"]``).

    Formatted here rather than in the template: 500 reps have 1,500 components, and every call a
    template makes costs Jinja several microseconds of its own (``Context.call``), more than
    formatting the number does.
    """
    fmt = viewer.fmt
    for row in board.rows:
        team = row["team_id"]
        score = row["score"]
        row["team_name"] = board.names.get(("team", team), team) if team else None
        row["score_text"] = fmt.number(score * 100 if score is not None else None, 1)
        cells = []
        for c in row["components"]:
            value, currency, normalised = c["value"], c["currency"] or "", c["normalised"]
            shown = value is not None
            link = "owner", row["scope_id"], currency
            cells.append(
                {
                    "link": views.explain_link(c["kpi_id"], board.grain, board.period_key or "", *link)
                    if shown
                    else None,
                    "value": fmt.value(value, kpis[c["kpi_id"]].unit, currency) if shown else None,
                    "normalised": fmt.number(normalised * 100 if normalised is not None else None, 0),
                    "weight": fmt.percent(c["applied_weight"] if c["dropped"] is None else c["weight"]),
                    "dropped": c["dropped"],
                }
            )
        row["cells"] = cells


@router.get("/dashboard/leaderboard", response_class=HTMLResponse)
def leaderboard_page(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    viewer: ViewerDep,
    scorecard: Annotated[str | None, Query(max_length=63)] = None,
    grain: Annotated[str | None, Query(max_length=10)] = None,
    period: Annotated[str | None, Query(max_length=20)] = None,
    team: Annotated[str | None, Query(max_length=600)] = None,
) -> Response:
    # The content depends only on the scores (their version), the reps' and teams' names, the
    # filter and how numbers are read: rendered once per version of these, then served from the
    # API's response cache.
    live = ctx.results_version(session)
    service = ctx.kpi_service()
    cards = service.section.scorecards
    card_id = scorecard or (cards[0].id if cards else None)
    version = ctx.scores_version(session, card_id).token if card_id else None
    fmt = viewer.fmt
    names = org_repo.scope_names(session)
    named = hash(frozenset(names.items()))
    key = ("dashboard-leaderboard", card_id, grain, period, team, fmt.language, fmt.wan, version, named)
    cached = ctx.responses.get(key) if version is not None else None
    if cached is None:
        board = views.leaderboard(session, service, scorecard, grain, period, team or None, names)
        _format_leaderboard(board, viewer, service.kpis)
        html = templates.get_template("leaderboard_body.html").render(
            **_context(request, viewer), board=board, kpis=service.kpis
        )
        cached = Rendered(html.encode(), "text/html", {})
        if version is not None:
            ctx.responses.put(key, cached)
    body = Markup(cached.body.decode())
    return render(request, "leaderboard.html", viewer, live=live, page="leaderboard", body=body)


@router.get("/dashboard/rep", response_class=HTMLResponse)
def rep_page(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    viewer: ViewerDep,
    owner: Annotated[str, Query(max_length=600)],
    grain: Annotated[Literal["week", "month", "quarter", "year"], Query()] = "month",
) -> Response:
    live = ctx.results_version(session)
    shown = views.rep(session, ctx.kpi_service(), owner, grain, utc_now())
    return render(
        request,
        "rep.html",
        viewer,
        live=live,
        page="leaderboard",
        rep=shown,
        kpis=ctx.kpi_service().kpis,
        pay=views.owner_statements(session, ctx.incentives(session), owner),
    )


# --- incentives ----------------------------------------------------------------------------------


@router.get("/dashboard/incentives", response_class=HTMLResponse)
def incentives_page(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    viewer: ViewerDep,
    plan: Annotated[str | None, Query(max_length=63)] = None,
    period: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    live = ctx.results_version(session)
    shown = views.incentives(session, ctx.incentives(session), plan or None, period or None, utc_now())
    return render(request, "incentives.html", viewer, live=live, page="incentives", view=shown)


@router.get("/dashboard/incentives/statement", response_class=HTMLResponse)
def incentive_statement_page(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    viewer: ViewerDep,
    plan: Annotated[str, Query(max_length=63)],
    owner: Annotated[str, Query(max_length=600)],
    period: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    shown = views.incentive_statement(session, ctx.incentives(session), plan, owner, period, utc_now())
    return render(request, "incentive_statement.html", viewer, page="incentives", view=shown)


@router.get("/dashboard/incentives/explain", response_class=HTMLResponse)
def incentive_explain_page(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    viewer: ViewerDep,
    plan: Annotated[str, Query(max_length=63)],
    owner: Annotated[str, Query(max_length=600)],
    period: Annotated[str, Query(max_length=20)],
    component: Annotated[str, Query(max_length=63)],
) -> Response:
    shown = views.incentive_line(session, ctx.incentives(session), plan, owner, period, component)
    links = ctx.record_links()
    for record in shown.records:
        record["crm_url"] = (
            links(record["connection_id"], shown.entity, record["external_id"]) if links else None
        )
    return render(request, "incentive_explain.html", viewer, page="incentives", view=shown)


#: The columns the explanation table reads, of deals, leads, activities, accounts and measure entries.
_EXPLAINED_COLUMNS = (
    "name", "stage", "amount", "currency", "created_at", "closed_at", "close_date", "status", "type",
    "subtype", "occurred_at",
)  # fmt: skip


@router.get("/dashboard/explain/{kpi_id}", response_class=HTMLResponse)
def explain_page(
    request: Request,
    kpi_id: Annotated[str, Path(max_length=63)],
    session: SessionDep,
    ctx: ContextDep,
    viewer: ViewerDep,
    grain: Annotated[GrainParam, Query()] = "all",
    period: Annotated[str, Query(max_length=20)] = "all",
    scope: Annotated[ScopeParam, Query()] = "company",
    scope_id: Annotated[str, Query(max_length=600)] = "company",
    currency: Annotated[str, Query(max_length=3)] = "",
    dimension: Annotated[str, Query(max_length=63)] = "",
    dimension_value: Annotated[str, Query(max_length=255)] = "",
    part: Annotated[Literal["numerator", "denominator", "measure"] | None, Query()] = None,
    after: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
) -> Response:
    service = ctx.kpi_service()
    kpi = service.kpi(kpi_id)
    key = period_key(period, grain, service.business.fiscal_year_start_month) or "all"
    check_dimension(service, kpi, dimension)
    if (scope == "company") != (scope_id == "company"):
        raise InvalidInput("scope_id names the team or owner; it is `company` exactly for scope company")
    ref = ValueRef(kpi_id, grain, key, scope, scope_id, currency, dimension, dimension_value)
    result = views.explanation(session, service, kpi_id, ref, part, after, EXPLAIN_PAGE)
    names = org_repo.scope_names(session)
    links = ctx.record_links()
    for explained in result.parts:
        for record in explained.records:
            record["crm_url"] = (
                links(record["connection_id"], explained.entity, record["external_id"]) if links else None
            )
            owner = record.get("owner_external_id")
            record["owner_name"] = names.get(("owner", f"{record['connection_id']}:{owner}"), owner)
            # Every kind of record shows in one table: what a kind lacks is blank, not an error.
            for column in _EXPLAINED_COLUMNS:
                record.setdefault(column, None)
            if record["name"] is None:
                record["name"] = record.get("subject") or record.get("account_external_id")
    more = {
        p.role: str(request.url.include_query_params(part=p.role, after=p.next_after))
        for p in result.parts
        if p.next_after is not None
    }
    return render(
        request,
        "explain.html",
        viewer,
        page="overview",
        kpi=kpi,
        kpis=service.kpis,
        ref=ref,
        result=result,
        scope_name=names.get((scope, scope_id), scope_id),
        more=more,
        part=part,
        whole=str(request.url.remove_query_params(["part", "after"])),
    )


def _targets_response(
    request: Request,
    session: Any,
    ctx: Any,
    viewer: Viewer,
    kpi: str | None,
    year: str | None,
    *,
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    shown = views.targets(session, ctx.kpi_service(), kpi, year)
    return render(
        request,
        "targets.html",
        viewer,
        status_code,
        page="targets",
        view=shown,
        all_kpis=sorted(ctx.kpi_service().kpis.values(), key=lambda k: k.id),
        notice=notice,
        error=error,
    )


@router.get("/dashboard/targets", response_class=HTMLResponse)
def targets_page(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    viewer: ViewerDep,
    kpi: Annotated[str | None, Query(max_length=63)] = None,
    year: Annotated[str | None, Query(max_length=10)] = None,
    done: Annotated[Literal["saved", "removed"] | None, Query()] = None,
) -> Response:
    notice = None if done is None else viewer.fmt.t(f"targets.{done}")
    return _targets_response(request, session, ctx, viewer, kpi, year, notice=notice)


def _target_definition(fields: dict[str, str]) -> dict[str, Any]:
    """A target form as the targets API's body (:class:`TargetIn`), validated the same way."""
    try:
        value = float(fields.get("value", "").replace(",", "").strip())
    except ValueError:
        raise InvalidInput(f"value: {fields.get('value', '')!r} is not a number") from None
    body = {
        "kpi": fields.get("kpi", ""),
        "scope": fields.get("scope", "company"),
        "scope_id": fields.get("scope_id") or "company",
        "grain": fields.get("grain", "year"),
        "period": fields.get("period", ""),
        "value": value,
        "currency": fields.get("currency", "").strip().upper(),
        "split_to_reps": fields.get("split_to_reps") == "on",
    }
    if body["scope"] == "company":
        body["scope_id"] = "company"
    try:
        return TargetIn.model_validate(body).model_dump(mode="json")
    except ValidationError as exc:
        raise InvalidInput(
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
        ) from None


@router.post("/dashboard/targets", response_class=HTMLResponse)
async def set_target(request: Request, session: SessionDep, ctx: ContextDep, viewer: ViewerDep) -> Response:
    fields = await form(request)
    check_csrf(request, viewer, fields)
    viewer.principal.require("admin")
    try:
        definition = _target_definition(fields)
        target_id = fields.get("id")
        if target_id:
            if not target_id.isdigit():
                raise InvalidInput(f"id: {target_id!r} is not a target id")
            await run_in_threadpool(
                targets_service.update, session, ctx.kpi_service().kpis, int(target_id), definition
            )
        else:
            await run_in_threadpool(targets_service.create, session, ctx.kpi_service().kpis, definition)
    except InvalidInput as exc:
        return await run_in_threadpool(
            _targets_response,
            request,
            session,
            ctx,
            viewer,
            fields.get("kpi"),
            None,
            error=str(exc),
            status_code=422,
        )
    query = urlencode({"kpi": definition["kpi"], "done": "saved"})
    return RedirectResponse(f"/dashboard/targets?{query}", status_code=303)


@router.post("/dashboard/targets/{target_id}/delete")
async def remove_target(
    request: Request,
    target_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    session: SessionDep,
    viewer: ViewerDep,
) -> Response:
    fields = await form(request)
    check_csrf(request, viewer, fields)
    viewer.principal.require("admin")
    await run_in_threadpool(targets_service.remove, session, target_id)
    return RedirectResponse("/dashboard/targets?done=removed", status_code=303)
