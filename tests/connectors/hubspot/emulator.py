"""A HubSpot CRM API emulator: a real HTTP server on 127.0.0.1 that hubspot-api-client talks to.

Reached with ``HubSpot(access_token=..., host=emulator.url)``. It speaks the wire format the
client deserialises (recorded in ``../shared/data/fixtures/hubspot_*.json``):

- the object types deals, contacts, companies and the engagements (calls, meetings, emails,
  notes, tasks: ``hs_timestamp``, ``hs_createdate`` in place of ``createdate``), each searched on
  its own modified date (``lastmodifieddate`` for contacts, ``hs_lastmodifieddate`` otherwise);
- objects ``{"id", "properties" (strings or null), "createdAt", "updatedAt", "archived"}``; list
  responses ``{"results", "paging": {"next": {"after", "link"}}}``; search responses
  ``{"total", "results", "paging"}``;
- ``POST /crm/v3/objects/{type}/search`` with ``filterGroups`` (or top-level ``filters``),
  ``sorts`` (objects or strings, one at most), ``after`` as a string or an integer, ``limit`` up
  to 200, and the 10,000-result cap (HTTP 400 past it); ties in the sort come in no particular
  order (like HubSpot's), so a client cannot rely on ids being sorted within a millisecond;
- ``GET /crm/v3/objects/{type}`` (``properties`` repeated or comma-joined, ``archived`` as
  True/true/False/false, ``propertiesWithHistory``), ``GET .../{id}``, ``POST .../batch/read``;
- ``GET /crm/v3/pipelines/deals`` (string metadata, ``writePermissions``), ``GET /crm/v3/owners``
  (``type`` PERSON, teams), ``POST /crm/v4/associations/{from}/{to}/batch/read`` (207 with
  errors for records without associations; each link with HubSpot's association type id, and
  the primary company's type beside it: :data:`ASSOCIATION_TYPES`), ``POST /oauth/v1/token``;
- errors ``{"status": "error", "message", "category", "correlationId"}``; 429 bodies with
  ``errorType: RATE_LIMIT`` and ``policyName``, with or without ``Retry-After``; the
  ``X-HubSpot-RateLimit-*`` headers on every non-search response;
- scopes: a token (private app or OAuth) reaches only the endpoints its scopes allow; any other
  call is answered 403 ``MISSING_SCOPES`` with ``errors[].context.requiredGranularScopes`` (any
  one of the listed scopes would do), before the call counts against the rate limits. Companies
  take ``crm.objects.companies.read``; calls, meetings, notes and tasks the contacts scope;
  emails ``sales-email-read``.

Fault injection (all from the test's thread, while the server runs): :meth:`HubSpotEmulator.fail`
(429 bursts, 5xx, dropped connections), :class:`Limits` (rate limits actually enforced, daily
quota), ``portal.index_lag`` (search sees a write only after a delay), ``search_cap``, writes
that share one modified timestamp, archived records, and associations that change without
touching any modified date (:meth:`Portal.associate`). Time is the ``clock`` the emulator is
given, so a test can move it (see :class:`SimClock`).
"""

from __future__ import annotations

import bisect
import itertools
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import orjson

from crm_perf_sync.kit.timeutil import utc_now

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

#: The read scopes of the CRM objects the emulator serves; a token gets all of them unless told.
READ_SCOPES: frozenset[str] = frozenset(
    {
        "crm.objects.owners.read",
        "crm.objects.deals.read",
        "crm.objects.contacts.read",
        "crm.objects.companies.read",
        "sales-email-read",
    }
)
#: HubSpot's scope for reading each object type: the engagements (calls, meetings, notes, tasks)
#: are read with the contacts scope, logged emails only with ``sales-email-read``.
_OBJECT_SCOPES: Mapping[str, str] = {
    "deals": "crm.objects.deals.read",
    "contacts": "crm.objects.contacts.read",
    "companies": "crm.objects.companies.read",
    "calls": "crm.objects.contacts.read",
    "meetings": "crm.objects.contacts.read",
    "notes": "crm.objects.contacts.read",
    "tasks": "crm.objects.contacts.read",
    "emails": "sales-email-read",
}
#: The engagement (activity) objects: one id space for all five, like HubSpot's engagements.
ENGAGEMENTS: tuple[str, ...] = ("calls", "emails", "meetings", "notes", "tasks")

#: HubSpot-defined v4 association type ids (unlabeled, primary) by direction; the primary one is
#: sent besides the unlabeled one, as HubSpot does ("Deal with Primary Company" is 5).
ASSOCIATION_TYPES: Mapping[tuple[str, str], tuple[int, int | None]] = {
    ("deals", "contacts"): (3, None),
    ("contacts", "deals"): (4, None),
    ("contacts", "companies"): (279, 1),
    ("companies", "contacts"): (280, 2),
    ("deals", "companies"): (341, 5),
    ("companies", "deals"): (342, 6),
    ("calls", "companies"): (182, None),
    ("emails", "companies"): (186, None),
    ("meetings", "companies"): (188, None),
    ("notes", "companies"): (190, None),
    ("tasks", "companies"): (192, None),
    ("calls", "contacts"): (194, None),
    ("emails", "contacts"): (198, None),
    ("meetings", "contacts"): (200, None),
    ("notes", "contacts"): (202, None),
    ("tasks", "contacts"): (204, None),
    ("calls", "deals"): (206, None),
    ("emails", "deals"): (210, None),
    ("meetings", "deals"): (212, None),
    ("notes", "deals"): (214, None),
    ("tasks", "deals"): (216, None),
}


def ms(value: datetime) -> int:
    return (value - _EPOCH) // _MS


def iso(value: int) -> str:
    """HubSpot's rendering of an instant: ISO 8601 with milliseconds and a Z."""
    return (_EPOCH + value * _MS).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_instant(value: object) -> int:
    """A filter value or a property as epoch ms: HubSpot accepts both ms and ISO 8601."""
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return ms(moment)


class SimClock:
    """A clock that only moves when told to (or when something sleeps on it).

    Hand ``now`` to the emulator and to the connector's context, and ``sleep`` to the connector
    and the sync engine: rate limits, backoff, index lag and token expiry then take no real time.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or utc_now()
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


# -- the data --------------------------------------------------------------------------------------

#: Properties a read returns whatever was asked (HubSpot always adds them).
_ALWAYS = {
    "deals": ("createdate", "hs_lastmodifieddate", "hs_object_id"),
    "contacts": ("createdate", "lastmodifieddate", "hs_object_id"),
    "companies": ("createdate", "hs_lastmodifieddate", "hs_object_id"),
    **dict.fromkeys(ENGAGEMENTS, ("hs_createdate", "hs_lastmodifieddate", "hs_object_id")),
}
#: Properties returned when a read names none.
_DEFAULT_PROPERTIES = {
    "deals": (
        "amount",
        "closedate",
        "createdate",
        "dealname",
        "dealstage",
        "hs_lastmodifieddate",
        "pipeline",
    ),
    "contacts": ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"),
    "companies": ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
    **dict.fromkeys(ENGAGEMENTS, ("hs_createdate", "hs_lastmodifieddate", "hs_object_id")),
}
_MODIFIED = {
    "deals": "hs_lastmodifieddate",
    "contacts": "lastmodifieddate",
    "companies": "hs_lastmodifieddate",
    **dict.fromkeys(ENGAGEMENTS, "hs_lastmodifieddate"),
}
#: The property holding a record's creation (engagements have their own name for it).
_CREATED = {"deals": "createdate", "contacts": "createdate", "companies": "createdate"} | dict.fromkeys(
    ENGAGEMENTS, "hs_createdate"
)
#: Properties whose history HubSpot keeps and ``propertiesWithHistory`` returns.
_TRACKED: Mapping[str, tuple[str, ...]] = {
    "deals": ("dealstage", "amount", "closedate", "pipeline"),
    "contacts": ("lifecyclestage",),
    "companies": ("lifecyclestage",),
    **dict.fromkeys(ENGAGEMENTS, ()),
}
_DATE_PROPERTIES = frozenset(
    {
        "createdate",
        "closedate",
        "hs_lastmodifieddate",
        "lastmodifieddate",
        "hs_closed_won_date",
        "hs_createdate",
        "hs_timestamp",
        "hs_meeting_start_time",
        "hs_meeting_end_time",
    }
)


def _is_date(prop: str) -> bool:
    return prop in _DATE_PROPERTIES or prop.startswith(("hs_v2_date_entered_", "hs_date_entered_"))


class Obj:
    """One CRM record as the emulator stores it."""

    __slots__ = ("archived", "archived_at", "created", "history", "id", "props", "updated", "visible_at")

    def __init__(self, id: int, props: dict[str, str | None], created: int, updated: int) -> None:
        self.id = id
        self.props = props
        self.created = created
        self.updated = updated
        self.archived = False
        self.archived_at: int | None = None
        self.visible_at = 0
        self.history: dict[str, list[tuple[str | None, int, str]]] = {}

    def tie_key(self) -> int:
        # HubSpot returns records sharing a sort value in no documented order; scramble the ids so
        # that a client relying on id order within a millisecond is caught.
        return (self.id * 2654435761) & 0xFFFFFFFF


class Table:
    """The records of one object type, with the indexes search needs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.modified = _MODIFIED[name]
        self.rows: dict[int, Obj] = {}
        self._by_modified: list[tuple[int, int, int]] | None = None
        self._by_id: list[int] | None = None
        self._archived: list[int] | None = None
        self.ids = itertools.count(1000)
        #: The latest instant at which a write becomes searchable (see ``Portal.index_lag``).
        self.visible_from = 0

    def _dirty(self) -> None:
        self._by_modified = None
        self._by_id = None
        self._archived = None

    def by_modified(self) -> list[tuple[int, int, int]]:
        if self._by_modified is None:
            self._by_modified = sorted(
                (o.updated, o.tie_key(), o.id) for o in self.rows.values() if not o.archived
            )
        return self._by_modified

    def by_id(self) -> list[int]:
        if self._by_id is None:
            self._by_id = sorted(self.rows)
        return self._by_id

    def archived_ids(self) -> list[int]:
        if self._archived is None:
            self._archived = sorted(i for i, o in self.rows.items() if o.archived)
        return self._archived


class Portal:
    """A HubSpot account: records, owners, pipelines, associations, credentials, behaviour.

    Writes go through :meth:`create`, :meth:`update`, :meth:`archive` and :meth:`associate` and
    behave like HubSpot's: a write sets the modified date (to ``at`` or the clock), records the
    history of tracked properties, and becomes searchable ``index_lag`` later; an association
    changes no modified date.
    """

    def __init__(self, clock: Callable[[], datetime] = utc_now) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.tables = {name: Table(name) for name in _MODIFIED}
        self.owners: list[dict[str, Any]] = []
        self.pipelines: dict[str, list[dict[str, Any]]] = {"deals": []}
        self._links: dict[tuple[str, str], dict[int, set[int]]] = {}
        #: Associations labelled primary ("Deal with Primary Company"), as (type, id) pairs.
        self._primary: set[frozenset[tuple[str, int]]] = set()
        # A private app token of this portal only: two portals never share an account's buckets.
        self.token = f"pat-na1-{uuid.uuid4()}"
        self.tokens: set[str] = {self.token}
        self.oauth_clients: dict[str, tuple[str, set[str]]] = {}
        self.oauth_tokens: dict[str, int] = {}  # access token -> expiry (ms)
        #: The scopes of a token (private app) or of every token issued to an OAuth client id;
        #: absent: every scope in :data:`READ_SCOPES`.
        self.scopes: dict[str, frozenset[str]] = {}
        self.oauth_lifetime = timedelta(minutes=30)
        self.index_lag = timedelta(0)
        self.search_cap = 10_000
        self.portal_id = 147893286

    def now(self) -> int:
        return ms(self.clock())

    def private_app(self, scopes: Iterable[str]) -> str:
        """A new private app's token, granted ``scopes`` only."""
        token = f"pat-na1-{uuid.uuid4()}"
        self.tokens.add(token)
        self.scopes[token] = frozenset(scopes)
        return token

    # -- writes -----------------------------------------------------------------------------------

    def create(
        self,
        object_type: str,
        props: Mapping[str, str | None],
        *,
        id: int | None = None,
        created: datetime | int | None = None,
        at: datetime | int | None = None,
        history: Mapping[str, Sequence[tuple[str | None, int]]] | None = None,
    ) -> Obj:
        table = self.tables[object_type]
        with self.lock:
            now = self.now()
            created_ms = _as_ms(created, now)
            updated_ms = _as_ms(at, created_ms)
            key = id if id is not None else next(table.ids)
            values = dict(props)
            values["hs_object_id"] = str(key)
            created_prop = _CREATED[object_type]
            values[created_prop] = values.get(created_prop) or iso(created_ms)
            values[table.modified] = iso(updated_ms)
            obj = Obj(key, values, created_ms, updated_ms)
            obj.visible_at = now + self.index_lag // _MS
            table.visible_from = max(table.visible_from, obj.visible_at)
            tracked = _TRACKED[object_type]
            if history is not None:
                obj.history = {p: [(v, t, "CRM_UI") for v, t in entries] for p, entries in history.items()}
            else:
                obj.history = {p: [(values[p], created_ms, "CRM_UI")] for p in tracked if values.get(p)}
            table.rows[key] = obj
            table._dirty()
            return obj

    def update(
        self, object_type: str, id: int, props: Mapping[str, str | None], *, at: datetime | int | None = None
    ) -> Obj:
        table = self.tables[object_type]
        with self.lock:
            obj = table.rows[id]
            now = self.now()
            updated = _as_ms(at, now)
            for prop, value in props.items():
                if prop in _TRACKED[object_type] and obj.props.get(prop) != value:
                    obj.history.setdefault(prop, []).append((value, updated, "CRM_UI"))
                obj.props[prop] = value
            obj.updated = updated
            obj.props[table.modified] = iso(updated)
            obj.visible_at = now + self.index_lag // _MS
            table.visible_from = max(table.visible_from, obj.visible_at)
            table._dirty()
            return obj

    def archive(self, object_type: str, id: int, *, at: datetime | int | None = None) -> None:
        table = self.tables[object_type]
        with self.lock:
            obj = table.rows[id]
            obj.archived = True
            obj.archived_at = _as_ms(at, self.now())
            table._dirty()

    def associate(
        self,
        from_type: str,
        from_id: int,
        to_type: str,
        to_id: int,
        *,
        remove: bool = False,
        primary: bool = False,
    ) -> None:
        """Link two records both ways. Like HubSpot, touches neither record's modified date.

        ``primary`` labels the link primary as well (a deal's or a contact's primary company);
        making a link primary takes the label from the record's other links to that type.
        """
        with self.lock:
            pair = frozenset({(from_type, from_id), (to_type, to_id)})
            if primary and not remove:
                for other in self._links.get((from_type, to_type), {}).get(from_id, set()):
                    self._primary.discard(frozenset({(from_type, from_id), (to_type, other)}))
                self._primary.add(pair)
            elif remove:
                self._primary.discard(pair)
            for (a, ai), (b, bi) in (
                ((from_type, from_id), (to_type, to_id)),
                ((to_type, to_id), (from_type, from_id)),
            ):
                links = self._links.setdefault((a, b), {}).setdefault(ai, set())
                if remove:
                    links.discard(bi)
                else:
                    links.add(bi)

    def associated(self, from_type: str, from_id: int, to_type: str) -> list[int]:
        with self.lock:
            return sorted(self._links.get((from_type, to_type), {}).get(from_id, ()))

    def is_primary(self, from_type: str, from_id: int, to_type: str, to_id: int) -> bool:
        with self.lock:
            return frozenset({(from_type, from_id), (to_type, to_id)}) in self._primary

    # -- reads ------------------------------------------------------------------------------------

    def search(
        self,
        object_type: str,
        groups: list[list[dict[str, Any]]],
        sort: tuple[str, bool],
        offset: int,
        limit: int,
    ) -> tuple[int, list[Obj]]:
        """Matching live, indexed records, sorted: (total, the page at ``offset``)."""
        table = self.tables[object_type]
        with self.lock:
            now = self.now()
            prop, ascending = sort
            fast = self._range_search(table, groups, prop, ascending, offset, limit, now)
            if fast is not None:
                return fast
            candidates: Iterable[Obj]
            if prop == table.modified:
                candidates = (table.rows[i] for _, _, i in table.by_modified())
            elif prop == "hs_object_id":
                candidates = (table.rows[i] for i in table.by_id())
            else:
                candidates = sorted(table.rows.values(), key=lambda o: (_sort_value(o, prop), o.tie_key()))
            matches = [
                o
                for o in candidates
                if not o.archived and o.visible_at <= now and any(_matches(o, g) for g in groups)
            ]
            if not ascending:
                matches.reverse()
            return len(matches), matches[offset : offset + limit]

    def _range_search(
        self,
        table: Table,
        groups: list[list[dict[str, Any]]],
        prop: str,
        ascending: bool,
        offset: int,
        limit: int,
        now: int,
    ) -> tuple[int, list[Obj]] | None:
        """The common incremental query (one group, a range on the sorted modified date) by bisection.

        Only when every record is indexed: a big portal then answers in O(log n + page).
        """
        if len(groups) != 1 or prop != table.modified or not ascending or table.visible_from > now:
            return None
        low, high = -(2**62), 2**62
        for f in groups[0]:
            op = f.get("operator")
            if f.get("propertyName") != prop or op not in ("GTE", "GT", "LTE", "LT", "EQ"):
                return None
            value = parse_instant(f.get("value"))
            if op in ("GTE", "EQ"):
                low = max(low, value)
            if op == "GT":
                low = max(low, value + 1)
            if op in ("LTE", "EQ"):
                high = min(high, value)
            if op == "LT":
                high = min(high, value - 1)
        index = table.by_modified()
        start = bisect.bisect_left(index, (low,))
        end = bisect.bisect_left(index, (high + 1,))
        rows = [table.rows[i] for _, _, i in index[start + offset : min(end, start + offset + limit)]]
        return max(0, end - start), rows

    def page(
        self, object_type: str, *, after: int, limit: int, archived: bool
    ) -> tuple[list[Obj], int | None]:
        """A list page in id order from id ``after``: (records, the next page's first id)."""
        table = self.tables[object_type]
        with self.lock:
            # The recycle bin is small and the live records many: list each from its own ids.
            ids = table.archived_ids() if archived else table.by_id()
            out: list[Obj] = []
            position = bisect.bisect_left(ids, after)
            while position < len(ids):
                obj = table.rows[ids[position]]
                position += 1
                if obj.archived != archived:
                    continue
                if len(out) == limit:
                    return out, obj.id
                out.append(obj)
            return out, None

    def get(self, object_type: str, id: int, *, archived: bool = False) -> Obj | None:
        with self.lock:
            obj = self.tables[object_type].rows.get(id)
            return obj if obj is not None and obj.archived == archived else None


def _as_ms(value: datetime | int | None, default: int) -> int:
    if value is None:
        return default
    return value if isinstance(value, int) else ms(value)


def _sort_value(obj: Obj, prop: str) -> tuple[int, Any]:
    value = obj.props.get(prop)
    if value is None:
        return (1, "")
    if prop == "hs_object_id":
        return (0, obj.id)
    if _is_date(prop):
        try:
            return (0, parse_instant(value))
        except ValueError:
            return (0, 0)
    return (0, value)


def _compare_value(prop: str, value: object) -> Any:
    if prop == "hs_object_id":
        return int(str(value))
    if _is_date(prop):
        return parse_instant(value)
    return str(value)


def _matches(obj: Obj, group: list[dict[str, Any]]) -> bool:
    for f in group:
        prop = f["propertyName"]
        op = f["operator"]
        raw = obj.props.get(prop)
        if op == "HAS_PROPERTY":
            ok = raw not in (None, "")
        elif op == "NOT_HAS_PROPERTY":
            ok = raw in (None, "")
        elif raw in (None, ""):
            ok = op in ("NEQ", "NOT_IN")
        else:
            have = _compare_value(prop, raw)
            if op in ("IN", "NOT_IN"):
                values = {_compare_value(prop, v) for v in f.get("values") or []}
                ok = (have in values) == (op == "IN")
            elif op == "BETWEEN":
                ok = _compare_value(prop, f["value"]) <= have <= _compare_value(prop, f["highValue"])
            elif op == "CONTAINS_TOKEN":
                ok = str(f["value"]).lower() in str(raw).lower()
            else:
                want = _compare_value(prop, f["value"])
                ok = {
                    "EQ": have == want,
                    "NEQ": have != want,
                    "LT": have < want,
                    "LTE": have <= want,
                    "GT": have > want,
                    "GTE": have >= want,
                }[op]
        if not ok:
            return False
    return True


# -- faults and limits -------------------------------------------------------------------------------


@dataclass
class Fault:
    """Answer the next ``times`` requests matching ``method`` and ``path`` (a prefix) with a failure."""

    method: str | None
    path: str
    status: int
    times: int = 1
    retry_after: str | None = None
    policy: str = "TEN_SECONDLY_ROLLING"
    drop: bool = False  # close the connection without answering (a network error)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and path.startswith(self.path)


@dataclass
class Limits:
    """Rate limits the emulator enforces (per portal), on its clock. ``None``: not enforced."""

    search_per_second: int | None = None
    general_per_interval: int | None = None
    interval: timedelta = timedelta(seconds=10)
    daily: int | None = None
    retry_after: bool = False  # send Retry-After with the 429s (HubSpot usually does not)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    status: int


@dataclass
class _Counters:
    search: deque[int] = field(default_factory=deque)
    general: deque[int] = field(default_factory=deque)
    daily: int = 0


class _Reply(Exception):
    """An error response, raised from anywhere in a handler."""

    def __init__(self, status: int, message: str, category: str = "VALIDATION_ERROR", **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {
            "status": "error",
            "message": message,
            "correlationId": str(uuid.uuid4()),
            "category": category,
            **extra,
        }
        self.headers: dict[str, str] = {}


# -- the server --------------------------------------------------------------------------------------


class HubSpotEmulator:
    """The HTTP server over a :class:`Portal`. Use as a context manager, or :meth:`start`/:meth:`stop`."""

    def __init__(self, portal: Portal | None = None, *, record: bool = True) -> None:
        self.portal = portal or Portal()
        self.limits = Limits()
        self.faults: list[Fault] = []
        self.hooks: list[tuple[str, str, Callable[[Recorded], None]]] = []
        self.record = record
        self.requests: list[Recorded] = []
        self.served_429 = 0
        self._counters = _Counters()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, port: int = 0) -> HubSpotEmulator:
        emulator = self

        class Handler(_Handler):
            owner = emulator

        server = _Server(("127.0.0.1", port), Handler)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="hubspot-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HubSpotEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the emulator is not running"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- fault injection --------------------------------------------------------------------------

    def fail(
        self,
        path: str,
        status: int,
        *,
        method: str | None = None,
        times: int = 1,
        retry_after: float | None = None,
        policy: str = "TEN_SECONDLY_ROLLING",
        drop: bool = False,
    ) -> Fault:
        """Answer the next ``times`` matching requests with ``status`` (or drop the connection)."""
        fault = Fault(
            method,
            path,
            status,
            times,
            None if retry_after is None else f"{retry_after:g}",
            policy,
            drop,
        )
        with self._lock:
            self.faults.append(fault)
        return fault

    def on(self, method: str, path: str, hook: Callable[[Recorded], None]) -> None:
        """Call ``hook`` once each matching request is handled, before its answer is sent.

        For changes between pages: the change is in place before the client sees the page.
        """
        with self._lock:
            self.hooks.append((method, path, hook))

    def count(self, method: str, path: str, status: int | None = None) -> int:
        """How many recorded requests match (``path`` a prefix)."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if r.method == method and r.path.startswith(path) and (status is None or r.status == status)
            )

    # -- request plumbing (called by the handler) -------------------------------------------------

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.matches(method, path):
                    fault.times -= 1
                    return fault
        return None

    def _rate_limit(self, kind: str) -> tuple[dict[str, str], _Reply | None]:
        """Count the request; the rate-limit headers, and a 429 when a limit is exceeded."""
        limits = self.limits
        now = self.portal.now()
        with self._lock:
            c = self._counters
            window = limits.interval // _MS
            while c.general and c.general[0] <= now - window:
                c.general.popleft()
            while c.search and c.search[0] <= now - 1000:
                c.search.popleft()
            daily_max = limits.daily if limits.daily is not None else 500_000
            # Unenforced limits are announced as generous ones, so that clients pacing by the
            # headers do not slow down tests and benchmarks that are not about pacing.
            general_max = (
                limits.general_per_interval if limits.general_per_interval is not None else 1_000_000
            )
            headers = {
                "X-HubSpot-RateLimit-Daily": str(daily_max),
                "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, daily_max - c.daily - 1)),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(window),
                "X-HubSpot-RateLimit-Max": str(general_max),
                "X-HubSpot-RateLimit-Remaining": str(max(0, general_max - len(c.general) - 1)),
                "X-HubSpot-RateLimit-Secondly": str(general_max // 10),
                "X-HubSpot-RateLimit-Secondly-Remaining": str(max(0, general_max // 10 - 1)),
            }
            if limits.daily is not None and c.daily >= limits.daily:
                return headers, self._too_many("DAILY", "You have reached your daily limit.")
            if kind == "search":
                if limits.search_per_second is not None and len(c.search) >= limits.search_per_second:
                    return {}, self._too_many("SECONDLY", "You have reached your secondly limit.")
                c.search.append(now)
                c.daily += 1
                # HubSpot's search responses carry no rate-limit headers.
                return {}, None
            if limits.general_per_interval is not None and len(c.general) >= limits.general_per_interval:
                return headers, self._too_many(
                    "TEN_SECONDLY_ROLLING", "You have reached your ten_secondly_rolling limit."
                )
            c.general.append(now)
            c.daily += 1
            return headers, None

    def _too_many(self, policy: str, message: str) -> _Reply:
        self.served_429 += 1
        reply = _Reply(429, message, "RATE_LIMIT", errorType="RATE_LIMIT", policyName=policy)
        del reply.body["category"]
        if self.limits.retry_after:
            reply.headers["Retry-After"] = "1"
        return reply

    def _recorded(self, item: Recorded) -> None:
        if self.record:
            with self._lock:
                self.requests.append(item)
        for method, path, hook in list(self.hooks):
            if item.method == method and item.path.startswith(path):
                hook(item)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    owner: ClassVar[HubSpotEmulator]
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections end eventually

    def setup(self) -> None:
        super().setup()
        # Answers are written in one piece, but small requests must not wait for delayed ACKs.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: ARG002 - the base class's signature
        return None  # tests read the recorded requests, not stderr

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    # -- dispatch ---------------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        emulator = self.owner
        split = urlsplit(self.path)
        path = split.path
        query = parse_qs(split.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type") or ""
        body: Any = None
        status = 200
        headers: dict[str, str] = {}
        try:
            if raw and "json" in content_type:
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise _Reply(400, "Invalid input JSON on line 1") from None
            elif raw:
                body = {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
            fault = emulator._take_fault(method, path)
            if fault is not None:
                if fault.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    emulator._recorded(Recorded(method, path, query, body, 0))
                    return
                if fault.status == 429:
                    emulator.served_429 += 1
                    reply = _Reply(
                        429,
                        f"You have reached your {fault.policy.lower()} limit.",
                        "RATE_LIMIT",
                        errorType="RATE_LIMIT",
                        policyName=fault.policy,
                    )
                    del reply.body["category"]
                else:
                    reply = _Reply(fault.status, "internal error", "INTERNAL_ERROR")
                if fault.retry_after is not None:
                    reply.headers["Retry-After"] = fault.retry_after
                raise reply
            if path == "/oauth/v1/token":
                payload = self._token(body or {})
            else:
                token = self._authorize()
                self._require_scopes(token, path)
                kind = "search" if path.endswith("/search") else "general"
                headers, limited = emulator._rate_limit(kind)
                if limited is not None:
                    limited.headers.update(headers)
                    raise limited
                status, payload = self._route(method, path, query, body)
        except _Reply as reply:
            status, payload = reply.status, orjson.dumps(reply.body)
            headers = {**headers, **reply.headers}
        # Recorded (and hooks run) before the answer leaves: a hook's change is in place before
        # the client can send its next request.
        emulator._recorded(Recorded(method, path, query, body, status))
        self._send(status, payload, headers)

    def _send(self, status: int, payload: bytes, headers: Mapping[str, str]) -> None:
        lines = [
            f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
            "Content-Type: application/json;charset=utf-8",
            f"Content-Length: {len(payload)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)

    def _authorize(self) -> str:
        portal = self.owner.portal
        header = self.headers.get("Authorization") or ""
        if not header.startswith("Bearer "):
            raise _Reply(
                401,
                "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
                "INVALID_AUTHENTICATION",
            )
        token = header[len("Bearer ") :]
        if token in portal.tokens:
            return token
        expiry = portal.oauth_tokens.get(token)
        if expiry is None:
            raise _Reply(
                401,
                "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
                "INVALID_AUTHENTICATION",
            )
        if portal.now() >= expiry:
            raise _Reply(401, "The OAuth token used to make this call expired.", "EXPIRED_AUTHENTICATION")
        return token

    def _require_scopes(self, token: str, path: str) -> None:
        """403 MISSING_SCOPES, as HubSpot answers, when ``token`` may not call ``path``."""
        granted = self.owner.portal.scopes.get(token, READ_SCOPES)
        for needed in required_scopes(path):
            if needed not in granted:
                raise _Reply(
                    403,
                    "This app hasn't been granted all required scopes to make this call. Read more "
                    "about required scopes here: https://developers.hubspot.com/scopes.",
                    "MISSING_SCOPES",
                    errors=[
                        {
                            "message": "One or more of the following scopes are required.",
                            "context": {"requiredGranularScopes": [needed]},
                        }
                    ],
                    links={"scopes": "https://developers.hubspot.com/scopes"},
                )

    def _token(self, form: Mapping[str, str]) -> bytes:
        portal = self.owner.portal
        if form.get("grant_type") != "refresh_token":
            raise _Reply(400, "unsupported grant_type", "BAD_GRANT_TYPE")
        client = portal.oauth_clients.get(form.get("client_id", ""))
        if client is None or client[0] != form.get("client_secret"):
            raise _Reply(400, "missing or invalid client id or secret", "BAD_CLIENT_ID")
        if form.get("refresh_token") not in client[1]:
            raise _Reply(400, "missing or unknown refresh token", "BAD_REFRESH_TOKEN")
        token = f"oauth-{uuid.uuid4().hex}"
        lifetime = portal.oauth_lifetime // timedelta(seconds=1)
        portal.oauth_tokens[token] = portal.now() + lifetime * 1000
        granted = portal.scopes.get(form["client_id"])
        if granted is not None:
            portal.scopes[token] = granted
        return orjson.dumps(
            {
                "token_type": "bearer",
                "refresh_token": form["refresh_token"],
                "access_token": token,
                "expires_in": lifetime,
            }
        )

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, bytes]:
        parts = [p for p in path.split("/") if p]
        if method == "GET" and parts[:3] == ["crm", "v3", "owners"]:
            return 200, self._owners(query)
        if method == "GET" and parts[:3] == ["crm", "v3", "pipelines"] and len(parts) == 4:
            results = self.owner.portal.pipelines.get(parts[3])
            if results is None:
                raise _Reply(400, f"Unable to infer object type from: {parts[3]}")
            return 200, orjson.dumps({"results": results})
        if parts[:3] == ["crm", "v3", "objects"] and len(parts) >= 4:
            object_type = parts[3]
            if object_type not in self.owner.portal.tables:
                raise _Reply(400, f"Unable to infer object type from: {object_type}")
            rest = parts[4:]
            if method == "GET" and not rest:
                return 200, self._list(object_type, query)
            if method == "POST" and rest == ["search"]:
                return 200, self._search(object_type, body or {})
            if method == "POST" and rest == ["batch", "read"]:
                return self._batch_read(object_type, query, body or {})
            if method == "GET" and len(rest) == 1:
                return 200, self._get(object_type, rest[0], query)
        if method == "POST" and parts[:3] == ["crm", "v4", "associations"] and parts[5:] == ["batch", "read"]:
            return self._associations(parts[3], parts[4], body or {})
        raise _Reply(404, f"No route for {method} {path}", "OBJECT_NOT_FOUND")

    # -- endpoints --------------------------------------------------------------------------------

    def _owners(self, query: dict[str, list[str]]) -> bytes:
        owners = self.owner.portal.owners
        archived = _flag(query, "archived")
        limit = _int(query, "limit", 100, maximum=500)
        start = _int(query, "after", 0)
        email = _one(query, "email")
        chosen = [
            o
            for o in owners
            if bool(o.get("archived")) == archived and (email is None or o["email"] == email)
        ]
        page = chosen[start : start + limit]
        out: dict[str, Any] = {"results": page}
        if start + limit < len(chosen):
            after = str(start + limit)
            out["paging"] = {"next": {"after": after, "link": f"{self._base()}/crm/v3/owners/?after={after}"}}
        return orjson.dumps(out)

    def _list(self, object_type: str, query: dict[str, list[str]]) -> bytes:
        portal = self.owner.portal
        history = _names(query, "propertiesWithHistory")
        limit = _int(query, "limit", 10, maximum=50 if history else 100)
        after = _int(query, "after", 0)
        archived = _flag(query, "archived")
        props = _names(query, "properties")
        associations = _names(query, "associations")
        page, following = portal.page(object_type, after=after, limit=limit, archived=archived)
        results = [
            self._object(object_type, o, props, history=history, associations=associations) for o in page
        ]
        out: dict[str, Any] = {"results": results}
        if following is not None:
            link = f"{self._base()}/crm/v3/objects/{object_type}?after={following}"
            out["paging"] = {"next": {"after": str(following), "link": link}}
        return orjson.dumps(out)

    def _get(self, object_type: str, key: str, query: dict[str, list[str]]) -> bytes:
        obj = self.owner.portal.get(object_type, _id(key), archived=_flag(query, "archived"))
        if obj is None:
            raise _Reply(404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND")
        return orjson.dumps(
            self._object(
                object_type, obj, _names(query, "properties"), history=_names(query, "propertiesWithHistory")
            )
        )

    def _search(self, object_type: str, body: Mapping[str, Any]) -> bytes:
        portal = self.owner.portal
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or limit < 1 or limit > 200:
            raise _Reply(400, f"limit must be between 1 and 200, got {limit!r}")
        after = body.get("after") or 0
        try:
            offset = int(after)
        except (TypeError, ValueError):
            raise _Reply(400, f"after must be an offset, got {after!r}") from None
        if offset + limit > portal.search_cap:
            raise _Reply(400, "There was a problem with the request.", "VALIDATION_ERROR")
        groups = body.get("filterGroups")
        if groups is None and body.get("filters") is not None:
            groups = [{"filters": body["filters"]}]
        groups = groups or [{"filters": []}]
        if len(groups) > 5:
            raise _Reply(400, "Too many filter groups (at most 5)")
        filters = [list(g.get("filters") or []) for g in groups]
        if any(len(f) > 10 for f in filters) or sum(len(f) for f in filters) > 25:
            raise _Reply(400, "Too many filters (at most 10 per group, 25 in all)")
        for group in filters:
            for f in group:
                if f.get("operator") not in _OPERATORS or not f.get("propertyName"):
                    raise _Reply(400, f"Invalid filter {f!r}")
        sorts = body.get("sorts") or []
        if len(sorts) > 1:
            raise _Reply(400, "Only one sort is supported")
        sort = ("hs_object_id", True)
        if sorts:
            first = sorts[0]
            if isinstance(first, str):
                sort = (first.lstrip("-"), not first.startswith("-"))
            else:
                sort = (first["propertyName"], first.get("direction", "ASCENDING") != "DESCENDING")
        total, page = portal.search(object_type, filters, sort, offset, limit)
        props = body.get("properties") or []
        results = [self._object(object_type, o, props) for o in page]
        out: dict[str, Any] = {"total": total, "results": results}
        if offset + limit < total:
            out["paging"] = {"next": {"after": str(offset + limit)}}
        return orjson.dumps(out)

    def _batch_read(
        self, object_type: str, query: dict[str, list[str]], body: Mapping[str, Any]
    ) -> tuple[int, bytes]:
        portal = self.owner.portal
        inputs = body.get("inputs") or []
        history = body.get("propertiesWithHistory") or []
        maximum = 50 if history else 100
        if len(inputs) > maximum:
            raise _Reply(400, f"Batch read is limited to {maximum} inputs")
        archived = _flag(query, "archived")
        results, missing = [], []
        now = portal.now()
        for item in inputs:
            obj = portal.get(object_type, _id(str(item.get("id"))), archived=archived)
            if obj is None:
                missing.append(str(item.get("id")))
            else:
                results.append(self._object(object_type, obj, body.get("properties") or [], history=history))
        out: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": iso(now),
            "completedAt": iso(now),
        }
        if missing:
            out["numErrors"] = len(missing)
            out["errors"] = [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": "Could not get some records",
                    "context": {"ids": missing},
                }
            ]
            return 207, orjson.dumps(out)
        return 200, orjson.dumps(out)

    def _associations(self, from_type: str, to_type: str, body: Mapping[str, Any]) -> tuple[int, bytes]:
        portal = self.owner.portal
        for kind in (from_type, to_type):
            if kind not in portal.tables:
                raise _Reply(400, f"Unable to infer object type from: {kind}")
        type_id, primary_id = ASSOCIATION_TYPES.get((from_type, to_type), (1, None))
        inputs = body.get("inputs") or []
        if len(inputs) > 1000:
            raise _Reply(400, "Batch read is limited to 1000 inputs")
        results, errors = [], []
        page_size = 500
        for item in inputs:
            key = str(item.get("id"))
            linked = portal.associated(from_type, _id(key), to_type)
            start = int(item.get("after") or 0)
            chosen = linked[start : start + page_size]
            if not chosen:
                errors.append(
                    {
                        "status": "error",
                        "category": "VALIDATION_ERROR",
                        "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                        "context": {"fromObjectId": [key]},
                        "message": f"No {to_type[:-1]} is associated with {from_type[:-1]} {key}.",
                    }
                )
                continue
            result: dict[str, Any] = {
                "from": {"id": key},
                "to": [
                    {
                        "toObjectId": target,
                        "associationTypes": [
                            {"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": None},
                            *(
                                [{"category": "HUBSPOT_DEFINED", "typeId": primary_id, "label": "Primary"}]
                                if primary_id is not None
                                and portal.is_primary(from_type, _id(key), to_type, target)
                                else []
                            ),
                        ],
                    }
                    for target in chosen
                ],
            }
            if start + page_size < len(linked):
                after = str(start + page_size)
                link = f"{self._base()}/crm/v4/objects/{from_type}/{key}/associations/{to_type}?after={after}"
                result["paging"] = {"next": {"after": after, "link": link}}
            results.append(result)
        now = iso(portal.now())
        out: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now}
        if errors:
            out["numErrors"] = len(errors)
            out["errors"] = errors
            return 207, orjson.dumps(out)
        return 200, orjson.dumps(out)

    # -- rendering ----------------------------------------------------------------------------------

    def _object(
        self,
        object_type: str,
        obj: Obj,
        props: Sequence[str],
        *,
        history: Sequence[str] = (),
        associations: Sequence[str] = (),
    ) -> dict[str, Any]:
        names = list(props) if props else list(_DEFAULT_PROPERTIES[object_type])
        values = obj.props
        shown = {name: values.get(name) for name in names}
        for name in _ALWAYS[object_type]:
            shown[name] = values.get(name)
        out: dict[str, Any] = {
            "id": str(obj.id),
            "properties": shown,
            "createdAt": iso(obj.created),
            "updatedAt": iso(obj.updated),
            "archived": obj.archived,
        }
        if obj.archived_at is not None:
            out["archivedAt"] = iso(obj.archived_at)
        if history:
            out["propertiesWithHistory"] = {
                name: [
                    {"value": value, "timestamp": iso(at), "sourceType": source, "sourceId": "userId:1"}
                    for value, at, source in reversed(obj.history.get(name, []))
                ]
                for name in history
            }
        if associations:
            portal = self.owner.portal
            out["associations"] = {
                other: {
                    "results": [
                        {"id": str(i), "type": f"{object_type[:-1]}_to_{other[:-1]}"}
                        for i in portal.associated(object_type, obj.id, other)
                    ]
                }
                for other in associations
                if portal.associated(object_type, obj.id, other)
            }
        return out

    def _base(self) -> str:
        return self.owner.url


_OPERATORS = frozenset(
    {
        "EQ",
        "NEQ",
        "LT",
        "LTE",
        "GT",
        "GTE",
        "BETWEEN",
        "IN",
        "NOT_IN",
        "HAS_PROPERTY",
        "NOT_HAS_PROPERTY",
        "CONTAINS_TOKEN",
    }
)


def required_scopes(path: str) -> list[str]:
    """The scopes a call of ``path`` needs, each one of them (HubSpot's requirement for a read)."""
    parts = [p for p in path.split("/") if p]
    if parts[:3] == ["crm", "v3", "owners"]:
        return ["crm.objects.owners.read"]
    if parts[:3] == ["crm", "v3", "pipelines"] and len(parts) >= 4 and parts[3] in _OBJECT_SCOPES:
        return [_OBJECT_SCOPES[parts[3]]]
    if parts[:3] == ["crm", "v3", "objects"] and len(parts) >= 4 and parts[3] in _OBJECT_SCOPES:
        return [_OBJECT_SCOPES[parts[3]]]
    if parts[:3] == ["crm", "v4", "associations"] and len(parts) >= 5:
        return [_OBJECT_SCOPES[kind] for kind in parts[3:5] if kind in _OBJECT_SCOPES]
    return []


def _one(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _names(query: Mapping[str, list[str]], name: str) -> list[str]:
    """A list parameter, repeated (``a=1&a=2``) or comma-joined (``a=1,2``)."""
    return [item for value in query.get(name, []) for item in value.split(",") if item]


def _flag(query: Mapping[str, list[str]], name: str) -> bool:
    """A boolean parameter: Python's urlencode sends True/False, other clients true/false."""
    value = _one(query, name)
    if value is None or value.lower() == "false":
        return False
    if value.lower() == "true":
        return True
    raise _Reply(400, f"{name} must be true or false, got {value!r}")


def _int(query: Mapping[str, list[str]], name: str, default: int, *, maximum: int | None = None) -> int:
    value = _one(query, name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise _Reply(400, f"{name} must be an integer, got {value!r}") from None
    return min(number, maximum) if maximum is not None else number


def _id(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _Reply(404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND") from None
