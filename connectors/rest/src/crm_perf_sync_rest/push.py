"""A spec's pushes, verified and read as changes.

The spec's ``push`` section says how a push proves it comes from the CRM (a signature over parts
of the request and the connection's secret, HTTP basic authentication with the secret as the
password, or the secret echoed as a token), where the events are in the body and which records of
which stream each announces. Verification needs nothing but the request and the settings: the
proof is checked with the current secret and, during a rotation, the previous one, each compared
in constant time; a timestamp outside the window is a replay (or a clock that is off) and refused.
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

from crm_perf_sync.connector_sdk import ConnectorConfigError, PushedChange, PushRefused, PushRequest
from crm_perf_sync_rest.spec import Push
from crm_perf_sync_rest.templates import Compiled, Variables, compile_template

#: Digests by the spec's name for them (an HMAC keyed by the secret for ``hmac-…``).
_DIGESTS: Final[Mapping[str, str]] = {"sha1": "sha1", "sha256": "sha256"}


def request_variables(request: PushRequest) -> dict[str, Any]:
    """What the push section's templates see of a request; a body that is not UTF-8 is refused."""
    try:
        body = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise PushRefused("the body is not UTF-8") from None
    try:
        parsed = json.loads(body) if body.strip() else None
    except ValueError:
        parsed = None
    return {
        "method": request.method.upper(),
        "url": request.url,
        "query": dict(parse_qsl(urlsplit(request.url).query, keep_blank_values=True)),
        "headers": {name.lower(): value for name, value in request.headers.items()},
        "body": body,
        "json": parsed,
    }


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _render(template: Compiled, scope: Variables) -> str:
    """A template of the push section over a request, as text; a request it cannot be rendered
    over (a query parameter or a part of the body missing) is not a push the spec describes."""
    try:
        return _text(template(scope))
    except ConnectorConfigError as exc:
        raise PushRefused(f"the request is not a push as the spec describes it: {exc}") from None


class Verifier:
    """A spec's ``push`` section with its templates compiled once (a connection's pushes are
    verified by the one connector the API keeps for it)."""

    def __init__(self, push: Push, variables: Variables) -> None:
        self.push = push
        self.variables = variables
        self.secrets = [
            compile_template(template, f"push.{key}")
            for key, template in (("secret", push.secret), ("previous_secret", push.previous_secret))
            if template is not None
        ]
        signing = push.signature
        self.sent = compile_template(signing.signature, "push.signature.signature") if signing else None
        self.message = compile_template(signing.message, "push.signature.message") if signing else None
        basic = push.basic_auth
        self.username = compile_template(basic.username, "push.basic_auth.username") if basic else None
        self.token = compile_template(push.token, "push.token") if push.token else None
        self.stamp = compile_template(push.timestamp, "push.timestamp") if push.timestamp else None
        self.delivery = compile_template(push.delivery, "push.delivery") if push.delivery else None

    def verify(self, request: dict[str, Any], now: datetime) -> str | None:
        """Raises :class:`PushRefused` unless the request proves, as the spec describes, that it
        comes from the CRM with the connection's secret (or the previous one), within the window;
        returns the push's delivery id, if the spec says where it is."""
        scope = {**self.variables, "request": request, "secret": ""}
        secrets = [secret for secret in (_render(render, scope) for render in self.secrets) if secret]
        if not secrets:
            raise PushRefused(
                "the connection has no push secret: set the spec's push secret input to take pushes"
            )
        if self.stamp is not None:
            self._recent(_render(self.stamp, scope), now)
        if self.sent is not None:
            sent = _render(self.sent, scope)
            if not sent:
                raise PushRefused("the request carries no signature")
            expected = [self._digest({**scope, "secret": secret}, secret) for secret in secrets]
            what = "the signature does not match one made with the connection's push secret"
        elif self.username is not None:
            sent = request["headers"].get("authorization", "")
            if not sent:
                raise PushRefused("the request carries no Authorization header (basic authentication)")
            user = _render(self.username, scope)
            expected = [
                "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode() for secret in secrets
            ]
            what = "the basic authentication is not the connection's user and push secret"
        else:
            assert self.token is not None
            sent = _render(self.token, scope)
            if not sent:
                raise PushRefused("the request carries no token")
            expected = secrets
            what = "the token is not the connection's push secret"
        # Every candidate compared, each in constant time: which secret matched takes no less time.
        matched = [hmac.compare_digest(candidate.encode(), sent.encode()) for candidate in expected]
        if not any(matched):
            raise PushRefused(f"{what} (another secret, or an altered request)")
        return (_render(self.delivery, scope) or None) if self.delivery is not None else None

    def _recent(self, stamp: str, now: datetime) -> None:
        seconds = self.push.timestamp_unit == "s"
        if not stamp.isdigit() or len(stamp) > (12 if seconds else 15):
            unit = "seconds" if seconds else "milliseconds"
            raise PushRefused(f"the request's timestamp is not epoch {unit}: {stamp[:40]!r}")
        sent_at = datetime.fromtimestamp(int(stamp) / (1 if seconds else 1000), UTC)
        if abs(now - sent_at) > self.push.window:
            raise PushRefused(
                f"the request was sent at {sent_at.isoformat()}, more than {_span(self.push.window)} "
                f"from now ({now.isoformat()}): a replay, or a clock that is off"
            )

    def _digest(self, scope: Variables, secret: str) -> str:
        signing = self.push.signature
        assert signing is not None
        assert self.message is not None
        text = _render(self.message, scope).encode()
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
            found = rule.id_of(event)
            records = [
                r for r in (found if isinstance(found, list) else [found]) if r is not None and r != ""
            ]
            if not records:
                raise PushRefused(f"event {number} of the push has no record id for stream {rule.stream}")
            deleted = rule.deleted_of is not None and _truthy(rule.deleted_of(event))
            occurred = rule.occurred_of(event) if rule.occurred_of is not None else None
            identity = delivery or _fingerprint(event)
            for record in records:
                # One id per change: the event's, told apart by the record when it names several.
                parts = [identity]
                if len(events) > 1:
                    parts.append(str(number))
                if len(records) > 1:
                    parts.append(str(record))
                out.append(
                    PushedChange(
                        ":".join(parts), rule.stream, str(record), deleted=deleted, occurred_at=occurred
                    )
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
