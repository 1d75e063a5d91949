"""The HubSpot API as the connector uses it: hubspot-api-client, paced, retried and classified.

Everything that talks to the network is here, and every call goes through :meth:`HubSpotApi._send`:

- **Pacing.** A token bucket per account and kind of request (search, everything else; see
  :mod:`.ratelimit`) is drawn before each request. ``X-HubSpot-RateLimit-Remaining`` caps the
  bucket to what the server says is left, and a ``X-HubSpot-RateLimit-Max`` per interval below
  the configured rate slows the bucket down to it; ``X-HubSpot-RateLimit-Daily-Remaining`` of
  zero stops the run before the next request (the allowance is shared with the portal's other
  apps).
- **Retries.** 429, 5xx and network errors are retried here, POST search and batch reads
  included: the client's urllib3 retry (switched off below) only ever retries idempotent methods,
  never a POST search, and it sleeps on its own, where no clock or budget of the connector
  applies. A 429 waits ``Retry-After`` when the server sends
  it, otherwise exponential backoff with jitter. After ``max_attempts`` the error goes up as a
  :class:`RetriableError`, and the sync engine resumes from the last checkpoint.
- **Classification.** 401/403 are :class:`ConnectorConfigError` (wrong or revoked credentials,
  missing scopes: :class:`MissingScopes` names the scopes HubSpot says the call needs), a 429 of
  the DAILY policy is :class:`QuotaExhaustedError`, other 4xx are :class:`FatalError`. Messages
  carry HubSpot's own message, category and correlation id, and never a credential.
- **OAuth.** With a refresh token the access token is obtained before the first request,
  renewed shortly before it expires and once more on a 401.

The client builds a new ``ApiClient`` (with its own connection pool) on every attribute access of
``client.crm.deals.search_api`` and the like, so the API objects are built once, here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import hubspot.crm.associations.v4.exceptions as associations_errors  # type: ignore[import-untyped]
import hubspot.crm.companies.exceptions as companies_errors  # type: ignore[import-untyped]
import hubspot.crm.contacts.exceptions as contacts_errors  # type: ignore[import-untyped]
import hubspot.crm.deals.exceptions as deals_errors  # type: ignore[import-untyped]
import hubspot.crm.objects.calls.exceptions as calls_errors  # type: ignore[import-untyped]
import hubspot.crm.objects.emails.exceptions as emails_errors  # type: ignore[import-untyped]
import hubspot.crm.objects.meetings.exceptions as meetings_errors  # type: ignore[import-untyped]
import hubspot.crm.objects.notes.exceptions as notes_errors  # type: ignore[import-untyped]
import hubspot.crm.objects.tasks.exceptions as tasks_errors  # type: ignore[import-untyped]
import hubspot.crm.owners.exceptions as owners_errors  # type: ignore[import-untyped]
import hubspot.crm.pipelines.exceptions as pipelines_errors  # type: ignore[import-untyped]
import hubspot.oauth.exceptions as oauth_errors  # type: ignore[import-untyped]
import urllib3
from hubspot import HubSpot
from urllib3.util.retry import Retry

from crm_perf_sync.connector_sdk import (
    ConnectorConfigError,
    FatalError,
    QuotaExhaustedError,
    RetriableError,
    backoff_delay,
    retry_after,
)
from crm_perf_sync_hubspot.ratelimit import AccountBuckets, account_buckets
from crm_perf_sync_hubspot.settings import HubSpotSettings

ObjectType = Literal["deals", "contacts", "companies", "calls", "emails", "meetings", "notes", "tasks"]
#: The engagement objects read as activities.
EngagementType = Literal["calls", "emails", "meetings", "notes", "tasks"]
ENGAGEMENTS: Final[tuple[EngagementType, ...]] = ("calls", "meetings", "emails", "notes", "tasks")
Kind = Literal["search", "general"]

_API_ERRORS: Final[tuple[type[Exception], ...]] = (
    deals_errors.ApiException,
    contacts_errors.ApiException,
    companies_errors.ApiException,
    calls_errors.ApiException,
    emails_errors.ApiException,
    meetings_errors.ApiException,
    notes_errors.ApiException,
    tasks_errors.ApiException,
    associations_errors.ApiException,
    owners_errors.ApiException,
    pipelines_errors.ApiException,
    oauth_errors.ApiException,
)
# Renew an OAuth access token this long before HubSpot says it expires (30 minutes by default).
_TOKEN_MARGIN_SECONDS: Final = 120.0
# Inputs per v4 association batch read (HubSpot accepts up to 1,000).
ASSOCIATION_BATCH: Final = 1000

Readable = Literal["owners", "deals", "contacts", "companies", "emails"]
#: The scope that lets an app read each kind of record (HubSpot's granular scopes). Calls,
#: meetings, notes and tasks are read with the contacts scope; logged emails need
#: ``sales-email-read`` (HubSpot's engagement documentation).
SCOPES: Final[Mapping[Readable, str]] = {
    "owners": "crm.objects.owners.read",
    "deals": "crm.objects.deals.read",
    "contacts": "crm.objects.contacts.read",
    "companies": "crm.objects.companies.read",
    "emails": "sales-email-read",
}
#: The object type each readable is checked with.
_CHECKED: Final[Mapping[Readable, ObjectType]] = {
    "deals": "deals",
    "contacts": "contacts",
    "companies": "companies",
    "emails": "emails",
}


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What HubSpot said in an error body ({"status": "error", "message", "category", ...})."""

    status: int
    message: str
    category: str | None = None
    policy: str | None = None
    correlation_id: str | None = None
    #: ``errors[].context.requiredGranularScopes`` of a 403 MISSING_SCOPES: any one would do.
    scopes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, status: int, body: object) -> ErrorInfo:
        data: Any = None
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        if isinstance(body, str) and body.strip():
            try:
                data = json.loads(body)
            except ValueError:
                data = None
        if not isinstance(data, dict):
            return cls(status, f"HTTP {status}")

        def text(key: str) -> str | None:
            value = data.get(key)
            return str(value) if value is not None else None

        scopes: list[str] = []
        details = data.get("errors")
        for detail in details if isinstance(details, list) else []:
            context = detail.get("context") if isinstance(detail, dict) else None
            if isinstance(context, dict):
                for key in ("requiredGranularScopes", "requiredScopes"):
                    named = context.get(key)
                    if isinstance(named, list):
                        scopes.extend(str(scope) for scope in named if str(scope) not in scopes)
        return cls(
            status,
            text("message") or f"HTTP {status}",
            category=text("category") or text("errorType") or text("status"),
            policy=text("policyName"),
            correlation_id=text("correlationId"),
            scopes=tuple(scopes),
        )

    def describe(self) -> str:
        parts = [f"HTTP {self.status}"]
        if self.category:
            parts.append(self.category)
        text = f"{' '.join(parts)}: {self.message}"
        if self.correlation_id:
            text += f" (correlation id {self.correlation_id})"
        return text


class MissingScopes(ConnectorConfigError):
    """403 MISSING_SCOPES: the app has not been granted a scope the call needs."""

    def __init__(self, message: str, info: ErrorInfo) -> None:
        super().__init__(message)
        self.info = info


def _int_header(headers: Mapping[str, str] | None, name: str) -> int | None:
    if headers is None:
        return None
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def account_fingerprint(settings: HubSpotSettings) -> str:
    """A stable, non-reversible name for the account behind the credentials (for the rate buckets)."""
    if settings.access_token is not None:
        identity = settings.access_token.get_secret_value()
    else:
        assert settings.oauth is not None
        identity = f"{settings.oauth.client_id}\0{settings.oauth.refresh_token.get_secret_value()}"
    return hashlib.sha256(f"{settings.base_url}\0{identity}".encode()).hexdigest()[:16]


class HubSpotApi:
    """The calls the connector makes, over one set of hubspot-api-client objects.

    ``clock`` is the connector context's clock (for token expiry and pacing); ``sleep`` waits
    between attempts and for the rate buckets; ``max_attempts`` caps the settings' tries of one
    request (for a caller that wants a prompt answer).
    """

    def __init__(
        self,
        settings: HubSpotSettings,
        *,
        clock: Callable[[], datetime],
        sleep: Callable[[float], None],
        logger: logging.Logger,
        rng: random.Random | None = None,
        max_attempts: int | None = None,
    ) -> None:
        self.settings = settings
        self.max_attempts = min(settings.max_attempts, max_attempts or settings.max_attempts)
        self.clock = clock
        self.sleep = sleep
        self.log = logger
        self.rng = rng or random.Random()
        self.timeout = settings.timeout.total_seconds()
        limits = settings.rate_limits
        self.buckets: AccountBuckets = account_buckets(
            account_fingerprint(settings), limits.general_rate, limits.search_per_second
        )
        token = settings.access_token.get_secret_value() if settings.access_token is not None else None
        # total=0: no retries inside urllib3 (see the module docstring); every failure reaches _send.
        client = HubSpot(access_token=token, host=settings.base_url, retry=Retry(total=0, redirect=0))
        crm = client.crm
        # Each discovery attribute builds new API objects: take every one once.
        discovered: dict[str, Any] = {
            "deals": crm.deals,
            "contacts": crm.contacts,
            "companies": crm.companies,
            **{kind: getattr(crm.objects, kind) for kind in ENGAGEMENTS},
        }
        self._search = {kind: found.search_api for kind, found in discovered.items()}
        self._basic = {kind: found.basic_api for kind, found in discovered.items()}
        self._batch = {kind: found.batch_api for kind, found in discovered.items()}
        self._associations = crm.associations.v4.batch_api
        self._owners = crm.owners.owners_api
        self._pipelines = crm.pipelines.pipelines_api
        self._tokens = client.oauth.tokens_api if settings.oauth is not None else None
        self._apis: list[Any] = [
            *self._search.values(),
            *self._basic.values(),
            *self._batch.values(),
            self._associations,
            self._owners,
            self._pipelines,
        ]
        if self._tokens is not None:
            self._apis.append(self._tokens)
        self._token_expires: float | None = None
        self._daily_spent = False
        self.requests = 0

    # -- the calls ------------------------------------------------------------------------------

    def search(self, object_type: ObjectType, body: Mapping[str, Any]) -> tuple[list[Any], int]:
        """One page of ``POST /crm/v3/objects/{type}/search``: (results, total)."""
        api = self._search[object_type]
        page = self._send(
            "search",
            f"search of {object_type}",
            lambda: api.do_search_with_http_info(public_object_search_request=dict(body), **self._opts()),
        )
        return list(page.results or []), int(page.total or 0)

    def list_page(
        self,
        object_type: ObjectType,
        *,
        after: str | None,
        properties: Sequence[str],
        archived: bool,
        limit: int = 100,
    ) -> tuple[list[Any], str | None]:
        """One page of ``GET /crm/v3/objects/{type}``: (results, the next page's ``after``)."""
        api = self._basic[object_type]
        kwargs: dict[str, Any] = {"limit": limit, "properties": list(properties), "archived": archived}
        if after is not None:
            kwargs["after"] = after
        page = self._send(
            "general",
            f"list of {'archived ' if archived else ''}{object_type}",
            lambda: api.get_page_with_http_info(**kwargs, **self._opts()),
        )
        return list(page.results or []), _next_after(page)

    def batch_read(
        self,
        object_type: ObjectType,
        ids: Sequence[str],
        *,
        properties: Sequence[str],
        with_history: Sequence[str] = (),
    ) -> list[Any]:
        """``POST /crm/v3/objects/{type}/batch/read`` of ``ids`` (ids deleted meanwhile are missing)."""
        if not ids:
            return []
        api = self._batch[object_type]
        body: dict[str, Any] = {"inputs": [{"id": i} for i in ids], "properties": list(properties)}
        if with_history:
            body["propertiesWithHistory"] = list(with_history)

        def call() -> tuple[Any, int, Any]:
            # _preload_content=False: the objects are read here (:class:`FetchedObject`); the
            # client's models parse every timestamp with dateutil, which took a pushed change's
            # fetch most of its time (errors are raised by the client all the same).
            response = api.read_with_http_info(
                batch_read_input_simple_public_object_id=body,
                archived=False,
                _preload_content=False,
                **self._opts(),
            )
            try:
                return response.data, response.status, response.headers
            finally:
                response.release_conn()

        raw = self._send("general", f"batch read of {object_type}", call)
        try:
            return [FetchedObject.parse(item) for item in json.loads(raw).get("results") or []]
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            what = f"batch read of {object_type}: not the documented batch result"
            raise RetriableError(f"{what} ({exc})") from None

    def associations(self, from_type: str, to_type: str, ids: Iterable[str]) -> dict[str, list[str]]:
        """The ids of the ``to_type`` records associated with each of ``ids`` (v4 batch read).

        Records without associations are left out (HubSpot reports them as errors of a 207
        response). Each record's associations may be paged; every page is followed.
        """
        found: dict[str, list[str]] = {}
        for source, target, _types in self._association_pages(from_type, to_type, ids):
            found.setdefault(source, []).append(target)
        return found

    def primary_associations(
        self, from_type: str, to_type: str, ids: Iterable[str], *, primary_type: int | None
    ) -> dict[str, str]:
        """The one ``to_type`` record each of ``ids`` belongs to: the association of type
        ``primary_type`` (HubSpot's "Deal with Primary Company" is 5, a contact's is 1), else,
        with none primary, the lowest id (the earliest created). Records without any are left out.
        """
        primary: dict[str, str] = {}
        lowest: dict[str, str] = {}
        for source, target, types in self._association_pages(from_type, to_type, ids):
            if primary_type is not None and primary_type in types:
                primary.setdefault(source, target)
            current = lowest.get(source)
            if current is None or (len(target), target) < (len(current), current):
                lowest[source] = target
        return {source: primary.get(source, target) for source, target in lowest.items()}

    def _association_pages(
        self, from_type: str, to_type: str, ids: Iterable[str]
    ) -> Iterator[tuple[str, str, frozenset[int]]]:
        """Every (record, associated record, association type ids) of the v4 batch reads."""
        pending: list[dict[str, str]] = [{"id": i} for i in ids]
        while pending:
            inputs, pending = pending[:ASSOCIATION_BATCH], pending[ASSOCIATION_BATCH:]
            body = {"inputs": inputs}

            def call(body: dict[str, Any] = body) -> Any:
                return self._associations.get_page_with_http_info(
                    from_type,
                    to_type,
                    batch_input_public_fetch_associations_batch_request=body,
                    **self._opts(),
                )

            page = self._send("general", f"association read {from_type} -> {to_type}", call)
            for result in page.results or []:
                source = str(result._from.id)
                for item in result.to or []:
                    types = frozenset(
                        int(t.type_id) for t in item.association_types or [] if t.type_id is not None
                    )
                    yield source, str(item.to_object_id), types
                after = _next_after(result)
                if after is not None:
                    pending.append({"id": source, "after": after})

    def owners(self, *, archived: bool) -> Iterator[Any]:
        """Every owner (``GET /crm/v3/owners``), active or archived (deactivated users)."""
        after: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": 100, "archived": archived}
            if after is not None:
                kwargs["after"] = after

            def call(kwargs: dict[str, Any] = kwargs) -> Any:
                return self._owners.get_page_with_http_info(**kwargs, **self._opts())

            page = self._send("general", "list of owners", call)
            yield from page.results or []
            after = _next_after(page)
            if after is None:
                return

    def pipelines(self, object_type: ObjectType) -> list[Any]:
        """The object type's pipelines with their stages (``GET /crm/v3/pipelines/{type}``)."""
        page = self._send(
            "general",
            f"pipelines of {object_type}",
            lambda: self._pipelines.get_all_with_http_info(object_type, **self._opts()),
        )
        return list(page.results or [])

    def check(self, readable: Readable) -> None:
        """One cheap read of ``readable`` records: proves the base URL, the credentials and the
        scope (:data:`SCOPES`) that reading them takes, or raises :class:`MissingScopes`."""
        # Owners and objects are both listed by ``get_page``: one record of either is enough.
        api = self._owners if readable == "owners" else self._basic[_CHECKED[readable]]
        fields: dict[str, Any] = {} if readable == "owners" else {"properties": ["hs_object_id"]}
        self._send(
            "general",
            f"check of the {readable} scope",
            lambda: api.get_page_with_http_info(limit=1, archived=False, **fields, **self._opts()),
        )

    def close(self) -> None:
        """Close the connection pools of every API object."""
        for api in self._apis:
            api.api_client.rest_client.pool_manager.clear()
            api.api_client.close()

    # -- one request ----------------------------------------------------------------------------

    def _opts(self) -> dict[str, Any]:
        return {"_request_timeout": (self.timeout, self.timeout)}

    def _now(self) -> float:
        return self.clock().timestamp()

    def _send(self, kind: Kind, what: str, call: Callable[[], Any], *, authorize: bool = True) -> Any:
        """Run ``call`` (a ``*_with_http_info`` method) with pacing, retries and classification."""
        attempt = 0
        refreshed = False
        while True:
            if self._daily_spent:
                raise QuotaExhaustedError(
                    "HubSpot's daily API limit of this portal is spent; the next run resumes"
                )
            if authorize:
                self._ensure_token()
            self._pace(kind)
            delay: float | None = None
            try:
                self.requests += 1
                result = call()
            except _API_ERRORS as exc:
                status = int(getattr(exc, "status", 0) or 0)
                headers = getattr(exc, "headers", None)
                info = ErrorInfo.parse(status, getattr(exc, "body", None))
                self._observe(headers)
                if status == 401:
                    if not authorize:
                        raise ConnectorConfigError(f"HubSpot refused the {what}: {info.describe()}") from None
                    if self._tokens is not None and not refreshed:
                        refreshed = True
                        self._refresh()
                        continue
                    raise ConnectorConfigError(self._auth_failure(info)) from None
                if status == 403 and info.category == "MISSING_SCOPES":
                    raise MissingScopes(
                        f"HubSpot refused the {what}: the app lacks the scope "
                        f"{' or '.join(info.scopes) or '(unnamed)'} ({info.describe()})",
                        info,
                    ) from None
                if status == 403:
                    # Not a scope HubSpot names: the user behind the token may lack a permission.
                    raise ConnectorConfigError(
                        f"HubSpot refused the {what} ({info.describe()}): check the app's scopes "
                        f"({', '.join(SCOPES.values())}) and the permissions of the user who installed it"
                    ) from None
                if status == 429:
                    if (info.policy or "").upper() == "DAILY":
                        raise QuotaExhaustedError(
                            f"HubSpot's daily API limit is spent ({info.describe()}); the next run resumes"
                        ) from None
                    delay = retry_after(_header(headers, "Retry-After"), now=self.clock())
                    reason = f"rate limited ({info.policy or 'no policy named'})"
                elif status >= 500 or status == 0:
                    reason = info.describe() if status else f"connection failed ({info.message})"
                else:
                    raise FatalError(f"HubSpot rejected the {what}: {info.describe()}") from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                reason = f"network error ({type(exc).__name__})"
            else:
                data, _status, headers = result
                self._observe(headers)
                return data
            attempt += 1
            if attempt >= self.max_attempts:
                raise RetriableError(
                    f"{what}: {reason}, {attempt} attempt{'' if attempt == 1 else 's'}", retry_after=delay
                )
            wait = delay if delay is not None else self._backoff(attempt - 1)
            self.log.warning(
                "hubspot %s: %s; attempt %d of %d in %.1fs",
                what,
                reason,
                attempt + 1,
                self.max_attempts,
                wait,
            )
            self.sleep(wait)

    def _backoff(self, retries: int) -> float:
        base, cap = self.settings.backoff.total_seconds(), self.settings.max_backoff.total_seconds()
        return backoff_delay(retries, base=base, cap=cap, rng=self.rng)

    def _pace(self, kind: Kind) -> None:
        bucket = self.buckets.search if kind == "search" else self.buckets.general
        wait = bucket.reserve(self._now())
        if wait > 0:
            self.sleep(wait)

    def _observe(self, headers: Mapping[str, str] | None) -> None:
        """Follow what the rate-limit headers of a response say."""
        if headers is None:
            return
        daily_remaining = _int_header(headers, "X-HubSpot-RateLimit-Daily-Remaining")
        if daily_remaining is not None and daily_remaining <= 0:
            self._daily_spent = True
        remaining = _int_header(headers, "X-HubSpot-RateLimit-Remaining")
        if remaining is not None:
            self.buckets.general.limit_to(remaining, self._now())
        maximum = _int_header(headers, "X-HubSpot-RateLimit-Max")
        interval = _int_header(headers, "X-HubSpot-RateLimit-Interval-Milliseconds")
        if maximum and interval:
            allowed = maximum / (interval / 1000)
            bucket = self.buckets.general
            if allowed < bucket.rate:
                # Configured faster than the app may go (a lower tier, another app's share):
                # the server's number wins, or every window would end in 429s.
                bucket.slow_to(allowed)
                self.log.warning(
                    "HubSpot allows this app %d requests per %.0fs, fewer than settings.rate_limits; "
                    "pacing at %.1f per second",
                    maximum,
                    interval / 1000,
                    allowed,
                )

    # -- authentication -------------------------------------------------------------------------

    def _auth_failure(self, info: ErrorInfo) -> str:
        if self._tokens is not None:
            return (
                f"HubSpot refused the OAuth access token even after a refresh ({info.describe()}): "
                "check settings.oauth"
            )
        return (
            f"HubSpot refused the access token ({info.describe()}): check settings.access_token "
            "(a private app's token, from the environment)"
        )

    def _ensure_token(self) -> None:
        if self._tokens is None:
            return
        if self._token_expires is None or self._now() >= self._token_expires - _TOKEN_MARGIN_SECONDS:
            self._refresh()

    def _refresh(self) -> None:
        """Trade the refresh token for a new access token and hand it to every API object."""
        oauth = self.settings.oauth
        tokens = self._tokens
        assert oauth is not None
        assert tokens is not None

        def call() -> tuple[Any, int, Any]:
            # _preload_content=False: the client logs every preloaded response body at DEBUG,
            # and this one holds the tokens.
            response = tokens.create(
                grant_type="refresh_token",
                client_id=oauth.client_id,
                client_secret=oauth.client_secret.get_secret_value(),
                refresh_token=oauth.refresh_token.get_secret_value(),
                _preload_content=False,
                **self._opts(),
            )
            try:
                return response.data, response.status, response.headers
            finally:
                response.release_conn()

        try:
            raw = self._send("general", "OAuth token refresh", call, authorize=False)
        except FatalError as exc:  # ConnectorConfigError included: the grant itself was refused
            raise ConnectorConfigError(
                f"{exc}; check settings.oauth (client id {oauth.client_id!r}, its secret, the refresh token)"
            ) from None
        try:
            grant = json.loads(raw)
            access_token = str(grant["access_token"])
            expires_in = float(grant.get("expires_in") or 1800)
        except (ValueError, KeyError, TypeError):
            raise FatalError("HubSpot answered the OAuth refresh without a usable token") from None
        for api in self._apis:
            api.api_client.configuration.access_token = access_token
        self._token_expires = self._now() + expires_in
        self.log.info("hubspot: OAuth access token renewed (valid for %.0fs)", expires_in)


@dataclass(frozen=True, slots=True)
class Stamped:
    """One value of a property's history: the value and when it was set."""

    value: str | None
    timestamp: datetime | None


@dataclass(frozen=True, slots=True)
class FetchedObject:
    """A CRM object of a batch read, with the attributes of the client's ``SimplePublicObject``
    the mapping reads; its timestamps aware, parsed as ISO 8601."""

    id: str
    properties: dict[str, str | None]
    properties_with_history: dict[str, list[Stamped]] | None
    created_at: datetime | None
    updated_at: datetime | None
    archived: bool
    archived_at: datetime | None

    @staticmethod
    def parse(item: Mapping[str, Any]) -> FetchedObject:
        history = item.get("propertiesWithHistory")
        return FetchedObject(
            id=str(item["id"]),
            properties=dict(item.get("properties") or {}),
            properties_with_history=None
            if history is None
            else {
                name: [Stamped(entry.get("value"), _instant(entry.get("timestamp"))) for entry in entries]
                for name, entries in history.items()
            },
            created_at=_instant(item.get("createdAt")),
            updated_at=_instant(item.get("updatedAt")),
            archived=bool(item.get("archived")),
            archived_at=_instant(item.get("archivedAt")),
        )


def _instant(value: str | None) -> datetime | None:
    """An ISO 8601 timestamp as HubSpot writes them (``2024-05-01T09:30:00.123Z``), aware."""
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    return headers.get(name) if headers is not None else None


def _next_after(page: Any) -> str | None:
    paging = getattr(page, "paging", None)
    following = getattr(paging, "next", None) if paging is not None else None
    after = getattr(following, "after", None) if following is not None else None
    return str(after) if after not in (None, "") else None
