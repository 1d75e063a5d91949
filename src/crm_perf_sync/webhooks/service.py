"""Webhook endpoints and the event outbox.

:func:`emit` writes an event and one pending delivery per endpoint that wants it, in the caller's
transaction: committed with the change that caused it, or rolled back with it (no lost event, no
phantom one). The delivery worker (:mod:`crm_perf_sync.webhooks.delivery`) sends them. The event
types and severities are in :mod:`crm_perf_sync.webhooks.events`.
"""

from __future__ import annotations

import base64
import fnmatch
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from crm_perf_sync.kit.errors import InvalidInput, NotFound
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.models import WebhookEndpoint
from crm_perf_sync.webhooks import repository as repo
from crm_perf_sync.webhooks.events import EVENT_TYPES, SEVERITIES, envelope
from crm_perf_sync.webhooks.repository import Executor
from crm_perf_sync.webhooks.security import Guard, RefusedTarget

#: How long the secret an endpoint had before a rotation still signs (consumers switch over).
ROTATION_OVERLAP = timedelta(hours=24)


def new_secret() -> str:
    """A ``whsec_`` secret: 32 random bytes, base64 (what Standard Webhooks libraries read)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_message_id() -> str:
    return "msg_" + uuid.uuid4().hex


def wants(endpoint: Any, event_type: str, rule_id: str | None, severity: str | None) -> bool:
    """Whether an endpoint subscribed to this event (types, then the rule and severity filters)."""
    if not any(fnmatch.fnmatchcase(event_type, pattern) for pattern in endpoint.event_types or ["*"]):
        return False
    if rule_id is not None and endpoint.rule_ids and rule_id not in endpoint.rule_ids:
        return False
    return not (severity is not None and endpoint.severities and severity not in endpoint.severities)


def emit(
    conn: Executor,
    event_type: str,
    data: dict[str, Any],
    *,
    now: datetime | None = None,
    rule_id: str | None = None,
    severity: str | None = None,
    only_endpoint: int | None = None,
) -> str:
    """Write an event and its deliveries in the caller's transaction; returns its ``webhook-id``."""
    now = now or utc_now()
    message_id = new_message_id()
    payload = envelope(event_type, data, now)
    event_id = repo.insert_event(
        conn,
        message_id=message_id,
        type=event_type,
        payload=payload,
        rule_id=rule_id,
        severity=severity,
        created_at=now,
    )
    targets = [
        e.id
        for e in repo.endpoints(conn, enabled_only=True)
        if (only_endpoint is None or e.id == only_endpoint)
        and (only_endpoint is not None or wants(e, event_type, rule_id, severity))
    ]
    repo.insert_deliveries(conn, event_id, targets, now)
    return message_id


# --- endpoints ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    url: str
    description: str = ""
    event_types: tuple[str, ...] = ("*",)
    rule_ids: tuple[str, ...] | None = None
    severities: tuple[str, ...] | None = None
    enabled: bool = True


def check_spec(spec: EndpointSpec, guard: Guard) -> None:
    """The URL's form and the event type patterns (the addresses are checked at every send)."""
    try:
        guard.check_url(spec.url)
    except RefusedTarget as exc:
        raise InvalidInput(f"url: {exc}") from None
    for pattern in spec.event_types:
        if not any(fnmatch.fnmatchcase(t, pattern) for t in EVENT_TYPES):
            raise InvalidInput(f"event type {pattern!r} matches none of {', '.join(EVENT_TYPES)}")
    for severity in spec.severities or ():
        if severity not in SEVERITIES:
            raise InvalidInput(f"severity {severity!r} is none of {', '.join(SEVERITIES)}")


def create_endpoint(
    session: Session, spec: EndpointSpec, guard: Guard, *, send_firing: bool = False
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret (shown to the caller once).

    With ``send_firing`` it is also sent the alerts firing now (see :func:`request_firing`).
    """
    check_spec(spec, guard)
    if send_firing:
        _check_firing_subscription(spec.event_types, "the new endpoint")
    now = utc_now()
    secret = new_secret()
    row = WebhookEndpoint(
        url=spec.url,
        description=spec.description,
        event_types=list(spec.event_types),
        rule_ids=list(spec.rule_ids) if spec.rule_ids else None,
        severities=list(spec.severities) if spec.severities else None,
        enabled=spec.enabled,
        secret=secret,
        created_at=now,
        updated_at=now,
    )
    repo.add_endpoint(session, row)
    if send_firing:
        repo.request_firing(session, row.id, now)
    return row, secret


def get_endpoint(session: Session, endpoint_id: int) -> WebhookEndpoint:
    row = repo.endpoint_row(session, endpoint_id)
    if row is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return row


def update_endpoint(session: Session, endpoint_id: int, spec: EndpointSpec, guard: Guard) -> WebhookEndpoint:
    row = get_endpoint(session, endpoint_id)
    check_spec(spec, guard)
    row.url = spec.url
    row.description = spec.description
    row.event_types = list(spec.event_types)
    row.rule_ids = list(spec.rule_ids) if spec.rule_ids else None
    row.severities = list(spec.severities) if spec.severities else None
    if spec.enabled and not row.enabled:
        row.failing_since = None
        row.disabled_reason = None
    row.enabled = spec.enabled
    row.updated_at = utc_now()
    session.flush()
    return row


def delete_endpoint(session: Session, endpoint_id: int) -> None:
    """Remove an endpoint (its deliveries and their attempts go with it)."""
    repo.delete_endpoint(session, get_endpoint(session, endpoint_id))


def rotate_secret(session: Session, endpoint_id: int) -> tuple[WebhookEndpoint, str]:
    """A new secret; the old one keeps signing (alongside) for :data:`ROTATION_OVERLAP`."""
    row = get_endpoint(session, endpoint_id)
    now = utc_now()
    secret = new_secret()
    row.previous_secret = row.secret
    row.previous_secret_expires_at = now + ROTATION_OVERLAP
    row.secret = secret
    row.updated_at = now
    session.flush()
    return row, secret


def send_test(session: Session, endpoint_id: int) -> str:
    """Queue a ``webhook.test`` event to this endpoint only."""
    row = get_endpoint(session, endpoint_id)
    return emit(
        session,
        "webhook.test",
        {"endpoint_id": row.id, "message": "a test event from crm-perf-sync"},
        only_endpoint=row.id,
    )


def replay(session: Session, endpoint_id: int, since: datetime) -> int:
    """Deliver again to this endpoint every event since ``since`` it subscribes to (same ids)."""
    row = get_endpoint(session, endpoint_id)
    if not row.enabled:
        raise InvalidInput(f"webhook endpoint {endpoint_id} is disabled: enable it first")
    now = utc_now()
    count = 0
    for event in repo.events_since(session, since):
        if event.type == "webhook.test" or not wants(row, event.type, event.rule_id, event.severity):
            continue
        repo.insert_deliveries(session, event.id, [row.id], now)
        count += 1
    return count


def request_firing(session: Session, endpoint_id: int) -> None:
    """Send this endpoint the ``alert.firing`` event of every alert firing now that it subscribes to.

    The events themselves, with their ``webhook-id`` (a consumer that has one already drops it).
    The next alert evaluation queues them, in the transaction that reads the states, before the
    changes it finds: an alert firing while the endpoint was added is sent either by the
    evaluation that fired it or by this, never by neither. A disabled endpoint is sent them once
    it is enabled again.
    """
    row = get_endpoint(session, endpoint_id)
    _check_firing_subscription(row.event_types, f"webhook endpoint {endpoint_id}")
    repo.request_firing(session, row.id, utc_now())


def _check_firing_subscription(event_types: Sequence[str], what: str) -> None:
    if not any(fnmatch.fnmatchcase("alert.firing", pattern) for pattern in event_types or ["*"]):
        raise InvalidInput(f"{what} does not subscribe to alert.firing: it has no firing alerts to be sent")


def retry_delivery(session: Session, delivery_id: int) -> Any:
    """Send a delivery again now (its attempts so far are kept)."""
    found = repo.delivery(session, delivery_id)
    if found is None:
        raise NotFound(f"no webhook delivery {delivery_id}")
    endpoint = get_endpoint(session, found.endpoint_id)
    if not endpoint.enabled:
        raise InvalidInput(f"webhook endpoint {endpoint.id} is disabled: enable it first")
    repo.reset_delivery(session, delivery_id, utc_now())
    return repo.delivery(session, delivery_id)
