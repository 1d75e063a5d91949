"""A Pipedrive API emulator: a real HTTP server on 127.0.0.1 speaking Pipedrive's REST API.

Put :attr:`PipedriveEmulator.url` where ``https://{companydomain}.pipedrive.com`` (or
``https://api.pipedrive.com``) would be; the vendor's paths sit below it. It serves:

- ``GET /api/v2/deals``: every not deleted, not archived deal; cursor pagination (``limit``,
  default 100, at most 500, else 400; ``cursor``; ``additional_data.next_cursor``, ``null`` on the
  last page); ``sort_by`` ``id`` (default) / ``update_time`` / ``add_time``, ``sort_direction``
  ``asc`` (default) / ``desc``, ties broken by ``id`` in the same direction (the cursor is the
  base64url JSON ``{"field", "fieldValue", "sortDirection", "id"}`` of the first deal of the next
  page, as in the reference's example); ``updated_since`` (inclusive) and ``updated_until``
  (exclusive) in RFC 3339; ``status`` ``open``/``won``/``lost``/``deleted``, comma-separated for
  several (``deleted``: deals deleted up to 30 days ago); ``owner_id``, ``pipeline_id``,
  ``stage_id``, ``ids`` (up to 100); ``include_fields`` (``source_lead_id``, ``first_won_time``;
  the other documented ones come back ``null``); ``custom_fields`` (keys to keep, at most 15).
  Deals are v2 ``DealItem`` objects with RFC 3339 times (``2021-04-15T00:02:00Z``) and
  ``expected_close_date`` as ``YYYY-MM-DD``; custom fields under ``custom_fields`` by 40-character
  hash key (:data:`ZOHO_LEADID_KEY` holds the Zoho LEADID a deal was imported with);
- ``GET /api/v2/deals/archived``: the archived deals, same parameters;
- ``GET /api/v2/pipelines`` and ``GET /api/v2/stages`` (``pipeline_id``, ``sort_by``,
  ``sort_direction``, cursor pagination); ``GET /api/v2/dealFields`` (the main standard fields,
  then the company's custom fields with their 40-character ``field_code``; its token cost, 10,
  is not documented: half of v1's 20, as v2 endpoints go);
- ``GET /api/v2/organizations`` and ``GET /api/v2/activities``: the not deleted ones, cursor
  paged as deals are, ``sort_by`` ``id``/``update_time``/``add_time``, ``updated_since`` and
  ``updated_until``, ``ids``, ``owner_id``, and for activities ``deal_id``, ``lead_id``,
  ``person_id``, ``org_id`` and ``done``; their lists have no ``status=deleted`` (the reference
  documents that filter for deals only), so a deleted one is simply gone. v2 ``ActivityItem``:
  ``type`` the activity type's ``key_string``, ``due_date`` ``YYYY-MM-DD``, ``due_time`` and
  ``duration`` ``HH:MM`` (UTC), ``done``, the links; a deal's ``org_id`` is its organization;
- ``GET /v1/users`` (also ``/api/v1/users``): every user, times as ``YYYY-MM-DD HH:MM:SS``;
- ``GET /v1/leads`` and ``GET /v1/leads/archived`` (also under ``/api/v1``): offset pagination
  (``start``, ``limit``; ``additional_data.pagination`` with ``start``, ``limit``,
  ``more_items_in_collection`` and ``next_start`` when there are more), the not archived (resp.
  archived) leads oldest first by ``add_time``, ``owner_id``, ``updated_since``, ``sort``
  (``"field ASC|DESC"``). A lead converted to a deal is marked deleted, as the reference says
  of ``POST /api/v2/leads/{id}/convert/deal``: it leaves both lists, and the deal names it in
  ``source_lead_id``;
- ``POST /oauth/token`` (``grant_type=refresh_token``, client credentials in Basic auth).

Auth: the ``x-api-token`` header (or the legacy ``api_token`` query parameter) equal to
:attr:`PipedriveEmulator.api_token`, or ``Authorization: Bearer`` with an unexpired access token
from :meth:`PipedriveEmulator.issue_access_token` or ``/oauth/token``. Anything else: 401
``{"success": false, "error": "unauthorized access", "errorCode": 401, "error_info": ...}`` (an
invalid or expired bearer token: ``"Invalid token: access_token is invalid"``).

Rate limits, enforced on ``clock``: a burst limit per token over a rolling 2-second window
(:attr:`rate_limit` requests for an API token, Growth plan's 40 by default, four times as many
for an OAuth token, as the plan table says), and a daily token budget per company
(:attr:`daily_quota`, by default 30,000 x the Growth multiplier 2 x the number of users) which
each request spends by its documented token cost (:data:`TOKEN_COSTS`) and which resets at
midnight UTC. Every authenticated answer carries ``x-ratelimit-limit``, ``x-ratelimit-remaining``,
``x-ratelimit-reset`` (whole seconds until the window frees a request) and, for API-token
requests, ``x-daily-requests-left`` (the budget's tokens left). Past either limit: 429 with
``{"success": false, "error": "Request over limit", "errorCode": 429, ...}`` (the daily budget:
``"daily request budget exceeded"``) and ``Retry-After``. Refused requests spend nothing. The
defaults are enforced, so a test that pages fast on the real clock meets 429s as a client would;
pass a :class:`~.base.SimClock` or set the knobs to ``None``.

Fault knobs: :meth:`fail` from the base (5xx, 429 bursts, dropped connections); writes from the
test's thread (:meth:`create`, :meth:`update`, :meth:`delete`, :meth:`archive`,
:meth:`create_lead`, :meth:`update_lead`, :meth:`archive_lead`, :meth:`convert_lead`, and
:meth:`add` and :meth:`change` for organizations and activities) stamping
``update_time`` from the clock or ``at`` (whole seconds, so ties come easily); ``max_page_size``;
``token_ttl``; ``rate_limit``/``oauth_rate_limit``/``daily_quota`` (``None``: not enforced).

Documentation followed:
- https://developers.pipedrive.com/docs/api/v1 and the OpenAPI documents behind it
  (``openapi-v2.yaml``: ``GET /deals``, ``/deals/archived``, ``/stages``, ``/pipelines``, their
  ``x-token-cost``; ``openapi-v1.yaml``: ``GET /leads``, ``/leads/archived``, ``/users``, the 401
  ``unathorizedResponse`` example, ``/oauth/token``), as generated into pipedrive/client-nodejs
  (``src/versions/v2/api/deals-api.ts``, ``models/deal.ts``, ``v1/models/lead.ts``);
- https://pipedrive.readme.io/docs/core-api-concepts-pagination (cursor and offset pagination),
  .../core-api-concepts-responses (the error schema), .../core-api-concepts-http-status-codes,
  .../core-api-concepts-authentication (``x-api-token``), .../core-api-concepts-rate-limiting
  (token budget, burst limits, headers), .../marketplace-oauth-and-api-proxy-status-codes
  (``Request over limit``, ``Invalid token: access_token is invalid``, OAuth ``/oauth/token``
  errors), .../pipedrive-api-v2-migration-guide (RFC 3339 times, ``/api/v2`` prefix only);
- https://developers.pipedrive.com/changelog/post/breaking-change-archived-deals-and-leads-will-not-be-returned-in-existing-endpoints-and-will-not-be-editable

Where the documentation is silent, this emulator chooses (and says so here): the body of a
burst 429 beyond "Request over limit"; the daily budget's message (as seen from the live API);
``Retry-After`` on 429 (older rate-limit documentation); ``x-daily-requests-left`` on every
API-token answer with the budget's tokens left (the page describes it as the POST/PUT requests
left for the day, from before the token budget); refused requests spending nothing; the 400
bodies (the generic error schema, with messages of its own); a deleted deal's ``status``
(``"deleted"``, as v1 had it) and ``update_time`` (the deletion time); the order of ties in
leads (the order they were added); that v1 ``limit`` above 500 is cut to 500 where v2 refuses
it; that OAuth scopes are not checked; the midnight of the budget's reset (UTC).
"""

from __future__ import annotations

import base64
import binascii
import math
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from crm_perf_sync.kit.timeutil import utc_now

from .base import Emulator, Reply, Request, Response

#: The documented token cost of each endpoint served (``x-token-cost`` in the OpenAPI documents).
TOKEN_COSTS: Mapping[str, int] = {
    "/api/v2/deals": 10,
    "/api/v2/deals/archived": 20,
    "/api/v2/stages": 5,
    "/api/v2/pipelines": 5,
    "/api/v2/dealFields": 10,
    "/api/v2/organizations": 10,
    "/api/v2/activities": 10,
    "/v1/users": 20,
    "/v1/leads": 20,
    "/v1/leads/archived": 40,
}
#: The burst window, in seconds.
WINDOW = 2.0
#: The Growth plan: 40 requests per 2 s for an API token, 160 for an OAuth token, multiplier 2.
GROWTH_BURST = 40
GROWTH_OAUTH_BURST = 160
GROWTH_MULTIPLIER = 2
BASE_TOKENS = 30_000
#: Sorted query results kept at once (each up to every deal); more, and the cache starts over.
_CACHED_QUERIES = 16
#: A deal stays listed under ``status=deleted`` for 30 days after its deletion.
DELETED_KEPT = timedelta(days=30)

#: The deal custom field holding the Zoho LEADID a deal (or lead) was imported with.
ZOHO_LEADID_KEY = "5f0c1b8e3a9d4c2b7e6f1a0d9c8b7a6f5e4d3c2b"
_ERROR_INFO = "Please check developers.pipedrive.com for more information about Pipedrive API."
_LEAD_NAMESPACE = uuid.UUID("8b0a3c62-7a3e-4f43-9a51-3c9f1b6a2d10")
_DEAL_INCLUDE_FIELDS = frozenset(
    {
        "next_activity_id",
        "last_activity_id",
        "first_won_time",
        "products_count",
        "files_count",
        "notes_count",
        "followers_count",
        "email_messages_count",
        "activities_count",
        "done_activities_count",
        "undone_activities_count",
        "participants_count",
        "last_incoming_mail_time",
        "last_outgoing_mail_time",
        "smart_bcc_email",
        "source_lead_id",
    }
)
_DEAL_STATUSES = frozenset({"open", "won", "lost", "deleted"})
_LEAD_SORTS = frozenset(
    {"id", "title", "owner_id", "creator_id", "was_seen", "expected_close_date", "next_activity_id"}
    | {"add_time", "update_time"}
)


# -- times -----------------------------------------------------------------------------------------


def seconds(value: datetime) -> int:
    """An instant as whole epoch seconds (Pipedrive's times have no fraction)."""
    return int(value.timestamp())


def rfc3339(value: int | None) -> str | None:
    """API v2's rendering of a time: ``2021-04-15T00:02:00Z``."""
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def v1_time(value: int | None) -> str | None:
    """API v1's rendering of a user's time: ``2021-04-15 00:02:00``."""
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


def parse_time(text: str) -> int:
    """An RFC 3339 / ISO 8601 time from a query parameter (no offset: UTC)."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return math.floor(moment.timestamp())


def lead_uuid(key: str) -> str:
    """The id of the lead imported under ``key`` (stable, so a test can compute it)."""
    return str(uuid.uuid5(_LEAD_NAMESPACE, key))


# -- the data --------------------------------------------------------------------------------------


@dataclass
class User:
    id: int
    name: str
    email: str
    created: int
    active: bool = True
    is_admin: bool = False

    def render(self, you: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "default_currency": "USD",
            "locale": "en_US",
            "lang": 1,
            "email": self.email,
            "phone": None,
            "activated": self.active,
            "last_login": v1_time(self.created),
            "created": v1_time(self.created),
            "modified": v1_time(self.created),
            "has_created_company": self.id == you,
            "access": [{"app": "sales", "admin": self.is_admin, "permission_set_id": f"{self.id:08x}"}],
            "active_flag": self.active,
            "timezone_name": "UTC",
            "timezone_offset": "+00:00",
            "role_id": 1,
            "icon_url": None,
            "is_you": self.id == you,
            "is_deleted": False,
        }


@dataclass
class Pipeline:
    id: int
    name: str
    order_nr: int
    add_time: int
    update_time: int

    def render(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "order_nr": self.order_nr,
            "is_deleted": False,
            "is_deal_probability_enabled": True,
            "add_time": rfc3339(self.add_time),
            "update_time": rfc3339(self.update_time),
        }


@dataclass
class Stage:
    id: int
    pipeline_id: int
    name: str
    order_nr: int
    deal_probability: int
    add_time: int
    update_time: int

    def render(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "order_nr": self.order_nr,
            "name": self.name,
            "is_deleted": False,
            "deal_probability": self.deal_probability,
            "pipeline_id": self.pipeline_id,
            "is_deal_rot_enabled": False,
            "days_to_rotten": None,
            "add_time": rfc3339(self.add_time),
            "update_time": rfc3339(self.update_time),
        }


@dataclass
class Deal:
    """One deal as stored. Times are epoch seconds; ``status`` is open/won/lost (or deleted)."""

    id: int
    title: str
    owner_id: int
    pipeline_id: int
    stage_id: int
    value: float
    add_time: int
    update_time: int
    currency: str = "USD"
    status: str = "open"
    won_time: int | None = None
    lost_time: int | None = None
    expected_close_date: str | None = None
    probability: int | None = None
    lost_reason: str | None = None
    stage_change_time: int | None = None
    is_deleted: bool = False
    deleted_time: int | None = None
    is_archived: bool = False
    origin: str = "ManuallyCreated"
    source_lead_id: str | None = None
    org_id: int | None = None
    custom_fields: dict[str, Any] = field(default_factory=dict)

    @property
    def close_time(self) -> int | None:
        return self.won_time if self.status == "won" else self.lost_time if self.status == "lost" else None

    def render(
        self, include: frozenset[str] = frozenset(), custom: frozenset[str] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "creator_user_id": self.owner_id,
            "owner_id": self.owner_id,
            "person_id": None,
            "org_id": self.org_id,
            "pipeline_id": self.pipeline_id,
            "stage_id": self.stage_id,
            "value": int(self.value) if float(self.value).is_integer() else self.value,
            "currency": self.currency,
            "add_time": rfc3339(self.add_time),
            "update_time": rfc3339(self.update_time),
            "stage_change_time": rfc3339(self.stage_change_time),
            "is_deleted": self.is_deleted,
            "is_archived": self.is_archived,
            "status": self.status,
            "probability": self.probability,
            "lost_reason": self.lost_reason,
            "visible_to": 3,
            "close_time": rfc3339(self.close_time),
            "won_time": rfc3339(self.won_time),
            "lost_time": rfc3339(self.lost_time),
            "expected_close_date": self.expected_close_date,
            "label_ids": [],
            "origin": self.origin,
            "origin_id": None,
            "channel": None,
            "channel_id": None,
            "arr": None,
            "mrr": None,
            "acv": None,
            "custom_fields": {k: v for k, v in self.custom_fields.items() if custom is None or k in custom},
        }
        for name in sorted(include):
            if name == "source_lead_id":
                body[name] = self.source_lead_id
            elif name == "first_won_time":
                body[name] = rfc3339(self.won_time)
            else:
                body[name] = None
        return body


@dataclass
class Lead:
    """One lead as stored; ``seq`` orders leads added at the same second."""

    id: str
    seq: int
    title: str
    owner_id: int
    source_name: str
    add_time: int
    update_time: int
    is_archived: bool = False
    is_deleted: bool = False
    converted_deal_id: int | None = None
    value: dict[str, Any] | None = None
    expected_close_date: str | None = None
    origin: str = "API"
    custom_fields: dict[str, Any] = field(default_factory=dict)

    def render(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "owner_id": self.owner_id,
            "creator_id": self.owner_id,
            "label_ids": [],
            "person_id": None,
            "organization_id": None,
            "source_name": self.source_name,
            "origin": self.origin,
            "origin_id": None,
            "channel": None,
            "channel_id": None,
            "source_deal_id": None,
            "is_archived": self.is_archived,
            "was_seen": True,
            "value": self.value,
            "expected_close_date": self.expected_close_date,
            "next_activity_id": None,
            "add_time": rfc3339(self.add_time),
            "update_time": rfc3339(self.update_time),
            "visible_to": "3",
            "cc_email": f"company+{self.id}@pipedrivemail.com",
        }
        # v1 puts a lead's custom fields at the top level, under the deal fields' hash keys.
        body.update(self.custom_fields)
        return body


@dataclass
class Organization:
    """One organization as stored (times in epoch seconds)."""

    id: int
    name: str
    owner_id: int
    add_time: int
    update_time: int
    is_deleted: bool = False
    address: str | None = None

    def render(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "owner_id": self.owner_id,
            "add_time": rfc3339(self.add_time),
            "update_time": rfc3339(self.update_time),
            "is_deleted": self.is_deleted,
            "visible_to": 3,
            "label_ids": [],
            "address": {"value": self.address} if self.address else None,
            "custom_fields": {},
        }


#: The activity types every company starts with (``key_string``), and a custom one.
ACTIVITY_TYPE_KEYS = ("call", "meeting", "task", "deadline", "email", "lunch")


@dataclass
class Activity:
    """One activity as stored: ``due_date`` ``YYYY-MM-DD``, ``due_time`` and ``duration`` ``HH:MM``
    (the due time in UTC, as the API writes it), times in epoch seconds."""

    id: int
    subject: str
    type: str
    owner_id: int
    due_date: str
    add_time: int
    update_time: int
    due_time: str | None = None
    duration: str | None = None
    done: bool = False
    marked_as_done_time: int | None = None
    deal_id: int | None = None
    lead_id: str | None = None
    person_id: int | None = None
    org_id: int | None = None
    is_deleted: bool = False
    note: str | None = None

    def render(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subject": self.subject,
            "type": self.type,
            "owner_id": self.owner_id,
            "creator_user_id": self.owner_id,
            "is_deleted": self.is_deleted,
            "add_time": rfc3339(self.add_time),
            "update_time": rfc3339(self.update_time),
            "deal_id": self.deal_id,
            "lead_id": self.lead_id,
            "person_id": self.person_id,
            "org_id": self.org_id,
            "project_id": None,
            "due_date": self.due_date,
            "due_time": self.due_time,
            "duration": self.duration,
            "busy": False,
            "done": self.done,
            "marked_as_done_time": rfc3339(self.marked_as_done_time),
            "location": None,
            "participants": [{"person_id": self.person_id, "primary": True}] if self.person_id else [],
            "attendees": None,
            "public_description": None,
            "priority": None,
            "note": self.note,
        }


@dataclass
class DealField:
    """A custom deal field (leads share them): its 40-character key, name and type."""

    key: str
    name: str
    field_type: str = "varchar"


#: The standard deal fields ``/api/v2/dealFields`` lists before the custom ones.
_STANDARD_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("id", "ID", "int"),
    ("title", "Title", "varchar"),
    ("owner_id", "Owner", "user"),
    ("value", "Value", "monetary"),
    ("currency", "Currency", "varchar"),
    ("pipeline_id", "Pipeline", "double"),
    ("stage_id", "Stage", "stage"),
    ("status", "Status", "status"),
    ("probability", "Probability", "double"),
    ("add_time", "Deal created", "date"),
    ("update_time", "Update time", "date"),
    ("won_time", "Won time", "date"),
    ("lost_time", "Lost time", "date"),
    ("close_time", "Deal closed on", "date"),
    ("expected_close_date", "Expected close date", "date"),
)


@dataclass
class Company:
    """A Pipedrive company: users, pipelines with their stages, deals and leads."""

    users: list[User]
    pipelines: list[Pipeline]
    stages: list[Stage]
    deals: list[Deal] = field(default_factory=list)
    leads: list[Lead] = field(default_factory=list)
    deal_fields: list[DealField] = field(default_factory=list)
    organizations: list[Organization] = field(default_factory=list)
    activities: list[Activity] = field(default_factory=list)

    @staticmethod
    def empty(start: datetime | None = None) -> Company:
        t = seconds(start or datetime(2024, 1, 1, tzinfo=UTC))
        return Company(
            users=[User(1, "Admin", "admin@example.com", t, is_admin=True)],
            pipelines=[Pipeline(1, "Pipeline", 1, t, t)],
            stages=[Stage(1, 1, "Qualified", 1, 100, t, t)],
        )


# -- the emulator ----------------------------------------------------------------------------------


def _fail(status: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    """The generic error schema of the Responses page (400, 404)."""
    body = {
        "success": False,
        "error": message,
        "error_info": _ERROR_INFO,
        "data": None,
        "additional_data": None,
    }
    return Reply(status, body, headers)


def _coded(status: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    """An error with ``errorCode``, as the 401 example and the live 429s have it."""
    body = {"success": False, "error": message, "errorCode": status, "error_info": _ERROR_INFO}
    return Reply(status, body, headers)


def _encode_cursor(payload: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(dict(payload))).decode().rstrip("=")


def _decode_cursor(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise _fail(400, "Invalid cursor") from exc
    if not isinstance(value, dict):
        raise _fail(400, "Invalid cursor")
    return value


@dataclass
class _Caller:
    kind: str  # "api" or "oauth"
    token: str


class PipedriveEmulator(Emulator):
    """Pipedrive over HTTP; see the module docstring for what it serves and its knobs."""

    def __init__(
        self, data: Company | None = None, *, clock: Callable[[], datetime] = utc_now, record: bool = True
    ) -> None:
        super().__init__(clock=clock, record=record)
        company = data or Company.empty()
        self.users = {u.id: replace(u) for u in company.users}
        self.pipelines = {p.id: replace(p) for p in company.pipelines}
        self.stages = {s.id: replace(s) for s in company.stages}
        self.deals: dict[int, Deal] = {
            d.id: replace(d, custom_fields=dict(d.custom_fields)) for d in company.deals
        }
        self.leads: dict[str, Lead] = {
            x.id: replace(x, custom_fields=dict(x.custom_fields)) for x in company.leads
        }
        self.deal_fields = [replace(f) for f in company.deal_fields]
        self.organizations: dict[int, Organization] = {o.id: replace(o) for o in company.organizations}
        self.activities: dict[int, Activity] = {a.id: replace(a) for a in company.activities}
        self._next_deal = max(self.deals, default=0) + 1
        self._next_seq = max((x.seq for x in self.leads.values()), default=0) + 1
        #: The user the API token belongs to (``is_you``).
        self.you = min(self.users)
        self.api_token = uuid.uuid5(_LEAD_NAMESPACE, "api-token").hex + "0" * 8
        self.client_id = "f3a1c2b4d5e6a7b8"
        self.client_secret = "0f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6"
        self.refresh_token = "1:1:2a5496a8bdd0f829dcb09dc8ba82b188f0ea4481"
        self.token_ttl = timedelta(seconds=3599)
        self._access: dict[str, datetime] = {}
        self.max_page_size = 500
        self.rate_limit: int | None = GROWTH_BURST
        self.oauth_rate_limit: int | None = GROWTH_OAUTH_BURST
        self.daily_quota: int | None = BASE_TOKENS * GROWTH_MULTIPLIER * max(1, len(self.users))
        self._windows: dict[str, deque[datetime]] = {}
        self._spent: dict[date, int] = {}
        self._version = 0
        self._cache: dict[tuple[Any, ...], tuple[int, list[tuple[Any, ...]]]] = {}
        self._data_lock = threading.RLock()

    # -- credentials -----------------------------------------------------------------------------

    def issue_access_token(self, ttl: timedelta | None = None) -> str:
        """A new OAuth access token, valid for ``ttl`` (default :attr:`token_ttl`) on the clock."""
        token = "v1u:" + uuid.uuid4().hex + uuid.uuid4().hex
        with self.lock:
            self._access[token] = self.clock() + (ttl if ttl is not None else self.token_ttl)
        return token

    # -- writes from the test --------------------------------------------------------------------

    def _now(self, at: datetime | None) -> int:
        return seconds(at if at is not None else self.clock())

    def _remember(self, key: tuple[Any, ...], rows: list[tuple[Any, ...]]) -> None:
        if len(self._cache) >= _CACHED_QUERIES:
            self._cache.clear()
        self._cache[key] = (self._version, rows)

    def _changed(self) -> None:
        self._version += 1
        self._cache.clear()

    def create(self, title: str, *, at: datetime | None = None, **fields: Any) -> Deal:
        """A new deal added at ``at`` (or now); ``fields`` are :class:`Deal` attributes."""
        with self._data_lock:
            now = self._now(at)
            stage = self.stages[fields.pop("stage_id", min(self.stages))]
            deal = Deal(
                id=fields.pop("id", self._next_deal),
                title=title,
                owner_id=fields.pop("owner_id", self.you),
                pipeline_id=stage.pipeline_id,
                stage_id=stage.id,
                value=fields.pop("value", 0),
                add_time=now,
                update_time=now,
                **fields,
            )
            self._next_deal = max(self._next_deal, deal.id + 1)
            self.deals[deal.id] = deal
            self._changed()
            return deal

    def update(self, id: int, *, at: datetime | None = None, **fields: Any) -> Deal:
        """Change a deal: ``status`` won/lost stamps ``won_time``/``lost_time``; sets ``update_time``."""
        with self._data_lock:
            deal = self.deals[id]
            now = self._now(at)
            if "stage_id" in fields and fields["stage_id"] != deal.stage_id:
                deal.stage_change_time = now
                deal.pipeline_id = self.stages[fields["stage_id"]].pipeline_id
            status = fields.get("status")
            if status == "won" and deal.status != "won":
                deal.won_time, deal.lost_time = now, None
            elif status == "lost" and deal.status != "lost":
                deal.won_time, deal.lost_time = None, now
            elif status == "open":
                deal.won_time = deal.lost_time = None
            for name, value in fields.items():
                if not hasattr(deal, name):
                    raise AttributeError(f"a deal has no field {name!r}")
                setattr(deal, name, value)
            deal.update_time = now
            self._changed()
            return deal

    def delete(self, id: int, *, at: datetime | None = None) -> None:
        """Mark a deal deleted (listed under ``status=deleted`` for 30 days)."""
        with self._data_lock:
            deal = self.deals[id]
            now = self._now(at)
            deal.is_deleted, deal.status, deal.deleted_time, deal.update_time = True, "deleted", now, now
            self._changed()

    def archive(self, id: int, *, at: datetime | None = None) -> None:
        """Archive a deal: it leaves ``/api/v2/deals`` for ``/api/v2/deals/archived``."""
        with self._data_lock:
            deal = self.deals[id]
            deal.is_archived, deal.update_time = True, self._now(at)
            self._changed()

    def create_lead(
        self, title: str, *, owner_id: int | None = None, source_name: str = "API", at: datetime | None = None
    ) -> Lead:
        with self._data_lock:
            now = self._now(at)
            lead = Lead(str(uuid.uuid4()), self._next_seq, title, owner_id or self.you, source_name, now, now)
            self._next_seq += 1
            self.leads[lead.id] = lead
            self._changed()
            return lead

    def update_lead(self, id: str, *, at: datetime | None = None, **fields: Any) -> Lead:
        with self._data_lock:
            lead = self.leads[id]
            for name, value in fields.items():
                if not hasattr(lead, name):
                    raise AttributeError(f"a lead has no field {name!r}")
                setattr(lead, name, value)
            lead.update_time = self._now(at)
            self._changed()
            return lead

    def archive_lead(self, id: str, *, at: datetime | None = None) -> Lead:
        return self.update_lead(id, is_archived=True, at=at)

    def convert_lead(self, id: str, *, at: datetime | None = None, **fields: Any) -> Deal:
        """Convert a lead as ``POST /api/v2/leads/{id}/convert/deal`` does: a new deal naming the
        lead in ``source_lead_id``, and the lead marked deleted."""
        with self._data_lock:
            lead = self.leads[id]
            deal = self.create(
                lead.title,
                at=at,
                owner_id=lead.owner_id,
                source_lead_id=lead.id,
                origin="LeadConversion",
                **fields,
            )
            lead.is_deleted, lead.converted_deal_id, lead.update_time = True, deal.id, deal.add_time
            self._changed()
            return deal

    def change(self, kind: str, id: int, *, at: datetime | None = None, **fields: Any) -> Any:
        """Change an organization (``kind`` ``"organization"``) or an activity (``"activity"``) and
        stamp its ``update_time``; ``is_deleted=True`` deletes it (it leaves every list)."""
        with self._data_lock:
            item = (self.organizations if kind == "organization" else self.activities)[id]
            for name, value in fields.items():
                if not hasattr(item, name):
                    raise AttributeError(f"an {kind} has no field {name!r}")
                setattr(item, name, value)
            item.update_time = self._now(at)
            self._changed()
            return item

    def add(self, item: Organization | Activity) -> None:
        """A new organization or activity, as given."""
        with self._data_lock:
            if isinstance(item, Organization):
                self.organizations[item.id] = item
            else:
                self.activities[item.id] = item
            self._changed()

    # -- the HTTP side ---------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        if path.startswith("/api/v1/"):
            path = path[len("/api") :]
        if path == "/oauth/token" and request.method == "POST":
            return self._oauth_token(request)
        caller = self._authenticate(request)
        route = self._routes().get((request.method, path))
        if route is None:
            raise _fail(404, f"Unknown method {request.method} {request.path}")
        headers = self._spend(caller, TOKEN_COSTS[path])
        try:
            body = route(request)
        except Reply as reply:
            reply.response.headers.update(headers)
            raise
        return Response(200, body, headers)

    def _routes(self) -> dict[tuple[str, str], Callable[[Request], dict[str, Any]]]:
        return {
            ("GET", "/api/v2/deals"): lambda r: self._deals(r, archived=False),
            ("GET", "/api/v2/deals/archived"): lambda r: self._deals(r, archived=True),
            ("GET", "/api/v2/pipelines"): self._pipelines,
            ("GET", "/api/v2/stages"): self._stages,
            ("GET", "/api/v2/dealFields"): self._deal_fields,
            ("GET", "/api/v2/organizations"): self._organizations,
            ("GET", "/api/v2/activities"): self._activities,
            ("GET", "/v1/users"): self._users,
            ("GET", "/v1/leads"): lambda r: self._leads(r, archived=False),
            ("GET", "/v1/leads/archived"): lambda r: self._leads(r, archived=True),
        }

    # -- auth and limits -------------------------------------------------------------------------

    def _authenticate(self, request: Request) -> _Caller:
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            token = authorization[7:].strip()
            with self.lock:
                expiry = self._access.get(token)
            if expiry is None or self.clock() >= expiry:
                raise _coded(401, "Invalid token: access_token is invalid")
            return _Caller("oauth", token)
        api_token = request.headers.get("x-api-token") or request.arg("api_token")
        if api_token and api_token == self.api_token:
            return _Caller("api", api_token)
        raise _coded(401, "unauthorized access")

    def _spend(self, caller: _Caller, cost: int) -> dict[str, str]:
        """Count the request against the burst window and the daily budget; the headers to send."""
        now = self.clock()
        limit = self.rate_limit if caller.kind == "api" else self.oauth_rate_limit
        with self.lock:
            window = self._windows.setdefault(caller.token, deque())
            while window and (now - window[0]).total_seconds() >= WINDOW:
                window.popleft()
            day = now.astimezone(UTC).date()
            spent = self._spent.get(day, 0)
            quota = self.daily_quota
            # Not enforced: the headers still show the Growth plan's limit, as they would on it.
            nominal = GROWTH_BURST if caller.kind == "api" else GROWTH_OAUTH_BURST
            shown_limit = limit if limit is not None else nominal
            if limit is not None and len(window) >= limit:
                reset = self._reset(window, now)
                headers = self._headers(caller, shown_limit, 0, reset, quota, spent)
                raise _coded(429, "Request over limit", {**headers, "Retry-After": str(reset)})
            if quota is not None and spent + cost > quota:
                midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
                wait = max(1, math.ceil((midnight - now).total_seconds()))
                headers = self._headers(caller, shown_limit, shown_limit - len(window), WINDOW, quota, spent)
                raise _coded(429, "daily request budget exceeded", {**headers, "Retry-After": str(wait)})
            window.append(now)
            self._spent[day] = spent + cost
            remaining = max(0, shown_limit - len(window))
            return self._headers(
                caller, shown_limit, remaining, self._reset(window, now), quota, spent + cost
            )

    @staticmethod
    def _reset(window: deque[datetime], now: datetime) -> int:
        if not window:
            return int(WINDOW)
        return max(1, math.ceil(WINDOW - (now - window[0]).total_seconds()))

    @staticmethod
    def _headers(
        caller: _Caller, limit: int, remaining: int, reset: float, quota: int | None, spent: int
    ) -> dict[str, str]:
        headers = {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(max(0, remaining)),
            "x-ratelimit-reset": str(int(reset)),
        }
        if caller.kind == "api" and quota is not None:
            headers["x-daily-requests-left"] = str(max(0, quota - spent))
        return headers

    def _oauth_token(self, request: Request) -> Response:
        def refuse(message: str) -> Response:
            return Response(400, {"success": False, "message": message})

        if "x-www-form-urlencoded" not in request.headers.get("content-type", ""):
            return refuse("Invalid request: content must be application/x-www-form-urlencoded")
        authorization = request.headers.get("authorization", "")
        try:
            client = (
                base64.b64decode(authorization[6:]).decode() if authorization[:6].lower() == "basic " else ""
            )
        except (binascii.Error, UnicodeDecodeError):
            client = ""
        if not client:
            return refuse("Invalid client: cannot retrieve client credentials")
        if client != f"{self.client_id}:{self.client_secret}":
            return refuse("Invalid client: client is invalid")
        form = request.body if isinstance(request.body, dict) else {}
        grant = form.get("grant_type")
        if not grant:
            return refuse("Missing parameter: grant_type")
        if grant != "refresh_token":
            return refuse("Unsupported grant type: grant_type is invalid")
        if form.get("refresh_token") != self.refresh_token:
            return refuse("Invalid grant: refresh_token is invalid")
        token = self.issue_access_token()
        body = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": int(self.token_ttl.total_seconds()),
            "refresh_token": self.refresh_token,
            "scope": "base,deals:read,leads:read,users:read",
            "api_domain": self.url,
        }
        return Response(200, body)

    # -- parameters ------------------------------------------------------------------------------

    @staticmethod
    def _int(request: Request, name: str) -> int | None:
        text = request.arg(name)
        if text is None or text == "":
            return None
        try:
            return int(text)
        except ValueError as exc:
            raise _fail(400, f"Parameter '{name}' must be an integer") from exc

    def _limit(self, request: Request, *, strict: bool) -> int:
        limit = self._int(request, "limit")
        if limit is None:
            return min(100, self.max_page_size)
        if limit < 1:
            raise _fail(400, "Parameter 'limit' must be a positive integer")
        if limit > 500:
            if strict:
                raise _fail(400, "Parameter 'limit' must be less than or equal to 500")
            limit = 500
        return min(limit, self.max_page_size)

    @staticmethod
    def _time(request: Request, name: str) -> int | None:
        text = request.arg(name)
        if not text:
            return None
        try:
            return parse_time(text)
        except ValueError as exc:
            raise _fail(400, f"Parameter '{name}' must be a date-time in RFC 3339 format") from exc

    @staticmethod
    def _choice(request: Request, name: str, allowed: Iterable[str], default: str) -> str:
        value = request.arg(name) or default
        if value not in allowed:
            raise _fail(400, f"Parameter '{name}' must be one of: {', '.join(allowed)}")
        return value

    @staticmethod
    def _list(request: Request, name: str) -> list[str]:
        text = request.arg(name) or ""
        return [part.strip() for part in text.split(",") if part.strip()]

    # -- cursor pagination (v2) ------------------------------------------------------------------

    def _cursor_page(
        self,
        request: Request,
        key: tuple[Any, ...],
        build: Callable[[], list[tuple[Any, ...]]],
        sort_by: str,
        descending: bool,
    ) -> tuple[list[Any], str | None]:
        """The page of a sorted list of ``(sort value, id, item)`` the cursor points into.

        The sorted list is built once per query and data version, so paging is a bisect and a
        slice, not a scan.
        """
        limit = self._limit(request, strict=True)
        with self._data_lock:
            cached = self._cache.get(key)
            if cached is None or cached[0] != self._version:
                rows = build()
                rows.sort(key=lambda row: (row[0], row[1]), reverse=descending)
                self._remember(key, rows)
            else:
                rows = cached[1]
        start = 0
        text = request.arg("cursor")
        if text:
            cursor = _decode_cursor(text)
            if cursor.get("field") != sort_by or cursor.get("sortDirection") != (
                "desc" if descending else "asc"
            ):
                raise _fail(400, "Invalid cursor")
            try:
                mark = (self._cursor_value(sort_by, cursor["fieldValue"]), int(cursor["id"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise _fail(400, "Invalid cursor") from exc
            start = _bisect(rows, mark, descending)
        page = rows[start : start + limit]
        following = rows[start + limit] if start + limit < len(rows) else None
        next_cursor = None
        if following is not None:
            value = following[0] if sort_by in ("id", "order_nr", "position") else rfc3339(following[0])
            next_cursor = _encode_cursor(
                {
                    "field": sort_by,
                    "fieldValue": value,
                    "sortDirection": "desc" if descending else "asc",
                    "id": following[1],
                }
            )
        return [row[2] for row in page], next_cursor

    @staticmethod
    def _cursor_value(sort_by: str, value: Any) -> int:
        if sort_by in ("id", "order_nr", "position"):
            return int(value)
        return parse_time(str(value))

    # -- endpoints -------------------------------------------------------------------------------

    def _deals(self, request: Request, *, archived: bool) -> dict[str, Any]:
        sort_by = self._choice(request, "sort_by", ("id", "update_time", "add_time"), "id")
        direction = self._choice(request, "sort_direction", ("asc", "desc"), "asc")
        statuses = self._list(request, "status")
        if any(s not in _DEAL_STATUSES for s in statuses):
            raise _fail(400, "Parameter 'status' must be one of: open, won, lost, deleted")
        include = frozenset(self._list(request, "include_fields"))
        unknown = ", ".join(sorted(include - _DEAL_INCLUDE_FIELDS))
        if unknown:
            raise _fail(400, f"Parameter 'include_fields' has unknown fields: {unknown}")
        custom_keys = self._list(request, "custom_fields")
        if len(custom_keys) > 15:
            raise _fail(400, "Parameter 'custom_fields' accepts at most 15 keys")
        ids_text = self._list(request, "ids")
        if len(ids_text) > 100:
            raise _fail(400, "Parameter 'ids' accepts at most 100 ids")
        try:
            ids = frozenset(int(i) for i in ids_text)
        except ValueError as exc:
            raise _fail(400, "Parameter 'ids' must be integers") from exc
        owner_id = self._int(request, "owner_id")
        pipeline_id = self._int(request, "pipeline_id")
        stage_id = self._int(request, "stage_id")
        since = self._time(request, "updated_since")
        until = self._time(request, "updated_until")
        wanted = frozenset(statuses)
        now = seconds(self.clock())

        def keep(deal: Deal) -> bool:
            if deal.is_archived != archived:
                return False
            if deal.is_deleted:
                if "deleted" not in wanted or deal.deleted_time is None:
                    return False
                if now - deal.deleted_time > DELETED_KEPT.total_seconds():
                    return False
            elif wanted and deal.status not in wanted:
                return False
            return (
                (not ids or deal.id in ids)
                and (owner_id is None or deal.owner_id == owner_id)
                and (pipeline_id is None or deal.pipeline_id == pipeline_id)
                and (stage_id is None or deal.stage_id == stage_id)
                and (since is None or deal.update_time >= since)
                and (until is None or deal.update_time < until)
            )

        def build() -> list[tuple[Any, ...]]:
            return [(getattr(d, sort_by), d.id, d) for d in self.deals.values() if keep(d)]

        # Deleted deals leave the list 30 days after deletion: the day is part of the query's key.
        key = (
            "deals",
            archived,
            sort_by,
            direction,
            wanted,
            ids,
            owner_id,
            pipeline_id,
            stage_id,
            since,
            until,
            now // 86400 if "deleted" in wanted else None,
        )
        deals, next_cursor = self._cursor_page(request, key, build, sort_by, direction == "desc")
        custom = frozenset(custom_keys) if custom_keys else None
        with self._data_lock:
            data = [d.render(include, custom) for d in deals]
        return {"success": True, "data": data, "additional_data": {"next_cursor": next_cursor}}

    def _organizations(self, request: Request) -> dict[str, Any]:
        return self._listed(request, "organizations", self.organizations, ("owner_id",))

    def _activities(self, request: Request) -> dict[str, Any]:
        done_text = request.arg("done")
        if done_text not in (None, "", "true", "false", "1", "0"):
            raise _fail(400, "Parameter 'done' must be a boolean")
        done = None if done_text in (None, "") else done_text in ("true", "1")
        return self._listed(
            request,
            "activities",
            self.activities,
            ("owner_id", "deal_id", "person_id", "org_id"),
            extra=lambda a: (
                (done is None or a.done == done)
                and (not request.arg("lead_id") or a.lead_id == request.arg("lead_id"))
            ),
            extra_key=(done, request.arg("lead_id")),
        )

    def _listed(
        self,
        request: Request,
        name: str,
        items: Mapping[int, Any],
        by: tuple[str, ...],
        extra: Callable[[Any], bool] | None = None,
        extra_key: tuple[Any, ...] = (),
    ) -> dict[str, Any]:
        """``GET /api/v2/organizations`` and ``/api/v2/activities``: the not deleted items, cursor
        paged, ``sort_by`` id/update_time/add_time, ``updated_since`` (inclusive) and
        ``updated_until`` (exclusive), ``ids`` and the id filters ``by``."""
        sort_by = self._choice(request, "sort_by", ("id", "update_time", "add_time"), "id")
        direction = self._choice(request, "sort_direction", ("asc", "desc"), "asc")
        ids_text = self._list(request, "ids")
        if len(ids_text) > 100:
            raise _fail(400, "Parameter 'ids' accepts at most 100 ids")
        try:
            ids = frozenset(int(i) for i in ids_text)
        except ValueError as exc:
            raise _fail(400, "Parameter 'ids' must be integers") from exc
        wanted = {key: self._int(request, key) for key in by}
        since = self._time(request, "updated_since")
        until = self._time(request, "updated_until")

        def keep(item: Any) -> bool:
            return (
                not item.is_deleted
                and (not ids or item.id in ids)
                and all(value is None or getattr(item, key) == value for key, value in wanted.items())
                and (since is None or item.update_time >= since)
                and (until is None or item.update_time < until)
                and (extra is None or extra(item))
            )

        def build() -> list[tuple[Any, ...]]:
            return [(getattr(i, sort_by), i.id, i) for i in items.values() if keep(i)]

        key = (name, sort_by, direction, ids, tuple(wanted.items()), since, until, *extra_key)
        rows, next_cursor = self._cursor_page(request, key, build, sort_by, direction == "desc")
        with self._data_lock:
            data = [item.render() for item in rows]
        return {"success": True, "data": data, "additional_data": {"next_cursor": next_cursor}}

    def _pipelines(self, request: Request) -> dict[str, Any]:
        sort_by = self._choice(request, "sort_by", ("id", "update_time", "add_time"), "id")
        direction = self._choice(request, "sort_direction", ("asc", "desc"), "asc")

        def build() -> list[tuple[Any, ...]]:
            return [(getattr(p, sort_by), p.id, p) for p in self.pipelines.values()]

        rows, next_cursor = self._cursor_page(
            request, ("pipelines", sort_by, direction), build, sort_by, direction == "desc"
        )
        return {
            "success": True,
            "data": [p.render() for p in rows],
            "additional_data": {"next_cursor": next_cursor},
        }

    def _stages(self, request: Request) -> dict[str, Any]:
        sort_by = self._choice(request, "sort_by", ("id", "update_time", "add_time", "order_nr"), "id")
        direction = self._choice(request, "sort_direction", ("asc", "desc"), "asc")
        pipeline_id = self._int(request, "pipeline_id")

        def build() -> list[tuple[Any, ...]]:
            return [
                (getattr(s, sort_by), s.id, s)
                for s in self.stages.values()
                if pipeline_id is None or s.pipeline_id == pipeline_id
            ]

        rows, next_cursor = self._cursor_page(
            request, ("stages", sort_by, direction, pipeline_id), build, sort_by, direction == "desc"
        )
        return {
            "success": True,
            "data": [s.render() for s in rows],
            "additional_data": {"next_cursor": next_cursor},
        }

    def _deal_fields(self, request: Request) -> dict[str, Any]:
        fields = [(code, name, kind, False) for code, name, kind in _STANDARD_FIELDS] + [
            (f.key, f.name, f.field_type, True) for f in self.deal_fields
        ]

        def build() -> list[tuple[Any, ...]]:
            return [(i, i, item) for i, item in enumerate(fields, start=1)]

        rows, next_cursor = self._cursor_page(request, ("dealFields",), build, "position", False)
        data = [
            {
                "field_name": name,
                "field_code": code,
                "description": "",
                "field_type": kind,
                "is_custom_field": custom,
                "is_optional_response_field": False,
                "options": None,
                "subfields": None,
            }
            for code, name, kind, custom in rows
        ]
        return {"success": True, "data": data, "additional_data": {"next_cursor": next_cursor}}

    def _users(self, request: Request) -> dict[str, Any]:  # noqa: ARG002 - every route takes the request
        with self._data_lock:
            data = [self.users[i].render(self.you) for i in sorted(self.users)]
        return {"success": True, "data": data}

    def _leads(self, request: Request, *, archived: bool) -> dict[str, Any]:
        limit = self._limit(request, strict=False)
        start = self._int(request, "start") or 0
        if start < 0:
            raise _fail(400, "Parameter 'start' must be a non-negative integer")
        owner_id = self._int(request, "owner_id")
        since = self._time(request, "updated_since")
        sort = (request.arg("sort") or "add_time ASC").split(",")[0].split()
        sort_field, sort_dir = sort[0], (sort[1].upper() if len(sort) > 1 else "ASC")
        if sort_field not in _LEAD_SORTS or sort_dir not in ("ASC", "DESC"):
            raise _fail(400, "Parameter 'sort' is invalid")
        key = ("leads", archived, owner_id, since, sort_field, sort_dir)
        with self._data_lock:
            cached = self._cache.get(key)
            if cached is None or cached[0] != self._version:
                rows = [
                    (_lead_key(x, sort_field), x.seq, x)
                    for x in self.leads.values()
                    if not x.is_deleted
                    and x.is_archived == archived
                    and (owner_id is None or x.owner_id == owner_id)
                    and (since is None or x.update_time >= since)
                ]
                rows.sort(key=lambda row: (row[0], row[1]), reverse=sort_dir == "DESC")
                self._remember(key, rows)
            else:
                rows = cached[1]
            page = [row[2].render() for row in rows[start : start + limit]]
        more = start + limit < len(rows)
        pagination: dict[str, Any] = {"start": start, "limit": limit, "more_items_in_collection": more}
        if more:
            pagination["next_start"] = start + limit
        return {"success": True, "data": page, "additional_data": {"pagination": pagination}}


def _lead_key(lead: Lead, name: str) -> Any:
    value = getattr(lead, name, None)
    if name == "creator_id":
        value = lead.owner_id
    elif name == "was_seen":
        value = True
    # None sorts first, like SQL's NULLS FIRST in ascending order.
    return (value is not None, value if value is not None else 0)


def _bisect(rows: list[tuple[Any, ...]], mark: tuple[int, int], descending: bool) -> int:
    """The index of the first row at or after ``mark`` in the list's order."""
    lo, hi = 0, len(rows)
    while lo < hi:
        mid = (lo + hi) // 2
        key = (rows[mid][0], rows[mid][1])
        before = key > mark if descending else key < mark
        if before:
            lo = mid + 1
        else:
            hi = mid
    return lo
