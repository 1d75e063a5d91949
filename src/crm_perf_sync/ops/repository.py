"""All SQL of the operations views: what ``status`` shows and the store's Prometheus metrics read.

Both read the same facts (the last successful sync of each connection, the deliveries waiting), so
they share these queries.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from crm_perf_sync.leases import sync_lease
from crm_perf_sync.models import (
    AlertState,
    AlertTransition,
    ChangeBatch,
    KpiRefreshRun,
    Lease,
    SyncRun,
    WebhookDelivery,
)


def server_version(engine: Engine) -> str:
    """The database server's version (SQLite's library version for a SQLite store)."""
    with engine.connect() as conn:
        found = conn.exec_driver_sql(
            "select sqlite_version()" if engine.dialect.name == "sqlite" else "show server_version"
        ).scalar()
    return str(found)


# --- sync runs ------------------------------------------------------------------------------------


def last_run(session: Session, connection_id: str) -> SyncRun | None:
    return session.execute(
        select(SyncRun).where(SyncRun.connection_id == connection_id).order_by(SyncRun.id.desc()).limit(1)
    ).scalar_one_or_none()


def last_successes(session: Session) -> dict[str, datetime]:
    """When each connection's last successful sync finished (connections with none left out)."""
    rows = session.execute(
        select(SyncRun.connection_id, func.max(SyncRun.finished_at))
        .where(SyncRun.status == "succeeded")
        .group_by(SyncRun.connection_id)
    )
    return {connection: finished for connection, finished in rows if finished is not None}


def failed_runs_since(session: Session, connection_id: str, since: datetime) -> int:
    found: int = session.execute(
        select(func.count()).where(
            SyncRun.connection_id == connection_id,
            SyncRun.status == "failed",
            SyncRun.started_at >= since,
        )
    ).scalar_one()
    return found


def sync_holder(session: Session, connection_id: str, now: datetime) -> str | None:
    """Who is syncing the connection right now (the live holder of its lease), if anyone."""
    found: str | None = session.execute(
        select(Lease.holder).where(
            Lease.name == sync_lease(connection_id), Lease.holder.is_not(None), Lease.expires_at > now
        )
    ).scalar_one_or_none()
    return found


def runs_by_status(session: Session) -> list[Any]:
    """(connection, status, count) of every run."""
    return list(
        session.execute(
            select(SyncRun.connection_id, SyncRun.status, func.count()).group_by(
                SyncRun.connection_id, SyncRun.status
            )
        )
    )


def record_totals(session: Session) -> list[Any]:
    """(connection, inserted, updated, deleted, skipped) summed over every run."""
    return list(
        session.execute(
            select(
                SyncRun.connection_id,
                func.sum(SyncRun.inserted),
                func.sum(SyncRun.updated),
                func.sum(SyncRun.deleted),
                func.sum(SyncRun.skipped),
            ).group_by(SyncRun.connection_id)
        )
    )


# --- KPI refreshes --------------------------------------------------------------------------------


def last_refresh(session: Session) -> KpiRefreshRun | None:
    return session.execute(
        select(KpiRefreshRun).order_by(KpiRefreshRun.id.desc()).limit(1)
    ).scalar_one_or_none()


def refreshes_by_status(session: Session) -> list[Any]:
    """(kind, status, count) of every refresh."""
    return list(
        session.execute(
            select(KpiRefreshRun.kind, KpiRefreshRun.status, func.count()).group_by(
                KpiRefreshRun.kind, KpiRefreshRun.status
            )
        )
    )


def last_refresh_seconds(session: Session, kind: str) -> float | None:
    """How long the last successful refresh of this kind took."""
    found: float | None = session.execute(
        select(KpiRefreshRun.duration_seconds)
        .where(KpiRefreshRun.kind == kind, KpiRefreshRun.status == "succeeded")
        .order_by(KpiRefreshRun.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return found


def pending_change_batches(session: Session) -> int:
    found: int = session.execute(select(func.count()).select_from(ChangeBatch)).scalar_one()
    return found


# --- alerts ---------------------------------------------------------------------------------------


def transitions_by_state(session: Session) -> list[Any]:
    """(rule, state entered, count) of every alert transition."""
    return list(
        session.execute(
            select(AlertTransition.rule_id, AlertTransition.to_state, func.count()).group_by(
                AlertTransition.rule_id, AlertTransition.to_state
            )
        )
    )


def firing_by_rule(session: Session) -> list[Any]:
    """(rule, scopes firing) of every rule firing somewhere."""
    return list(
        session.execute(
            select(AlertState.rule_id, func.count())
            .where(AlertState.state == "firing")
            .group_by(AlertState.rule_id)
        )
    )


# --- webhook deliveries ---------------------------------------------------------------------------


def pending_deliveries(session: Session) -> tuple[int, datetime | None]:
    """How many deliveries wait (due or for a retry), and when the oldest of them was created."""
    pending, oldest = session.execute(
        select(func.count(), func.min(WebhookDelivery.created_at)).where(WebhookDelivery.status == "pending")
    ).one()
    return pending, oldest


def retrying_deliveries(session: Session) -> int:
    found: int = session.execute(
        select(func.count()).where(WebhookDelivery.status == "pending", WebhookDelivery.attempts > 0)
    ).scalar_one()
    return found


def failed_deliveries_since(session: Session, since: datetime) -> int:
    found: int = session.execute(
        select(func.count()).where(WebhookDelivery.status == "failed", WebhookDelivery.finished_at >= since)
    ).scalar_one()
    return found


def deliveries_by_status(session: Session) -> list[Any]:
    """(status, count) of every delivery."""
    return list(
        session.execute(select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status))
    )
