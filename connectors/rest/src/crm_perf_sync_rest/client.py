"""The HTTP side of a spec: authentication, pacing, retries, and what an answer means.

Every request of a connection goes through one :class:`Client`, so its limits hold across
streams and lookups. An answer is classified by the spec's error rules (HTTP status and the body's
own code, which some CRMs send under a 200) into the SDK's error families: retried here with
backoff and the server's ``Retry-After`` up to ``limits.max_attempts`` (then
:class:`RetriableError` for the engine to resume from the last checkpoint), a spent quota
(:class:`QuotaExhaustedError`), or a fatal or configuration error a human must fix.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import jmespath
import orjson

from crm_perf_sync.connector_sdk import (
    ConnectorConfigError,
    ConnectorError,
    FatalError,
    QuotaExhaustedError,
    RetriableError,
    backoff_delay,
    retry_after,
)
from crm_perf_sync_rest.spec import Action, Auth, Spec
from crm_perf_sync_rest.templates import Variables, compile_template

_LINK_NEXT = re.compile(r'<(?P<url>[^>]+)>\s*;[^,]*rel="?next"?', re.IGNORECASE)
_SHOWN_BODY = 300


@dataclass(frozen=True, slots=True)
class Prepared:
    """A rendered request."""

    method: str
    url: str  # a path below the base URL (resolved when sent), or a whole URL
    query: Mapping[str, Any]
    headers: Mapping[str, str]
    body: Any = None
    form: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful answer: its parsed body and headers."""

    body: Any
    headers: httpx.Headers

    def next_link(self) -> str | None:
        """The URL of the ``Link`` header's ``rel="next"``, if any."""
        header = self.headers.get("link")
        match = _LINK_NEXT.search(header) if header else None
        return match["url"] if match else None


def _loads(content: bytes) -> Any:
    """A JSON body. orjson reads a page in less than half the time of the standard library; it reads
    a fraction as a float, which the mapping turns back into the Decimal written (exact up to 15
    significant digits, and refused beyond: see ``mapping``). What orjson cannot read (an integer
    beyond 64 bits) is read by the standard library, every fraction as a Decimal."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return json.loads(content, parse_float=Decimal)


class Client:
    """One connection's HTTP client. ``clock`` and ``sleep`` are the connector's (a test moves them)."""

    def __init__(
        self,
        spec: Spec,
        base_url: str,
        variables: Variables,
        *,
        clock: Callable[[], datetime],
        sleep: Callable[[float], None],
        max_attempts: int | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.spec = spec
        self.base_url = base_url.rstrip("/")
        self.variables = variables
        self.clock = clock
        self.sleep = sleep
        self.limits = spec.limits
        self.max_attempts = max_attempts or spec.limits.max_attempts
        self.requests = 0
        self._day: tuple[object, int] = (None, 0)
        self._next_at: datetime | None = None
        self._rng = random.Random()
        self._token: str | None = None
        self._token_expires: datetime | None = None
        self._code = jmespath.compile(spec.errors.code) if spec.errors.code else None
        self._message = jmespath.compile(spec.errors.message) if spec.errors.message else None
        self._success = {str(code) for code in spec.errors.success}
        auth = self.auth = choose_auth(spec, variables)
        self._auth_parts = {
            key: compile_template(getattr(auth, key), f"auth.{key}")
            for key in ("token", "value", "username", "password")
            if getattr(auth, key) is not None
        }
        self._oauth = (
            {
                key: compile_template(getattr(auth.oauth2, key), f"auth.oauth2.{key}")
                for key in ("token_url", "client_id", "client_secret", "refresh_token")
            }
            if auth.oauth2 is not None
            else {}
        )
        self.http = httpx.Client(timeout=spec.limits.timeout.total_seconds(), transport=transport)

    def close(self) -> None:
        self.http.close()

    # -- requests ------------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"

    def send(self, request: Prepared, what: str) -> Answer:
        """Send ``request`` until it succeeds or its failure is not worth retrying here.

        ``what`` names the request in errors (``stream opportunities``).
        """
        renewed = False
        attempt = 0
        while True:
            self._pace()
            try:
                response = self._send_once(request)
            except httpx.TransportError as exc:
                failure: ConnectorError = RetriableError(f"{what}: {type(exc).__name__}: {exc}")
            else:
                body, failure_or_none = self._classify(response, what)
                if failure_or_none is None:
                    self._note_headers(response.headers, what)
                    return Answer(body, response.headers)
                failure = failure_or_none
                if (
                    response.status_code == 401
                    and self.auth.type == "oauth2_refresh"
                    and not renewed
                    and not isinstance(failure, RetriableError)
                ):
                    # An access token can be revoked or expire early: renew it once, then believe it.
                    self._token = None
                    renewed = True
                    continue
            if not isinstance(failure, RetriableError):
                raise failure
            if failure.retry_after is not None and failure.retry_after > self.limits.max_wait.total_seconds():
                # Hours, not seconds: a budget is spent. The run stops; the next one resumes.
                raise QuotaExhaustedError(
                    f"{failure} (the server asks to wait {failure.retry_after:.0f} s)",
                    resume_after=failure.retry_after,
                )
            attempt += 1
            if attempt >= self.max_attempts:
                raise failure
            wait = failure.retry_after
            if wait is None:
                wait = backoff_delay(
                    attempt - 1,
                    base=self.limits.backoff_base.total_seconds(),
                    cap=self.limits.backoff_cap.total_seconds(),
                    rng=self._rng,
                )
            self.sleep(wait)

    def _send_once(self, request: Prepared) -> httpx.Response:
        headers = dict(request.headers)
        query = dict(request.query)
        body = request.body
        auth = self.auth
        basic: httpx.BasicAuth | None = None
        if auth.type == "bearer":
            headers["Authorization"] = f"Bearer {self._auth_parts['token'](self.variables)}"
        elif auth.type == "header":
            headers[str(auth.name)] = str(self._auth_parts["value"](self.variables))
        elif auth.type == "query":
            query[str(auth.name)] = self._auth_parts["value"](self.variables)
        elif auth.type == "body":
            body = {**(body or {}), str(auth.name): self._auth_parts["value"](self.variables)}
        elif auth.type == "basic":
            basic = httpx.BasicAuth(
                str(self._auth_parts["username"](self.variables)),
                str(self._auth_parts["password"](self.variables)),
            )
        elif auth.type == "oauth2_refresh":
            assert auth.oauth2 is not None
            headers["Authorization"] = f"{auth.oauth2.scheme} {self._access_token()}"
        content: bytes | None = None
        if request.form is None and body is not None:
            content = json.dumps(body, default=str, ensure_ascii=False).encode()
            headers.setdefault("Content-Type", "application/json")
        self.requests += 1
        return self.http.request(
            request.method,
            self.url(request.url),
            params=query or None,
            headers=headers,
            content=content,
            data=dict(request.form) if request.form is not None else None,
            auth=basic,
        )

    # -- answers -------------------------------------------------------------------------------------

    def _classify(self, response: httpx.Response, what: str) -> tuple[Any, ConnectorError | None]:
        status = response.status_code
        body: Any = None
        if response.content:
            try:
                body = _loads(response.content)
            except ValueError:
                body = None
        code = None
        if self._code is not None and isinstance(body, dict | list):
            code = self._code.search(body)
        body_error = code is not None and str(code) not in self._success
        if 200 <= status < 300 and not body_error:
            if body is None and response.content:
                text = response.text[:_SHOWN_BODY]
                return None, FatalError(f"{what}: HTTP {status} with a body that is not JSON: {text!r}")
            return body, None
        if status == 304:
            return None, None
        action, hint = self._action(status, code if body_error else None)
        if action == "ok":
            return body, None
        message = self._describe(response, body, code if body_error else None, what, hint)
        wait = retry_after(response.headers.get(self.limits.retry_after), now=self.clock())
        if action == "retry":
            return body, RetriableError(message, retry_after=wait)
        if action == "quota":
            return body, QuotaExhaustedError(message, resume_after=wait)
        if action == "config":
            return body, ConnectorConfigError(message)
        return body, FatalError(message)

    def _action(self, status: int, code: object) -> tuple[Action, str | None]:
        for rule in self.spec.errors.rules:
            if rule.matches(status, code):
                return rule.action, rule.message
        if 200 <= status < 300:
            return "fatal", None
        if status in (408, 429) or status >= 500:
            return "retry", None
        if status in (401, 403):
            return "fatal", None
        return "config", None

    def _describe(
        self, response: httpx.Response, body: Any, code: object, what: str, hint: str | None
    ) -> str:
        detail = None
        if self._message is not None and isinstance(body, dict | list):
            detail = self._message.search(body)
        if detail is None:
            detail = response.text[:_SHOWN_BODY] if response.content else ""
        request = response.request
        where = f"{request.method} {request.url.copy_with(query=None)}"
        parts = [f"{what}: {where} answered HTTP {response.status_code}"]
        if code is not None:
            parts.append(f"code {code}")
        text = ", ".join(parts) + (f": {detail}" if detail else "")
        return f"{text} ({hint})" if hint else text

    # -- limits ---------------------------------------------------------------------------------------

    def _pace(self) -> None:
        now = self.clock()
        day, used = self._day
        today = now.date()
        if day != today:
            used = 0
        if self.limits.requests_per_day is not None and used >= self.limits.requests_per_day:
            tomorrow = datetime.combine(today + timedelta(days=1), datetime.min.time(), now.tzinfo)
            raise QuotaExhaustedError(
                f"the spec's budget of {self.limits.requests_per_day} requests a day is spent",
                resume_after=(tomorrow - now).total_seconds(),
            )
        self._day = (today, used + 1)
        if self._next_at is not None and now < self._next_at:
            self.sleep((self._next_at - now).total_seconds())
            now = self._next_at
        if self.limits.requests_per_second is not None:
            self._next_at = now + timedelta(seconds=1 / self.limits.requests_per_second)

    def _note_headers(self, headers: httpx.Headers, what: str) -> None:
        rate = self.limits.headers
        if rate is None:
            return
        if rate.daily_remaining is not None and _number(headers.get(rate.daily_remaining)) == 0:
            raise QuotaExhaustedError(f"{what}: the API's daily budget is spent ({rate.daily_remaining}: 0)")
        remaining = _number(headers.get(rate.remaining))
        if remaining is None or remaining > 0 or rate.reset is None:
            return
        reset = _number(headers.get(rate.reset))
        if reset is None:
            return
        now = self.clock()
        wait = reset - now.timestamp() if rate.reset_kind == "epoch" else reset
        if wait > 0:
            until = now + timedelta(seconds=wait)
            self._next_at = until if self._next_at is None else max(self._next_at, until)

    # -- OAuth ----------------------------------------------------------------------------------------

    def _access_token(self) -> str:
        now = self.clock()
        if self._token is not None and self._token_expires is not None and now < self._token_expires:
            return self._token
        oauth = self.auth.oauth2
        assert oauth is not None
        values = {key: str(part(self.variables)) for key, part in self._oauth.items()}
        params = {
            "grant_type": "refresh_token",
            "refresh_token": values["refresh_token"],
            "client_id": values["client_id"],
            "client_secret": values["client_secret"],
        }
        client_auth: Any = httpx.USE_CLIENT_DEFAULT
        if oauth.client_auth == "basic":
            # RFC 6749 2.3.1: the client's credentials in a Basic header, not in the form.
            client_auth = httpx.BasicAuth(params.pop("client_id"), params.pop("client_secret"))
        self.requests += 1
        try:
            if oauth.params_in == "query":
                response = self.http.post(values["token_url"], params=params, auth=client_auth)
            else:
                response = self.http.post(values["token_url"], data=params, auth=client_auth)
        except httpx.TransportError as exc:
            raise RetriableError(f"OAuth token request: {type(exc).__name__}: {exc}") from None
        body: Any = None
        try:
            body = response.json()
        except ValueError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if response.status_code >= 500 or response.status_code == 429:
            raise RetriableError(f"OAuth token request answered HTTP {response.status_code}")
        if response.status_code >= 400 or not token:
            error = body.get("error") if isinstance(body, dict) else response.text[:_SHOWN_BODY]
            raise FatalError(
                f"OAuth token request to {values['token_url']} refused "
                f"(HTTP {response.status_code}: {error}); "
                "check client_id, client_secret and refresh_token"
            )
        ttl = _number(body.get("expires_in")) if isinstance(body, dict) else None
        lifetime = timedelta(seconds=ttl) if ttl else oauth.default_ttl
        self._token = str(token)
        # Renewed a little before it runs out, but never so early that a short-lived token is
        # renewed at every call (token endpoints limit how many they hand out).
        self._token_expires = now + lifetime - min(oauth.renew_before, lifetime / 2)
        if oauth.base_url_from is not None:
            found = jmespath.search(oauth.base_url_from, body)
            if isinstance(found, str) and found:
                self.base_url = found.rstrip("/")
        return self._token


def choose_auth(spec: Spec, variables: Variables) -> Auth:
    """The spec's way of signing in for these inputs: the first whose ``when`` holds."""
    options = spec.auth if isinstance(spec.auth, list) else [spec.auth]
    for index, option in enumerate(options):
        if option.when is None or compile_template(option.when, f"auth[{index}].when")(variables):
            return option
    conditions = "; ".join(str(option.when) for option in options)
    raise ConnectorConfigError(
        f"the inputs give no way to sign in (spec {spec.name} asks for one of: {conditions})"
    )


def _number(value: object) -> float | None:
    if value is None:
        return None
    try:
        return float(str(value))
    except ValueError:
        return None
