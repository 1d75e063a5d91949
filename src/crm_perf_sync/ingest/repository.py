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
    """A connection's inbox: events waiting, parked, and the last push received."""

    waiting: int
    parked: int
    last_received_at: datetime | None


def state(session: Session, connection_id: str) -> InboxState:
    counts: dict[str, int] = dict(
        session.execute(
            select(EVENT.c.status, func.count())
            .where(EVENT.c.connection_id == connection_id, EVENT.c.status.in_([PENDING, PARKED]))
            .group_by(EVENT.c.status)
        ).all()
    )
    last = session.execute(
        select(func.max(EVENT.c.received_at)).where(EVENT.c.connection_id == connection_id)
    ).scalar()
    return InboxState(counts.get(PENDING, 0), counts.get(PARKED, 0), last)
