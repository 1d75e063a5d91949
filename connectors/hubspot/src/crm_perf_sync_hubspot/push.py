"""HubSpot's app webhooks, verified and read as changes.

HubSpot posts a JSON array of up to 100 events to the app's target URL, each a subscription's
notification (``deal.creation``, ``deal.propertyChange``, ``deal.deletion``, ``contact.*``,
``company.*``; the generic ``object.*`` types name the object by ``objectTypeId``). Every request
carries ``X-HubSpot-Signature-v3``: base64 of HMAC-SHA256, keyed by the app's client secret, over
the method, the URI (a few URL-encoded characters decoded, as HubSpot signs it), the raw body and
``X-HubSpot-Request-Timestamp`` (epoch milliseconds). A request without it, with another
signature, or more than :data:`REPLAY_WINDOW` away from now is refused; the signature is
computed by hubspot-api-client's :class:`~hubspot.utils.signature.Signature` and compared in
constant time, with the current secret and, during a rotation, the previous one.

HubSpot says an ``eventId`` alone is not unique: an event's identity is its subscription, event,
object and time (the same in a retry, whose ``attemptNumber`` grows). A deal that changed may have
moved stage: its ``stage_changes`` are fetched again too.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from hubspot.utils.signature import Signature  # type: ignore[import-untyped]
from pydantic import SecretStr

from crm_perf_sync.connector_sdk import PushedChange, PushRefused, PushRequest
from crm_perf_sync_hubspot.search import from_millis
from crm_perf_sync_hubspot.settings import HubSpotSettings

#: How far a request's timestamp may be from now (HubSpot's own advice: five minutes).
REPLAY_WINDOW: Final = timedelta(minutes=5)

#: The streams an object's changes are read into, by the object's name in ``subscriptionType``.
OBJECT_STREAMS: Final[Mapping[str, str]] = {
    "deal": "opportunities",
    "contact": "leads",
    "company": "accounts",
}
#: The same by ``objectTypeId`` (the generic ``object.*`` subscriptions).
TYPE_STREAMS: Final[Mapping[str, str]] = {"0-3": "opportunities", "0-1": "leads", "0-2": "accounts"}

#: The URL-encoded characters HubSpot decodes in the URI it signs.
_DECODED: Final = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}


def signed_uri(url: str) -> str:
    """The URI as HubSpot signs it: the address called, with :data:`_DECODED` decoded."""
    for encoded, plain in _DECODED.items():
        url = url.replace(encoded, plain).replace(encoded.lower(), plain)
    return url


def secrets_of(settings: HubSpotSettings) -> list[SecretStr]:
    """The secrets a webhook may be signed with: the app's client secret (``webhook_secret``, or
    the OAuth grant's), then the one it had before a rotation."""
    current = settings.webhook_secret or (settings.oauth.client_secret if settings.oauth else None)
    return [s for s in (current, settings.previous_webhook_secret) if s is not None]


def verify(settings: HubSpotSettings, request: PushRequest, now: datetime) -> Sequence[PushedChange]:
    """The changes a webhook request announces, once verified; raises :class:`PushRefused`."""
    secrets = secrets_of(settings)
    if not secrets:
        raise PushRefused(
            "the connection has no webhook secret: set webhook_secret (the app's client secret) "
            "to take pushes"
        )
    signature = request.headers.get("x-hubspot-signature-v3")
    stamp = request.headers.get("x-hubspot-request-timestamp")
    if not signature or not stamp:
        raise PushRefused(
            "no X-HubSpot-Signature-v3 and X-HubSpot-Request-Timestamp headers (a v3 signature)"
        )
    if not stamp.isdigit() or len(stamp) > 15:
        raise PushRefused(f"X-HubSpot-Request-Timestamp is not epoch milliseconds: {stamp[:40]!r}")
    sent = from_millis(int(stamp))
    if abs(now - sent) > REPLAY_WINDOW:
        raise PushRefused(
            f"the request was signed at {sent.isoformat()}, more than {REPLAY_WINDOW} from now "
            f"({now.isoformat()}): a replay, or a clock that is off"
        )
    try:
        body = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise PushRefused("the body is not UTF-8") from None
    uri = signed_uri(settings.webhook_url or request.url)
    expected = [
        Signature.get_signature(secret.get_secret_value(), body, "v3", uri, request.method.upper(), stamp)
        for secret in secrets
    ]
    # Every candidate compared, each in constant time: which secret matched takes no less time.
    matched = [hmac.compare_digest(candidate.encode(), signature.encode()) for candidate in expected]
    if not any(matched):
        raise PushRefused(
            f"X-HubSpot-Signature-v3 does not match a signature of {request.method.upper()} {uri} with "
            "the connection's webhook secret (another app's secret, another URL, or an altered body)"
        )
    try:
        events = json.loads(body)
    except ValueError:
        raise PushRefused("the body is not JSON") from None
    if not isinstance(events, list):
        raise PushRefused("the body is not a JSON array of events")
    return [change for event in events for change in _changes(settings, event)]


def _changes(settings: HubSpotSettings, event: Any) -> Iterator[PushedChange]:
    if not isinstance(event, Mapping):
        raise PushRefused("an event of the body is not a JSON object")
    kind = str(event.get("subscriptionType") or "")
    subject, _, action = kind.partition(".")
    stream = (
        TYPE_STREAMS.get(str(event.get("objectTypeId")))
        if subject == "object"
        else OBJECT_STREAMS.get(subject)
    )
    portal = event.get("portalId")
    if stream is None or (settings.portal_id is not None and portal != settings.portal_id):
        return  # an object no stream reads, or another portal's (the app may be installed in several)
    occurred = event.get("occurredAt")
    at = from_millis(occurred) if isinstance(occurred, int) else None
    identity = f"{event.get('subscriptionId')}:{event.get('eventId')}:{occurred}"
    if action == "merge":
        primary = event.get("primaryObjectId") or event.get("objectId")
        merged = [m for m in event.get("mergedObjectIds") or () if m != primary]
        if primary is not None:
            yield from _changed(stream, f"{identity}:{primary}", str(primary), at)
        for gone in merged:  # merged into the primary: gone as themselves
            yield PushedChange(f"{identity}:{gone}", stream, str(gone), deleted=True, occurred_at=at)
        return
    object_id = event.get("objectId")
    if object_id is None:
        raise PushRefused(f"a {kind} event has no objectId")
    if action in ("deletion", "privacyDeletion"):
        yield PushedChange(f"{identity}:{object_id}", stream, str(object_id), deleted=True, occurred_at=at)
    else:
        yield from _changed(stream, f"{identity}:{object_id}", str(object_id), at)


def _changed(stream: str, identity: str, object_id: str, at: datetime | None) -> Iterator[PushedChange]:
    yield PushedChange(identity, stream, object_id, occurred_at=at)
    if stream == "opportunities":  # its stage history may have grown
        yield PushedChange(f"{identity}:history", "stage_changes", object_id, occurred_at=at)
