"""Connections and their sync runs; asking for a sync now."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Response

from crm_perf_sync.api import listing
from crm_perf_sync.api.deps import Admin, ListerDep, Reader, RowId, SessionDep
from crm_perf_sync.api.listing import json_response
from crm_perf_sync.api.problems import collection, documented
from crm_perf_sync.api.schemas import ConnectionOut, Page, SyncRequestIn, SyncRunOut
from crm_perf_sync.ingest import repository as ingest_repo
from crm_perf_sync.ingest.repository import InboxState
from crm_perf_sync.kit.errors import Conflict, NotFound
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.sync import repository as sync_repo

router = APIRouter(tags=["operations"])
RunStatus = Literal["queued", "running", "succeeded", "failed", "deferred", "interrupted", "abandoned"]


def run_row(run: dict[str, Any]) -> dict[str, Any]:
    return {**run, "url": f"/api/v1/sync-runs/{run['id']}"}


@router.get(
    "/connections",
    summary="The configured CRM connections, each with its last run and last successful sync",
    response_model=Page[ConnectionOut],
    responses=collection(400, 401, 422),
)
def connections(
    session: SessionDep,
    _key: Reader,
    page: ListerDep,
) -> Response:
    inboxes = ingest_repo.states(session)
    rows = []
    for row in sync_repo.connections(session):
        inbox = inboxes.get(row["id"], InboxState())
        rows.append(
            {
                **row,
                "push_last_received_at": inbox.last_received_at,
                "push_waiting": inbox.waiting,
                "push_parked": inbox.parked,
            }
        )
    return page("connections", ConnectionOut, fetch=listing.in_memory(rows, "id"))


@router.post(
    "/connections/{connection_id}/sync",
    status_code=202,
    summary="Queue a sync of a connection now (admin)",
    description=(
        "A worker picks the run up within seconds (one sync per connection at a time, across "
        "replicas). The response and its Location name the run: poll it for the outcome. A sync "
        "already queued for the connection is returned instead of queuing a second one (and "
        "confirmed, when `allow_mass_delete` is asked for). A run that would delete more of a "
        "stream than the mass-deletion limit fails and deletes nothing unless confirmed."
    ),
    response_model=SyncRunOut,
    responses=documented(401, 403, 404, 409, 413, 422),
)
def request_sync(
    connection_id: Annotated[str, Path(max_length=63)],
    session: SessionDep,
    _key: Admin,
    body: Annotated[SyncRequestIn | None, Body()] = None,
) -> Response:
    found = sync_repo.connection(session, connection_id)
    if found is None:
        raise NotFound(f"no connection {connection_id!r} (see /connections)")
    if not found.enabled:
        raise Conflict(f"connection {connection_id!r} is disabled in the configuration")
    request = body or SyncRequestIn()
    run_id = sync_repo.queued_run(session, connection_id)
    if run_id is None:
        run_id = sync_repo.queue_run(
            session, connection_id, request.full_refresh, utc_now(), request.allow_mass_delete
        )
    elif request.allow_mass_delete:
        sync_repo.confirm_mass_delete(session, run_id)
    run = sync_repo.sync_run(session, run_id)
    assert run is not None
    return json_response(run_row(run), status=202, headers={"Location": f"/api/v1/sync-runs/{run_id}"})


@router.get(
    "/sync-runs",
    summary="Sync runs, newest first: what each read, wrote and skipped, and how it ended",
    response_model=Page[SyncRunOut],
    responses=collection(400, 401, 422),
)
def sync_runs(
    _key: Reader,
    page: ListerDep,
    connection: Annotated[str | None, Query(max_length=63)] = None,
    status: Annotated[RunStatus | None, Query()] = None,
) -> Response:
    def fetch(s: Any, after: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        rows, next_key = sync_repo.sync_runs_page(s, after, limit, connection, status)
        return [run_row(r) for r in rows], next_key

    return page("sync-runs", SyncRunOut, fetch=fetch)


@router.get(
    "/sync-runs/{run_id}",
    summary="One sync run",
    response_model=SyncRunOut,
    responses=documented(401, 404, 422),
)
def sync_run(run_id: RowId, session: SessionDep, _key: Reader) -> Response:
    run = sync_repo.sync_run(session, run_id)
    if run is None:
        raise NotFound(f"no sync run {run_id}")
    return json_response(run_row(run))
