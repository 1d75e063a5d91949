"""How is it doing: each connection's last run and lag, deliveries waiting, the last KPI refresh."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from crm_perf_sync.config import LoadedConfig
from crm_perf_sync.ingest import repository as ingest_repo
from crm_perf_sync.ingest.repository import InboxState
from crm_perf_sync.ops import repository as repo

log = logging.getLogger(__name__)


def connection_status(session: Session, config: LoadedConfig, now: datetime) -> list[dict[str, Any]]:
    """Each configured connection: its last run, last success, lag and whether it syncs now;
    of one its CRM pushes to, the last push and the changes waiting in its inbox."""
    out = []
    successes = repo.last_successes(session)
    inboxes = ingest_repo.states(session)
    for conn in config.app.connections:
        last = repo.last_run(session, conn.id)
        success = successes.get(conn.id)
        failures = repo.failed_runs_since(session, conn.id, now - timedelta(days=1))
        holder = repo.sync_holder(session, conn.id, now)
        inbox = inboxes.get(conn.id, InboxState())
        out.append(
            {
                "connection_id": conn.id,
                "kind": conn.kind,
                "enabled": conn.enabled,
                "syncing_now": holder,
                "last_run_id": last.id if last else None,
                "last_run_status": last.status if last else None,
                "last_run_started_at": last.started_at if last else None,
                "last_run_finished_at": last.finished_at if last else None,
                # Records the last run rejected (bad rows, stored with the run): a run can succeed
                # and still have left some out.
                "last_run_skipped": last.skipped if last else 0,
                "last_error": last.error if last and last.status != "succeeded" else None,
                "last_success_at": success,
                "lag_seconds": round((now - success).total_seconds()) if success else None,
                "failed_runs_24h": failures,
                "push_last_received_at": inbox.last_received_at,
                "push_waiting": inbox.waiting,
                "push_parked": inbox.parked,
            }
        )
    return out


def delivery_status(session: Session, now: datetime) -> dict[str, Any]:
    pending, oldest = repo.pending_deliveries(session)
    retrying = repo.retrying_deliveries(session)
    failed = repo.failed_deliveries_since(session, now - timedelta(days=1))
    return {
        "pending": pending,
        "retrying": retrying,
        "oldest_pending_age_seconds": round((now - oldest).total_seconds()) if oldest else None,
        "failed_24h": failed,
    }


def refresh_status(session: Session) -> dict[str, Any]:
    last = repo.last_refresh(session)
    return {
        "last_refresh_at": last.finished_at if last else None,
        "last_refresh_status": last.status if last else None,
        "last_refresh_kind": last.kind if last else None,
        "last_refresh_seconds": round(last.duration_seconds, 3) if last and last.duration_seconds else None,
        "last_refresh_error": last.error if last and last.status != "succeeded" else None,
    }
