"""What the store recorded of the outbox's deliveries, and the at-least-once check that compares it
with what a receiver saw: the conditions process tests wait on instead of sleeping."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.models import WebhookAttempt, WebhookDelivery, WebhookEvent
from tests.webhooks.receiver import Receiver


def delivered(factory: sessionmaker[Session], message_ids: Collection[str]) -> bool:
    """Every delivery of these events has succeeded and its attempt is recorded: nothing of them
    is in flight, so whatever a receiver will ever get of them, it has got."""
    with session_scope(factory) as session:
        rows = session.execute(
            select(WebhookDelivery.status, func.count())
            .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .where(WebhookEvent.message_id.in_(list(message_ids)))
            .group_by(WebhookDelivery.status)
        ).all()
    statuses = {status: int(n) for status, n in rows}
    return statuses.get("succeeded", 0) >= len(message_ids) and set(statuses) == {"succeeded"}


def recorded_sends(factory: sessionmaker[Session]) -> dict[str, list[int | None]]:
    """The status code of every attempt the store recorded, per webhook-id (None: no answer)."""
    sends: dict[str, list[int | None]] = defaultdict(list)
    with session_scope(factory) as session:
        rows = session.execute(
            select(WebhookEvent.message_id, WebhookAttempt.status_code)
            .join(WebhookDelivery, WebhookDelivery.event_id == WebhookEvent.id)
            .join(WebhookAttempt, WebhookAttempt.delivery_id == WebhookDelivery.id)
            .order_by(WebhookAttempt.id)
        ).all()
    for message_id, status_code in rows:
        sends[message_id].append(status_code)
    return dict(sends)


def assert_at_least_once(
    receiver: Receiver,
    recorded: dict[str, list[int | None]],
    message_ids: Collection[str],
    *,
    unrecorded: int = 0,
) -> None:
    """Standard Webhooks' promise, checked exactly: every event arrived, verified; a second
    arrival carries the same webhook-id and payload; every arrival is an attempt the store
    recorded, except at most ``unrecorded`` per event (a send in flight when its worker was
    killed); and no event was answered 2xx more than once by a recorded attempt, so a repeat only
    ever follows an attempt that got no success (a timeout), never two workers sending at once."""
    accepted = Counter(r.message_id for r in receiver.accepted)
    missing = set(message_ids) - set(accepted)
    assert not missing, f"{len(missing)} events never arrived: {sorted(missing)[:5]}"
    assert receiver.rejected == []
    payloads: dict[str, object] = {}
    for received in receiver.accepted:
        assert payloads.setdefault(received.message_id, received.payload) == received.payload
    for message_id, arrivals in Counter(receiver.attempts).items():
        sends = recorded.get(message_id, [])
        assert arrivals <= len(sends) + unrecorded, (message_id, arrivals, sends)
        assert sum(1 for code in sends if code is not None and 200 <= code < 300) <= 1, (message_id, sends)
