"""简道云 数据推送 requests as 简道云 sends them, signed as its documentation describes.

The signature is made here, independently of the spec's ``push`` section: the SHA-1 hex digest of
``{nonce}:{payload}:{secret}:{timestamp}`` (nonce and timestamp in the query string), in the
``X-JDY-Signature`` header, with the delivery's id in ``X-JDY-DeliverId``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crm_perf_sync.connector_sdk import PushRequest


@dataclass(frozen=True)
class Delivery:
    """One push: the URL called (with its query string), the headers and the raw body."""

    url: str
    headers: dict[str, str]
    body: bytes

    def request(self, received_at: datetime) -> PushRequest:
        lower = {name.lower(): value for name, value in self.headers.items()}
        return PushRequest("POST", self.url, lower, self.body, received_at)


def delivery(
    op: str,
    record: Mapping[str, Any],
    *,
    secret: str,
    at: datetime,
    url: str = "http://testserver/api/v1/ingest/jdy",
    nonce: str = "0f5ade",
    deliver_id: str | None = None,
) -> Delivery:
    """The push of ``op`` on ``record`` signed with ``secret`` at ``at``."""
    payload = json.dumps({"op": op, "data": record}, ensure_ascii=False, separators=(",", ":"))
    timestamp = str(int(at.timestamp()))
    signature = hashlib.sha1(f"{nonce}:{payload}:{secret}:{timestamp}".encode()).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-JDY-Signature": signature,
        "X-JDY-DeliverId": deliver_id or f"sha1={uuid.uuid4().hex}",
    }
    return Delivery(f"{url}?timestamp={timestamp}&nonce={nonce}", headers, payload.encode())
