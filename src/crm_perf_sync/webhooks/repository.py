"""All SQL of the webhook domain: endpoints, the outbox, claiming and recording deliveries.

Every function takes the caller's session or connection (the caller owns the transaction), so an
event is written in the transaction of the change that caused it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, and_, delete, insert, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from crm_perf_sync.kit.doorbell import OUTBOX
from crm_perf_sync.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookFiringRequest,
)

Executor = Session | Connection
ENDPOINT: Table = WebhookEndpoint.__table__  # type: ignore[assignment]
EVENT: Table = WebhookEvent.__table__  # type: ignore[assignment]
DELIVERY: Table = WebhookDelivery.__table__  # type: ignore[assignment]
ATTEMPT: Table = WebhookAttempt.__table__  # type: ignore[assignment]
FIRING_REQUEST: Table = WebhookFiringRequest.__table__  # type: ignore[assignment]


def _dialect(conn: Executor) -> str:
    return conn.get_bind().dialect.name if isinstance(conn, Session) else conn.dialect.name


def endpoints(conn: Executor, *, enabled_only: bool = False) -> list[Any]:
    stmt = select(ENDPOINT).order_by(ENDPOINT.c.id)
    if enabled_only:
        stmt = stmt.where(ENDPOINT.c.enabled.is_(True))
    return list(conn.execute(stmt))


def endpoint(conn: Executor, endpoint_id: int) -> Any:
    return conn.execute(select(ENDPOINT).where(ENDPOINT.c.id == endpoint_id)).first()


def insert_event(conn: Executor, **values: Any) -> int:
    event_id: int = conn.execute(insert(EVENT).values(**values).returning(EVENT.c.id)).scalar_one()
    return event_id


def insert_deliveries(conn: Executor, event_id: int, endpoint_ids: Sequence[int], now: datetime) -> None:
    """Queue the event for each endpoint; the workers of other processes are rung at the commit
    (the caller wakes this process's own once it committed: :data:`OUTBOX`)."""
    if endpoint_ids:
        OUTBOX.notify(conn)
        conn.execute(
            insert(DELIVERY),
            [
                {
                    "event_id": event_id,
                    "endpoint_id": endpoint_id,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for endpoint_id in endpoint_ids
            ],
        )


@dataclass(frozen=True, slots=True)
class Due:
    """A claimed delivery with everything sending it needs."""

    delivery_id: int
    attempts: int
    endpoint_id: int
    url: str
    secrets: tuple[str, ...]
    message_id: str
    event_type: str
    payload: dict[str, Any]


def claim_due(conn: Executor, holder: str, now: datetime, until: datetime, limit: int) -> list[Due]:
    """Claim up to ``limit`` due deliveries for ``holder`` until ``until``, oldest first.

    One statement: on PostgreSQL the candidates are locked with ``FOR UPDATE SKIP LOCKED``, so
    workers claiming at the same moment take different rows instead of waiting or doubling up;
    on SQLite the write lock serialises claimants. A claim whose holder died expires.
    """
    candidates = (
        select(DELIVERY.c.id)
        .where(
            DELIVERY.c.status == "pending",
            DELIVERY.c.next_attempt_at <= now,
            or_(DELIVERY.c.claimed_until.is_(None), DELIVERY.c.claimed_until < now),
        )
        .order_by(DELIVERY.c.next_attempt_at, DELIVERY.c.id)
        .limit(limit)
    )
    if _dialect(conn) == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    claimed = conn.execute(
        update(DELIVERY)
        .where(DELIVERY.c.id.in_(candidates.scalar_subquery()))
        .values(claimed_by=holder, claimed_until=until)
        .returning(DELIVERY.c.id)
    )
    ids = [row[0] for row in claimed]
    if not ids:
        return []
    rows = conn.execute(
        select(
            DELIVERY.c.id,
            DELIVERY.c.attempts,
            ENDPOINT.c.id.label("endpoint_id"),
            ENDPOINT.c.url,
            ENDPOINT.c.secret,
            ENDPOINT.c.previous_secret,
            ENDPOINT.c.previous_secret_expires_at,
            EVENT.c.message_id,
            EVENT.c.type,
            EVENT.c.payload,
        )
        .select_from(DELIVERY.join(ENDPOINT, ENDPOINT.c.id == DELIVERY.c.endpoint_id))
        .join(EVENT, EVENT.c.id == DELIVERY.c.event_id)
        .where(DELIVERY.c.id.in_(ids))
        .order_by(DELIVERY.c.id)
    )
    out = []
    for row in rows:
        secrets = [row.secret]
        if row.previous_secret and row.previous_secret_expires_at and row.previous_secret_expires_at > now:
            secrets.append(row.previous_secret)
        out.append(
            Due(
                row.id,
                row.attempts,
                row.endpoint_id,
                row.url,
                tuple(secrets),
                row.message_id,
                row.type,
                row.payload,
            )
        )
    return out


def record_attempts(conn: Executor, attempts: Sequence[dict[str, Any]]) -> None:
    if attempts:
        conn.execute(insert(ATTEMPT), list(attempts))


def finish_delivery(conn: Executor, delivery_id: int, holder: str, **values: Any) -> bool:
    """Record a delivery's outcome if ``holder`` still holds its claim."""
    result = conn.execute(
        update(DELIVERY)
        .where(DELIVERY.c.id == delivery_id, DELIVERY.c.claimed_by == holder)
        .values(claimed_by=None, claimed_until=None, **values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def set_endpoint(conn: Executor, endpoint_id: int, **values: Any) -> None:
    conn.execute(update(ENDPOINT).where(ENDPOINT.c.id == endpoint_id).values(**values))


def mark_endpoint_failing(conn: Executor, endpoint_id: int, now: datetime) -> datetime:
    """The start of the endpoint's current run of failures (set now if it was not failing)."""
    conn.execute(
        update(ENDPOINT)
        .where(ENDPOINT.c.id == endpoint_id, ENDPOINT.c.failing_since.is_(None))
        .values(failing_since=now)
    )
    since: datetime = conn.execute(
        select(ENDPOINT.c.failing_since).where(ENDPOINT.c.id == endpoint_id)
    ).scalar_one()
    return since


def cancel_pending(conn: Executor, endpoint_id: int, reason: str, now: datetime) -> int:
    result = conn.execute(
        update(DELIVERY)
        .where(DELIVERY.c.endpoint_id == endpoint_id, DELIVERY.c.status == "pending")
        .values(status="cancelled", last_error=reason, finished_at=now, claimed_by=None, claimed_until=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def event_by_message_id(conn: Executor, message_id: str) -> Any:
    return conn.execute(select(EVENT).where(EVENT.c.message_id == message_id)).first()


def latest_event(
    conn: Executor, event_type: str, rule_id: str, matches: Callable[[dict[str, Any]], bool]
) -> Any:
    """The newest event of a type and rule whose ``data`` ``matches`` (read newest first, a page
    at a time, until found)."""
    before: int | None = None
    while True:
        stmt = select(EVENT).where(EVENT.c.type == event_type, EVENT.c.rule_id == rule_id)
        if before is not None:
            stmt = stmt.where(EVENT.c.id < before)
        rows = list(conn.execute(stmt.order_by(EVENT.c.id.desc()).limit(200)))
        for row in rows:
            if matches(row.payload.get("data") or {}):
                return row
        if len(rows) < 200:
            return None
        before = rows[-1].id


def request_firing(conn: Executor, endpoint_id: int, now: datetime) -> None:
    """Ask for the firing set (a request already waiting stays as it is)."""
    dialect_insert = postgresql.insert if _dialect(conn) == "postgresql" else sqlite.insert
    conn.execute(
        dialect_insert(FIRING_REQUEST)
        .values(endpoint_id=endpoint_id, requested_at=now)
        .on_conflict_do_nothing()
    )


def firing_requested(conn: Executor, endpoint_ids: Sequence[int]) -> set[int]:
    rows = conn.execute(
        select(FIRING_REQUEST.c.endpoint_id).where(FIRING_REQUEST.c.endpoint_id.in_(list(endpoint_ids)))
    )
    return {row[0] for row in rows}


def take_firing_requests(conn: Executor) -> list[int]:
    """The endpoints waiting for the firing set, now enabled; their requests are consumed.

    A disabled endpoint's request waits until it is enabled again.
    """
    enabled = select(ENDPOINT.c.id).where(ENDPOINT.c.enabled.is_(True))
    taken = conn.execute(
        delete(FIRING_REQUEST)
        .where(FIRING_REQUEST.c.endpoint_id.in_(enabled.scalar_subquery()))
        .returning(FIRING_REQUEST.c.endpoint_id)
    )
    return sorted(row[0] for row in taken)


def events_since(conn: Executor, since: datetime) -> list[Any]:
    stmt = select(EVENT.c.id, EVENT.c.type, EVENT.c.rule_id, EVENT.c.severity).where(
        EVENT.c.created_at >= since
    )
    return list(conn.execute(stmt.order_by(EVENT.c.id)))


def delivery(conn: Executor, delivery_id: int) -> Any:
    stmt = (
        select(DELIVERY, EVENT.c.message_id, EVENT.c.type.label("event_type"))
        .join(EVENT, EVENT.c.id == DELIVERY.c.event_id)
        .where(DELIVERY.c.id == delivery_id)
    )
    return conn.execute(stmt).first()


def reset_delivery(conn: Executor, delivery_id: int, now: datetime) -> None:
    """Make a delivery due again now."""
    conn.execute(
        update(DELIVERY)
        .where(DELIVERY.c.id == delivery_id)
        .values(status="pending", next_attempt_at=now, finished_at=None, claimed_by=None, claimed_until=None)
    )


def attempts_of(conn: Executor, delivery_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {i: [] for i in delivery_ids}
    if delivery_ids:
        stmt = select(ATTEMPT).where(ATTEMPT.c.delivery_id.in_(list(delivery_ids))).order_by(ATTEMPT.c.id)
        for row in conn.execute(stmt):
            out[row.delivery_id].append(
                {
                    k: row._mapping[k]
                    for k in (
                        "attempted_at",
                        "status_code",
                        "latency_ms",
                        "response_excerpt",
                        "error",
                        "sent_by",
                    )
                }
            )
    return out


def deliveries_page(
    conn: Executor,
    *,
    endpoint_id: int | None,
    event_type: str | None,
    status: str | None,
    after: int | None,
    limit: int,
) -> tuple[list[Any], int | None]:
    """Deliveries newest first, keyed by descending id."""
    stmt = select(DELIVERY, EVENT.c.message_id, EVENT.c.type.label("event_type")).join(
        EVENT, EVENT.c.id == DELIVERY.c.event_id
    )
    conditions = []
    if endpoint_id is not None:
        conditions.append(DELIVERY.c.endpoint_id == endpoint_id)
    if event_type is not None:
        conditions.append(EVENT.c.type == event_type)
    if status is not None:
        conditions.append(DELIVERY.c.status == status)
    if after is not None:
        conditions.append(DELIVERY.c.id < after)
    stmt = stmt.where(and_(true(), *conditions)).order_by(DELIVERY.c.id.desc()).limit(limit + 1)
    rows = list(conn.execute(stmt))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more else None)


def release_claims_like(conn: Executor, holder_like: str) -> int:
    """Release every delivery claim whose holder matches the LIKE pattern ``holder_like`` (escape ``\\``)."""
    stmt = (
        update(DELIVERY)
        .where(DELIVERY.c.claimed_by.like(holder_like, escape="\\"))
        .values(claimed_by=None, claimed_until=None)
    )
    return int(conn.execute(stmt).rowcount)  # type: ignore[attr-defined]


def endpoint_row(session: Session, endpoint_id: int) -> WebhookEndpoint | None:
    """The endpoint as an ORM row, for the service to change (``flush()`` writes the change)."""
    return session.get(WebhookEndpoint, endpoint_id)


def add_endpoint(session: Session, row: WebhookEndpoint) -> None:
    session.add(row)
    session.flush()


def delete_endpoint(session: Session, row: WebhookEndpoint) -> None:
    """Remove an endpoint (its deliveries and their attempts go with it)."""
    session.delete(row)
    session.flush()
