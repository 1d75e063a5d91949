"""The webhook event vocabulary: the event types an endpoint can subscribe to, and the alert
severities it can filter on.

Payloads follow the Standard Webhooks shape, ``{"type", "timestamp", "data"}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, get_args

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")


EventType = Literal[
    "alert.firing",
    "alert.resolved",
    "sync.completed",
    "sync.failed",
    "score.published",
    "incentive.tier_reached",
    "incentive.period_closed",
    "incentive.adjusted",
    "webhook.test",
    "webhook.endpoint_disabled",
]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)


def envelope(event_type: str, data: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """An event's body: ``{"type", "timestamp", "data"}``, the timestamp in UTC written with ``Z``."""
    return {"type": event_type, "timestamp": now.isoformat().replace("+00:00", "Z"), "data": data}
