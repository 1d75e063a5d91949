"""The built-in dashboard: server-rendered pages for sales managers and reps, in English and
Chinese, over the same store, repositories and caches as the REST API.

:func:`install` adds its routes and static files to the API application; errors on its pages
are HTML pages (the API's stay problem+json), and a page without a session redirects to sign-in.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from crm_perf_sync.api.dashboard import analysis, live, monitor
from crm_perf_sync.api.dashboard.auth import SignInRequired, sign_in_url
from crm_perf_sync.api.dashboard.pages import STATIC, render, router
from crm_perf_sync.kit.errors import AppError

PREFIX = "/dashboard"


def _on_dashboard(request: Request) -> bool:
    return request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/")


def install(app: FastAPI) -> None:
    """Serve the dashboard from ``app`` (after :func:`crm_perf_sync.api.problems.install`)."""
    app.include_router(router)
    app.include_router(analysis.router)
    app.include_router(monitor.router)
    app.include_router(live.router)
    app.mount(PREFIX + "/static", StaticFiles(directory=STATIC), name="dashboard-static")
    api_error = app.exception_handlers[AppError]
    api_invalid = app.exception_handlers[RequestValidationError]

    async def signed_out(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return RedirectResponse(sign_in_url(exc.next_path), status_code=303)

    async def app_error(request: Request, exc: Exception) -> Any:
        if not _on_dashboard(request):
            return api_error(request, exc)
        assert isinstance(exc, AppError)
        return render(request, "error.html", None, exc.status, detail=str(exc), status=exc.status)

    async def invalid(request: Request, exc: Exception) -> Any:
        if not _on_dashboard(request):
            return api_invalid(request, exc)
        assert isinstance(exc, RequestValidationError)
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg', '')}" for e in exc.errors()
        )
        return render(request, "error.html", None, 422, detail=detail, status=422)

    app.add_exception_handler(SignInRequired, signed_out)
    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(RequestValidationError, invalid)
