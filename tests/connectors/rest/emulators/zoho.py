"""A Zoho CRM REST API (v8) emulator, with the Zoho Accounts token endpoint on the same server.

Put ``emulator.url`` in place of both ``https://www.zohoapis.com`` (the ``api_domain``) and
``https://accounts.zoho.com`` (every data centre's accounts server has the same token path).

Served, after the vendor's documentation (the v7 pages, as the v8 ones were not at hand, read with
the schemas of Zoho's OpenAPI description of v8; the Records, Users and Settings APIs are the
same in v7 and v8 but for the version in the path):

- ``POST /oauth/v2/token`` with ``grant_type=refresh_token``, ``client_id``, ``client_secret``,
  ``refresh_token`` (in the query string, as documented, or a form body) ->
  ``{"access_token", "api_domain", "token_type": "Bearer", "expires_in": 3600}``. The pages
  followed do not list the error bodies; these are the ones Zoho Accounts sends, with HTTP 200:
  ``{"error": "invalid_client"}`` (unknown client id or secret), ``{"error": "invalid_code"}``
  (unknown refresh token), ``{"error": "unsupported_grant_type"}``. A refresh token mints at most
  ten access tokens in ten
  minutes; the eleventh is answered HTTP 400 ``{"error": "Access Denied", "error_description":
  "You have made too many requests continuously. Please try again after some time."}``. A refresh
  token has at most 30 live access tokens: the 31st revokes the oldest.
- ``Authorization: Zoho-oauthtoken <access_token>`` on every CRM call. No such header: 401
  ``AUTHENTICATION_FAILURE``; an unknown or expired token: 401 ``INVALID_TOKEN`` ("invalid oauth
  token"). Error bodies are ``{"code", "details", "message", "status": "error"}``.
- ``GET /crm/v8/{module}`` (Get Records) for Deals, Leads, Accounts, Calls, Events and Tasks:
  ``fields`` mandatory (at most 50; else 400 ``REQUIRED_PARAM_MISSING`` / ``LIMIT_EXCEEDED``),
  ``per_page`` (default and maximum 200), ``page`` (positions up to 2,000 only: a page starting beyond is 400
  ``DISCRETE_PAGINATION_LIMIT_EXCEEDED``), ``page_token`` (the ``next_page_token`` of the previous
  answer; needed past 2,000 records, up to 100,000: 400 ``PAGINATION_LIMIT_EXCEEDED`` beyond;
  bound to the other parameters: 400 ``TOKEN_BOUND_DATA_MISMATCH`` when they change; valid 24
  hours: 400 ``EXPIRED_VALUE``; unknown or minted by another user's token: 400 ``INVALID_DATA``;
  with ``page`` too: 400 ``AMBIGUITY_DURING_PROCESSING``), ``sort_by`` ``id`` (default),
  ``Created_Time`` or ``Modified_Time``, ``sort_order`` ``desc`` (default) or ``asc``, ``ids``,
  and for Leads ``converted`` (``false`` by default: converted leads are left out unless
  ``true`` or ``both`` is asked; a converted lead has ``Converted__s``, ``Converted_Date_Time`` and
  the lookup ``Converted_Deal``, as the Leads field metadata lists them). ``If-Modified-Since``
  (ISO 8601 with an offset) keeps records modified after that instant; when none is, the answer
  is 304 with no body. An empty result
  without the header is 204 with no body. ``info`` carries ``per_page, count, page, sort_by,
  sort_order, more_records, next_page_token, previous_page_token, page_token_expiry``.
  ``GET /crm/v8/{module}/{id}`` returns the one record (all fields), 204 when there is none.
- ``GET /crm/v8/{module}/deleted`` with ``type`` ``all`` (default), ``recycle`` or ``permanent``
  (else 400 ``PATTERN_NOT_MATCHED``), ``page``, ``per_page`` and ``If-Modified-Since`` (on the
  deletion time): ``{"data": [{"deleted_by", "id", "display_name", "type", "created_by",
  "deleted_time"}], "info": {per_page, count, page, more_records}}``, newest deletion first; a
  permanently deleted record has null names, as in the documented sample. 2 credits a call. This
  endpoint's errors come inside ``{"data": [...]}``, as its schema in Zoho's OpenAPI description
  has them.
- ``GET /crm/v8/users?type=AllUsers|ActiveUsers|DeactiveUsers|AdminUsers|CurrentUser|...`` with
  ``page``/``per_page``, ``ids`` and ``If-Modified-Since``: ``{"users": [...], "info": {per_page,
  count, page, more_records}}``, users in id order; ``GET /crm/v8/users/{id}``.
- ``GET /crm/v8/settings/layouts?module=Deals``, ``GET /crm/v8/settings/pipeline?layout_id=``
  (``layout_id`` mandatory, as documented) and ``GET /crm/v8/settings/fields?module=Deals|Leads``
  (the ``Stage`` picklist with ``pick_list_values`` carrying ``probability`` and
  ``forecast_type``, the ``Lead_Status`` and ``Lead_Source`` picklists).

Limits (API Limits page): every call costs credits (1; 2 for deleted records) from a rolling
24-hour window of ``daily_quota`` credits, and at most ``concurrency`` calls run at once (20, the
Enterprise figure; ``rate_limit`` is the same knob: Zoho has no per-second limit). Either refusal
is HTTP 429 ``TOO_MANY_REQUESTS``. Past half the daily credits, answers carry
``X-API-CREDITS-REMAINING``. The token endpoint costs no credits.

Order: records in the order asked (``id`` descending by default); ties on a time are broken by
id in the same direction. Timestamps are rendered to the second in the org's time zone
(``tz``, America/Los_Angeles unless told) with its offset, e.g. ``2021-04-14T17:02:00-07:00``.

Where the documentation is silent the emulator chooses, and says so here: ``If-Modified-Since``
keeps records modified strictly after the instant (HTTP's meaning; ``ims_inclusive=True`` for
the other reading); a page (by number or token) is an offset into the live result, so records
changed while a client pages move under it; a ``per_page`` above the maximum is 400
``INVALID_DATA``; fields that the module does not have are left out of the records; the 2,000
limit is on where a page starts, and a page is cut at the 2,000th record; ``info.page`` of a
token page counts pages from the first.

Error ``details`` follow the schemas of Zoho's OpenAPI description of v8 (records, deleted records
and users): ``{"param_name"}`` for invalid data, ``{"param_name", "supported_values"}`` for a bad
``sort_by``, ``{"resource_path_index": 0}`` for an unknown module, ``{"api_name": "page_token",
"json_path": "$.query.page_token"}`` for an expired token, ``{"ambiguity_due_to": [{"param_name":
"page"}, {"param_name": "page_token"}]}``.

Followed:
https://www.zoho.com/crm/developer/docs/api/v7/get-records.html,
https://www.zoho.com/crm/developer/docs/api/v7/get-deleted-records.html,
https://www.zoho.com/crm/developer/docs/api/v7/get-users.html,
https://www.zoho.com/crm/developer/docs/api/v7/get-pipelines.html,
https://www.zoho.com/crm/developer/docs/api/v7/field-meta.html,
https://www.zoho.com/crm/developer/docs/api/v4/api-limits.html (credits; concurrency and the
429 message as the v8 page has them),
https://www.zoho.com/accounts/protocol/oauth/web-apps/access-token-expiry.html (ten tokens in
ten minutes), https://www.zoho.com/pdfeditor/help/api/oauth-step4.html (30 live access tokens
per refresh token), and the operations getRecords, getDeletedRecords and getUsers of Zoho's
OpenAPI description of v8.

Data changes from the test's thread: :meth:`ZohoEmulator.create`, :meth:`update`,
:meth:`delete` (``permanent=`` for a record gone past the recycle bin), :meth:`deactivate_user`,
each stamping ``Modified_Time`` from the clock or ``at``. Faults: :meth:`fail` of the base.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import secrets
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from crm_perf_sync.kit.timeutil import utc_now
from tests.connectors.rest.emulators.base import Emulator, Reply, Request, Response
from tests.connectors.rest.emulators.zoho_data import (
    DEAL_STAGES,
    ID_BASE,
    LEAD_SOURCES,
    LEAD_STATUSES,
    Org,
    Record,
    User,
    synthetic,
)

MODULES = ("Deals", "Leads", "Accounts", "Calls", "Events", "Tasks")
SORT_FIELDS = ("id", "Created_Time", "Modified_Time")
DISCRETE_LIMIT = 2_000
TOKEN_LIMIT = 100_000
MAX_FIELDS = 50
PAGE_TOKEN_TTL = timedelta(hours=24)
TOO_MANY_MESSAGE = (
    "Number of API requests for the 24 hour period is exceeded or the concurrency limit of the user "
    "for the app is exceeded"
)
LAYOUT_ID = ID_BASE + 91_023
PIPELINE_ID = ID_BASE + 3_097_001
_STAGE_IDS = ID_BASE + 6_801
_SECOND = timedelta(seconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Field API names each module has (what ``fields`` may ask for), with their data types.
MODULE_FIELDS: Mapping[str, Mapping[str, str]] = {
    "Deals": {
        "Deal_Name": "text",
        "Owner": "ownerlookup",
        "Amount": "currency",
        "Expected_Revenue": "currency",
        "Closing_Date": "date",
        "Stage": "picklist",
        "Probability": "integer",
        "Lead_Source": "picklist",
        "Type": "picklist",
        "LEADID": "text",
        "Account_Name": "lookup",
        "Created_Time": "datetime",
        "Modified_Time": "datetime",
        "Created_By": "ownerlookup",
        "Modified_By": "ownerlookup",
    },
    "Leads": {
        "Last_Name": "text",
        "Full_Name": "text",
        "Company": "text",
        "Email": "email",
        "Mobile": "phone",
        "Website": "website",
        "Industry": "picklist",
        "Lead_Source": "picklist",
        "Lead_Status": "picklist",
        "Owner": "ownerlookup",
        "LEADID": "text",
        "Converted__s": "boolean",
        "Converted_Date_Time": "datetime",
        "Converted_Deal": "lookup",
        "Created_Time": "datetime",
        "Modified_Time": "datetime",
        "Created_By": "ownerlookup",
        "Modified_By": "ownerlookup",
    },
    "Accounts": {
        "Account_Name": "text",
        "Owner": "ownerlookup",
        "Industry": "picklist",
        "Account_Type": "picklist",
        "Parent_Account": "lookup",
        "Website": "website",
        "Created_Time": "datetime",
        "Modified_Time": "datetime",
        "Created_By": "ownerlookup",
        "Modified_By": "ownerlookup",
    },
    # Activities: What_Id is the record one is related to, named by $se_module (Accounts, Deals,
    # Leads ...); Who_Id the contact.
    "Calls": {
        "Subject": "text",
        "Owner": "ownerlookup",
        "Call_Type": "picklist",
        "Call_Purpose": "picklist",
        "Call_Start_Time": "datetime",
        "Call_Duration": "text",
        "Call_Duration_in_seconds": "integer",
        "Call_Result": "picklist",
        "Outgoing_Call_Status": "picklist",
        "What_Id": "lookup",
        "$se_module": "text",
        "Who_Id": "lookup",
        "Created_Time": "datetime",
        "Modified_Time": "datetime",
        "Created_By": "ownerlookup",
        "Modified_By": "ownerlookup",
    },
    "Events": {
        "Event_Title": "text",
        "Owner": "ownerlookup",
        "Start_DateTime": "datetime",
        "End_DateTime": "datetime",
        "All_day": "boolean",
        "Venue": "text",
        "What_Id": "lookup",
        "$se_module": "text",
        "Who_Id": "lookup",
        "Created_Time": "datetime",
        "Modified_Time": "datetime",
        "Created_By": "ownerlookup",
        "Modified_By": "ownerlookup",
    },
    "Tasks": {
        "Subject": "text",
        "Owner": "ownerlookup",
        "Due_Date": "date",
        "Status": "picklist",
        "Priority": "picklist",
        "Closed_Time": "datetime",
        "What_Id": "lookup",
        "$se_module": "text",
        "Who_Id": "lookup",
        "Created_Time": "datetime",
        "Modified_Time": "datetime",
        "Created_By": "ownerlookup",
        "Modified_By": "ownerlookup",
    },
}
_DISPLAY = {
    "Deals": "Deal_Name",
    "Leads": "Full_Name",
    "Accounts": "Account_Name",
    "Calls": "Subject",
    "Events": "Event_Title",
    "Tasks": "Subject",
}
_READ_ONLY = frozenset(
    {
        "Created_Time",
        "Modified_Time",
        "Created_By",
        "Modified_By",
        "Full_Name",
        "Converted_Deal",
        "Converted__s",
    }
)
_STAMPS = frozenset({"Created_Time", "Modified_Time", "Created_By", "Modified_By"})


def error(status: int, code: str, message: str, details: Mapping[str, Any] | None = None) -> Reply:
    return Reply(
        status, {"code": code, "details": dict(details or {}), "message": message, "status": "error"}
    )


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def _second(moment: datetime) -> datetime:
    """Zoho keeps times to the second."""
    if moment.microsecond == 0 and moment.tzinfo is UTC:
        return moment
    return moment.astimezone(UTC).replace(microsecond=0)


@dataclass
class _Token:
    value: str
    access_token: str
    bound: tuple[Any, ...]
    offset: int
    expires: datetime


@dataclass
class _Deleted:
    id: int
    display_name: str | None
    created_by: User | None
    deleted_by: User | None
    when: datetime
    permanent: bool


@dataclass
class _Module:
    """The records of one module, with one sorted index per sortable field."""

    name: str
    records: dict[int, Record] = field(default_factory=dict)
    index: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: {f: [] for f in SORT_FIELDS})
    deleted: list[_Deleted] = field(default_factory=list)
    version: int = 0
    views: dict[tuple[Any, ...], tuple[int, list[tuple[int, int]]]] = field(default_factory=dict)

    @staticmethod
    def keys(record: Record) -> dict[str, tuple[int, int]]:
        return {
            "id": (record.id, record.id),
            "Created_Time": (_ms(record.created), record.id),
            "Modified_Time": (_ms(record.modified), record.id),
        }

    def add(self, record: Record) -> None:
        self.records[record.id] = record
        for name, key in self.keys(record).items():
            bisect.insort(self.index[name], key)
        self.version += 1

    def remove(self, record_id: int) -> Record:
        record = self.records.pop(record_id)
        for name, key in self.keys(record).items():
            keys = self.index[name]
            del keys[bisect.bisect_left(keys, key)]
        self.version += 1
        return record

    def load(self, records: Sequence[Record]) -> None:
        """Take copies of ``records`` (the emulator changes its own, never the dataset's)."""
        for r in records:
            created, modified = _second(r.created), _second(r.modified)
            self.records[r.id] = Record(r.id, r.module, dict(r.values), created, modified, r.owner_id)
        values = self.records.values()
        self.index["id"] = sorted((r.id, r.id) for r in values)
        self.index["Created_Time"] = sorted((_ms(r.created), r.id) for r in values)
        self.index["Modified_Time"] = sorted((_ms(r.modified), r.id) for r in values)
        self.version += 1


class ZohoEmulator(Emulator):
    """See the module docstring."""

    def __init__(
        self,
        data: Org | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        record: bool = True,
        tz: tzinfo | None = None,
    ) -> None:
        super().__init__(clock=clock, record=record)
        org = data if data is not None else synthetic(0, users=3)
        self.tz = tz or ZoneInfo("America/Los_Angeles")
        self.client_id = "1000.EMULATORCLIENT0000000000000000"
        self.client_secret = secrets.token_hex(21)
        self.refresh_token = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        self.token_ttl = 3600
        self.token_refresh_limit = 10  # access tokens a refresh token may mint per ten minutes
        self.daily_quota: int | None = None
        self.concurrency: int | None = 20
        self.max_page_size = 200
        self.discrete_limit = DISCRETE_LIMIT  # records reachable with ``page``
        self.token_limit = TOKEN_LIMIT  # records reachable with ``page_token``
        self.ims_inclusive = False
        #: While cleared, calls wait on it (up to 5 s) after being admitted: a way to hold calls
        #: in flight and meet the concurrency limit.
        self.gate = threading.Event()
        self.gate.set()
        self.users: dict[int, User] = {user.id: dataclasses.replace(user) for user in org.users}
        self.current_user: User | None = next(iter(self.users.values()), None)
        self.modules: dict[str, _Module] = {name: _Module(name) for name in MODULES}
        for name, records in org.records.items():
            self.modules[name].load(records)
        self._ids = itertools.count(max([ID_BASE + 9_000_000, *self.all_ids()]) + 1)
        self._tokens: dict[str, datetime] = {}  # access token -> expiry
        self._minted: deque[datetime] = deque()
        self._refreshed: deque[str] = deque()  # access tokens minted from the refresh token, oldest first
        self.max_active_tokens = 30
        self._page_tokens: dict[str, _Token] = {}
        self._credits: deque[tuple[datetime, int]] = deque()
        self._credits_used = 0
        self._in_flight = 0

    # -- knobs ----------------------------------------------------------------------------------

    @property
    def rate_limit(self) -> int | None:
        """Zoho limits calls in flight, not calls per second: this is :attr:`concurrency`."""
        return self.concurrency

    @rate_limit.setter
    def rate_limit(self, value: int | None) -> None:
        self.concurrency = value

    @property
    def accounts_url(self) -> str:
        return self.url

    def issue_token(self) -> str:
        """An access token, as if refreshed now (for tests that skip the token call)."""
        token = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        with self.lock:
            self._tokens[token] = self.clock() + timedelta(seconds=self.token_ttl)
        return token

    def all_ids(self) -> list[int]:
        return [record_id for module in self.modules.values() for record_id in module.records]

    # -- data changes ---------------------------------------------------------------------------

    def create(
        self, module: str, values: Mapping[str, Any] | None = None, *, at: datetime | None = None
    ) -> str:
        """Add a record; ``Created_Time`` and ``Modified_Time`` are ``at`` or now. Returns its id."""
        when = _second(at or self.clock())
        owner = self.current_user
        fields: dict[str, Any] = {name: None for name in MODULE_FIELDS[module] if name not in _STAMPS}
        if owner is not None:
            fields["Owner"] = owner.ref()
        if module == "Leads":
            fields["Converted__s"] = False
        fields.update(values or {})
        with self.lock:
            record = Record(next(self._ids), module, fields, when, when, owner.id if owner else None)
            self.modules[module].add(record)
        return str(record.id)

    def update(
        self, record_id: str | int, values: Mapping[str, Any] | None = None, *, at: datetime | None = None
    ) -> None:
        """Change fields of a record and set its ``Modified_Time`` to ``at`` or now."""
        with self.lock:
            module, record = self._find(int(record_id))
            module.remove(record.id)
            record.values.update(values or {})
            record.modified = _second(at or self.clock())
            module.add(record)

    def delete(
        self,
        record_id: str | int,
        *,
        at: datetime | None = None,
        permanent: bool = False,
        by: User | None = None,
    ) -> None:
        """Delete a record: to the recycle bin, or for good with ``permanent=True``."""
        with self.lock:
            module, record = self._find(int(record_id))
            module.remove(record.id)
            creator = self.users.get(record.owner_id) if record.owner_id else None
            deleter = by or self.current_user
            module.deleted.append(
                _Deleted(
                    record.id,
                    record.values.get(_DISPLAY[module.name]),
                    creator,
                    deleter,
                    _second(at or self.clock()),
                    permanent,
                )
            )

    def deactivate_user(self, user_id: str | int, *, at: datetime | None = None) -> None:
        with self.lock:
            user = self.users[int(user_id)]
            user.status = "inactive"
            user.modified = _second(at or self.clock())

    def _find(self, record_id: int) -> tuple[_Module, Record]:
        for module in self.modules.values():
            record = module.records.get(record_id)
            if record is not None:
                return module, record
        raise KeyError(record_id)

    # -- rendering ------------------------------------------------------------------------------

    def render_time(self, moment: datetime) -> str:
        return moment.astimezone(self.tz).isoformat(timespec="seconds")

    def _value(self, record: Record, name: str) -> Any:
        if name == "Created_Time":
            return self.render_time(record.created)
        if name == "Modified_Time":
            return self.render_time(record.modified)
        if name in ("Created_By", "Modified_By"):
            owner = self.users.get(record.owner_id) if record.owner_id else None
            return owner.ref() if owner else None
        value = record.values.get(name)
        return self.render_time(value) if isinstance(value, datetime) else value

    def _render(self, record: Record, fields: Sequence[str]) -> dict[str, Any]:
        known = MODULE_FIELDS[record.module]
        out = {name: self._value(record, name) for name in fields if name in known}
        out["id"] = str(record.id)
        return out

    def _user(self, user: User) -> dict[str, Any]:
        return {
            "id": str(user.id),
            "full_name": user.full_name,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "email": user.email,
            "status": user.status,
            "confirm": user.confirm,
            "role": {
                "name": "CEO" if user.admin else "Manager",
                "id": str(ID_BASE + 26_005 + (0 if user.admin else 3)),
            },
            "profile": {
                "name": "Administrator" if user.admin else "Standard",
                "id": str(ID_BASE + (26_011 if user.admin else 26_014)),
            },
            "type__s": "Regular User",
            "time_zone": getattr(self.tz, "key", "UTC"),
            "locale": "en_US",
            "language": "en_US",
            "created_time": self.render_time(user.created),
            "Modified_Time": self.render_time(user.modified),
        }

    # -- dispatch -------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.path == "/oauth/v2/token":
            if request.method != "POST":
                raise error(400, "INVALID_REQUEST_METHOD", "The http request method type is not a valid one")
            return self._token(request)
        if not request.path.startswith("/crm/v8/"):
            raise error(
                404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one"
            )
        self._authenticate(request)
        parts = request.path[len("/crm/v8/") :].strip("/").split("/")
        cost = 2 if len(parts) == 2 and parts[1] == "deleted" else 1
        headers = self._admit(cost)
        try:
            if not self.gate.is_set():
                self.gate.wait(5)
            if request.method != "GET":
                raise error(400, "INVALID_REQUEST_METHOD", "The http request method type is not a valid one")
            response = self._route(request, parts)
        except Reply as reply:
            reply.response.headers.update(headers)
            raise
        finally:
            with self.lock:
                self._in_flight -= 1
        response.headers.update(headers)
        return response

    def _route(self, request: Request, parts: list[str]) -> Response:
        head = parts[0]
        if head == "users":
            return self._users(request, parts[1] if len(parts) > 1 else None)
        if head == "settings" and len(parts) == 2:
            if parts[1] == "pipeline":
                return self._pipeline(request)
            if parts[1] == "layouts":
                return self._layouts(request)
            if parts[1] == "fields":
                return self._fields(request)
        if head in MODULES and len(parts) == 1:
            return self._records(request, self.modules[head])
        if len(parts) == 2 and parts[1] == "deleted":
            if head not in MODULES:
                body = error(
                    400,
                    "INVALID_MODULE",
                    "the module name given seems to be invalid",
                    {"resource_path_index": 0},
                ).response.body
                raise Reply(400, {"data": [body]})
            return self._deleted(request, self.modules[head])
        if head in MODULES and len(parts) == 2 and parts[1].isdigit():
            return self._one(request, self.modules[head], int(parts[1]))
        if len(parts) <= 2 and head[:1].isupper():
            raise error(
                400, "INVALID_MODULE", "the module name given seems to be invalid", {"resource_path_index": 0}
            )
        raise error(404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one")

    # -- OAuth ----------------------------------------------------------------------------------

    def _token(self, request: Request) -> Response:
        params = {k: v[-1] for k, v in request.query.items()}
        if isinstance(request.body, dict):
            params.update({k: str(v) for k, v in request.body.items()})
        if params.get("grant_type") != "refresh_token":
            return Response(200, {"error": "unsupported_grant_type"})
        if params.get("client_id") != self.client_id or params.get("client_secret") != self.client_secret:
            return Response(200, {"error": "invalid_client"})
        if params.get("refresh_token") != self.refresh_token:
            return Response(200, {"error": "invalid_code"})
        now = self.clock()
        with self.lock:
            while self._minted and self._minted[0] <= now - timedelta(minutes=10):
                self._minted.popleft()
            if len(self._minted) >= self.token_refresh_limit:
                return Response(
                    400,
                    {
                        "error_description": "You have made too many requests continuously. "
                        "Please try again after some time.",
                        "error": "Access Denied",
                        "status": "failure",
                    },
                )
            self._minted.append(now)
        token = self.issue_token()
        with self.lock:
            # a refresh token has at most 30 live access tokens: minting one more revokes the oldest
            self._refreshed = deque(t for t in self._refreshed if self._tokens.get(t, now) > now)
            self._refreshed.append(token)
            while len(self._refreshed) > self.max_active_tokens:
                self._tokens.pop(self._refreshed.popleft(), None)
        return Response(
            200,
            {
                "access_token": token,
                "api_domain": self.url,
                "token_type": "Bearer",
                "expires_in": self.token_ttl,
            },
        )

    def _authenticate(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme != "Zoho-oauthtoken" or not token.strip():
            raise error(401, "AUTHENTICATION_FAILURE", "Authentication failed")
        with self.lock:
            expiry = self._tokens.get(token.strip())
        if expiry is None or expiry <= self.clock():
            raise error(401, "INVALID_TOKEN", "invalid oauth token")
        return token.strip()

    # -- limits ---------------------------------------------------------------------------------

    def _admit(self, cost: int) -> dict[str, str]:
        """Count the call against the credits and the concurrency; 429 when either is spent."""
        now = self.clock()
        with self.lock:
            while self._credits and self._credits[0][0] <= now - timedelta(hours=24):
                self._credits_used -= self._credits.popleft()[1]
            if self.concurrency is not None and self._in_flight >= self.concurrency:
                raise error(429, "TOO_MANY_REQUESTS", TOO_MANY_MESSAGE)
            if self.daily_quota is not None and self._credits_used + cost > self.daily_quota:
                raise error(429, "TOO_MANY_REQUESTS", TOO_MANY_MESSAGE)
            self._credits.append((now, cost))
            self._credits_used += cost
            self._in_flight += 1
            headers: dict[str, str] = {}
            if self.daily_quota is not None and self._credits_used * 2 > self.daily_quota:
                headers["X-API-CREDITS-REMAINING"] = str(self.daily_quota - self._credits_used)
            return headers

    # -- Get Records ----------------------------------------------------------------------------

    def _since(self, request: Request) -> datetime | None:
        text = request.headers.get("if-modified-since")
        if not text:
            return None
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError as exc:
            raise error(400, "INVALID_DATA", "invalid data", {"header_name": "If-Modified-Since"}) from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.tz)
        return moment

    def _positive(self, request: Request, name: str, default: int) -> int:
        text = request.arg(name)
        if text is None or text == "":
            return default
        if not text.isdigit() or int(text) < 1:
            raise error(400, "INVALID_DATA", "invalid data", {"param_name": name})
        return int(text)

    def _per_page(self, request: Request) -> int:
        per_page = self._positive(request, "per_page", self.max_page_size)
        if per_page > self.max_page_size:
            raise error(
                400,
                "INVALID_DATA",
                "invalid data",
                {"param_name": "per_page"},
            )
        return per_page

    def _view(
        self, module: _Module, sort_by: str, since: datetime | None, converted: str
    ) -> list[tuple[int, int]]:
        """The matching keys of ``module`` in ascending order of ``sort_by``, cached per version."""
        if since is None and (module.name != "Leads" or converted == "both"):
            return module.index[sort_by]
        view_key = (sort_by, since, converted)
        cached = module.views.get(view_key)
        if cached is not None and cached[0] == module.version:
            return cached[1]
        threshold = _ms(since) if since is not None else None
        keys = module.index[sort_by]
        records = module.records
        wanted = {"true": True, "false": False}.get(converted)
        out = []
        for key in keys:
            record = records[key[1]]
            if threshold is not None:
                modified = _ms(record.modified)
                if modified < threshold or (modified == threshold and not self.ims_inclusive):
                    continue
            if wanted is not None and bool(record.values.get("Converted__s")) is not wanted:
                continue
            out.append(key)
        module.views[view_key] = (module.version, out)
        return out

    def _records(self, request: Request, module: _Module) -> Response:
        fields_arg = request.arg("fields")
        ids_arg = request.arg("ids")
        if not fields_arg and not ids_arg:
            raise error(
                400,
                "REQUIRED_PARAM_MISSING",
                "One of the expected parameter is missing",
                {"param_name": "fields"},
            )
        fields = [name.strip() for name in (fields_arg or "").split(",") if name.strip()]
        if len(fields) > MAX_FIELDS:
            raise error(
                400, "LIMIT_EXCEEDED", "fields limit exceeded", {"param_name": "fields", "limit": MAX_FIELDS}
            )
        if not fields:
            fields = list(MODULE_FIELDS[module.name])
        sort_by = request.arg("sort_by") or "id"
        if sort_by not in SORT_FIELDS:
            raise error(
                400,
                "INVALID_DATA",
                "invalid data",
                {"param_name": "sort_by", "supported_values": list(SORT_FIELDS)},
            )
        sort_order = request.arg("sort_order") or "desc"
        if sort_order not in ("asc", "desc"):
            raise error(400, "INVALID_DATA", "invalid data", {"param_name": "sort_order"})
        converted = (request.arg("converted") or "false").lower() if module.name == "Leads" else "both"
        if converted not in ("true", "false", "both"):
            raise error(400, "INVALID_DATA", "invalid data", {"param_name": "converted"})
        per_page = self._per_page(request)
        since = self._since(request)
        token_arg = request.arg("page_token")
        if token_arg is not None and request.arg("page") is not None:
            raise error(
                400,
                "AMBIGUITY_DURING_PROCESSING",
                "Ambiguity while processing the request",
                {"ambiguity_due_to": [{"param_name": "page"}, {"param_name": "page_token"}]},
            )
        access = request.headers.get("authorization", "").partition(" ")[2].strip()
        bound = (module.name, tuple(fields), sort_by, sort_order, per_page, since, converted, ids_arg)
        now = self.clock()
        if token_arg is not None:
            with self.lock:
                token = self._page_tokens.get(token_arg)
            if token is None or token.access_token != access:
                raise error(
                    400, "INVALID_DATA", "the token given seems to be invalid", {"param_name": "page_token"}
                )
            if token.expires <= now:
                raise error(
                    400,
                    "EXPIRED_VALUE",
                    "Page token expired",
                    {"api_name": "page_token", "json_path": "$.query.page_token"},
                )
            if token.bound != bound:
                raise error(
                    400,
                    "TOKEN_BOUND_DATA_MISMATCH",
                    "The page_token given seems to be invalid or input param is added or altered or deleted",
                    {"param_name": "page_token"},
                )
            offset = token.offset
            if offset >= self.token_limit:
                raise error(
                    400,
                    "PAGINATION_LIMIT_EXCEEDED",
                    "pagination limit exceeded",
                    {"param_name": "page_token"},
                )
            limit = self.token_limit
        else:
            page = self._positive(request, "page", 1)
            offset = (page - 1) * per_page
            if offset >= self.discrete_limit:
                raise error(
                    400,
                    "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                    "You can only get the first 2000 records without using page_token param.",
                    {"limit": self.discrete_limit},
                )
            limit = self.discrete_limit
        with self.lock:
            if ids_arg:
                wanted_ids = {int(x) for x in ids_arg.split(",") if x.strip().isdigit()}
                keys = [k for k in self._view(module, sort_by, since, converted) if k[1] in wanted_ids]
            else:
                keys = self._view(module, sort_by, since, converted)
            total = len(keys)
            end = min(offset + per_page, total, limit)
            if sort_order == "asc":
                chosen = keys[offset:end]
            else:
                chosen = keys[max(total - end, 0) : total - offset][::-1] if offset < total else []
            data = [self._render(module.records[key[1]], fields) for key in chosen]
        if not data:
            # 304 when nothing was modified since the instant; 204 when there is nothing (more) to list
            return Response(304 if since is not None and total == 0 else 204, b"")
        more = end < total
        next_token = None
        previous_token = None
        expiry = now + PAGE_TOKEN_TTL
        if more:
            next_token = self._mint(access, bound, end, expiry)
        if token_arg is not None and offset > 0:
            previous_token = self._mint(access, bound, max(offset - per_page, 0), expiry)
        info = {
            "per_page": per_page,
            "next_page_token": next_token,
            "count": len(data),
            "sort_by": sort_by,
            "page": offset // per_page + 1,
            "previous_page_token": previous_token,
            "page_token_expiry": self.render_time(expiry) if (next_token or previous_token) else None,
            "sort_order": sort_order,
            "more_records": more,
        }
        return Response(200, {"data": data, "info": info})

    def _mint(self, access: str, bound: tuple[Any, ...], offset: int, expires: datetime) -> str:
        value = secrets.token_hex(24)
        with self.lock:
            self._page_tokens[value] = _Token(value, access, bound, offset, expires)
        return value

    def _one(self, request: Request, module: _Module, record_id: int) -> Response:
        with self.lock:
            record = module.records.get(record_id)
            if record is None:
                return Response(204, b"")
            fields = request.arg("fields")
            names = [n.strip() for n in fields.split(",")] if fields else list(MODULE_FIELDS[module.name])
            return Response(200, {"data": [self._render(record, names)]})

    # -- deleted records ------------------------------------------------------------------------

    def _deleted(self, request: Request, module: _Module) -> Response:
        kind = request.arg("type") or "all"
        if kind not in ("all", "recycle", "permanent"):
            # the errors of this endpoint come inside "data", as its schema documents them
            body = error(
                400,
                "PATTERN_NOT_MATCHED",
                "Please check whether the input values are correct",
                {"param_name": "type"},
            ).response.body
            raise Reply(400, {"data": [body]})
        per_page = self._per_page(request)
        page = self._positive(request, "page", 1)
        since = self._since(request)
        with self.lock:
            rows = [
                d
                for d in module.deleted
                if (kind == "all" or d.permanent == (kind == "permanent"))
                and (since is None or d.when > since or (self.ims_inclusive and d.when == since))
            ]
        rows.sort(key=lambda d: (d.when, d.id), reverse=True)
        chosen = rows[(page - 1) * per_page : page * per_page]
        if not chosen:
            return Response(304 if since is not None and not rows else 204, b"")
        data = [
            {
                "deleted_by": None if d.permanent or d.deleted_by is None else d.deleted_by.ref(email=False),
                "id": str(d.id),
                "display_name": None if d.permanent else d.display_name,
                "type": "permanent" if d.permanent else "recycle",
                "created_by": None if d.permanent or d.created_by is None else d.created_by.ref(email=False),
                "deleted_time": self.render_time(d.when),
            }
            for d in chosen
        ]
        info = {
            "per_page": per_page,
            "count": len(data),
            "page": page,
            "more_records": page * per_page < len(rows),
        }
        return Response(200, {"data": data, "info": info})

    # -- users ----------------------------------------------------------------------------------

    def _users(self, request: Request, user_id: str | None) -> Response:
        with self.lock:
            users = sorted(self.users.values(), key=lambda u: u.id)
        if user_id is not None:
            found = [u for u in users if str(u.id) == user_id]
            if not found:
                return Response(204, b"")
            return Response(200, {"users": [self._user(found[0])]})
        kind = request.arg("type") or "AllUsers"
        tests: dict[str, Callable[[User], bool]] = {
            "AllUsers": lambda u: u.status != "deleted",
            "ActiveUsers": lambda u: u.status == "active",
            "DeactiveUsers": lambda u: u.status == "inactive",
            "ConfirmedUsers": lambda u: u.confirm,
            "NotConfirmedUsers": lambda u: not u.confirm,
            "DeletedUsers": lambda u: u.status == "deleted",
            "ActiveConfirmedUsers": lambda u: u.status == "active" and u.confirm,
            "AdminUsers": lambda u: u.admin,
            "ActiveConfirmedAdmins": lambda u: u.admin and u.status == "active" and u.confirm,
            "CurrentUser": lambda u: self.current_user is not None and u.id == self.current_user.id,
        }
        test = tests.get(kind)
        if test is None:
            raise error(400, "INVALID_DATA", "invalid data", {"param_name": "type"})
        since = self._since(request)
        ids = {x.strip() for x in (request.arg("ids") or "").split(",") if x.strip()}
        chosen = [
            u
            for u in users
            if test(u) and (since is None or u.modified > since) and (not ids or str(u.id) in ids)
        ]
        per_page = self._per_page(request)
        page = self._positive(request, "page", 1)
        window = chosen[(page - 1) * per_page : page * per_page]
        if not window:
            return Response(304 if since is not None and not chosen else 204, b"")
        info = {
            "per_page": per_page,
            "count": len(window),
            "page": page,
            "more_records": page * per_page < len(chosen),
        }
        return Response(200, {"users": [self._user(u) for u in window], "info": info})

    # -- settings -------------------------------------------------------------------------------

    def _module_arg(self, request: Request) -> str:
        module = request.arg("module")
        if not module:
            raise error(
                400,
                "REQUIRED_PARAM_MISSING",
                "One of the expected parameter is missing",
                {"param_name": "module"},
            )
        if module not in MODULES:
            raise error(
                400, "INVALID_MODULE", "the module name given seems to be invalid", {"param_name": "module"}
            )
        return module

    def _layouts(self, request: Request) -> Response:
        module = self._module_arg(request)
        layout_id = LAYOUT_ID if module == "Deals" else LAYOUT_ID + 1
        return Response(
            200,
            {
                "layouts": [
                    {
                        "id": str(layout_id),
                        "name": "Standard",
                        "api_name": "Standard__s",
                        "status": "active",
                        "visible": True,
                        "source": "crm",
                    }
                ]
            },
        )

    def _stage_maps(self) -> list[dict[str, Any]]:
        categories = {
            "Open": ("Pipeline", 6_787),
            "Closed Won": ("Closed", 6_789),
            "Closed Lost": ("Omitted", 6_791),
        }
        maps = []
        for sequence, (stage, probability, forecast) in enumerate(DEAL_STAGES, start=1):
            category, category_id = categories[forecast]
            maps.append(
                {
                    "display_value": stage,
                    "sequence_number": sequence,
                    "forecast_category": {"name": category, "id": str(ID_BASE + category_id)},
                    "actual_value": stage,
                    "id": str(_STAGE_IDS + 2 * (sequence - 1)),
                    "forecast_type": forecast,
                    "probability": probability,
                }
            )
        return maps

    def _pipeline(self, request: Request) -> Response:
        layout = request.arg("layout_id")
        if not layout:
            raise error(
                400,
                "REQUIRED_PARAM_MISSING",
                "One of the expected parameter is missing",
                {"param_name": "layout_id"},
            )
        if layout != str(LAYOUT_ID):
            raise error(400, "INVALID_DATA", "The layout ID is invalid.", {"param_name": "layout_id"})
        pipeline = {
            "display_value": "Standard (Standard)",
            "default": True,
            "maps": self._stage_maps(),
            "actual_value": "Standard (Standard)",
            "id": str(PIPELINE_ID),
        }
        return Response(200, {"pipeline": [pipeline]})

    def _fields(self, request: Request) -> Response:
        module = self._module_arg(request)
        picklists: dict[str, list[str]] = {"Lead_Source": ["-None-", *LEAD_SOURCES]}
        if module == "Leads":
            picklists["Lead_Status"] = ["-None-", *LEAD_STATUSES]
        out = []
        for number, (name, data_type) in enumerate(MODULE_FIELDS[module].items(), start=1):
            field_id = ID_BASE + 2_000 + number * 2 + (0 if module == "Deals" else 500)
            item: dict[str, Any] = {
                "api_name": name,
                "field_label": name.replace("__s", "").replace("_", " "),
                "display_label": name.replace("__s", "").replace("_", " "),
                "data_type": data_type,
                "json_type": {
                    "ownerlookup": "jsonobject",
                    "lookup": "jsonobject",
                    "currency": "double",
                    "integer": "integer",
                    "boolean": "boolean",
                }.get(data_type, "string"),
                "id": str(field_id),
                "custom_field": name == "LEADID",
                "read_only": name in _READ_ONLY,
                "pick_list_values": [],
            }
            if name == "Stage" and module == "Deals":
                item["pick_list_values"] = [
                    {
                        "display_value": m["display_value"],
                        "sequence_number": m["sequence_number"],
                        "reference_value": m["display_value"],
                        "actual_value": m["actual_value"],
                        "id": m["id"],
                        "type": "used",
                        "probability": m["probability"],
                        "forecast_type": m["forecast_type"],
                        "forecast_category": m["forecast_category"],
                    }
                    for m in self._stage_maps()
                ]
            elif name in picklists:
                item["pick_list_values"] = [
                    {
                        "display_value": v,
                        "sequence_number": i,
                        "reference_value": v,
                        "actual_value": v,
                        "id": str(ID_BASE + 3_000_000 + number * 100 + i),
                        "type": "used",
                    }
                    for i, v in enumerate(picklists[name], start=1)
                ]
            out.append(item)
        return Response(200, {"fields": out})
