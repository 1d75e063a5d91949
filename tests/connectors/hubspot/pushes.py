"""HubSpot app webhooks as HubSpot sends them, signed as its documentation describes.

The signature is made here independently of the connector's verification (which uses
hubspot-api-client): base64 of HMAC-SHA256, keyed by the app's client secret, over the method,
the URI, the body and the timestamp.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import time
from pathlib import Path
from typing import Any

import yaml

from tests.connectors.hubspot.emulator import HubSpotEmulator
from tests.connectors.hubspot.support import UNLIMITED

_ids = itertools.count(1)


def event(kind: str, object_id: int, *, portal: int, **extra: Any) -> dict[str, Any]:
    """A webhook event (a fresh event id each), as if it happened a moment ago."""
    return {
        "eventId": next(_ids) + 1_000_000,
        "subscriptionId": 77,
        "portalId": portal,
        "appId": 4242,
        "occurredAt": int(time.time() * 1000) - 1500,
        "subscriptionType": kind,
        "attemptNumber": 0,
        "objectId": object_id,
        "changeSource": "CRM",
        **extra,
    }


def signed(
    body: bytes, url: str, *, secret: str, at_ms: int | None = None, method: str = "POST"
) -> dict[str, str]:
    """The headers of a request HubSpot signed with ``secret`` (at ``at_ms``, default now)."""
    stamp = str(int(time.time() * 1000) if at_ms is None else at_ms)
    source = f"{method}{url}{body.decode()}{stamp}".encode()
    digest = hmac.new(secret.encode(), source, hashlib.sha256).digest()
    return {
        "X-HubSpot-Signature-v3": base64.b64encode(digest).decode(),
        "X-HubSpot-Request-Timestamp": stamp,
        "Content-Type": "application/json",
    }


def pushing_config(
    path: Path, emulator: HubSpotEmulator, *, portal: int, secret: str, **settings: Any
) -> Path:
    """A configuration file at ``path`` with one connection, ``hs``, to the emulated portal,
    taking its pushes signed with ``secret`` (and ``settings`` besides)."""
    config = {
        "connections": [
            {
                "id": "hs",
                "kind": "hubspot",
                "settings": {
                    "access_token": emulator.portal.token,
                    "base_url": emulator.url,
                    "rate_limits": dict(UNLIMITED),
                    "portal_id": portal,
                    "webhook_secret": secret,
                    **settings,
                },
            }
        ]
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path
