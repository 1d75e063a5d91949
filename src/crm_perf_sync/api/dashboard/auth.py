"""Who is looking: the session cookie, the language, and the CSRF check of every write.

A browser signs in with an API key and gets a session cookie (``HttpOnly``, ``SameSite=Strict``,
``Secure`` when the request came over https, ``Path=/``); the store keeps the session
(:mod:`crm_perf_sync.apikeys.sessions`). A page that needs a session and has none redirects to
the sign-in page; a write (every ``POST``) must carry the session's CSRF token in the form and, when
the browser sends one, an ``Origin`` of this server.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qsl, quote

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from crm_perf_sync.api.dashboard.i18n import LANGUAGES, Formatter, Language, negotiate
from crm_perf_sync.api.deps import ApiContext, context
from crm_perf_sync.apikeys.service import Forbidden, Principal, Unauthenticated
from crm_perf_sync.apikeys.sessions import Signed, signed
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.errors import AppError, InvalidInput
from crm_perf_sync.kit.timeutil import utc_now

SESSION_COOKIE = "crm_perf_sync_session"
LANGUAGE_COOKIE = "crm_perf_sync_lang"
WAN_COOKIE = "crm_perf_sync_wan"
#: The largest form the dashboard accepts (a target, a sign-in): far below the API's body limit.
MAX_FORM_BYTES = 16 * 1024


class SignInRequired(AppError):
    """No session, or one that ended: the page redirects to the sign-in form."""

    status = 401
    code = "sign-in-required"

    def __init__(self, detail: str, next_path: str) -> None:
        super().__init__(detail)
        self.next_path = next_path


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in person's key, the session's CSRF token and how they read numbers."""

    principal: Principal
    csrf_token: str
    fmt: Formatter

    @property
    def is_admin(self) -> bool:
        return self.principal.scope == "admin"


def language_of(request: Request) -> Language:
    chosen = request.cookies.get(LANGUAGE_COOKIE)
    if chosen in LANGUAGES:
        return "zh" if chosen == "zh" else "en"
    return negotiate(request.headers.get("accept-language"))


def formatter(request: Request, ctx: ApiContext) -> Formatter:
    fiscal = ctx.kpi_service().business.fiscal_year_start_month if ctx.config else 1
    wan = request.cookies.get(WAN_COOKIE) == "1"
    return Formatter(language_of(request), wan=wan, fiscal_start_month=fiscal)


def local_path(target: str | None, default: str = "/dashboard") -> str:
    """A redirect target that stays on this server: a path, never ``//host`` or a URL."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def sign_in_url(next_path: str) -> str:
    return "/dashboard/sign-in?next=" + quote(local_path(next_path), safe="/")


async def viewer(request: Request, ctx: Annotated[ApiContext, Depends(context)]) -> Viewer:
    """The signed-in viewer, checked against the store at most once a second per session."""
    token = request.cookies.get(SESSION_COOKIE)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not token:
        raise SignInRequired("sign in to see the dashboard", here)
    current = ctx.sessions.peek(token)
    if current is None:

        def check() -> Signed:
            with session_scope(ctx.session_factory) as session:
                return signed(session, token, utc_now())

        try:
            current = await run_in_threadpool(check)
        except Unauthenticated as exc:
            raise SignInRequired(str(exc), here) from None
        ctx.sessions.put(token, current)
    return Viewer(current.principal, current.csrf_token, formatter(request, ctx))


ViewerDep = Annotated[Viewer, Depends(viewer)]


async def form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (a field given twice is refused)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise InvalidInput("the dashboard's forms are sent as application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidInput(f"the form is larger than {MAX_FORM_BYTES:,} bytes")
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        if name in fields and fields[name] != value:
            raise InvalidInput(f"{name}: given twice with different values")
        fields[name] = value
    return fields


def same_origin(request: Request) -> bool:
    """Whether the request's ``Origin`` (if the browser sent one) is this server."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin == f"{request.url.scheme}://{request.url.netloc}"


def check_csrf(request: Request, viewer: Viewer, fields: dict[str, str]) -> None:
    """A write must come from a page of this session: its token, from this origin."""
    given = fields.get("csrf_token", "")
    if not same_origin(request) or not hmac.compare_digest(given.encode(), viewer.csrf_token.encode()):
        raise Forbidden("the form did not come from this dashboard session (CSRF check): reload the page")
