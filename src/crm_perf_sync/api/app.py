"""The FastAPI application factory: nothing connects, reads settings or starts at import.

``/api/v1`` serves the resources (bearer API keys); ``/healthz``, ``/readyz`` and ``/metrics``
need no key; OpenAPI is at ``/openapi.json`` and the docs at ``/docs``. Every error is problem+json
(:mod:`crm_perf_sync.api.problems`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import unquote_plus

from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crm_perf_sync import __version__
from crm_perf_sync.api import dashboard, problems
from crm_perf_sync.api.deps import ApiContext
from crm_perf_sync.api.metrics import ApiMetrics
from crm_perf_sync.api.routes import (
    alerts,
    crm,
    incentives,
    ingest,
    kpis,
    measures,
    scorecards,
    sync,
    targets,
    webhooks,
)
from crm_perf_sync.api.server import Refusal, headers_refusal, url_refusal
from crm_perf_sync.config import LoadedConfig
from crm_perf_sync.kit import migrate
from crm_perf_sync.kit.db import check_database, make_session_factory
from crm_perf_sync.kit.errors import DatabaseUnavailable
from crm_perf_sync.kit.logs import log_context
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.webhooks.security import Guard

API_PREFIX = "/api/v1"
#: The largest request body accepted (targets and sync requests are small).
MAX_BODY_BYTES = 64 * 1024
#: The largest push a CRM may send to ``/ingest/`` (HubSpot batches up to 100 events; 简道云
#: sends a whole record).
INGEST_MAX_BODY_BYTES = 1024 * 1024
INGEST_PATH = f"{API_PREFIX}/ingest/"
#: Swagger UI, vendored (see its README): the docs load nothing from another host.
SWAGGER_UI = Path(__file__).parent / "static" / "swagger-ui"
DOCS_ASSETS = "/docs/assets"

DESCRIPTION = """\
Sales performance KPIs computed from your CRM: values per period, team and rep with targets,
attainment and pace; scorecards; incentive payouts and statements; the records behind every number.

**Auth**: `Authorization: Bearer <key>`, a key from
`crm-perf-sync apikey create --scope read|editor|admin`. `read` reads everything; `editor` also
enters measures (survey scores, review ratings, training hours); `admin` also sets targets, queues
syncs, manages webhooks and closes incentive periods.

**Collections** answer `{"data": [...], "next": url|null}` or, with `?format=csv` or
`Accept: text/csv`, CSV (header row, ISO dates, dot decimals, UTF-8). Follow `next` (also in the
`Link` header) for the next page; `limit` is at most 1000. A CSV request without `limit` streams
the whole collection. KPI values, scorecards and incentive payouts carry an `ETag`: send it back
as `If-None-Match` and a 304 says nothing was recomputed. Amounts are JSON numbers in their
currency (incentive amounts whole cents).

**Errors** are RFC 9457 `application/problem+json`.
"""


class ServiceMiddleware:
    """Request ids, the size limits and request metrics, as one plain ASGI layer (no
    per-request task or body copy, which the API's latency targets leave no room for).

    The URL and header limits are the HTTP server's (:mod:`crm_perf_sync.api.server`, which
    enforces them while it parses); they are checked here too for any other server.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_headers = scope.get("headers") or []
        headers = dict(raw_headers)
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if 0 < len(given) <= 200 else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        refusal = url_refusal(
            len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
        ) or headers_refusal(sum(len(n) + len(v) for n, v in raw_headers), len(raw_headers))
        if refusal is not None:
            await self._refuse(scope, send, request_id, refusal)
            self._observe(scope, refusal.status, started)
            return
        if b"%00" in scope.get("query_string", b"") or "\x00" in scope["path"]:
            response = problems.problem(
                400,
                "the URL contains a NUL character (%00), which no path or parameter accepts",
                "invalid-input",
                request_id=request_id,
                headers={"X-Request-ID": request_id},
            )
            await response(scope, _nothing, send)
            self._observe(scope, 400, started)
            return
        repeated = _repeated_parameter(scope.get("query_string", b""))
        if repeated is not None:
            where = f"query.{repeated}"
            response = problems.problem(
                422,
                f"{where}: given twice with different values; give each parameter once",
                "invalid-input",
                instance=scope["path"],
                request_id=request_id,
                errors=[{"where": where, "message": "given twice with different values", "type": "repeated"}],
                headers={"X-Request-ID": request_id},
            )
            await response(scope, _nothing, send)
            self._observe(scope, 422, started)
            return
        too_large = PUSH_TOO_LARGE if scope["path"].startswith(INGEST_PATH) else BODY_TOO_LARGE
        limit = INGEST_MAX_BODY_BYTES if too_large is PUSH_TOO_LARGE else MAX_BODY_BYTES
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._refuse(scope, send, request_id, too_large)
            self._observe(scope, 413, started)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTP exception, so that FastAPI passes it on from reading a body
                    # (it turns any other error there into a 400) to the problem handler.
                    raise BodyTooLarge(413, too_large.detail)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            with log_context(request_id=request_id):
                await self.app(scope, limited_receive, send_with_id)
        except BodyTooLarge:  # read outside a route (a route's own is a problem already)
            await self._refuse(scope, send, request_id, too_large)
            status = 413
        finally:
            self._observe(scope, status, started)

    async def _refuse(self, scope: Scope, send: Send, request_id: str, refusal: Refusal) -> None:
        response = problems.problem(
            refusal.status,
            refusal.detail,
            refusal.code,
            instance=scope["path"] if refusal.status != 414 else None,
            request_id=request_id,
            headers={"X-Request-ID": request_id},
        )
        await response(scope, _nothing, send)

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None)
        if template is None:
            template = "unmatched"
        elif scope["path"].startswith(API_PREFIX) and not template.startswith(API_PREFIX):
            template = API_PREFIX + template  # a route of an included router knows its own path only
        self.metrics.observe(scope["method"], template, status, time.perf_counter() - started)


BODY_TOO_LARGE = Refusal(413, "body-too-large", f"the request body is larger than {MAX_BODY_BYTES:,} bytes")
PUSH_TOO_LARGE = Refusal(
    413, "body-too-large", f"the pushed request body is larger than {INGEST_MAX_BODY_BYTES:,} bytes"
)


def _repeated_parameter(query: bytes) -> str | None:
    """A query parameter given twice with different values. No parameter of this API is a list,
    and the framework would keep the last value and silently drop the others."""
    if b"&" not in query:
        return None
    seen: dict[str, bytes] = {}
    for part in query.split(b"&"):
        raw_name, _, value = part.partition(b"=")
        name = unquote_plus(raw_name.decode("latin-1"))
        if name and seen.setdefault(name, value) != value:
            return name
    return None


class BodyTooLarge(StarletteHTTPException):
    """A request body read past the size limit: answered 413 as problem+json."""


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def create_app(
    engine: Engine,
    config: LoadedConfig | None = None,
    webhook_guard: Guard | None = None,
    registry: ConnectorRegistry | None = None,
) -> FastAPI:
    """The API over ``engine`` (and the KPI configuration). The caller owns the engine.

    ``webhook_guard`` decides which webhook URLs may be registered (default: public https only);
    ``registry`` holds the connectors that link records back to their CRM (default: discovered
    when first needed).
    """
    session_factory = make_session_factory(engine)
    metrics = ApiMetrics(session_factory)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield

    app = FastAPI(
        title="crm-perf-sync",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served below, from the package's own copy of Swagger UI
        openapi_url="/openapi.json",
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.context = ApiContext(
        engine, session_factory, config, webhook_guard or Guard(), registry=registry
    )
    problems.install(app)
    for module in (kpis, targets, measures, scorecards, incentives, crm, sync, webhooks, alerts, ingest):
        app.include_router(module.router, prefix=API_PREFIX)

    app.mount(DOCS_ASSETS, StaticFiles(directory=SWAGGER_UI), name="docs-assets")
    dashboard.install(app)

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon-32x32.png",
            # No badge fetched from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/healthz", tags=["health"], summary="Liveness: the process serves requests")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Readiness: the database answers and its schema is at the current migration",
        responses=problems.documented(503),
    )
    def readyz() -> dict[str, str]:
        check_database(engine)
        current, head = migrate.current_revision(engine), migrate.head_revision()
        if current != head:
            raise DatabaseUnavailable(
                f"database schema is at {current or 'nothing'}, expected {head}: run migrate"
            )
        return {"status": "ready", "schema": head or ""}

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics (text exposition format)",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    )
    def prometheus_metrics(_request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(ServiceMiddleware, metrics=metrics)
    return app
