"""Changes the CRMs push: verified by the connection's connector, put in the inbox, acknowledged.

No API key: the CRM proves itself with a signature over the request, which the connection's
connector checks with the connection's secret (see :mod:`crm_perf_sync.connector_sdk.push`). A
request it refuses is answered 401 before the store is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool

from crm_perf_sync.api.deps import ApiContext, ContextDep
from crm_perf_sync.api.listing import json_response
from crm_perf_sync.api.problems import documented
from crm_perf_sync.api.schemas import IngestOut
from crm_perf_sync.config import ConnectionConfig
from crm_perf_sync.connector_sdk import PushedChange, PushRequest
from crm_perf_sync.ingest import repository as repo
from crm_perf_sync.ingest.service import PushUnverified, Receipt, verified
from crm_perf_sync.kit.db import WRITE_LOCK, session_scope
from crm_perf_sync.kit.doorbell import INBOX
from crm_perf_sync.kit.errors import Conflict, NotFound
from crm_perf_sync.kit.metrics import INGEST_CHANGES, INGEST_PUSHES
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.sync import repository as sync_repo

router = APIRouter(tags=["ingest"])


@router.post(
    "/ingest/{connection_id}",
    summary="Take the changes a CRM pushes (HubSpot app webhooks, 简道云 数据推送, ...), proven by the CRM",
    description=(
        "The address to register in the CRM's webhook settings for a connection whose connector "
        "takes pushes (HubSpot, 简道云, Zoho CRM, Pipedrive: see the README). No API key: the "
        "request must carry the CRM's proof (a signature made with the connection's secret, or "
        "the secret itself where the CRM only echoes it or signs in with it) and, where the CRM "
        "dates it, be recent (a replay is refused); a "
        "request that is not is answered 401 and nothing of it is stored. The changes it announces "
        "are stored in the connection's inbox before the answer; a change the CRM delivers again "
        "is counted as a duplicate, not stored twice. A worker then fetches the records from the CRM "
        "by id and refreshes the numbers they touch (the scheduled sync still reads every change)."
    ),
    response_model=IngestOut,
    responses=documented(401, 404, 409, 413, 422),
)
async def ingest(
    connection_id: Annotated[str, Path(max_length=63)], request: Request, ctx: ContextDep
) -> Response:
    body = await request.body()
    headers = {name.lower(): value for name, value in request.headers.items()}
    push = PushRequest(request.method, str(request.url), headers, body, utc_now())
    pushed = await run_in_threadpool(_verify, ctx, connection_id, push)
    writer = ctx.push_writer(partial(_store, ctx))
    if writer is None:
        (receipt,) = await run_in_threadpool(_store, ctx, [pushed])
    else:
        receipt = await writer.submit(pushed)
    out = IngestOut(
        connection=receipt.connection_id,
        changes=receipt.changes,
        accepted=receipt.accepted,
        duplicates=receipt.duplicates,
    )
    return json_response(out.model_dump(mode="json"))


@dataclass(frozen=True, slots=True)
class _Pushed:
    """A verified push: its connection, the changes it announces, when it arrived."""

    connection: ConnectionConfig
    changes: Sequence[PushedChange]
    received_at: datetime


def _verify(ctx: ApiContext, connection_id: str, push: PushRequest) -> _Pushed:
    """The changes of a push to ``connection_id``, verified by the connection's connector."""
    connection = None if ctx.config is None else ctx.config.app.connection(connection_id)
    if connection is None:
        raise NotFound(f"no connection {connection_id!r} (see /api/v1/connections)")
    if not connection.enabled:
        # Nothing would fetch the changes: the CRM is told, rather than left to believe them taken.
        raise Conflict(f"connection {connection_id!r} is disabled in the configuration: no push is taken")
    try:
        changes = verified(connection_id, ctx.push_connector(connection_id), push)
    except PushUnverified:
        INGEST_PUSHES.labels(connection_id, "refused").inc()
        raise
    return _Pushed(connection, changes, push.received_at)


def _store(ctx: ApiContext, pushes: Sequence[_Pushed]) -> list[Receipt]:
    """The pushes' changes in their connections' inboxes (those not there yet), in one
    transaction; the workers rung when any was new. One receipt per push, in order."""
    receipts: list[Receipt] = []
    with INBOX.storing(), session_scope(ctx.session_factory) as session:
        # SQLite: the write lock first, so a sync committing meanwhile makes this wait, not fail.
        session.connection(execution_options={WRITE_LOCK: True})
        for pushed in pushes:
            connection_id = pushed.connection.id
            if sync_repo.connection(session, connection_id) is None:
                sync_repo.sync_connections(session, [pushed.connection], pushed.received_at)
            accepted = repo.accept(session, connection_id, pushed.changes, pushed.received_at)
            receipts.append(Receipt(connection_id, len(pushed.changes), accepted))
        if any(receipt.accepted for receipt in receipts):
            INBOX.notify(session)
    if any(receipt.accepted for receipt in receipts):
        INBOX.wake()
    for receipt in receipts:
        INGEST_PUSHES.labels(receipt.connection_id, "accepted").inc()
        INGEST_CHANGES.labels(receipt.connection_id, "new").inc(receipt.accepted)
        INGEST_CHANGES.labels(receipt.connection_id, "duplicate").inc(receipt.changes - receipt.accepted)
    return receipts
