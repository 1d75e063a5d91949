"""The org over HTTP: simple-salesforce calls, their errors classified, the API budget watched.

Every request goes through one ``requests.Session`` (keep-alive, the configured ``ca_bundle``, a
default timeout) and every error leaves this module as one of the SDK's connector errors, or as
one of the few signals the scan handles itself (:class:`LocatorInvalid`, :class:`QueryTimeout`,
:class:`NotFound`, :class:`ReplicationWindow`). Messages quote the server, never a secret: every
message is scrubbed of the configured secrets and the session token before it is raised.

A session ends when the org says so (its timeout, an admin, a password change), between two
calls as well as within a query: every call goes through :meth:`SalesforceClient.call`, which
meets ``INVALID_SESSION_ID`` by logging in again once and repeating the call. Only a query
locator dies with its session; for it, the renewed session comes back as :class:`LocatorInvalid`
and the scan restarts its query from its last row.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)
from simple_salesforce.util import exception_handler

from crm_perf_sync.connector_sdk import (
    ConnectorConfigError,
    ConnectorError,
    FatalError,
    QuotaExhaustedError,
    RetriableError,
    retry_after,
)
from crm_perf_sync_salesforce.auth import Session, can_renew, login, secrets_of
from crm_perf_sync_salesforce.settings import SalesforceSettings

T = TypeVar("T")

_LIMIT_INFO = re.compile(r"api-usage=(\d+)/(\d+)")


class _SessionExpired(Exception):
    """401 INVALID_SESSION_ID with credentials that can log in again (handled by ``call``)."""


class SessionRefused(FatalError):
    """INVALID_SESSION_ID again right after logging in: the org ends this user's sessions at once."""


class LocatorInvalid(Exception):
    """A query locator the server no longer honours (it belongs to an older session, or expired)."""


class QueryTimeout(Exception):
    """400 QUERY_TIMEOUT: the query scans too much; a narrower window may pass."""


class NotFound(Exception):
    """404 for a resource that may legitimately be gone (a Bulk job past its retention)."""


class ReplicationWindow(Exception):
    """The deleted-records feed no longer reaches back to the requested start."""


@dataclass(frozen=True, slots=True)
class Usage:
    """The org's daily API requests: used of total, as the last response reported."""

    used: int
    total: int

    @property
    def share(self) -> float:
        return self.used / self.total if self.total else 1.0


class _Transport(HTTPAdapter):
    """Every request gets a timeout (simple-salesforce sends most without one) and, when
    ``ca_bundle`` is configured, that bundle: a ``Session.verify`` alone loses to the
    ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` environment variables (requests issue 3829)."""

    def __init__(self, timeout: float, ca_bundle: str | None) -> None:
        super().__init__(pool_connections=2, pool_maxsize=4)
        self.timeout = timeout
        self.ca_bundle = ca_bundle

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        if self.ca_bundle is not None:
            kwargs["verify"] = self.ca_bundle
        return super().send(request, **kwargs)


class SalesforceClient:
    """One org, one session at a time; not thread-safe except for :meth:`prefetch`'s one-ahead reads."""

    def __init__(self, settings: SalesforceSettings, logger: logging.Logger) -> None:
        self.settings = settings
        self.log = logger
        self.usage: Usage | None = None
        self.logins = 0
        self._http: requests.Session | None = None
        self._sf: Salesforce | None = None
        self._session: Session | None = None
        self._secrets = secrets_of(settings)
        self._retry_after: float | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._describes: dict[str, Mapping[str, Any]] = {}

    # -- plumbing ------------------------------------------------------------------------------------

    @property
    def http(self) -> requests.Session:
        if self._http is None:
            http = requests.Session()
            bundle = (
                str(self.settings.ca_bundle.expanduser()) if self.settings.ca_bundle is not None else None
            )
            if bundle is not None:
                http.verify = bundle
            http.mount("https://", _Transport(self.settings.timeout, bundle))
            http.hooks["response"].append(self._observe)
            self._http = http
        return self._http

    def _observe(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        """Every response: the API usage it reports and, on an error, when to come back."""
        info = response.headers.get("Sforce-Limit-Info")
        if info:
            match = _LIMIT_INFO.search(info)
            if match:
                self.usage = Usage(int(match.group(1)), int(match.group(2)))
        self._retry_after = None
        if response.status_code >= 400:
            self._retry_after = retry_after(response.headers.get("Retry-After"))

    def sf(self) -> Salesforce:
        """The simple-salesforce client of the current session (logging in first if needed)."""
        if self._sf is None:
            self.connect()
        assert self._sf is not None
        return self._sf

    def connect(self) -> None:
        session = self._guard("the login", lambda: login(self.settings, self.http))
        self.logins += 1
        self._session = session
        self._secrets = [*secrets_of(self.settings), session.token]
        self._sf = Salesforce(
            session_id=session.token,
            instance=session.instance,
            version=self.settings.api_version,
            session=self.http,
            # Exact amounts (no binary floats), plain dicts (faster than OrderedDict).
            parse_float=Decimal,
            object_pairs_hook=None,
        )
        self.log.info("salesforce: logged in to %s (%s)", session.instance, self.settings.auth.type)

    def relogin(self) -> None:
        """Replace an expired session (credentials that can log in again only)."""
        self._sf = None
        self.log.info("salesforce: the session expired; logging in again")
        self.connect()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._http is not None:
            self._http.close()
            self._http = None
        self._sf = None

    def redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    def over_budget(self) -> bool:
        """Whether the configured share of the daily API budget is used up."""
        return self.usage is not None and self.usage.share >= self.settings.max_api_share

    def budget_text(self) -> str:
        if self.usage is None:
            return "unknown"
        return f"{self.usage.used:,} of {self.usage.total:,} daily API requests used"

    def check_budget(self) -> None:
        """Raise :class:`QuotaExhaustedError` once the configured share of the budget is used up."""
        if self.over_budget():
            share = self.settings.max_api_share
            raise QuotaExhaustedError(
                f"{self.budget_text()}, the configured limit is {share:.0%} of the daily budget"
            )

    # -- error classification ------------------------------------------------------------------------

    def call(self, what: str, action: Callable[[Salesforce], T], *, locator: bool = False) -> T:
        """Run ``action`` with the current client; errors leave as connector errors or scan signals.

        An expired session is renewed once and ``action`` run again with the new one, unless it
        follows a query ``locator``: that died with the old session, and :class:`LocatorInvalid`
        tells the scan to restart its query. A session refused right after it was issued is not
        renewed again (:class:`SessionRefused`): whatever ended it would end the next one too.
        """
        try:
            return self._guard(what, lambda: action(self.sf()))
        except _SessionExpired:
            self.relogin()
        if locator:
            raise LocatorInvalid(f"{what}: the session expired, and the query locator with it")
        try:
            return self._guard(what, lambda: action(self.sf()))
        except _SessionExpired as exc:
            raise SessionRefused(
                f"{exc}, again right after logging in: the org ends this user's sessions at once "
                "(check its session settings, such as sessions locked to the IP address they began from)"
            ) from None

    def _guard(self, what: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except SalesforceError as exc:
            self._raise_for(what, exc)
        except requests.exceptions.SSLError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise ConnectorConfigError(
                    f"{what}: the TLS certificate of the server is not trusted; if the org is reached "
                    "through a TLS-inspecting proxy, set ca_bundle to its CA certificates (PEM)"
                ) from None
            raise RetriableError(self.redact(f"{what}: TLS error: {exc}")) from None
        except requests.exceptions.Timeout:
            raise RetriableError(f"{what}: no answer within {self.settings.timeout:g} s") from None
        except requests.exceptions.ConnectionError as exc:
            raise RetriableError(self.redact(f"{what}: {_unreachable(exc)}")) from None
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
            raise RetriableError(
                self.redact(f"{what}: the connection failed: {type(exc).__name__}")
            ) from None
        except ValueError as exc:
            # A body cut short still parses as far as it got: JSON that does not decode.
            raise RetriableError(self.redact(f"{what}: an unreadable response ({exc})")) from None

    def _raise_for(self, what: str, exc: SalesforceError) -> NoReturn:
        code, message = _error_of(exc.content)
        text = self.redact(f"{what}: {code}: {message}" if code else f"{what}: HTTP {exc.status}: {message}")
        if isinstance(exc, SalesforceExpiredSession) or code == "INVALID_SESSION_ID":
            if can_renew(self.settings):
                raise _SessionExpired(text) from None
            raise ConnectorConfigError(
                f"{text}: Salesforce refused the configured session; it has expired or was revoked: "
                "configure a fresh auth.session_id, or an auth type that can log in again"
            ) from None
        if isinstance(exc, SalesforceRefusedRequest) and code == "REQUEST_LIMIT_EXCEEDED":
            # The same code means two things: the daily total is spent (wait for tomorrow), or too
            # many long requests run at once (ConcurrentPerOrgLongTxn: retry shortly).
            if "concurrent" in message.lower():
                raise RetriableError(text, retry_after=self._retry_after) from None
            raise QuotaExhaustedError(text) from None
        if code == "QUERY_TIMEOUT":
            raise QueryTimeout(text) from None
        if code == "INVALID_QUERY_LOCATOR":
            raise LocatorInvalid(text) from None
        if code == "INVALID_REPLICATION_DATE":
            raise ReplicationWindow(text) from None
        if exc.status == 429 or exc.status >= 500:
            raise RetriableError(text, retry_after=self._retry_after) from None
        if isinstance(exc, SalesforceResourceNotFound):
            raise NotFound(text) from None
        if isinstance(exc, SalesforceRefusedRequest):
            raise FatalError(f"{text} (check the integration user's permissions)") from None
        if isinstance(exc, SalesforceMalformedRequest):
            raise ConnectorConfigError(text) from None
        raise FatalError(text) from None

    # -- REST ------------------------------------------------------------------------------------------

    def query_pages(self, soql: str, *, include_deleted: bool) -> Iterator[dict[str, Any]]:
        """The pages of one query, following ``nextRecordsUrl`` (a server-relative locator URL)."""
        headers = {"Sforce-Query-Options": f"batchSize={self.settings.page_size}"}
        page: dict[str, Any] = self.call(
            "the query", lambda sf: sf.query(soql, include_deleted=include_deleted, headers=headers)
        )
        yield page
        while not page.get("done", True):
            url = str(page["nextRecordsUrl"])
            page = self.call("the next query page", partial(_query_more, url=url), locator=True)
            yield page

    def count(self, soql: str, *, include_deleted: bool) -> int:
        page = self.call("the count", lambda sf: sf.query(soql, include_deleted=include_deleted))
        return int(page["totalSize"])

    def describe(self, sobject: str) -> Mapping[str, Any]:
        """The object's describe (cached for the connector's lifetime)."""
        found = self._describes.get(sobject)
        if found is None:
            try:
                result = self.call(
                    f"the describe of {sobject}", lambda sf: sf.restful(f"sobjects/{sobject}/describe")
                )
            except NotFound:
                raise ConnectorConfigError(
                    f"the org has no {sobject} object the integration user can see (describe answered 404)"
                ) from None
            found = result or {}
            self._describes[sobject] = found
        return found

    def limits(self) -> Mapping[str, Any]:
        result: Mapping[str, Any] = self.call("the limits", lambda sf: sf.limits())
        return result

    def deleted(self, sobject: str, start: datetime, end: datetime) -> Mapping[str, Any]:
        params = {"start": start.isoformat(timespec="seconds"), "end": end.isoformat(timespec="seconds")}
        result = self.call(
            f"the deleted {sobject} records",
            lambda sf: sf.restful(f"sobjects/{sobject}/deleted/", params=params),
        )
        return result or {}

    # -- Bulk API 2.0 ----------------------------------------------------------------------------------

    def bulk_create(self, soql: str, *, include_deleted: bool) -> str:
        payload = {
            "operation": "queryAll" if include_deleted else "query",
            "query": soql,
            "contentType": "CSV",
            "columnDelimiter": "COMMA",
            "lineEnding": "LF",
        }
        job: Mapping[str, Any] = self.call(
            "the Bulk query job", lambda sf: sf.restful("jobs/query", method="POST", json=payload) or {}
        )
        return str(job["id"])

    def bulk_state(self, job_id: str) -> Mapping[str, Any]:
        result: Mapping[str, Any] = self.call(
            "the Bulk job status", lambda sf: sf.restful(f"jobs/query/{job_id}") or {}
        )
        return result

    def bulk_results(self, job_id: str, locator: str | None) -> tuple[list[dict[str, str]], str | None]:
        """One CSV page of a completed job's rows, and the locator of the next (``None``: last page)."""

        def fetch(sf: Salesforce) -> tuple[list[dict[str, str]], str | None]:
            params: dict[str, Any] = {"maxRecords": self.settings.bulk_page_size}
            if locator:
                params["locator"] = locator
            headers = {**sf.headers, "Accept": "text/csv"}
            response = sf.session.get(
                f"{sf.base_url}jobs/query/{job_id}/results", headers=headers, params=params
            )
            if response.status_code >= 300:
                exception_handler(response, "the Bulk job results")
            following = response.headers.get("Sforce-Locator")
            text = response.content.decode("utf-8").replace("\x00", "")
            rows = list(csv.DictReader(io.StringIO(text)))
            declared = response.headers.get("Sforce-NumberOfRecords")
            if declared is not None and int(declared) != len(rows):
                # A page cut short parses as fewer rows: retry it rather than skip the rest.
                raise ValueError(f"the page has {len(rows)} rows, the server announced {declared}")
            return rows, None if following in (None, "", "null") else following

        return self.call("the Bulk job results", fetch)

    def bulk_pages(
        self, job_id: str, locator: str | None
    ) -> Iterator[tuple[list[dict[str, str]], str | None]]:
        """The CSV pages of a completed job from ``locator`` on (``None``: the first), each with the
        locator of the one after it, following ``Sforce-Locator`` to the last."""
        while True:
            rows, following = self.bulk_results(job_id, locator)
            yield rows, following
            if following is None:
                return
            locator = following

    def bulk_delete(self, job_id: str) -> None:
        try:
            self.call("the Bulk job cleanup", lambda sf: sf.restful(f"jobs/query/{job_id}", method="DELETE"))
        except (ConnectorError, NotFound) as exc:
            # The results are read; a job left behind expires by itself.
            self.log.info("salesforce: could not delete Bulk job %s: %s", job_id, exc)

    # -- read-ahead ------------------------------------------------------------------------------------

    def prefetch(self, pages: Iterator[T]) -> Iterator[T]:
        """``pages`` with the next one fetched while the caller works on the current one.

        Network time and the parsing of the next page overlap the mapping and storing of this one.
        Errors arrive in order, when the caller asks for the page that failed. At most one request
        is in flight; when the caller stops early it is waited for, so nothing outlives the read.
        No page is fetched ahead once the configured share of the API budget is used up (the
        response to the last one said so): the caller stops at that page's checkpoint, and one
        asking on meets :class:`QuotaExhaustedError`.
        """
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="salesforce-read-ahead")
        pool = self._pool
        done, withheld = object(), object()

        def step() -> Any:
            return withheld if self.over_budget() else next(pages, done)

        future: Future[Any] = pool.submit(step)
        try:
            while True:
                item = future.result()
                if item is done:
                    return
                if item is withheld:
                    self.check_budget()
                future = pool.submit(step)
                yield item
        finally:
            if not future.done():
                try:
                    future.result()
                except Exception:
                    self.log.debug("salesforce: a read-ahead page failed after the read stopped")


def _unreachable(exc: requests.exceptions.ConnectionError) -> str:
    """Which host could not be reached and why, from the layers of errors requests wraps."""
    host = urlsplit(exc.request.url).netloc if exc.request is not None and exc.request.url else None
    reason = None
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        if isinstance(current, OSError) and current.strerror:
            reason = current.strerror
        wrapped = getattr(current, "reason", None)
        if isinstance(wrapped, BaseException):
            current = wrapped
        elif current.args and isinstance(current.args[0], BaseException):
            current = current.args[0]
        else:
            current = current.__cause__ or current.__context__
    where = f"cannot connect to {host}" if host else "the connection failed"
    return f"{where} ({reason or type(exc).__name__})"


def _query_more(sf: Salesforce, *, url: str) -> Any:
    return sf.query_more(url, identifier_is_url=True)


def _error_of(content: Any) -> tuple[str, str]:
    """``(errorCode, message)`` of a Salesforce error body (a JSON list, an object, or text)."""
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        first = content[0]
        return str(first.get("errorCode") or ""), str(first.get("message") or "")
    if isinstance(content, Mapping):
        return str(content.get("errorCode") or content.get("error") or ""), str(
            content.get("message") or content.get("error_description") or ""
        )
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    text = str(content or "").strip()
    return "", text[:300]
