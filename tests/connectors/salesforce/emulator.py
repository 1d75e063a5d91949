"""A Salesforce org on 127.0.0.1: the REST, Bulk 2.0, OAuth and SOAP login wire formats over TLS.

The tests and the benchmark run the real simple-salesforce and requests against it, so every byte
the connector sees is what a real org sends: ``{"totalSize", "done", "nextRecordsUrl",
"records": [{"attributes": {...}, ...}]}`` pages of up to 2,000 rows behind a server-side query
locator bound to the session, datetimes like ``2024-05-01T10:00:00.000+0000``, errors as
``[{"message", "errorCode"}]``, ``Sforce-Limit-Info`` on every API response, a daily request
budget, Bulk 2.0 query jobs with CSV results paged by ``Sforce-Locator``, the deleted-records
feed with its retention window, and SOAP faults for a bad login.

TLS: the server presents a certificate from a throw-away trustme CA; the connector trusts it
through its ``ca_bundle`` setting, exactly as an org behind a TLS-inspecting proxy is reached.

What the tests steer:
- data: :class:`Table` rows, inserted, updated (``SystemModstamp`` moves), soft-deleted (into
  the recycle bin, a deleted-feed entry), purged (gone from ``queryAll``, the feed entry stays)
  or hard-deleted (gone without a trace, as after the feed's retention);
- faults (:class:`Fault`): an error status with any ``errorCode``, a slow response, a
  connection dropped half-way through the body, all sessions expiring;
- ``query_timeout_above``: a query that has to examine more rows than this answers
  ``QUERY_TIMEOUT``, as a real org does for a too-wide window;
- ``replay_query``: recorded response bodies served verbatim for queries of one object.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import itertools
import json
import random
import re
import secrets
import socket
import ssl
import string
import threading
import time
import xml.etree.ElementTree as ET
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import jwt
import orjson
import trustme

from tests.connectors.salesforce import soql

# -- ids ---------------------------------------------------------------------------------------------

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_SUFFIX = string.ascii_uppercase + "012345"


def make_id(prefix: str, number: int) -> str:
    """An 18-character Salesforce id: key prefix, pod, base-62 number, case-safe checksum."""
    digits = []
    for _ in range(10):
        number, rest = divmod(number, 62)
        digits.append(_BASE62[rest])
    base = f"{prefix}5e{''.join(reversed(digits))}"[:15].ljust(15, "0")
    suffix = ""
    for chunk in range(3):
        bits = sum(1 << i for i, char in enumerate(base[chunk * 5 : chunk * 5 + 5]) if char.isupper())
        suffix += _SUFFIX[bits]
    return base + suffix


# -- schemas of the standard objects the connector reads ---------------------------------------------

_COMMON = {
    "Id": "id",
    "CreatedDate": "datetime",
    "LastModifiedDate": "datetime",
    "SystemModstamp": "datetime",
}

STANDARD_OBJECTS: Mapping[str, tuple[str, Mapping[str, str]]] = {
    "Organization": (
        "00D",
        {
            **_COMMON,
            "Name": "string",
            "DefaultCurrencyIsoCode": "picklist",
            "TimeZoneSidKey": "picklist",
            "IsSandbox": "boolean",
            "OrganizationType": "picklist",
        },
    ),
    "UserRole": ("00E", {**_COMMON, "Name": "string", "ParentRoleId": "reference"}),
    "User": (
        "005",
        {
            **_COMMON,
            "Name": "string",
            "Email": "email",
            "Username": "string",
            "IsActive": "boolean",
            "UserRoleId": "reference",
            "UserType": "picklist",
        },
    ),
    "Account": (
        "001",
        {
            **_COMMON,
            "Name": "string",
            "OwnerId": "reference",
            "Industry": "picklist",
            "Type": "picklist",
            "ParentId": "reference",
            "IsDeleted": "boolean",
        },
    ),
    # Read by nobody but the activities' AccountId, which Salesforce derives from a contact.
    "Contact": (
        "003",
        {**_COMMON, "Name": "string", "Email": "email", "AccountId": "reference", "IsDeleted": "boolean"},
    ),
    "Lead": (
        "00Q",
        {
            **_COMMON,
            "Name": "string",
            "Email": "email",
            "Company": "string",
            "OwnerId": "reference",
            "LeadSource": "picklist",
            "Status": "picklist",
            "IsConverted": "boolean",
            "ConvertedDate": "date",
            "ConvertedOpportunityId": "reference",
            "ConvertedAccountId": "reference",
            "IsDeleted": "boolean",
        },
    ),
    "Opportunity": (
        "006",
        {
            **_COMMON,
            "Name": "string",
            "OwnerId": "reference",
            "AccountId": "reference",
            "Amount": "currency",
            "StageName": "picklist",
            "Probability": "percent",
            "ForecastCategory": "picklist",
            "ForecastCategoryName": "picklist",
            "IsClosed": "boolean",
            "IsWon": "boolean",
            "CloseDate": "date",
            "Type": "picklist",
            "LeadSource": "picklist",
            "IsDeleted": "boolean",
        },
    ),
    "OpportunityStage": (
        "01J",
        {
            **_COMMON,
            "MasterLabel": "string",
            "ApiName": "string",
            "IsActive": "boolean",
            "IsClosed": "boolean",
            "IsWon": "boolean",
            "DefaultProbability": "percent",
            "SortOrder": "int",
            "ForecastCategoryName": "picklist",
        },
    ),
    "OpportunityHistory": (
        "008",
        {
            "Id": "id",
            "CreatedDate": "datetime",
            "SystemModstamp": "datetime",
            "OpportunityId": "reference",
            "StageName": "picklist",
            "Amount": "currency",
            "Probability": "percent",
            "CloseDate": "date",
            "IsDeleted": "boolean",
        },
    ),
    # Task and Event: the activities. AccountId is read-only, derived as Salesforce does (see
    # Org.derive_account); IsArchived rows (closed tasks and events older than a year) are left
    # out of ``query`` and Bulk ``query`` jobs, and only ``queryAll`` returns them.
    "Task": (
        "00T",
        {
            **_COMMON,
            "Subject": "string",
            "Type": "picklist",
            "TaskSubtype": "picklist",
            "Status": "picklist",
            "Priority": "picklist",
            "IsClosed": "boolean",
            "ActivityDate": "date",
            "CompletedDateTime": "datetime",
            "CallDurationInSeconds": "int",
            "CallDisposition": "string",
            "CallType": "picklist",
            "OwnerId": "reference",
            "WhoId": "reference",
            "WhatId": "reference",
            "AccountId": "reference",
            "IsArchived": "boolean",
            "IsDeleted": "boolean",
        },
    ),
    "Event": (
        "00U",
        {
            **_COMMON,
            "Subject": "string",
            "Type": "picklist",
            "EventSubtype": "picklist",
            "StartDateTime": "datetime",
            "EndDateTime": "datetime",
            "ActivityDateTime": "datetime",
            "ActivityDate": "date",
            "DurationInMinutes": "int",
            "IsAllDayEvent": "boolean",
            "Location": "string",
            "OwnerId": "reference",
            "WhoId": "reference",
            "WhatId": "reference",
            "AccountId": "reference",
            "IsArchived": "boolean",
            "IsDeleted": "boolean",
        },
    ),
}

#: Objects the deleted-records feed and ``queryAll`` know (the replicable ones with a recycle bin).
_REPLICABLE = frozenset({"Account", "Lead", "Opportunity", "OpportunityHistory", "Task", "Event"})
#: The activity objects: AccountId derived from WhatId / WhoId, archived rows only in ``queryAll``.
ACTIVITIES = frozenset({"Task", "Event"})


def sf_datetime(value: datetime) -> str:
    """A datetime as the REST API renders it: ``2024-05-01T10:00:00.000+0000``."""
    return _render_datetime(value)


@lru_cache(maxsize=65536)
def _render_datetime(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


@lru_cache(maxsize=65536)
def _render_csv_datetime(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return _render_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, datetime):
        return _render_csv_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


# -- tables ------------------------------------------------------------------------------------------

Row = dict[str, Any]


class Table:
    """One sObject: typed rows by id (rows are replaced, never mutated, so open cursors keep theirs)."""

    def __init__(self, org: Org, name: str, prefix: str, fields: Mapping[str, str]) -> None:
        self.org = org
        self.name = name
        self.prefix = prefix
        self.fields = dict(fields)
        self.rows: dict[str, Row] = {}
        #: The deleted-records feed: (id, deleted at), oldest first.
        self.deleted_log: list[tuple[str, datetime]] = []
        self._numbers = itertools.count(1)
        self._indexes: dict[str, tuple[int, list[tuple[Any, str]], list[Row]]] = {}
        self.version = 0

    @property
    def schema(self) -> soql.Schema:
        return {name.lower(): (name, ftype) for name, ftype in self.fields.items()}

    def add_field(self, name: str, ftype: str) -> None:
        self.fields[name] = ftype
        self.version += 1

    def new_id(self) -> str:
        return make_id(self.prefix, next(self._numbers))

    def insert(self, values: Mapping[str, Any], *, at: datetime | None = None) -> Row:
        """Add a row; ``Id`` and the audit dates default as Salesforce sets them."""
        when = at or self.org.now()
        row: Row = dict.fromkeys(self.fields)
        row.update({"Id": self.new_id(), "CreatedDate": when, "SystemModstamp": when})
        if "LastModifiedDate" in self.fields:
            row["LastModifiedDate"] = when
        if "IsDeleted" in self.fields:
            row["IsDeleted"] = False
        if "IsArchived" in self.fields:
            row["IsArchived"] = False
        row.update(values)
        unknown = set(row) - set(self.fields)
        assert not unknown, f"{self.name} has no fields {unknown}"
        self._whole_seconds(row)
        if self.name in ACTIVITIES:
            row["AccountId"] = self.org.derive_account(row)
        self.rows[row["Id"]] = row
        self.version += 1
        return row

    def update(self, record_id: str, values: Mapping[str, Any], *, at: datetime | None = None) -> Row:
        """Change a row; ``SystemModstamp`` moves to ``at`` (now) unless ``values`` sets it."""
        when = at or self.org.now()
        row = dict(self.rows[record_id])
        row["SystemModstamp"] = when
        if "LastModifiedDate" in self.fields:
            row["LastModifiedDate"] = when
        row.update(values)
        self._whole_seconds(row)
        if self.name in ACTIVITIES:
            row["AccountId"] = self.org.derive_account(row)
        self.rows[record_id] = row
        self.version += 1
        return row

    def _whole_seconds(self, row: Row) -> None:
        # Salesforce keeps date-times to the second (the API always shows .000).
        for name, ftype in self.fields.items():
            value = row.get(name)
            if ftype == "datetime" and isinstance(value, datetime) and value.microsecond:
                row[name] = value.replace(microsecond=0)

    def soft_delete(self, record_id: str, *, at: datetime | None = None) -> None:
        """Delete into the recycle bin: ``queryAll`` shows ``IsDeleted``, the feed lists it."""
        when = (at or self.org.now()).replace(microsecond=0)
        self.update(record_id, {"IsDeleted": True}, at=when)
        self.deleted_log.append((record_id, when))

    def undelete(self, record_id: str, *, at: datetime | None = None) -> None:
        """Restore from the recycle bin (the feed keeps listing the deletion, as the worst case)."""
        self.update(record_id, {"IsDeleted": False}, at=at)

    def purge(self, record_id: str) -> None:
        """Empty it from the recycle bin: gone from ``queryAll``; the feed still lists it."""
        del self.rows[record_id]
        self.version += 1

    def hard_delete(self, record_id: str) -> None:
        """Gone without a trace (deleted and purged longer ago than the feed remembers)."""
        self.rows.pop(record_id, None)
        self.deleted_log = [entry for entry in self.deleted_log if entry[0] != record_id]
        self.version += 1

    def index(self, field_name: str) -> tuple[list[tuple[Any, str]], list[Row]]:
        """Rows sorted by ``(field, Id)`` with their keys (rebuilt after any change)."""
        cached = self._indexes.get(field_name)
        if cached is not None and cached[0] == self.version:
            return cached[1], cached[2]
        rows = sorted(
            (row for row in self.rows.values() if row.get(field_name) is not None),
            key=lambda row: (row[field_name], row["Id"]),
        )
        keys = [(row[field_name], row["Id"]) for row in rows]
        self._indexes[field_name] = (self.version, keys, rows)
        return keys, rows


# -- faults, log ---------------------------------------------------------------------------------------

Route = Literal[
    "token",
    "soap_login",
    "query",
    "count",
    "query_more",
    "limits",
    "describe",
    "deleted",
    "bulk_create",
    "bulk_status",
    "bulk_results",
    "bulk_delete",
    "other",
]


@dataclass
class Fault:
    """Something going wrong on the ``after + 1``-th to ``after + times``-th matching request.

    ``kind``: ``error`` (``status`` with ``[{"message", "errorCode"}]``, ``Retry-After`` if
    given: seconds, or text such as an HTTP date), ``slow`` (answer after ``delay`` seconds),
    ``paced`` (answer ``delay`` seconds after the request arrived, the org's own work included:
    a real org's response time), ``drop`` (send half the body, then cut the connection),
    ``expire_session`` (every session expires, and this request gets the 401).
    """

    routes: frozenset[str]
    kind: Literal["error", "slow", "paced", "drop", "expire_session"] = "error"
    status: int = 500
    code: str = "UNKNOWN_EXCEPTION"
    message: str = "An unexpected error occurred. Please include this ErrorId if you contact support."
    retry_after: float | str | None = None
    delay: float = 0.0
    after: int = 0
    times: int = 1
    when: Callable[[Logged], bool] | None = None
    seen: int = 0
    fired: int = 0


@dataclass
class Logged:
    """One request the emulator answered."""

    route: str
    method: str
    path: str
    soql: str | None = None
    token: str | None = None
    status: int = 0
    fault: str | None = None


@dataclass
class _Cursor:
    token: str
    sobject: str
    version: str
    fields: tuple[str, ...]
    rows: list[Row]
    page_size: int


@dataclass
class _BulkJob:
    id: str
    operation: str
    sobject: str
    query: str
    fields: tuple[str, ...]
    rows: list[Row]
    created: datetime
    polls_left: int
    state: str = "UploadComplete"


class ApiError(Exception):
    """An error answer: HTTP status and Salesforce's JSON error body."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json;charset=UTF-8"
    headers: dict[str, str] = field(default_factory=dict)


# -- the org ---------------------------------------------------------------------------------------------


@dataclass
class User:
    username: str
    password: str
    security_token: str
    user_id: str


@dataclass
class OAuthClient:
    client_id: str
    client_secret: str
    #: PEM public key verifying JWT bearer assertions signed by this connected app.
    public_key: str | None = None
    #: The user a client-credentials token runs as.
    run_as: str | None = None


class Org:
    """The state of the emulated org; every request runs under :attr:`lock`."""

    def __init__(self, *, clock: Callable[[], datetime] | None = None) -> None:
        self.lock = threading.RLock()
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.base_url = ""  # set when the server listens
        self.tables: dict[str, Table] = {}
        for name, (prefix, fields) in STANDARD_OBJECTS.items():
            self.tables[name.lower()] = Table(self, name, prefix, fields)
        self.organization_id = make_id("00D", 1)
        self.org_row = self.table("Organization").insert(
            {
                "Id": self.organization_id,
                "Name": "Emulated Org",
                "DefaultCurrencyIsoCode": "USD",
                "TimeZoneSidKey": "America/Los_Angeles",
                "IsSandbox": False,
                "OrganizationType": "Enterprise Edition",
            }
        )
        self.users: dict[str, User] = {}
        self.clients: dict[str, OAuthClient] = {}
        self.jwt_audience = "https://login.salesforce.com"
        self.sessions: dict[str, str] = {}  # token -> user id
        self.logins = 0
        self.api_limit = 1_000_000
        self.api_used = 0
        self.page_size = 2000
        self.query_timeout_above: int | None = None
        #: How long the deleted-records feed remembers (Salesforce: about 30 days).
        self.deleted_retention = timedelta(days=30)
        #: Status polls a Bulk 2.0 job answers ``InProgress`` before ``JobComplete``.
        self.bulk_polls = 1
        #: When set, Bulk jobs end ``Failed`` with this message (a job the org could not run).
        self.bulk_failure: str | None = None
        self.multi_currency = False
        self.faults: list[Fault] = []
        self.log: list[Logged] = []
        self._cursors: dict[str, _Cursor] = {}
        self._jobs: dict[str, _BulkJob] = {}
        self._numbers = itertools.count(1)
        self._replays: dict[str, bytes] = {}
        self._replay_paths: dict[str, bytes] = {}
        self._shuffle = random.Random(7)

    # -- setup helpers -------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self.clock()

    def table(self, name: str) -> Table:
        found = self.tables.get(name.lower())
        if found is None:
            raise ApiError(400, "INVALID_TYPE", f"sObject type '{name}' is not supported.")
        return found

    def add_user(
        self,
        username: str,
        password: str,
        security_token: str = "",
        *,
        at: datetime | None = None,
        **values: Any,
    ) -> User:
        row = self.table("User").insert(
            {
                "Username": username,
                "Name": values.pop("Name", username),
                "IsActive": True,
                "UserType": "Standard",
                **values,
            },
            at=at,
        )
        user = User(username, password, security_token, row["Id"])
        self.users[username] = user
        return user

    def add_client(
        self, client_id: str, client_secret: str, *, public_key: str | None = None, run_as: str | None = None
    ) -> OAuthClient:
        client = OAuthClient(client_id, client_secret, public_key, run_as)
        self.clients[client_id] = client
        return client

    def derive_account(self, activity: Row) -> str | None:
        """An activity's AccountId as Salesforce sets it: the WhatId's account (an account, or an
        opportunity's), else the account of a contact WhoId, else none."""
        what, who = activity.get("WhatId"), activity.get("WhoId")
        if what:
            if what.startswith("001"):
                return str(what)
            if what.startswith("006"):
                opportunity = self.table("Opportunity").rows.get(what)
                return opportunity.get("AccountId") if opportunity else None
        if who and who.startswith("003"):
            contact = self.table("Contact").rows.get(who)
            return contact.get("AccountId") if contact else None
        return None

    def archive_activities(self, before: datetime) -> int:
        """The weekly archiving job: closed tasks and events due before ``before`` get
        ``IsArchived`` (their SystemModstamp stays); returns how many were archived."""
        archived = 0
        for name in sorted(ACTIVITIES):
            table = self.table(name)
            for record_id, row in list(table.rows.items()):
                due: date | None = row.get("ActivityDate")
                closed = name == "Event" or row.get("IsClosed")
                if closed and due is not None and due < before.date() and not row.get("IsArchived"):
                    table.rows[record_id] = {**row, "IsArchived": True}
                    archived += 1
            table.version += 1
        return archived

    def enable_multi_currency(self) -> None:
        self.multi_currency = True
        for name in ("Opportunity", "Lead", "OpportunityHistory"):
            self.table(name).add_field("CurrencyIsoCode", "picklist")

    def new_session(self, user_id: str) -> str:
        token = f"{self.organization_id[:15]}!AQ{secrets.token_urlsafe(24)}"
        self.sessions[token] = user_id
        self.logins += 1
        return token

    def expire_sessions(self) -> None:
        self.sessions.clear()

    def replay_query(self, sobject: str, first_page: bytes, more: Mapping[str, bytes] | None = None) -> None:
        """Answer every row query of ``sobject`` with ``first_page`` verbatim, and the server-relative
        ``nextRecordsUrl`` paths in ``more`` with theirs (recorded responses, byte for byte)."""
        self._replays[sobject.lower()] = first_page
        self._replay_paths.update(more or {})

    def add_fault(self, routes: str | Iterable[str], *, on: str | None = None, **options: Any) -> Fault:
        """A :class:`Fault` on ``routes``; ``on`` limits it to that object's queries (and Bulk
        jobs), or to its resources (``/sobjects/{on}/describe``, ``/sobjects/{on}/deleted/``)."""
        names = frozenset([routes] if isinstance(routes, str) else routes)
        if on is not None:
            pattern = re.compile(rf"\bFROM\s+{on}\b", re.IGNORECASE)
            resource = f"/sobjects/{on.lower()}/"

            def matches(entry: Logged) -> bool:
                if entry.soql is not None:
                    return pattern.search(entry.soql) is not None
                return resource in entry.path.lower()

            options["when"] = matches
        fault = Fault(routes=names, **options)
        self.faults.append(fault)
        return fault

    def queries(self, route: str = "query", sobject: str = "Opportunity") -> list[str]:
        """The SOQL of every logged request of ``route`` on ``sobject``, in order."""
        pattern = re.compile(rf"\bFROM\s+{sobject}\b", re.IGNORECASE)
        return [
            entry.soql
            for entry in self.log
            if entry.route == route and entry.soql is not None and pattern.search(entry.soql)
        ]

    def routes(self) -> list[str]:
        return [entry.route for entry in self.log]

    # -- faults ------------------------------------------------------------------------------------------

    def take_fault(self, entry: Logged) -> Fault | None:
        for fault in self.faults:
            if entry.route not in fault.routes or fault.fired >= fault.times:
                continue
            if fault.when is not None and not fault.when(entry):
                continue
            fault.seen += 1
            if fault.seen <= fault.after:
                continue
            fault.fired += 1
            return fault
        return None

    # -- auth ----------------------------------------------------------------------------------------------

    def authenticate(self, header: str | None) -> str:
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() in ("bearer", "oauth") and token in self.sessions:
                return token
        raise ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")

    def count_call(self) -> None:
        if self.api_used >= self.api_limit:
            raise ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        self.api_used += 1

    def token_endpoint(self, form: Mapping[str, str], authorization: str | None) -> Reply:
        grant = form.get("grant_type", "")
        if grant == "client_credentials":
            client_id, secret = form.get("client_id"), form.get("client_secret")
            if authorization and authorization.lower().startswith("basic "):
                decoded = base64.b64decode(authorization[6:]).decode()
                client_id, _, secret = decoded.partition(":")
            client = self.clients.get(client_id or "")
            if client is None or not hmac.compare_digest(client.client_secret, secret or ""):
                return _oauth_error("invalid_client", "invalid client credentials")
            user = self.users.get(client.run_as or "")
            if user is None:
                return _oauth_error("invalid_grant", "no client credentials user enabled")
            return self._token_reply(client.client_id, user.user_id)
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            assertion = form.get("assertion", "")
            try:
                claims = jwt.decode(assertion, options={"verify_signature": False})
            except jwt.PyJWTError:
                return _oauth_error("invalid_grant", "invalid assertion")
            client = self.clients.get(str(claims.get("iss")))
            if client is None or client.public_key is None:
                return _oauth_error("invalid_client_id", "client identifier invalid")
            try:
                claims = jwt.decode(
                    assertion, client.public_key, algorithms=["RS256"], audience=self.jwt_audience
                )
            except jwt.PyJWTError:
                return _oauth_error("invalid_grant", "invalid assertion")
            user = self.users.get(str(claims.get("sub")))
            if user is None:
                return _oauth_error("invalid_grant", "user hasn't been found")
            return self._token_reply(client.client_id, user.user_id)
        return _oauth_error("unsupported_grant_type", "grant type not supported")

    def _token_reply(self, client_id: str, user_id: str) -> Reply:
        token = self.new_session(user_id)
        issued = str(int(self.now().timestamp() * 1000))
        identity = f"https://login.salesforce.com/id/{self.organization_id}/{user_id}"
        signature = base64.b64encode(
            hmac.new(client_id.encode(), (identity + issued).encode(), hashlib.sha256).digest()
        ).decode()
        body = {
            "access_token": token,
            "instance_url": self.base_url,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued,
            "signature": signature,
        }
        return Reply(200, orjson.dumps(body))

    def soap_login(self, body: bytes, version: str) -> Reply:
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            return _soap_fault("INVALID_LOGIN", "Invalid SOAP request")
        ns = "{urn:partner.soap.sforce.com}"
        username = root.findtext(f".//{ns}username") or ""
        password = root.findtext(f".//{ns}password") or ""
        user = self.users.get(username)
        if user is None or not hmac.compare_digest(password, user.password + user.security_token):
            return _soap_fault(
                "INVALID_LOGIN", "Invalid username, password, security token; or user locked out."
            )
        token = self.new_session(user.user_id)
        server_url = f"{self.base_url}/services/Soap/u/{version}/{self.organization_id[:15]}"
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><loginResponse><result>'
            f"<metadataServerUrl>{self.base_url}/services/Soap/m/{version}/{self.organization_id[:15]}"
            "</metadataServerUrl><passwordExpired>false</passwordExpired><sandbox>false</sandbox>"
            f"<serverUrl>{server_url}</serverUrl><sessionId>{token}</sessionId>"
            f"<userId>{user.user_id}</userId><userInfo><organizationId>{self.organization_id}"
            "</organizationId></userInfo></result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
        return Reply(200, xml.encode(), "text/xml; charset=utf-8")

    # -- queries -------------------------------------------------------------------------------------

    def run_query(
        self, text: str, *, include_deleted: bool, bulk: bool = False
    ) -> tuple[soql.Query, Table, list[Row], int]:
        """Parse and run one query: ``(query, table, rows, count)``. Bulk jobs never time out (the
        server chunks them)."""
        try:
            query = soql.parse(text)
        except soql.SoqlError as exc:
            raise ApiError(400, exc.code, str(exc)) from None
        table = self.table(query.sobject)
        schema = table.schema
        try:
            fields = tuple(soql.resolve(schema, table.name, name)[0] for name in query.fields)
            orders = [(soql.resolve(schema, table.name, o.field)[0], o) for o in query.order_by]
            rows = self._select(table, schema, query, orders, include_deleted=include_deleted, bulk=bulk)
        except soql.SoqlError as exc:
            raise ApiError(400, exc.code, str(exc)) from None
        query = soql.Query(fields, query.count, table.name, query.where, query.order_by, query.limit)
        return query, table, rows, len(rows)

    def _select(
        self,
        table: Table,
        schema: soql.Schema,
        query: soql.Query,
        orders: list[tuple[str, soql.Order]],
        *,
        include_deleted: bool,
        bulk: bool,
    ) -> list[Row]:
        datetimes = [name for name, ftype in table.fields.items() if ftype == "datetime"]
        index_field: str | None = None
        if orders and orders[0][0] in datetimes:
            index_field = orders[0][0]
        else:
            for candidate in datetimes:
                probe = soql.index_range(schema, table.name, candidate, query.where)
                if probe.low is not None or probe.high is not None:
                    index_field = candidate
                    break
        rows: Iterable[Row]
        residual = query.where
        if index_field is not None:
            plan = soql.index_range(schema, table.name, index_field, query.where)
            keys, ordered = table.index(index_field)
            start = bisect_right(keys, plan.low) if plan.low is not None else 0
            stop = bisect_right(keys, plan.high) if plan.high is not None else len(keys)
            examined = max(0, stop - start)
            rows = ordered[start:stop]
            residual = plan.residual
            # Rows without a value for the index field are never in a range over it.
            if plan.low is None and plan.high is None:
                rows = [*rows, *(r for r in table.rows.values() if r.get(index_field) is None)]
                examined = len(table.rows)
            in_index_order = [(o.field.lower(), o.ascending) for o in query.order_by] in (
                [(index_field.lower(), True)],
                [(index_field.lower(), True), ("id", True)],
            )
            if in_index_order and residual is None and query.limit is not None:
                examined = min(examined, query.limit)  # an index walk stops at the limit
        else:
            rows = list(table.rows.values())
            examined = len(table.rows)
        if not bulk and self.query_timeout_above is not None and examined > self.query_timeout_above:
            raise soql.SoqlError("Your query request was running for too long.", "QUERY_TIMEOUT")
        predicate = soql.compile_condition(schema, table.name, residual) if residual is not None else None
        hide_deleted = not include_deleted and "IsDeleted" in table.fields
        # ``query`` leaves archived activities out; ``queryAll`` returns them with the deleted ones.
        hide_archived = not include_deleted and table.name in ACTIVITIES
        selected = [
            row
            for row in rows
            if (not hide_deleted or not row.get("IsDeleted"))
            and (not hide_archived or not row.get("IsArchived"))
            and (predicate is None or predicate(row))
        ]
        index_order = [(index_field, True, True), ("Id", True, True)]
        wanted = [(name, o.ascending, o.nulls_first) for name, o in orders]
        if wanted and wanted != index_order[: len(wanted)]:
            # Stable sorts from the last key to the first give a multi-key order with per-key
            # direction and null placement.
            for name, ascending, nulls_first in reversed(wanted):
                present = [row for row in selected if row.get(name) is not None]
                missing = [row for row in selected if row.get(name) is None]
                present.sort(key=lambda row, name=name: row[name], reverse=not ascending)  # type: ignore[misc]
                selected = missing + present if nulls_first else present + missing
        elif not wanted:
            selected.sort(key=lambda row: row["Id"])
        if query.limit is not None:
            selected = selected[: query.limit]
        return selected

    def render_record(self, table: Table, version: str, fields: tuple[str, ...], row: Row) -> dict[str, Any]:
        record: dict[str, Any] = {
            "attributes": {
                "type": table.name,
                "url": f"/services/data/v{version}/sobjects/{table.name}/{row['Id']}",
            }
        }
        for name in fields:
            record[name] = _json_value(row.get(name))
        return record

    def query_page(self, cursor_id: str, cursor: _Cursor, offset: int) -> Reply:
        table = self.table(cursor.sobject)
        page = cursor.rows[offset : offset + cursor.page_size]
        done = offset + len(page) >= len(cursor.rows)
        body: dict[str, Any] = {"totalSize": len(cursor.rows), "done": done}
        if not done:
            body["nextRecordsUrl"] = (
                f"/services/data/v{cursor.version}/query/{cursor_id}-{offset + len(page)}"
            )
        else:
            self._cursors.pop(cursor_id, None)
        body["records"] = [self.render_record(table, cursor.version, cursor.fields, row) for row in page]
        return Reply(200, orjson.dumps(body))

    def query(self, text: str, version: str, token: str, *, include_deleted: bool, page_size: int) -> Reply:
        parsed = soql.parse(text) if self._replays else None
        if parsed is not None and parsed.sobject.lower() in self._replays:
            recorded = self._replays[parsed.sobject.lower()]
            if parsed.count:
                total = json.loads(recorded)["totalSize"]
                return Reply(200, orjson.dumps({"totalSize": total, "done": True, "records": []}))
            return Reply(200, recorded)
        query, table, rows, count = self.run_query(text, include_deleted=include_deleted)
        if query.count:
            return Reply(200, orjson.dumps({"totalSize": count, "done": True, "records": []}))
        cursor_id = make_id("01g", next(self._numbers))[:15] + "AAA"
        cursor = _Cursor(token, table.name, version, query.fields, rows, page_size)
        self._cursors[cursor_id] = cursor
        return self.query_page(cursor_id, cursor, 0)

    def query_more(self, locator: str, path: str, token: str) -> Reply:
        if path in self._replay_paths:
            return Reply(200, self._replay_paths[path])
        cursor_id, _, offset = locator.rpartition("-")
        cursor = self._cursors.get(cursor_id)
        # A locator belongs to the session that opened it: after a re-login it is invalid.
        if cursor is None or cursor.token != token or not offset.isdigit():
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self.query_page(cursor_id, cursor, int(offset))

    # -- other resources -----------------------------------------------------------------------------

    def limits(self) -> Reply:
        body = {
            "DailyApiRequests": {"Max": self.api_limit, "Remaining": max(0, self.api_limit - self.api_used)},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000 - len(self._jobs)},
            "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
        }
        return Reply(200, orjson.dumps(body))

    def describe(self, sobject: str) -> Reply:
        table = self.table(sobject)
        fields = [
            {
                "name": name,
                "type": ftype,
                "label": name,
                "nillable": name != "Id",
                "custom": name.endswith("__c"),
                "length": 18
                if ftype in ("id", "reference")
                else 255
                if ftype not in soql.NUMBER_TYPES
                else 0,
            }
            for name, ftype in table.fields.items()
        ]
        body = {
            "name": table.name,
            "label": table.name,
            "keyPrefix": table.prefix,
            "queryable": True,
            "replicateable": table.name in _REPLICABLE,
            "retrieveable": True,
            "fields": fields,
        }
        return Reply(200, orjson.dumps(body))

    def deleted(self, sobject: str, start_text: str, end_text: str) -> Reply:
        table = self.table(sobject)
        if table.name not in _REPLICABLE:
            raise ApiError(400, "INVALID_TYPE", f"sObject type '{sobject}' is not replicable")
        try:
            start = soql.parse_datetime(start_text.replace(" ", "+"))
            end = soql.parse_datetime(end_text.replace(" ", "+"))
        except (ValueError, soql.SoqlError):
            raise ApiError(400, "MALFORMED_QUERY", "start and end must be ISO 8601 date-times") from None
        now = self.now()
        earliest = (now - self.deleted_retention).replace(second=0, microsecond=0)
        if start < earliest:
            raise ApiError(
                400, "INVALID_REPLICATION_DATE", f"startDate cannot be before {sf_datetime(earliest)}"
            )
        if end < start:
            raise ApiError(400, "INVALID_REPLICATION_DATE", "endDate must be after startDate")
        covered = min(end, now).replace(second=0, microsecond=0)
        records = [
            {"id": record_id, "deletedDate": sf_datetime(when)}
            for record_id, when in table.deleted_log
            if start <= when <= covered and when >= earliest
        ]
        body = {
            "deletedRecords": records,
            "earliestDateAvailable": sf_datetime(earliest),
            "latestDateCovered": sf_datetime(covered),
        }
        return Reply(200, orjson.dumps(body))

    # -- Bulk API 2.0 --------------------------------------------------------------------------------

    def bulk_create(self, payload: Mapping[str, Any]) -> Reply:
        operation = payload.get("operation")
        text = str(payload.get("query") or "")
        if operation not in ("query", "queryAll"):
            raise ApiError(400, "INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
        parsed = soql.parse(text)
        if parsed.count or parsed.order_by or parsed.limit is not None:
            raise ApiError(
                400, "API_ERROR", "Bulk API 2.0 query jobs don't support aggregates, ORDER BY or LIMIT"
            )
        query, table, rows, _ = self.run_query(text, include_deleted=operation == "queryAll", bulk=True)
        # Bulk results come in chunks, in no particular order: a client must not rely on one.
        rows = list(rows)
        self._shuffle.shuffle(rows)
        job_id = make_id("750", next(self._numbers))
        job = _BulkJob(job_id, operation, table.name, text, query.fields, rows, self.now(), self.bulk_polls)
        self._jobs[job_id] = job
        return Reply(200, orjson.dumps(self._job_info(job)))

    def _job_info(self, job: _BulkJob) -> dict[str, Any]:
        return {
            "id": job.id,
            "operation": job.operation,
            "object": job.sobject,
            "createdById": next(iter(self.users.values())).user_id if self.users else None,
            "createdDate": sf_datetime(job.created),
            "systemModstamp": sf_datetime(job.created),
            "state": job.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": 59.0,
            "lineEnding": "LF",
            "columnDelimiter": "COMMA",
            "numberRecordsProcessed": len(job.rows) if job.state == "JobComplete" else 0,
        }

    def _job(self, job_id: str) -> _BulkJob:
        job = self._jobs.get(job_id)
        if job is None:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    def bulk_status(self, job_id: str) -> Reply:
        job = self._job(job_id)
        if job.state not in ("JobComplete", "Failed"):
            if job.polls_left > 0:
                job.polls_left -= 1
                job.state = "InProgress"
            else:
                job.state = "Failed" if self.bulk_failure else "JobComplete"
        info = self._job_info(job)
        if job.state == "Failed":
            info["errorMessage"] = self.bulk_failure
        return Reply(200, orjson.dumps(info))

    def bulk_results(self, job_id: str, locator: str | None, max_records: int | None) -> Reply:
        job = self._job(job_id)
        if job.state != "JobComplete":
            raise ApiError(400, "INVALIDJOB", "InvalidJob : the job is not complete")
        offset = int(base64.b64decode(locator).decode()) if locator else 0
        size = max_records or 50_000
        page = job.rows[offset : offset + size]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(job.fields)
        for row in page:
            writer.writerow([_csv_value(row.get(name)) for name in job.fields])
        following = offset + len(page)
        next_locator = (
            base64.b64encode(str(following).encode()).decode() if following < len(job.rows) else "null"
        )
        headers = {"Sforce-Locator": next_locator, "Sforce-NumberOfRecords": str(len(page))}
        return Reply(200, buffer.getvalue().encode(), "text/csv", headers)

    def bulk_delete(self, job_id: str) -> Reply:
        self._job(job_id)
        del self._jobs[job_id]
        return Reply(204, b"")


def _oauth_error(error: str, description: str) -> Reply:
    return Reply(400, orjson.dumps({"error": error, "error_description": description}))


def _soap_fault(code: str, message: str) -> Reply:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:sf="urn:fault.partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>sf:{code}</faultcode><faultstring>{code}: {message}</faultstring><detail>"
        f'<sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>{code}</sf:exceptionCode>'
        f"<sf:exceptionMessage>{message}</sf:exceptionMessage></sf:LoginFault></detail></soapenv:Fault>"
        "</soapenv:Body></soapenv:Envelope>"
    )
    return Reply(500, xml.encode(), "text/xml; charset=utf-8")


# -- HTTP --------------------------------------------------------------------------------------------

_DATA = re.compile(r"^/services/data/v(?P<version>\d+\.\d+)/(?P<rest>.*)$")
_SOAP = re.compile(r"^/services/Soap/u/(?P<version>\d+\.\d+)/?$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)
        assert isinstance(self.connection, ssl.SSLSocket)
        self.connection.do_handshake()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: ARG002
        return  # the request log is Org.log

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        arrived = time.monotonic()
        org = self.server.org
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        params = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        entry = Logged(route="other", method=method, path=url.path)
        fault: Fault | None = None
        with org.lock:
            try:
                entry.route, handler = self._route(method, url.path, params, body, entry)
                fault = org.take_fault(entry)
                if fault is not None and fault.kind == "expire_session":
                    org.expire_sessions()
                if fault is not None and fault.kind == "error":
                    raise ApiError(fault.status, fault.code, fault.message, fault.retry_after)
                reply = handler()
            except ApiError as exc:
                headers = {} if exc.retry_after is None else {"Retry-After": _retry_after(exc.retry_after)}
                reply = Reply(
                    exc.status,
                    orjson.dumps([{"message": exc.message, "errorCode": exc.code}]),
                    headers=headers,
                )
            except soql.SoqlError as exc:
                reply = Reply(400, orjson.dumps([{"message": str(exc), "errorCode": exc.code}]))
            entry.status = reply.status
            entry.fault = fault.kind if fault is not None else None
            org.log.append(entry)
            if entry.route not in ("token", "soap_login"):
                reply.headers["Sforce-Limit-Info"] = f"api-usage={org.api_used}/{org.api_limit}"
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay)
        elif fault is not None and fault.kind == "paced":
            time.sleep(max(0.0, arrived + fault.delay - time.monotonic()))
        self._send(reply, drop=fault is not None and fault.kind == "drop")

    def _route(
        self, method: str, path: str, params: Mapping[str, str], body: bytes, entry: Logged
    ) -> tuple[str, Callable[[], Reply]]:
        org = self.server.org
        if path == "/services/oauth2/token" and method == "POST":
            form = {key: values[-1] for key, values in parse_qs(body.decode()).items()}
            return "token", lambda: org.token_endpoint(form, self.headers.get("Authorization"))
        soap = _SOAP.match(path)
        if soap and method == "POST":
            return "soap_login", lambda: org.soap_login(body, soap["version"])
        data = _DATA.match(path)
        if data is None:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        version, rest = data["version"], data["rest"].rstrip("/")
        entry.token = self._token_or_none()

        def authed(route: str, action: Callable[[str], Reply]) -> tuple[str, Callable[[], Reply]]:
            def run() -> Reply:
                token = org.authenticate(self.headers.get("Authorization"))
                org.count_call()
                return action(token)

            return route, run

        parts = rest.split("/")
        if parts[0] in ("query", "queryAll") and method == "GET":
            include_deleted = parts[0] == "queryAll"
            if len(parts) == 1:
                text = params.get("q", "")
                entry.soql = text
                page_size = _batch_size(self.headers.get("Sforce-Query-Options"), org.page_size)
                is_count = bool(re.match(r"\s*select\s+count\(\s*\)", text, re.IGNORECASE))
                return authed(
                    "count" if is_count else "query",
                    lambda token: org.query(
                        text, version, token, include_deleted=include_deleted, page_size=page_size
                    ),
                )
            return authed("query_more", lambda token: org.query_more(parts[1], path, token))
        if rest == "limits" and method == "GET":
            return authed("limits", lambda _token: org.limits())
        if len(parts) == 3 and parts[0] == "sobjects" and parts[2] == "describe" and method == "GET":
            return authed("describe", lambda _token: org.describe(parts[1]))
        if len(parts) == 3 and parts[0] == "sobjects" and parts[2] == "deleted" and method == "GET":
            return authed(
                "deleted",
                lambda _token: org.deleted(parts[1], params.get("start", ""), params.get("end", "")),
            )
        if parts[:2] == ["jobs", "query"]:
            if len(parts) == 2 and method == "POST":
                payload = json.loads(body or b"{}")
                entry.soql = str(payload.get("query"))
                return authed("bulk_create", lambda _token: org.bulk_create(payload))
            if len(parts) == 3 and method == "GET":
                return authed("bulk_status", lambda _token: org.bulk_status(parts[2]))
            if len(parts) == 3 and method == "DELETE":
                return authed("bulk_delete", lambda _token: org.bulk_delete(parts[2]))
            if len(parts) == 4 and parts[3] == "results" and method == "GET":
                max_records = int(params["maxRecords"]) if params.get("maxRecords") else None
                return authed(
                    "bulk_results",
                    lambda _token: org.bulk_results(parts[2], params.get("locator"), max_records),
                )
        return authed("other", _not_found)

    def _token_or_none(self) -> str | None:
        header = self.headers.get("Authorization") or ""
        return header.partition(" ")[2] or None

    def _send(self, reply: Reply, *, drop: bool) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if drop:
                # Half the body, then the connection is cut: the client sees an incomplete read.
                self.wfile.write(reply.body[: max(1, len(reply.body) // 2)])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True  # the client gave up (a timeout): nothing to answer


def _not_found(_token: str) -> Reply:
    raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")


def _batch_size(options: str | None, default: int) -> int:
    match = re.search(r"batchSize=(\d+)", options or "")
    if match is None:
        return default
    return max(200, min(2000, int(match.group(1))))


def _retry_after(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:g}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, org: Org, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.org = org
        self.ssl_context = context
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK stall every response by 40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The handshake happens in the handler's thread (first read), not in the accept loop.
        return self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def track(self, connection: socket.socket) -> None:
        with self._open_lock:
            self._open.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(connection)

    def close_all(self) -> None:
        with self._open_lock:
            connections, self._open = list(self._open), set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002
        return  # a client that went away mid-request is not the emulator's problem


# -- TLS ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    """A throw-away CA and the server context it signed; ``ca_path`` is what ``ca_bundle`` names."""

    ca_path: Path
    context: ssl.SSLContext


def make_tls(directory: Path) -> Tls:
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    path = directory / "emulator-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return Tls(path, context)


class SalesforceEmulator:
    """The org served over HTTPS on 127.0.0.1 (a random port) while the context is open."""

    def __init__(self, tls: Tls, org: Org | None = None) -> None:
        self.tls = tls
        self.org = org or Org()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "the emulator is not running"
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> SalesforceEmulator:
        self._server = _Server(self.org, self.tls.context)
        self.org.base_url = self.url
        # Polled every 50 ms for the shutdown request (the default 0.5 s is a wait at every exit).
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="sf-emulator", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None
        assert self._thread is not None
        self._server.shutdown()
        self._server.close_all()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = None


def serve_forever_in_process(tls_dir: str, seed: Callable[[Org], None], ready: Any) -> None:
    """Run an emulator in this (child) process until killed: for benchmarks that measure a client.

    ``seed`` fills the org; ``ready`` (a pipe end) receives ``(url, ca_path)`` once it listens.
    """
    tls = make_tls(Path(tls_dir))
    org = Org()
    seed(org)
    with SalesforceEmulator(tls, org) as emulator:
        ready.send((emulator.url, str(tls.ca_path)))
        while True:
            time.sleep(3600)
