"""Every API error as an RFC 9457 problem document (``application/problem+json``).

Services raise the application's error family (:mod:`crm_perf_sync.kit.errors`); this module is the
one place that turns those, request validation failures and routing errors into HTTP. A bug is a
500 problem that names the request id and is logged with its traceback; the client never sees it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from crm_perf_sync.kit.errors import AppError, InvalidRows

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://crm-perf-sync.dev/problems/"
log = logging.getLogger(__name__)

_TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Request body too large",
    414: "URL too long",
    415: "Unsupported media type",
    422: "Invalid input",
    431: "Request headers too large",
    503: "Service unavailable",
}


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(description="A URI naming the kind of problem.")
    title: str
    status: int
    detail: str = Field(description="What went wrong, in one or a few sentences.")
    instance: str | None = Field(default=None, description="The request path.")
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Each invalid parameter or field: where, and why."
    )


def problem(
    status: int,
    detail: str,
    code: str,
    *,
    title: str | None = None,
    request: Request | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json response."""
    if request is not None:
        request_id = getattr(request.state, "request_id", None)
        extra = {"instance": request.url.path, "request_id": request_id, **extra}
    body = problem_body(status, detail, code, title=title, **extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers or {}))


def problem_body(
    status: int, detail: str, code: str, *, title: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The document itself (also written by the HTTP server, for requests it refuses unparsed)."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    body.update({k: v for k, v in extra.items() if v is not None and v != ""})
    return body


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for problems with these statuses, and 400, which any request
    can get (a NUL character in its URL, a body that is not text)."""
    return {
        status: {"model": Problem, "description": _TITLES.get(status, "Error"), "content": {PROBLEM_JSON: {}}}
        for status in sorted({400, *statuses})
    }


def collection(*statuses: int, cached: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a collection endpoint: CSV as well as JSON, its problems, 304."""
    out: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {}}}}
    if cached:
        out[304] = {"description": "Not modified"}
    out.update(documented(*statuses))
    return out


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """The methods some route serves at the request's path."""
    return [
        method
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in app.router.routes
        )
    ]


def install(app: FastAPI) -> None:
    """Register the handlers that render every error as a problem."""

    @app.exception_handler(AppError)
    def _app_error(request: Request, exc: AppError) -> JSONResponse:
        challenge = exc.challenge if exc.status == 401 else None
        headers = {"WWW-Authenticate": challenge} if challenge else None
        errors = exc.errors if isinstance(exc, InvalidRows) else None
        return problem(exc.status, str(exc), exc.code, request=request, headers=headers, errors=errors)

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "where": _where(tuple(e.get("loc", ()))),
                "message": str(e.get("msg", "")),
                "type": e.get("type"),
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['where']}: {e['message']}" for e in errors) or "invalid request"
        return problem(422, detail, "invalid-input", request=request, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "error")
        code = {404: "not-found", 405: "method-not-allowed", 413: "body-too-large"}.get(
            exc.status_code, "http-error"
        )
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path only; a path served by
            # several routes (GET and POST /targets) allows all of theirs.
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(app, request))}
        return problem(exc.status_code, detail, code, request=request, headers=headers)

    @app.exception_handler(Exception)
    def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem(
            500,
            "an internal error occurred; it was logged with this request's id",
            "internal",
            title="Internal error",
            request=request,
        )
