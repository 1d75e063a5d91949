"""Live pages: a page of numbers follows the refreshes while it is open, without a reload.

A page that shows values carries the version of the results it was rendered from
(``<body data-live="...">``: when a KPI value last changed, :func:`ApiContext.results_version`).
``static/dashboard.js`` opens ``GET /dashboard/updates?since=<that version>``, a stream of
server-sent events: ``refreshed`` is sent whenever the version is no longer the one the page
has, at once when it changed before the stream opened. The page then fetches itself again and
swaps its ``<main>`` in place, so a deal won in the CRM and pushed reaches an open dashboard as
soon as it reaches the API.

Every stream reads the version from the replica's version cache (one read of the store per
:data:`~crm_perf_sync.api.cache.VERSION_SECONDS` however many pages are open) and ends after
:data:`STREAM_SECONDS`; the browser opens the next at once, so that a session signed out or
expired meanwhile stops it, and a server shutting down never waits long for an open page.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from crm_perf_sync.api.dashboard.auth import ViewerDep
from crm_perf_sync.api.deps import ApiContext, ContextDep
from crm_perf_sync.kit.db import session_scope

router = APIRouter(include_in_schema=False)

#: How often a stream looks at the version (a cached read, see the module's docstring).
CHECK_SECONDS = 0.25
#: How long one stream lasts before the browser opens the next.
STREAM_SECONDS = 20.0
#: A comment line this often keeps proxies from closing a quiet stream.
KEEPALIVE_SECONDS = 10.0
#: How long the browser waits before it opens the next stream (EventSource's ``retry``).
RETRY_MILLISECONDS = 1000


async def current_version(ctx: ApiContext) -> str:
    """The results' version, from the cache when it is fresh (no thread, no read)."""
    cached = ctx.versions.peek(("results",))
    if cached is not None:
        return cached.isoformat()

    def read() -> str:
        with session_scope(ctx.session_factory) as session:
            return ctx.results_version(session)

    return await run_in_threadpool(read)


def event(name: str, data: dict[str, str]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def _stream(request: Request, ctx: ApiContext, since: str) -> AsyncIterator[bytes]:
    yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
    known = since
    started = quiet_since = time.monotonic()
    while time.monotonic() - started < STREAM_SECONDS:
        version = await current_version(ctx)
        if version != known:
            known = version
            quiet_since = time.monotonic()
            yield event("refreshed", {"version": version})
        elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield b": still here\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(CHECK_SECONDS)


@router.get("/dashboard/updates")
async def updates(
    request: Request,
    ctx: ContextDep,
    _viewer: ViewerDep,
    since: Annotated[str, Query(max_length=64)] = "",
) -> StreamingResponse:
    """Server-sent events: ``refreshed`` (``{"version": ...}``) when the results change."""
    return StreamingResponse(
        _stream(request, ctx, since),
        media_type="text/event-stream",
        # No buffering by a proxy in between (nginx honours this header).
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
