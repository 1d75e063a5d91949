"""A spec's pushes, verified and read as changes.

The spec's ``push`` section says how the CRM signs a push (a digest over parts of the request and
the connection's secret), where the events are in the body and which record of which stream each
announces. Verification needs nothing but the request and the settings: the signature is computed
with the current secret and, during a rotation, the previous one, each compared in constant time;
a timestamp outside the window is a replay (or a clock that is off) and refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from crm_perf_sync.connector_sdk import PushedChange, PushRefused, PushRequest
from crm_perf_sync_rest.spec import Push
from crm_perf_sync_rest.templates import Variables, compile_template

#: Digests by the spec's name for them (an HMAC keyed by the secret for ``hmac-…``).
_DIGESTS: Final[Mapping[str, str]] = {"sha1": "sha1", "sha256": "sha256"}


def request_variables(request: PushRequest) -> dict[str, Any]:
    """What the push section's templates see of a request; a body that is not UTF-8 is refused."""
    try:
        body = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise PushRefused("the body is not UTF-8") from None
    return {
        "method": request.method.upper(),
        "url": request.url,
        "query": dict(parse_qsl(urlsplit(request.url).query, keep_blank_values=True)),
        "headers": {name.lower(): value for name, value in request.headers.items()},
        "body": body,
    }


def _text(value: object) -> str:
    return "" if value is None else str(value)


class Verifier:
    """A spec's ``push`` section with its templates compiled once (a connection's pushes are
    verified by the one connector the API keeps for it)."""

    def __init__(self, push: Push, variables: Variables) -> None:
        self.push = push
        self.variables = variables
        signing = push.signature
        self.secrets = [
            compile_template(template, f"push.{key}")
            for key, template in (("secret", push.secret), ("previous_secret", push.previous_secret))
            if template is not None
        ]
        self.sent = compile_template(signing.signature, "push.signature.signature")
        self.stamp = (
            compile_template(signing.timestamp, "push.signature.timestamp") if signing.timestamp else None
        )
        self.message = compile_template(signing.message, "push.signature.message")
        self.delivery = compile_template(push.delivery, "push.delivery") if push.delivery else None

    def verify(self, request: dict[str, Any], now: datetime) -> str | None:
        """Raises :class:`PushRefused` unless the request carries the signature the spec
        describes, made with the connection's secret (or the previous one) within the window;
        returns the push's delivery id, if the spec says where it is."""
        scope = {**self.variables, "request": request, "secret": ""}
        secrets = [secret for secret in (_text(render(scope)) for render in self.secrets) if secret]
        if not secrets:
            raise PushRefused(
                "the connection has no push secret: set the spec's push secret input to take pushes"
            )
        signing = self.push.signature
        sent = _text(self.sent(scope))
        if not sent:
            raise PushRefused("the request carries no signature")
        if self.stamp is not None:
            stamp = _text(self.stamp(scope))
            if not stamp.isdigit() or len(stamp) > 12:
                raise PushRefused(f"the request's timestamp is not epoch seconds: {stamp[:40]!r}")
            signed_at = datetime.fromtimestamp(int(stamp), UTC)
            if abs(now - signed_at) > signing.window:
                raise PushRefused(
                    f"the request was signed at {signed_at.isoformat()}, more than {_span(signing.window)} "
                    f"from now ({now.isoformat()}): a replay, or a clock that is off"
                )
        expected = [self._digest({**scope, "secret": secret}, secret) for secret in secrets]
        # Every candidate compared, each in constant time: which secret matched takes no less time.
        matched = [hmac.compare_digest(candidate.encode(), sent.encode()) for candidate in expected]
        if not any(matched):
            raise PushRefused(
                "the signature does not match one made with the connection's push secret "
                "(another secret, or an altered body)"
            )
        return (_text(self.delivery(scope)) or None) if self.delivery is not None else None

    def _digest(self, scope: Variables, secret: str) -> str:
        signing = self.push.signature
        text = _text(self.message(scope)).encode()
        if signing.algorithm.startswith("hmac-"):
            raw = hmac.new(secret.encode(), text, _DIGESTS[signing.algorithm.removeprefix("hmac-")]).digest()
        else:
            raw = hashlib.new(_DIGESTS[signing.algorithm], text).digest()
        return raw.hex() if signing.encoding == "hex" else base64.b64encode(raw).decode()


def _span(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    return f"{seconds // 60} minutes" if seconds % 60 == 0 else f"{seconds} seconds"


def events_of(body: str, select: Callable[[Any], Any]) -> list[Any]:
    """The events of a verified body; raises :class:`PushRefused` when it is not JSON."""
    try:
        document = json.loads(body)
    except ValueError:
        raise PushRefused("the body is not JSON") from None
    found = select(document)
    if found is None:
        return []
    if not isinstance(found, list):
        raise PushRefused("the spec's push.events does not select a list of events in the body")
    return found


@dataclass(frozen=True, slots=True)
class Rule:
    """A ``push.changes`` rule, its JMESPath expressions compiled."""

    stream: str
    when: Callable[[Any], Any]
    id_of: Callable[[Any], Any]
    deleted_of: Callable[[Any], Any] | None
    occurred_of: Callable[[Any], datetime | None] | None


def changes_of(events: Sequence[Any], rules: Sequence[Rule], delivery: str | None) -> list[PushedChange]:
    """The changes the events announce: each event's first rule that holds names the stream, the
    record and whether it was deleted; an event no rule takes announces nothing we read."""
    out = []
    for number, event in enumerate(events):
        for rule in rules:
            if not _truthy(rule.when(event)):
                continue
            record = rule.id_of(event)
            if record is None or record == "":
                raise PushRefused(f"event {number} of the push has no record id for stream {rule.stream}")
            deleted = rule.deleted_of is not None and _truthy(rule.deleted_of(event))
            occurred = rule.occurred_of(event) if rule.occurred_of is not None else None
            identity = delivery or _fingerprint(event)
            event_id = f"{identity}:{number}" if len(events) > 1 else identity
            out.append(
                PushedChange(event_id, rule.stream, str(record), deleted=deleted, occurred_at=occurred)
            )
            break
    return out


def _truthy(value: object) -> bool:
    return value not in (None, False, 0, "", [], {})


def _fingerprint(event: Any) -> str:
    """An event's identity when the CRM gives no delivery id: a digest of its content (a retry of
    the same event has the same)."""
    text = json.dumps(event, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
