"""All SQL of the push inbox. The caller owns the transaction (these functions never commit)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, func, select
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
