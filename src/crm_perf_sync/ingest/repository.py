"""All SQL of the push inbox. The caller owns the transaction (these functions never commit)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, case, delete, func, select, update
from sqlalchemy.orm import Session

from crm_perf_sync.connector_sdk.push import PushedChange
from crm_perf_sync.kit.bulk import dialect_insert
from crm_perf_sync.models import IngestEvent

EVENT: Table = IngestEvent.__table__  # type: ignore[assignment]

PENDING = "pending"
DONE = "done"
PARKED = "parked"


def accept(
    session: Session, connection_id: str, changes: Sequence[PushedChange], received_at: datetime
) -> int:
    """Put ``changes`` in the connection's inbox, each event once (one received before under the
    same event id is dropped); returns how many were new."""
    unique = list({change.event_id: change for change in changes}.values())
    if not unique:
        return 0
    stmt = (
        dialect_insert(session, EVENT)
        .on_conflict_do_nothing(index_elements=["connection_id", "event_id"])
        .returning(EVENT.c.id)
    )
    rows = [
        {
            "connection_id": connection_id,
            "event_id": change.event_id,
            "stream": change.stream,
            "external_id": change.external_id,
            "deleted": change.deleted,
            "occurred_at": change.occurred_at,
            "received_at": received_at,
            "status": PENDING,
            "attempts": 0,
        }
        for change in unique
    ]
    return len(session.execute(stmt, rows).all())


@dataclass(frozen=True, slots=True)
class Waiting:
    """A change waiting in the inbox: its row, and the record it names."""

    id: int
    stream: str
    external_id: str
    occurred_at: datetime | None
    received_at: datetime


def waiting_connections(session: Session) -> list[str]:
    """The connections with changes waiting in their inbox."""
    rows = session.execute(
        select(EVENT.c.connection_id).where(EVENT.c.status == PENDING).group_by(EVENT.c.connection_id)
    )
    return sorted(row[0] for row in rows)


def waiting(session: Session, connection_id: str, limit: int) -> list[Waiting]:
    """The oldest ``limit`` changes waiting in a connection's inbox."""
    rows = session.execute(
        select(EVENT.c.id, EVENT.c.stream, EVENT.c.external_id, EVENT.c.occurred_at, EVENT.c.received_at)
        .where(EVENT.c.status == PENDING, EVENT.c.connection_id == connection_id)
        .order_by(EVENT.c.id)
        .limit(limit)
    )
    return [Waiting(*row) for row in rows]


def mark_done(session: Session, event_ids: Sequence[int], now: datetime) -> None:
    """The changes ``event_ids`` were fetched from the CRM and written."""
    for start in range(0, len(event_ids), 1000):  # within every database's limit of bound parameters
        session.execute(
            update(EVENT)
            .where(EVENT.c.id.in_(event_ids[start : start + 1000]), EVENT.c.status == PENDING)
            .values(status=DONE, processed_at=now)
        )


def record_failure(
    session: Session, event_ids: Sequence[int], error: str, now: datetime, max_attempts: int
) -> int:
    """One more failed attempt at the changes ``event_ids``: those that reached ``max_attempts``
    are parked with the error; returns how many were parked."""
    parked = 0
    for start in range(0, len(event_ids), 1000):
        chunk = event_ids[start : start + 1000]
        session.execute(
            update(EVENT)
            .where(EVENT.c.id.in_(chunk), EVENT.c.status == PENDING)
            .values(
                attempts=EVENT.c.attempts + 1,
                last_error=error[:2000],
                status=case((EVENT.c.attempts + 1 >= max_attempts, PARKED), else_=PENDING),
                processed_at=case((EVENT.c.attempts + 1 >= max_attempts, now), else_=None),
            )
        )
        parked += session.execute(
            select(func.count()).where(EVENT.c.id.in_(chunk), EVENT.c.status == PARKED)
        ).scalar_one()
    return parked


def purge_done(session: Session, before: datetime) -> int:
    """Forget the changes done before ``before`` (parked and waiting ones stay); returns how many.
    A CRM's retries of a delivery come within a day or so: older ids need not be remembered."""
    result = session.execute(delete(EVENT).where(EVENT.c.status == DONE, EVENT.c.processed_at < before))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class InboxState:
    """A connection's inbox: changes waiting, parked, and when the last push arrived."""

    waiting: int = 0
    parked: int = 0
    last_received_at: datetime | None = None


def states(session: Session) -> dict[str, InboxState]:
    """The inbox of every connection that was ever pushed to, by connection id."""
    counts: dict[tuple[str, str], int] = {
        (connection, status): count
        for connection, status, count in session.execute(
            select(EVENT.c.connection_id, EVENT.c.status, func.count())
            .where(EVENT.c.status.in_([PENDING, PARKED]))
            .group_by(EVENT.c.connection_id, EVENT.c.status)
        ).all()
    }
    last = session.execute(
        select(EVENT.c.connection_id, func.max(EVENT.c.received_at)).group_by(EVENT.c.connection_id)
    ).all()
    return {
        connection: InboxState(counts.get((connection, PENDING), 0), counts.get((connection, PARKED), 0), at)
        for connection, at in last
    }
