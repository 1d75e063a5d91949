"""The webhook event vocabulary: the event types an endpoint can subscribe to, and the alert
severities it can filter on.

Payloads follow the Standard Webhooks shape, ``{"type", "timestamp", "data"}``.
"""

from __future__ import annotations

from typing import Literal

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")


EVENT_TYPES = (
    "alert.firing",
    "alert.resolved",
    "sync.completed",
    "sync.failed",
    "score.published",
    "webhook.test",
    "webhook.endpoint_disabled",
)
