"""A 伙伴云 (Huoban) OpenAPI v1 emulator: a real HTTP server on 127.0.0.1 with Huoban's paths below it.

Put :attr:`HuobanEmulator.url` in place of ``https://api.huoban.com``. Documentation followed:

- https://openapi.huoban.com/api-17851170 (查询数据列表, ``POST /openapi/v1/item/list``): body
  ``table_id``, ``filter``, ``order {field_id, type: asc|desc}``, ``limit``, ``offset``,
  ``with_field_config``; answer ``{"code": 0, "message": "success", "data": {"total", "filtered",
  "has_more", "items", "meta"}, "trace_id"}``; an item is ``{"item_id", "title", "fields",
  "created_by", "created_on", "updated_by", "updated_on"}`` with ids as strings and users as
  ``{"user_id", "name", "avatar"}``;
- https://openapi.huoban.com/doc-661258 (数据筛选器): ``{"and"|"or": [{"field", "query": {op: value}}
  | nested and/or]}``; a ``field`` is a field id or a system field such as ``created_on``;
- https://openapi.huoban.com/apidoc/project-894643/api-27468364 (the v1 index: 获取工作区列表 GET,
  获取表格列表 POST, 获取表格配置 POST, 获取数据详情 POST) and https://openapi.huoban.com/api-17851172
  (创建数据: how field values are written: numbers, ``YYYY-MM-DD`` dates, option ids, user ids);
- https://docs.huoban.com/云存储接口/实体/数据.html (the item's timestamps ``YYYY-MM-DD HH:MM:SS``);
- the header is ``Open-Authorization: Bearer <API key>`` (every v1 page).

Served:

- ``POST /openapi/v1/item/list`` (above). Operators ``eq`` (a scalar, or a list meaning any of it),
  ``ne``, ``in``, ``nin``, ``gt``, ``gte``, ``lt``, ``lte``, ``em``, ``nem``; several operators in
  one ``query`` must all hold. Filterable system fields: ``item_id``, ``created_on``,
  ``updated_on`` (values ``YYYY-MM-DD HH:MM:SS`` or ``YYYY-MM-DD``, in Beijing time),
  ``created_by``, ``updated_by`` (user ids). ``order.field_id`` takes ``item_id``,
  ``created_on``, ``updated_on`` or a field id;
- ``POST /openapi/v1/item/{item_id}`` (获取数据详情): ``data.item``;
- ``POST /openapi/v1/table/{table_id}`` (获取表格配置): ``data.table`` with ``fields`` of
  ``{"field_id", "name", "field_type", "required", "config"}``; a category field's
  ``config.options`` are ``{"id", "name", "color"}``;
- ``POST /openapi/v1/table/list`` (``space_id`` required): ``data.tables``; ``GET
  /openapi/v1/space/list``: ``data.spaces``.

Where the documentation is silent (say so when a connector relies on it):

- the order without ``order``: ``item_id`` ascending (creation order). Ties in an order are broken
  by ``item_id`` in the order's direction, so offset paging over a still table is stable;
- ``limit`` defaults to 20 and is capped at :attr:`HuobanEmulator.max_page_size` (100) silently;
  ``view_id`` is accepted and ignored (the table has no views here);
- ``eq``/``ne``/``in``/``nin`` compare whole values (on a text field too); ``gt``… on a time field
  with a bare date take the whole day (``lte "2017-03-01"`` includes 23:59:59);
- timestamps are Beijing time (UTC+8) without an offset, to the second;
- fields without a value are left out of ``fields``; a date field is ``YYYY-MM-DD``, a number a
  JSON number, a category field a list of ``{"id", "name"}``, a user field a list of user objects;
- ``with_field_config: 1`` puts the table's fields in ``data.meta.fields`` (``meta`` is ``{}``
  otherwise); ``trace_id`` is beside ``data``;
- errors are HTTP 200 with ``code != 0``. The pages available here have no table of error codes;
  these are the ones users of the live service report:
  100 ``authentication failed`` (bad or missing key), 3500002 ``数据不存在或已删除`` (no such
  table or item), 502 ``One of the parameters specified was missing or invalid. parameters name
  X`` (a missing or malformed parameter), 501 ``unknown method`` (no such path). The rate limit
  (10 requests a second per key, as users report it; no page here states it) is answered with code
  :data:`RATE_LIMITED_CODE` and HTTP :attr:`HuobanEmulator.rate_limit_status` (200 unless set);
- the 获取工作区成员列表 endpoint is not served: its path is not in the pages available here.
  Owners come from the user fields (the dataset's users are :attr:`HuobanEmulator.users`);
- an API key does not expire, so there is no token to refresh.

Other tables of the workspace (:meth:`HuobanEmulator.add_table`: the 客户 and 跟进记录 tables of
:mod:`.huoban_data`) answer on the same paths by their table id, with item ids of their own; a
relation field's value is a list of ``{"item_id", "title"}`` of the linked table's items (this
emulator's choice of the shape the pages at hand do not show).

Knobs: ``rate_limit`` (requests per clock second per key, ``None`` = off, which is the default;
:data:`DOCUMENTED_RATE_LIMIT` is the reported one), ``rate_limit_status``, ``max_page_size``;
:meth:`~tests.connectors.rest.emulators.base.Emulator.fail` for 5xx answers and dropped
connections. Data changes while the server runs: :meth:`HuobanEmulator.create`, ``update``,
``delete`` (deleted items simply disappear: v1 lists no deletions). Listing is O(log n + page)
without a filter or with a filter on the order's own time field; other filters scan.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from crm_perf_sync.kit.timeutil import utc_now
from tests.connectors.rest.emulators.base import Emulator, Reply, Request, Response

BEIJING = timezone(timedelta(hours=8))
API = "/openapi/v1"
DOCUMENTED_RATE_LIMIT = 10
RATE_LIMITED_CODE = 429
AUTH_FAILED = (100, "authentication failed")
NOT_FOUND = (3500002, "数据不存在或已删除")
UNKNOWN_METHOD = (501, "unknown method")
BAD_PARAMETER_CODE = 502
RATE_LIMITED_MESSAGE = "请求过于频繁，请稍后再试"
DEFAULT_LIMIT = 20
SYSTEM_TIME_FIELDS = ("created_on", "updated_on")
SYSTEM_USER_FIELDS = ("created_by", "updated_by")
_OPERATORS = frozenset({"eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "em", "nem"})


# -- the data model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    user_id: str
    name: str

    @property
    def avatar(self) -> str:
        return f"https://hb-v4-public-oss.huoban.com/user_avatar/{self.user_id}/0"

    def wire(self) -> dict[str, str]:
        return {"user_id": self.user_id, "name": self.name, "avatar": self.avatar}


@dataclass(frozen=True)
class Option:
    id: str
    name: str
    color: str = "c1"


@dataclass(frozen=True)
class Field:
    """A table field. ``field_type``: ``text``, ``number``, ``date`` (with ``time``: a date and
    time, ``YYYY-MM-DD HH:MM:SS`` in Beijing time), ``category``, ``user`` or ``relation`` (items of
    the table ``linked``, as ``{"item_id", "title"}``)."""

    field_id: str
    name: str
    field_type: str
    options: tuple[Option, ...] = ()
    required: bool = False
    time: bool = False
    linked: str | None = None

    def wire(self) -> dict[str, Any]:
        config: dict[str, Any]
        if self.field_type == "category":
            config = {
                "type": "single",
                "options": [{"id": o.id, "name": o.name, "color": o.color} for o in self.options],
            }
        elif self.field_type == "user":
            config = {"type": "single"}
        elif self.field_type == "date":
            config = {"type": "datetime" if self.time else "date"}
        elif self.field_type == "relation":
            config = {"type": "multiple", "table_id": self.linked}
        else:
            config = {}
        return {
            "field_id": self.field_id,
            "name": self.name,
            "field_type": self.field_type,
            "required": self.required,
            "config": config,
        }


@dataclass
class Row:
    """An item's content before it is stored: ``values`` by field id, in the form Huoban takes on
    writes (numbers, ``YYYY-MM-DD`` dates, lists of option ids or user ids, text)."""

    values: dict[str, Any]
    created_on: datetime
    updated_on: datetime
    created_by: str
    updated_by: str


@dataclass
class Dataset:
    table_id: str
    table_name: str
    space_id: str
    space_name: str
    fields: list[Field]
    users: list[User]
    rows: list[Row] = field(default_factory=list)


@dataclass
class Item:
    item_id: int
    values: dict[str, Any]
    created_on: int  # epoch seconds
    updated_on: int
    created_by: str
    updated_by: str


def epoch(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return int(moment.timestamp())


def render_time(seconds: int) -> str:
    """Huoban's rendering of an instant: Beijing time, ``YYYY-MM-DD HH:MM:SS``."""
    return datetime.fromtimestamp(seconds, BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def parse_time(value: object, *, end_of_day: bool = False) -> int:
    """A filter value on a time field as epoch seconds (Beijing time when no offset is given)."""
    text = str(value).strip()
    if len(text) == 10:
        day = date.fromisoformat(text)
        moment = datetime(day.year, day.month, day.day, tzinfo=BEIJING)
        return epoch(moment) + (86399 if end_of_day else 0)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=BEIJING)
    return epoch(parsed)


def default_dataset() -> Dataset:
    """A small table for tests that do not name a dataset."""
    from tests.connectors.rest.emulators.huoban_data import synthetic

    return synthetic(25)


# -- the emulator ----------------------------------------------------------------------------------


def _fail(code: int, message: str) -> Reply:
    return Reply(200, {"code": code, "message": message})


def _bad_parameter(name: str) -> Reply:
    return _fail(
        BAD_PARAMETER_CODE, f"One of the parameters specified was missing or invalid. parameters name {name}"
    )


class HuobanEmulator(Emulator):
    """The server. ``data`` defaults to a small synthetic 商机 table."""

    def __init__(
        self,
        data: Dataset | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        record: bool = True,
        api_key: str = "hbOpenApiKey0123456789abcdefghijklmnopqrs",
        first_item_id: int = 2300000000000001,
    ) -> None:
        super().__init__(clock=clock, record=record)
        dataset = data if data is not None else default_dataset()
        self.api_key = api_key
        self.table_id = dataset.table_id
        self.table_name = dataset.table_name
        self.space_id = dataset.space_id
        self.space_name = dataset.space_name
        self.fields = list(dataset.fields)
        self.fields_by_id = {f.field_id: f for f in self.fields}
        self.fields_by_name = {f.name: f for f in self.fields}
        self.users = list(dataset.users)
        self.users_by_id = {u.user_id: u for u in self.users}
        self.rate_limit: int | None = None
        self.rate_limit_status = 200
        self.max_page_size = 100
        self._window: tuple[int, int] = (0, 0)  # (clock second, requests in it)
        self._trace = itertools.count(1)
        self._ids = itertools.count(first_item_id)
        #: The workspace's other tables (:meth:`add_table`), answered on the same paths by table id.
        self.tables: dict[str, HuobanEmulator] = {}
        self.items: dict[int, Item] = {}
        self._by_id: list[int] = []
        self._index: dict[str, list[tuple[int, int]]] = {name: [] for name in SYSTEM_TIME_FIELDS}
        for row in dataset.rows:
            item_id = next(self._ids)
            self.items[item_id] = Item(
                item_id,
                dict(row.values),
                epoch(row.created_on),
                epoch(row.updated_on),
                row.created_by,
                row.updated_by,
            )
        self._by_id = list(self.items)  # ids are handed out in increasing order
        for name in SYSTEM_TIME_FIELDS:
            self._index[name] = sorted((getattr(item, name), item.item_id) for item in self.items.values())

    def add_table(self, dataset: Dataset) -> HuobanEmulator:
        """Another table of the workspace: its items get ids of their own (item ids are unique
        across tables), its changes are made on the table returned (``create``, ``update``...)."""
        first = max([*self.items, *(i for t in self.tables.values() for i in t.items)]) + 1_000_001
        table = HuobanEmulator(
            dataset, clock=self.clock, record=False, api_key=self.api_key, first_item_id=first
        )
        self.tables[table.table_id] = table
        return table

    def _table_for(self, table_id: object) -> HuobanEmulator:
        return self.tables.get(str(table_id).strip() if table_id is not None else "", self)

    # -- changes from the test's thread ----------------------------------------------------------

    def _store(self, item: Item) -> None:
        self.items[item.item_id] = item
        bisect.insort(self._by_id, item.item_id)
        bisect.insort(self._index["created_on"], (item.created_on, item.item_id))
        bisect.insort(self._index["updated_on"], (item.updated_on, item.item_id))

    def _unindex(self, item: Item) -> None:
        for name, key in (("created_on", item.created_on), ("updated_on", item.updated_on)):
            index = self._index[name]
            del index[bisect.bisect_left(index, (key, item.item_id))]

    def _values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Values keyed by field id or field name, as field ids."""
        out: dict[str, Any] = {}
        for key, value in values.items():
            spec = self.fields_by_id.get(key) or self.fields_by_name.get(key)
            if spec is None:
                raise KeyError(f"no field {key!r}")
            out[spec.field_id] = value
        return out

    def create(self, values: Mapping[str, Any], *, at: datetime | None = None, by: str | None = None) -> str:
        """Add an item; returns its ``item_id``. ``values`` are keyed by field id or name, in the
        form Huoban takes on writes: text, numbers, ``YYYY-MM-DD`` dates, lists of option ids
        (category) or user ids (user). ``created_on`` and ``updated_on`` are ``at`` or now."""
        moment = epoch(at or self.clock())
        user = by or self.users[0].user_id
        with self.lock:
            item = Item(next(self._ids), self._values(values), moment, moment, user, user)
            self._store(item)
        return str(item.item_id)

    def update(
        self,
        item_id: str | int,
        values: Mapping[str, Any],
        *,
        at: datetime | None = None,
        by: str | None = None,
    ) -> None:
        """Change an item's values (``None`` clears one); ``updated_on`` moves to ``at`` or now."""
        moment = epoch(at or self.clock())
        with self.lock:
            item = self.items[int(item_id)]
            self._unindex(item)
            for key, value in self._values(values).items():
                if value is None:
                    item.values.pop(key, None)
                else:
                    item.values[key] = value
            item.updated_on = moment
            item.updated_by = by or item.updated_by
            bisect.insort(self._index["created_on"], (item.created_on, item.item_id))
            bisect.insort(self._index["updated_on"], (item.updated_on, item.item_id))

    def delete(self, item_id: str | int, *, at: datetime | None = None) -> None:  # noqa: ARG002 - the shared interface
        """Remove an item: it no longer appears anywhere (v1 reports no deletions)."""
        with self.lock:
            item = self.items.pop(int(item_id))
            self._unindex(item)
            del self._by_id[bisect.bisect_left(self._by_id, item.item_id)]

    # -- the wire ----------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        header = request.headers.get("open-authorization", "")
        if header != f"Bearer {self.api_key}":
            raise _fail(*AUTH_FAILED)
        self._count_rate()
        path = request.path.rstrip("/")
        body = request.body if isinstance(request.body, dict) else {}
        with self.lock:
            if request.method == "POST" and path == f"{API}/item/list":
                table = self._table_for(body.get("table_id"))
                with table.lock:
                    data = table._list(body)
            elif request.method == "POST" and path == f"{API}/table/list":
                data = self._tables(body)
            elif request.method == "GET" and path == f"{API}/space/list":
                data = {"spaces": [{"space_id": self.space_id, "name": self.space_name}]}
            elif request.method == "POST" and path.startswith(f"{API}/table/"):
                table_id = path.removeprefix(f"{API}/table/")
                data = {"table": self._table_for(table_id)._table(table_id)}
            elif request.method == "POST" and path.startswith(f"{API}/item/"):
                item_id = path.removeprefix(f"{API}/item/")
                owner = next(
                    (t for t in self.tables.values() if item_id.isdigit() and int(item_id) in t.items), self
                )
                with owner.lock:
                    data = {"item": owner._item(item_id)}
            else:
                raise _fail(*UNKNOWN_METHOD)
        return Response(200, {"code": 0, "message": "success", "data": data, "trace_id": self._trace_id()})

    def _trace_id(self) -> str:
        return f"{next(self._trace):032x}"

    def _count_rate(self) -> None:
        if self.rate_limit is None:
            return
        second = int(self.clock().timestamp())
        with self.lock:
            start, used = self._window
            if start != second:
                start, used = second, 0
            used += 1
            self._window = (start, used)
        if used > self.rate_limit:
            raise Reply(self.rate_limit_status, {"code": RATE_LIMITED_CODE, "message": RATE_LIMITED_MESSAGE})

    def _check_table(self, value: object) -> None:
        text = str(value).strip() if value is not None else ""
        if not text.isdigit():
            raise _bad_parameter("table_id")
        if text != self.table_id:
            raise _fail(*NOT_FOUND)

    def _table(self, table_id: str) -> dict[str, Any]:
        self._check_table(table_id)
        return {
            "table_id": self.table_id,
            "name": self.table_name,
            "space_id": self.space_id,
            "fields": [f.wire() for f in self.fields],
        }

    def _tables(self, body: Mapping[str, Any]) -> dict[str, Any]:
        space = body.get("space_id")
        if space is None or not str(space).isdigit():
            raise _bad_parameter("space_id")
        tables = []
        for table in (self, *self.tables.values()):
            if str(space) == table.space_id:
                tables.append(
                    {"table_id": table.table_id, "name": table.table_name, "space_id": table.space_id}
                )
        return {"tables": tables}

    def _item(self, text: str) -> dict[str, Any]:
        if not text.isdigit():
            raise _bad_parameter("item_id")
        item = self.items.get(int(text))
        if item is None:
            raise _fail(*NOT_FOUND)
        return self._wire(item)

    def _wire(self, item: Item) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for spec in self.fields:  # in the table's field order
            field_id = spec.field_id
            value = item.values.get(field_id)
            if value is None or value == "" or value == []:
                continue
            if spec.field_type == "category":
                names = {o.id: o.name for o in spec.options}
                fields[field_id] = [{"id": str(o), "name": names[str(o)]} for o in value]
            elif spec.field_type == "user":
                fields[field_id] = [self._user(u) for u in value]
            elif spec.field_type == "relation":
                fields[field_id] = [{"item_id": str(r["item_id"]), "title": r["title"]} for r in value]
            else:
                fields[field_id] = value
        title = item.values.get(self.fields[0].field_id, "")
        return {
            "item_id": str(item.item_id),
            "title": str(title),
            "fields": fields,
            "created_by": self._user(item.created_by),
            "created_on": render_time(item.created_on),
            "updated_by": self._user(item.updated_by),
            "updated_on": render_time(item.updated_on),
        }

    def _user(self, user_id: str) -> dict[str, str]:
        user = self.users_by_id.get(str(user_id)) or User(str(user_id), "")
        return user.wire()

    # -- listing -----------------------------------------------------------------------------------

    def _list(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self._check_table(body.get("table_id"))
        limit = _integer(body.get("limit", DEFAULT_LIMIT), "limit")
        offset = _integer(body.get("offset", 0), "offset")
        if limit < 1 or offset < 0:
            raise _bad_parameter("limit" if limit < 1 else "offset")
        limit = min(limit, self.max_page_size)
        order = body.get("order")
        order_field, descending = "item_id", False
        if order is not None:
            if not isinstance(order, Mapping) or order.get("type", "asc") not in ("asc", "desc"):
                raise _bad_parameter("order")
            order_field = str(order.get("field_id") or "item_id")
            descending = order.get("type") == "desc"
            if order_field not in ("item_id", *SYSTEM_TIME_FIELDS) and order_field not in self.fields_by_id:
                raise _bad_parameter("order")
        raw_filter = body.get("filter")
        predicate = self._compile(raw_filter) if raw_filter else None
        ids = self._select(order_field, descending, raw_filter, predicate)
        page = ids[offset : offset + limit]
        meta: dict[str, Any] = {}
        if str(body.get("with_field_config", 0)) == "1":
            meta = {"fields": [f.wire() for f in self.fields]}
        return {
            "total": len(self.items),
            "filtered": len(ids),
            "has_more": offset + len(page) < len(ids),
            "items": [self._wire(self.items[i]) for i in page],
            "meta": meta,
        }

    def _select(
        self,
        order_field: str,
        descending: bool,
        raw_filter: Any,
        predicate: Callable[[Item], bool] | None,
    ) -> Sequence[int]:
        """The matching item ids in order: bisect on an index where one serves, a scan otherwise."""
        if order_field == "item_id" and predicate is None:
            return _Reversed(self._by_id) if descending else self._by_id
        if order_field in SYSTEM_TIME_FIELDS:
            bounds = _time_bounds(raw_filter, order_field) if raw_filter else (None, None)
            if predicate is None or bounds is not None:
                low, high = bounds or (None, None)
                index = self._index[order_field]
                start = 0 if low is None else bisect.bisect_left(index, (low, 0))
                stop = len(index) if high is None else bisect.bisect_right(index, (high, 1 << 62))
                view = _Ids(index, start, stop)
                return _Reversed(view) if descending else view
        candidates: Sequence[int] = self._by_id
        after = _item_id_after(raw_filter) if order_field == "item_id" else None
        if after is not None:
            # Keyset paging (item_id > the last one): no earlier item can match, so none is read.
            candidates = self._by_id[bisect.bisect_right(self._by_id, after) :]
        matched = [i for i in candidates if predicate is None or predicate(self.items[i])]
        if order_field != "item_id":
            matched.sort(key=lambda i: self._sort_key(self.items[i], order_field))
        if descending:
            matched.reverse()
        return matched

    def _sort_key(self, item: Item, order_field: str) -> tuple[int, Any, int]:
        if order_field in SYSTEM_TIME_FIELDS:
            return (0, getattr(item, order_field), item.item_id)
        value = item.values.get(order_field)
        if value is None:
            return (1, 0, item.item_id)  # empty values after the others
        if isinstance(value, list):
            value = str(value[0]) if value else ""
        return (0, value, item.item_id)

    def _compile(self, node: Any) -> Callable[[Item], bool]:
        if not isinstance(node, Mapping):
            raise _bad_parameter("filter")
        if "and" in node or "or" in node:
            key = "and" if "and" in node else "or"
            parts = node[key]
            if not isinstance(parts, list):
                raise _bad_parameter("filter")
            compiled = [self._compile(part) for part in parts]
            if key == "and":
                return lambda item: all(c(item) for c in compiled)
            return lambda item: any(c(item) for c in compiled)
        name, query = node.get("field"), node.get("query")
        if name is None or not isinstance(query, Mapping) or not query or not set(query) <= _OPERATORS:
            raise _bad_parameter("filter")
        getter, convert = self._accessor(str(name))
        tests = [_operator(op, value, convert) for op, value in query.items()]
        return lambda item: all(test(getter(item)) for test in tests)

    def _accessor(self, name: str) -> tuple[Callable[[Item], Any], Callable[[Any, bool], Any]]:
        """How to read a filtered field from an item, and how to convert a filter value to compare."""
        if name == "item_id":
            return (lambda item: item.item_id), (lambda v, _end: int(v))
        if name in SYSTEM_TIME_FIELDS:
            return (lambda item: getattr(item, name)), (lambda v, end: parse_time(v, end_of_day=end))
        if name in SYSTEM_USER_FIELDS:
            return (lambda item: [getattr(item, name)]), (lambda v, _end: str(v))
        spec = self.fields_by_id.get(name)
        if spec is None:
            raise _bad_parameter("filter")
        if spec.field_type == "number":
            return (lambda item: item.values.get(name)), (lambda v, _end: float(v))
        if spec.field_type in ("category", "user"):
            return (lambda item: [str(x) for x in item.values.get(name) or []]), (lambda v, _end: str(v))
        return (lambda item: item.values.get(name)), (lambda v, _end: str(v))


def _integer(value: object, name: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise _bad_parameter(name) from None


def _operator(op: str, value: Any, convert: Callable[[Any, bool], Any]) -> Callable[[Any], bool]:
    """One operator as a test on a stored value (a list for category and user fields)."""
    if op == "em":
        return lambda stored: (stored in (None, "", [])) == bool(value)
    if op == "nem":
        return lambda stored: (stored not in (None, "", [])) == bool(value)
    try:
        if op in ("eq", "in", "ne", "nin"):
            values = value if isinstance(value, list) else [value]
            wanted = {convert(v, False) for v in values}
        else:
            bound = convert(value, op in ("lte", "gt"))
    except (TypeError, ValueError):
        raise _bad_parameter("filter") from None

    def members(stored: Any) -> set[Any]:
        if stored is None:
            return set()
        return set(stored) if isinstance(stored, list) else {stored}

    if op in ("eq", "in"):
        return lambda stored: bool(members(stored) & wanted)
    if op in ("ne", "nin"):
        return lambda stored: not members(stored) & wanted
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
    }
    check = compare[op]

    def ordered(stored: Any) -> bool:
        if stored is None or isinstance(stored, list):
            return False
        try:
            return check(type(bound)(stored), bound)
        except (TypeError, ValueError):
            return False

    return ordered


def _time_bounds(node: Any, name: str) -> tuple[int | None, int | None] | None:
    """Inclusive epoch bounds when ``node`` is only range conditions on ``name`` (ANDed), else None."""
    conditions: Iterable[Any]
    if isinstance(node, Mapping) and "field" in node:
        conditions = [node]
    elif isinstance(node, Mapping) and set(node) == {"and"} and isinstance(node["and"], list):
        conditions = node["and"]
    else:
        return None
    low: int | None = None
    high: int | None = None
    for condition in conditions:
        if not isinstance(condition, Mapping) or condition.get("field") != name:
            return None
        query = condition.get("query")
        if not isinstance(query, Mapping) or not query or not set(query) <= {"gt", "gte", "lt", "lte"}:
            return None
        try:
            for op, value in query.items():
                if op == "gte":
                    bound, is_low = parse_time(value), True
                elif op == "gt":
                    bound, is_low = parse_time(value, end_of_day=True) + 1, True
                elif op == "lte":
                    bound, is_low = parse_time(value, end_of_day=True), False
                else:
                    bound, is_low = parse_time(value) - 1, False
                if is_low:
                    low = bound if low is None else max(low, bound)
                else:
                    high = bound if high is None else min(high, bound)
        except (TypeError, ValueError):
            raise _bad_parameter("filter") from None
    return low, high


class _Ids(Sequence[int]):
    """The item ids of a slice of a time index, without copying it."""

    def __init__(self, index: list[tuple[int, int]], start: int, stop: int) -> None:
        self._index, self._start, self._stop = index, start, max(start, stop)

    def __len__(self) -> int:
        return self._stop - self._start

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            begin, end, step = key.indices(len(self))
            return [self._index[self._start + i][1] for i in range(begin, end, step)]
        if key < 0:
            key += len(self)
        if not 0 <= key < len(self):
            raise IndexError(key)
        return self._index[self._start + key][1]


class _Reversed(Sequence[int]):
    def __init__(self, base: Sequence[int]) -> None:
        self._base = base

    def __len__(self) -> int:
        return len(self._base)

    def __getitem__(self, key: Any) -> Any:
        n = len(self._base)
        if isinstance(key, slice):
            begin, end, step = key.indices(n)
            return [self._base[n - 1 - i] for i in range(begin, end, step)]
        if key < 0:
            key += n
        return self._base[n - 1 - key]


def _item_id_after(node: Any) -> int | None:
    """X of an ``item_id > X`` that the whole filter requires (itself or a part of its ``and``)."""
    if not isinstance(node, Mapping):
        return None
    parts = node.get("and") if "and" in node else [node]
    if not isinstance(parts, list):
        return None
    for part in parts:
        if isinstance(part, Mapping) and part.get("field") == "item_id":
            query = part.get("query")
            if isinstance(query, Mapping) and set(query) == {"gt"}:
                try:
                    return int(query["gt"])
                except (TypeError, ValueError):
                    return None
    return None
