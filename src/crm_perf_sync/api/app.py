"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from crm_perf_sync import __version__, migrate
from crm_perf_sync.db import check_database
from crm_perf_sync.errors import AppError, DatabaseUnavailable

PROBLEM_JSON = "application/problem+json"


def problem(status: int, title: str, detail: str, code: str, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem document."""
    body = {
        "type": f"https://crm-perf-sync.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def create_app(engine: Engine) -> FastAPI:
    """The API over ``engine``. The caller owns the engine's lifetime."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield

    app = FastAPI(title="crm-perf-sync", version=__version__, lifespan=lifespan)

    @app.exception_handler(AppError)
    def _app_error(_request: Request, exc: AppError) -> JSONResponse:
        return problem(exc.status, type(exc).__name__, str(exc), exc.code)

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process serves requests")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Readiness: the database answers and its schema is at the current migration",
        responses={503: {"description": "not ready", "content": {PROBLEM_JSON: {}}}},
    )
    def readyz() -> dict[str, str]:
        check_database(engine)
        current, head = migrate.current_revision(engine), migrate.head_revision()
        if current != head:
            raise DatabaseUnavailable(
                f"database schema is at {current or 'nothing'}, expected {head}: run migrate"
            )
        return {"status": "ready", "schema": head or ""}

    return app
