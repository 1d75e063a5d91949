"""A 简道云 (Jiandaoyun) OpenAPI v5 emulator: one app, its forms and the company's contacts.

The app's first form is the dataset's (the 商机 form unless told otherwise); :meth:`add_form`
adds others (the 客户 and 跟进记录 forms of :mod:`.jiandaoyun_data`), each answered by its
``entry_id`` on the same endpoints.

Followed (the vendor's public documentation):

- 开发指南 https://hc.jiandaoyun.com/open/11261 — base ``https://api.jiandaoyun.com/api``, every call
  a ``POST`` with a JSON body, ``Authorization: Bearer <API key>``, the global limit of 50 requests
  per second, errors as HTTP 400 with ``{"code", "msg"}`` (the table of codes: 1, 1010, 2004, 3000,
  3005, 4001, 4815, 6002, 8301, 8303, 8304 are the ones served here);
- 查询多条数据 https://hc.jiandaoyun.com/open/14220 — ``/v5/app/entry/data/list`` (30/s): results
  always in data-id order after ``data_id``; ``limit`` 1..100, default 10; ``fields``; ``filter``
  ``{"rel": "and"|"or", "cond": [{"field", "type", "method", "value"}]}`` with the methods each
  field type supports (datetime, including ``createTime``/``updateTime``: eq, ne, range, empty,
  not_empty; number: also gt, lt; text and combo: eq, ne, in, nin, empty, not_empty; members,
  including ``creator``/``updater``: eq, ne, in, nin, empty, not_empty by username; ``_id``: eq,
  in, empty, not_empty); ``in``/``nin`` take at most 1000 values;
- 查询单条数据 https://hc.jiandaoyun.com/open/14221 — ``/v5/app/entry/data/get`` (30/s), ``{"data"}``;
- 表单字段查询 (``/v5/app/entry/widget/list``, 30/s) — ``widgets`` (``name``, ``widgetName``,
  ``label``, ``type``), ``sysWidgets`` (``name`` only) and ``dataModifyTime``;
- 用户应用/表单查询 (``/v5/app/list``, ``/v5/app/entry/list``, 30/s) — ``skip``/``limit`` (1..100,
  default 100), ``{"apps": [{"name", "app_id"}]}``, ``{"forms": [{"name", "app_id", "entry_id"}]}``;
- 通讯录 https://hc.jiandaoyun.com/open/18516 and https://hc.jiandaoyun.com/open/18515 —
  ``/v5/corp/department/list`` and ``/v5/corp/department/user/list`` (10/s) with ``dept_no`` and
  ``has_child``: ``{"departments": [{"dept_no", "name", "parent_no", "type", "status"}]}`` (the
  sub-departments, not the department itself) and ``{"users": [{"username", "name",
  "departments", "type", "status"}]}``; the current page documents the department list as
  ``/v6/corp/department/list``, the same with ``seq`` (served too, ``seq`` = rank among siblings);
  ``/v5/corp/user/get`` (30/s) ``{"username"}`` → ``{"user"}``, 1010 for an unknown member.

Records: ``_id`` (24 hex digits: the creation second, then a counter, so ids grow with creation),
``appId``, ``entryId``, ``creator`` and ``updater`` (member objects), ``createTime`` and
``updateTime`` (ISO UTC with milliseconds and a Z), then the widget values by widget name. Pages
are found by bisection on the sorted ids, so a page costs the same at row 10 and at row 900,000.

Where the documentation is silent, this emulator chooses (and a test pins it):

- error messages are the English descriptions of the 错误码 table; an unknown path (or any method
  but ``POST``) is 404 with code 1; a body that is not a JSON object is code 1; a missing
  ``app_id``/``entry_id`` is code 1, an unknown app 2004 on the app endpoints and 3000 (form
  doesn't exist) on the form endpoints;
- a missing, malformed or unknown API key is 8301 (API 签名校验失败), also with status 400;
- ``limit`` outside 1..100 (or not an integer) and a malformed ``data_id`` are 3005; a filter the
  documentation does not allow (unknown field, a method the field's type does not support, such
  as ``gt`` on a datetime, a malformed value, more than 1000 ``in`` values) is 4815;
- a ``range`` bound may be ``null`` (open on that side); ``ne``/``nin`` also match empty values;
  the id field is ``_id`` (or ``data_id``);
- datetime filter values are ISO strings (one without an offset is Beijing time, UTC+8, as the
  documentation's note on time formats has it), ``yyyy-MM-dd HH:mm:ss``, ``yyyy-MM-dd`` (also
  Beijing time) or epoch milliseconds;
- ``fields`` returns ``_id`` and the named fields (widget or system) only; unknown names are
  ignored; without ``fields`` (or with an empty list) every field comes back;
- an empty text widget is ``""``; an empty number or datetime widget is ``null``;
- a deleted record is simply gone (the API has no list of deletions);
- members come in the order they joined, departments in ``dept_no`` order.

Knobs: ``rate_limit`` (``None``: not enforced, the default; or per-path requests per second, e.g.
:data:`DOCUMENTED_RATE_LIMITS`) answered with 400 code 8304, and ``global_rate_limit`` (requests
per second over all paths, 50 documented) answered with 400 code 8303; both count the requests
accepted in the last second of the emulator's clock (a sliding window; refused requests do not
count); ``max_page_size`` (100). Faults: :meth:`Emulator.fail` (5xx, 429 — the documented answer
to too many concurrent requests — and dropped connections). Data changes from the test's thread:
:meth:`JiandaoyunEmulator.create`, :meth:`~JiandaoyunEmulator.update`,
:meth:`~JiandaoyunEmulator.delete`, stamped from the clock or ``at``.
"""

from __future__ import annotations

import bisect
import itertools
import re
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import orjson

from crm_perf_sync.kit.timeutil import utc_now

from .base import Emulator, Reply, Request, Response
from .jiandaoyun_data import Dataset, Department, Member, Widget, iso, maven_form, ms

API = "/api/v5"

#: Requests per second each endpoint accepts, as documented.
DOCUMENTED_RATE_LIMITS: dict[str, int] = {
    f"{API}/app/list": 30,
    f"{API}/app/entry/list": 30,
    f"{API}/app/entry/widget/list": 30,
    f"{API}/app/entry/data/list": 30,
    f"{API}/app/entry/data/get": 30,
    f"{API}/corp/department/list": 10,
    "/api/v6/corp/department/list": 10,
    f"{API}/corp/department/user/list": 10,
    f"{API}/corp/user/get": 30,
}
DOCUMENTED_GLOBAL_RATE_LIMIT = 50

#: The documented error codes this emulator answers with, and their messages.
MESSAGES: dict[int, str] = {
    1: "The request is invalid.",
    1010: "The member doesn't exist.",
    2004: "The app doesn't exist.",
    3000: "The form doesn't exist.",
    3005: "The request contains invalid parameter(s).",
    4001: "Data doesn't exist.",
    4815: "The filter condition is invalid.",
    6002: "The department doesn't exist.",
    8301: "Failed to verify the API key for authorization.",
    8303: "The call frequency of the company/team exceeds the frequency limit.",
    8304: "The call frequency exceeds the frequency limit.",
}

SYSTEM_WIDGETS = ("creator", "updater", "deleter", "createTime", "updateTime", "deleteTime")
_BEIJING = timezone(timedelta(hours=8))
_HEX24 = re.compile(r"[0-9a-f]{24}")
_MAX_IN = 1000

#: The field types the filter knows, and the methods each supports (as documented).
_METHODS: dict[str, frozenset[str]] = {
    "datetime": frozenset({"eq", "ne", "range", "empty", "not_empty"}),
    "number": frozenset({"eq", "ne", "range", "empty", "not_empty", "gt", "lt"}),
    "text": frozenset({"eq", "ne", "in", "nin", "empty", "not_empty"}),
    "user": frozenset({"eq", "ne", "in", "nin", "empty", "not_empty"}),
    "id": frozenset({"eq", "in", "empty", "not_empty"}),
}
_KIND = {
    "text": "text",
    "combo": "text",
    "radiogroup": "text",
    "sn": "text",
    "textarea": "text",
    "linkdata": "text",
}


def error(code: int, status: int = 400) -> Reply:
    return Reply(status, {"code": code, "msg": MESSAGES[code]})


def parse_instant(value: object) -> int:
    """A filter value as epoch ms (ISO with or without offset, the console's formats, or ms)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise error(4815)
    if isinstance(value, int | float):
        return int(value)
    text = value.strip()
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time())
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise error(4815) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_BEIJING)
    return ms(moment)


def _object_id(seconds: int, counter: int) -> int:
    return (seconds & 0xFFFFFFFF) << 64 | counter


class Store:
    """The form's records in data-id order, columnar: ids, times, owners and per-row values."""

    def __init__(self, dataset: Dataset) -> None:
        n = len(dataset)
        self.base = dataset.values
        self.overrides: dict[int, tuple[Any, ...]] = {}
        self.keys = array("q", range(n))
        self.created = array("q", dataset.created)
        self.updated = array("q", dataset.updated)
        self.creator = array("i", dataset.owner)
        self.updater = array("i", dataset.owner)
        self.counter = itertools.count(0x5A0000000000)
        self.ids = [_object_id(c // 1000, next(self.counter)) for c in self.created]
        assert all(a < b for a, b in itertools.pairwise(self.ids)), "records must be created in id order"
        self.next_key = n

    def __len__(self) -> int:
        return len(self.ids)

    def values(self, pos: int) -> tuple[Any, ...]:
        key = self.keys[pos]
        found = self.overrides.get(key)
        return found if found is not None else self.base(key)

    def find(self, data_id: int) -> int | None:
        pos = bisect.bisect_left(self.ids, data_id)
        return pos if pos < len(self.ids) and self.ids[pos] == data_id else None


@dataclass
class Form:
    """One form of the app: its widgets and its records."""

    entry_id: str
    name: str
    widgets: tuple[Widget, ...]
    store: Store
    widget_index: dict[str, int] = field(default_factory=dict)
    label_index: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def of(dataset: Dataset) -> Form:
        widgets = dataset.widgets
        return Form(
            dataset.entry_id,
            dataset.form_name,
            widgets,
            Store(dataset),
            {widget.name: i for i, widget in enumerate(widgets)},
            {widget.label: i for i, widget in enumerate(widgets)},
        )


Predicate = Callable[[Store, int], bool]
#: A time column and the bounds (epoch ms, inclusive, ``None`` for open) a filter puts on it.
Window = tuple[str, int | None, int | None]
_CHUNK = 4096


class JiandaoyunEmulator(Emulator):
    """The Jiandaoyun v5 API over one dataset (the Maven 商机 form unless told otherwise)."""

    def __init__(
        self, data: Dataset | None = None, *, clock: Callable[[], datetime] = utc_now, record: bool = True
    ) -> None:
        super().__init__(clock=clock, record=record)
        self.data = data if data is not None else maven_form()
        self.api_key = "jdyEmuKey0123456789abcdefABCDEF"
        self.app_id = self.data.app_id
        self.members: list[Member] = self.data.members
        self.departments: list[Department] = self.data.departments
        #: The app's forms by entry id, the dataset's first (the one ``store``, ``widgets`` and
        #: the writes below mean unless told another ``form``).
        self.forms: dict[str, Form] = {self.data.entry_id: Form.of(self.data)}
        self.main = self.forms[self.data.entry_id]
        self.entry_id = self.main.entry_id
        self.widgets: tuple[Widget, ...] = self.main.widgets
        self.store = self.main.store
        self.rate_limit: dict[str, int] | None = None
        self.global_rate_limit: int | None = None
        self.max_page_size = 100
        self._entities = [member.entity() for member in self.members]
        self._member_index = {member.username: i for i, member in enumerate(self.members)}
        self._calls: dict[str, deque[datetime]] = {}
        self._all_calls: deque[datetime] = deque()
        self._routes: dict[str, Callable[[dict[str, Any]], Any]] = {
            f"{API}/app/list": self._app_list,
            f"{API}/app/entry/list": self._entry_list,
            f"{API}/app/entry/widget/list": self._widget_list,
            f"{API}/app/entry/data/list": self._data_list,
            f"{API}/app/entry/data/get": self._data_get,
            f"{API}/corp/department/list": self._department_list,
            "/api/v6/corp/department/list": self._department_list_v6,
            f"{API}/corp/department/user/list": self._department_users,
            f"{API}/corp/user/get": self._user_get,
        }

    # -- the test's side -----------------------------------------------------------------------

    def use_documented_rate_limits(self) -> None:
        self.rate_limit = dict(DOCUMENTED_RATE_LIMITS)
        self.global_rate_limit = DOCUMENTED_GLOBAL_RATE_LIMIT

    def add_form(self, dataset: Dataset) -> Form:
        """Another form of the app (a dataset built with this one's members)."""
        form = Form.of(dataset)
        with self.lock:
            self.forms[form.entry_id] = form
        return form

    def _form(self, entry_id: str | None) -> Form:
        return self.main if entry_id is None else self.forms[entry_id]

    def widget(self, label: str, *, form: str | None = None) -> Widget:
        """The widget with this label (e.g. ``"金额"``), of the main form unless ``form`` names another."""
        found = self._form(form)
        return found.widgets[found.label_index[label]]

    def create(
        self,
        values: Mapping[str, Any],
        *,
        creator: str | None = None,
        at: datetime | None = None,
        form: str | None = None,
    ) -> str:
        """Add a record (values by widget name or label); returns its data id."""
        moment = ms(at or self.clock())
        with self.lock:
            target = self._form(form)
            store = target.store
            owner = self._member_index[creator] if creator is not None else 0
            row = self._row(target, values, tuple(self._api_value(widget, None) for widget in target.widgets))
            seconds = max(moment // 1000, store.ids[-1] >> 64 if store.ids else 0)
            data_id = _object_id(seconds, next(store.counter))
            key = store.next_key
            store.next_key += 1
            store.overrides[key] = row
            store.ids.append(data_id)
            store.keys.append(key)
            store.created.append(moment)
            store.updated.append(moment)
            store.creator.append(owner)
            store.updater.append(owner)
            return f"{data_id:024x}"

    def update(
        self,
        data_id: str,
        values: Mapping[str, Any],
        *,
        updater: str | None = None,
        at: datetime | None = None,
        form: str | None = None,
    ) -> None:
        """Change a record's values (by widget name or label) and stamp its ``updateTime``."""
        moment = ms(at or self.clock())
        with self.lock:
            target = self._form(form)
            store = target.store
            pos = store.find(int(data_id, 16))
            assert pos is not None, f"no record {data_id}"
            store.overrides[store.keys[pos]] = self._row(target, values, store.values(pos))
            store.updated[pos] = moment
            if updater is not None:
                store.updater[pos] = self._member_index[updater]

    def delete(self, data_id: str, *, at: datetime | None = None, form: str | None = None) -> None:  # noqa: ARG002 - the common interface
        """Remove a record (the API keeps no trace a list could see)."""
        with self.lock:
            store = self._form(form).store
            pos = store.find(int(data_id, 16))
            assert pos is not None, f"no record {data_id}"
            store.overrides.pop(store.keys[pos], None)
            for column in (store.ids, store.keys, store.created, store.updated, store.creator, store.updater):
                del column[pos]

    def get_record(self, data_id: str, *, form: str | None = None) -> dict[str, Any]:
        """A record as the API renders it."""
        with self.lock:
            target = self._form(form)
            pos = target.store.find(int(data_id, 16))
            assert pos is not None, f"no record {data_id}"
            return self._render(target, pos, None)

    def records(self, form: str | None = None) -> list[dict[str, Any]]:
        """Every record of a form as the API renders it, in data-id order."""
        with self.lock:
            target = self._form(form)
            return [self._render(target, pos, None) for pos in range(len(target.store))]

    def _row(self, form: Form, values: Mapping[str, Any], row: tuple[Any, ...]) -> tuple[Any, ...]:
        new = list(row)
        for name, value in values.items():
            index = form.widget_index[name] if name in form.widget_index else form.label_index[name]
            new[index] = self._api_value(form.widgets[index], value)
        return tuple(new)

    def _api_value(self, widget: Widget, value: Any) -> Any:
        if value is None:
            return "" if _KIND.get(widget.type) == "text" else None
        if widget.type == "user":
            return self._entities[self._member_index[value]] if isinstance(value, str) else value
        if widget.type == "datetime" and isinstance(value, datetime):
            return iso(ms(value))
        return value

    # -- serving -------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        route = self._routes.get(request.path)
        if route is None or request.method != "POST":
            raise Reply(404, {"code": 1, "msg": MESSAGES[1]})
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {self.api_key}":
            raise error(8301)
        self._throttle(request.path)
        if not isinstance(request.body, dict):
            raise error(1)
        body = route(request.body)
        return Response(200, body)

    def _throttle(self, path: str) -> None:
        now = self.clock()
        horizon = now - timedelta(seconds=1)
        with self.lock:
            calls = self._calls.setdefault(path, deque())
            for window in (self._all_calls, calls):
                while window and window[0] <= horizon:
                    window.popleft()
            if self.global_rate_limit is not None and len(self._all_calls) >= self.global_rate_limit:
                raise error(8303)
            limit = None if self.rate_limit is None else self.rate_limit.get(path)
            if limit is not None and len(calls) >= limit:
                raise error(8304)
            self._all_calls.append(now)
            calls.append(now)

    def _skip_limit(self, body: dict[str, Any]) -> tuple[int, int]:
        skip, limit = body.get("skip", 0), body.get("limit", 100)
        if not _is_int(skip) or not _is_int(limit) or skip < 0 or not 1 <= limit <= 100:
            raise error(3005)
        return skip, limit

    def _app_list(self, body: dict[str, Any]) -> Any:
        skip, limit = self._skip_limit(body)
        apps = [{"name": self.data.app_name, "app_id": self.app_id}]
        return {"apps": apps[skip : skip + limit]}

    def _entry_list(self, body: dict[str, Any]) -> Any:
        app_id = body.get("app_id")
        if not isinstance(app_id, str) or not app_id:
            raise error(1)
        if app_id != self.app_id:
            raise error(2004)
        skip, limit = self._skip_limit(body)
        forms = [{"name": f.name, "app_id": self.app_id, "entry_id": f.entry_id} for f in self.forms.values()]
        return {"forms": forms[skip : skip + limit]}

    def _check_form(self, body: dict[str, Any]) -> Form:
        app_id, entry_id = body.get("app_id"), body.get("entry_id")
        if not isinstance(app_id, str) or not app_id or not isinstance(entry_id, str) or not entry_id:
            raise error(1)
        form = self.forms.get(entry_id)
        if app_id != self.app_id or form is None:
            raise error(3000)
        return form

    def _widget_list(self, body: dict[str, Any]) -> Any:
        form = self._check_form(body)
        with self.lock:
            latest = max(form.store.updated, default=None)
        return {
            "widgets": [
                {"name": w.name, "widgetName": w.name, "label": w.label, "type": w.type} for w in form.widgets
            ],
            "sysWidgets": [{"name": name} for name in SYSTEM_WIDGETS],
            "dataModifyTime": None if latest is None else iso(latest),
        }

    def _data_get(self, body: dict[str, Any]) -> Any:
        form = self._check_form(body)
        data_id = body.get("data_id")
        if not isinstance(data_id, str) or not data_id:
            raise error(1)
        with self.lock:
            pos = form.store.find(int(data_id, 16)) if _HEX24.fullmatch(data_id) else None
            if pos is None:
                raise error(4001)
            return {"data": self._render(form, pos, None)}

    def _data_list(self, body: dict[str, Any]) -> Any:
        form = self._check_form(body)
        limit = body.get("limit", 10)
        if not _is_int(limit) or not 1 <= limit <= self.max_page_size:
            raise error(3005)
        after = body.get("data_id")
        if after in (None, ""):
            start_id = -1
        elif isinstance(after, str) and _HEX24.fullmatch(after):
            start_id = int(after, 16)
        else:
            raise error(3005)
        fields = body.get("fields")
        if fields is not None and not (isinstance(fields, list) and all(isinstance(f, str) for f in fields)):
            raise error(3005)
        spec = body.get("filter")
        predicate = self._compile(form, spec)
        with self.lock:
            store = form.store
            pos = bisect.bisect_right(store.ids, start_id)
            window = None if predicate is None else _time_window(spec)
            listed = None if predicate is None else _listed_ids(spec)
            if predicate is not None and listed is not None:
                found = self._lookup(store, pos, predicate, listed, limit)
            elif predicate is None or window is None:
                found = self._scan(store, pos, predicate, limit)
            else:
                found = self._scan_window(store, pos, predicate, window, limit)
            return _page(self._render(form, p, fields or None) for p in found)

    def _scan(self, store: Store, pos: int, predicate: Predicate | None, limit: int) -> list[int]:
        end = len(store)
        if predicate is None:
            return list(range(pos, min(end, pos + limit)))
        found: list[int] = []
        while pos < end and len(found) < limit:
            if predicate(store, pos):
                found.append(pos)
            pos += 1
        return found

    def _lookup(self, store: Store, pos: int, predicate: Predicate, ids: list[int], limit: int) -> list[int]:
        """:meth:`_scan` when an ``and`` filter lists the data ids (a push's records fetched by
        id): those records only, found by id as 简道云's own index would, not the whole form."""
        found = sorted(p for i in ids if (p := store.find(i)) is not None and p >= pos)
        return [p for p in found if predicate(store, p)][:limit]

    def _scan_window(
        self, store: Store, pos: int, predicate: Predicate, window: Window, limit: int
    ) -> list[int]:
        """:meth:`_scan` when an ``and`` filter bounds a time column: its bounds are checked a chunk
        at a time in a comprehension, and the whole filter only on the rows within them."""
        field, low, high = window
        column = store.created if field == "createTime" else store.updated
        low = -(1 << 62) if low is None else low
        high = 1 << 62 if high is None else high
        end = len(store)
        found: list[int] = []
        while pos < end:
            stop = min(end, pos + _CHUNK)
            chunk = column[pos:stop]
            for candidate in [i for i, value in enumerate(chunk, pos) if low <= value <= high]:
                if predicate(store, candidate):
                    found.append(candidate)
                    if len(found) == limit:
                        return found
            pos = stop
        return found

    def _render(self, form: Form, pos: int, fields: list[str] | None) -> dict[str, Any]:
        store = form.store
        record: dict[str, Any] = {
            "_id": f"{store.ids[pos]:024x}",
            "appId": self.app_id,
            "entryId": form.entry_id,
            "creator": self._entities[store.creator[pos]],
            "updater": self._entities[store.updater[pos]],
            "createTime": iso(store.created[pos]),
            "updateTime": iso(store.updated[pos]),
        }
        for widget, value in zip(form.widgets, store.values(pos), strict=True):
            record[widget.name] = value
        if fields is None:
            return record
        return {"_id": record["_id"], **{name: record[name] for name in fields if name in record}}

    # -- filters -------------------------------------------------------------------------------

    def _compile(self, form: Form, spec: object) -> Predicate | None:
        if spec is None:
            return None
        if not isinstance(spec, dict):
            raise error(4815)
        rel, cond = spec.get("rel"), spec.get("cond")
        if rel not in ("and", "or") or not isinstance(cond, list):
            raise error(4815)
        if not cond:
            return None
        tests = [self._condition(form, c) for c in cond]
        if rel == "and":
            return lambda store, pos: all(test(store, pos) for test in tests)
        return lambda store, pos: any(test(store, pos) for test in tests)

    def _field(self, form: Form, name: str) -> tuple[str, Callable[[Store, int], Any]]:
        """The kind of a filterable field and how to read it (as a comparable value) at a position."""
        if name == "createTime":
            return "datetime", lambda store, pos: store.created[pos]
        if name == "updateTime":
            return "datetime", lambda store, pos: store.updated[pos]
        if name == "creator":
            return "user", lambda store, pos: self.members[store.creator[pos]].username
        if name == "updater":
            return "user", lambda store, pos: self.members[store.updater[pos]].username
        if name in ("_id", "data_id"):
            return "id", lambda store, pos: store.ids[pos]
        index = form.widget_index.get(name)
        if index is None:
            raise error(4815)
        widget = form.widgets[index]
        kind = _KIND.get(widget.type, widget.type)
        if kind == "datetime":
            return kind, lambda store, pos: _instant_or_none(store.values(pos)[index])
        if kind == "user":
            return kind, lambda store, pos: _username_or_none(store.values(pos)[index])
        if kind in ("number", "text"):
            return kind, lambda store, pos: _none_if_empty(store.values(pos)[index])
        return "other", lambda store, pos: _none_if_empty(store.values(pos)[index])

    def _condition(self, form: Form, cond: object) -> Predicate:
        if not isinstance(cond, dict) or not isinstance(cond.get("field"), str):
            raise error(4815)
        kind, read = self._field(form, cond["field"])
        method = cond.get("method")
        allowed = _METHODS.get(kind, frozenset({"empty", "not_empty"}))
        if method not in allowed:
            raise error(4815)
        if method == "empty":
            return lambda store, pos: read(store, pos) is None
        if method == "not_empty":
            return lambda store, pos: read(store, pos) is not None
        values = cond.get("value")
        if not isinstance(values, list) or not values:
            raise error(4815)
        if method in ("in", "nin") and len(values) > _MAX_IN:
            raise error(4815)
        convert = _converter(kind)
        if method == "range":
            if len(values) != 2:
                raise error(4815)
            low, high = (None if v is None else convert(v) for v in values)
            if low is None and high is None:
                raise error(4815)

            def in_range(store: Store, pos: int) -> bool:
                value = read(store, pos)
                return value is not None and (low is None or value >= low) and (high is None or value <= high)

            return in_range
        targets = [convert(v) for v in values]
        first = targets[0]
        if method == "eq":
            return lambda store, pos: read(store, pos) == first
        if method == "ne":
            return lambda store, pos: read(store, pos) != first
        if method == "gt":
            return lambda store, pos: (v := read(store, pos)) is not None and v > first
        if method == "lt":
            return lambda store, pos: (v := read(store, pos)) is not None and v < first
        wanted = set(targets)
        if method == "in":
            return lambda store, pos: read(store, pos) in wanted
        return lambda store, pos: read(store, pos) not in wanted

    # -- contacts ------------------------------------------------------------------------------

    def _dept_args(self, body: dict[str, Any]) -> tuple[int, bool]:
        dept_no, has_child = body.get("dept_no"), body.get("has_child", False)
        if not isinstance(dept_no, int) or isinstance(dept_no, bool) or not isinstance(has_child, bool):
            raise error(1)
        if all(d.dept_no != dept_no for d in self.departments):
            raise error(6002)
        return dept_no, has_child

    def _below(self, dept_no: int, has_child: bool) -> list[Department]:
        children = [d for d in self.departments if d.parent_no == dept_no]
        if not has_child:
            return children
        found: list[Department] = []
        for child in children:
            found.append(child)
            found.extend(self._below(child.dept_no, True))
        return sorted(found, key=lambda d: d.dept_no)

    def _department_list(self, body: dict[str, Any]) -> Any:
        dept_no, has_child = self._dept_args(body)
        return {"departments": [_department(d) for d in self._below(dept_no, has_child)]}

    def _department_list_v6(self, body: dict[str, Any]) -> Any:
        dept_no, has_child = self._dept_args(body)
        departments = []
        for d in self._below(dept_no, has_child):
            siblings = [s.dept_no for s in self.departments if s.parent_no == d.parent_no]
            departments.append({**_department(d), "seq": siblings.index(d.dept_no) + 1})
        return {"departments": departments}

    def _department_users(self, body: dict[str, Any]) -> Any:
        dept_no, has_child = self._dept_args(body)
        wanted = {dept_no} | ({d.dept_no for d in self._below(dept_no, True)} if has_child else set())
        return {"users": [_user(m) for m in self.members if wanted.intersection(m.departments)]}

    def _user_get(self, body: dict[str, Any]) -> Any:
        username = body.get("username")
        if not isinstance(username, str) or not username:
            raise error(1)
        index = self._member_index.get(username)
        if index is None:
            raise error(1010)
        return {"user": _user(self.members[index])}


def _department(d: Department) -> dict[str, Any]:
    return {"dept_no": d.dept_no, "name": d.name, "parent_no": d.parent_no, "type": 0, "status": 1}


def _user(m: Member) -> dict[str, Any]:
    return {
        "username": m.username,
        "name": m.name,
        "departments": list(m.departments),
        "type": 0,
        "status": 1,
    }


def _time_window(spec: Any) -> Window | None:
    """The bounds an ``and`` filter (already validated) puts on ``createTime`` or ``updateTime``."""
    if spec.get("rel") != "and":
        return None
    for cond in spec["cond"]:
        if cond["field"] in ("createTime", "updateTime") and cond["method"] in ("range", "eq"):
            values = cond["value"]
            low = None if values[0] is None else parse_instant(values[0])
            high = low if cond["method"] == "eq" else None if values[1] is None else parse_instant(values[1])
            return cond["field"], low, high
    return None


def _listed_ids(spec: Any) -> list[int] | None:
    """The data ids an ``and`` filter (already validated) requires with ``in``, if any."""
    if spec.get("rel") != "and":
        return None
    for cond in spec["cond"]:
        if cond["field"] in ("_id", "data_id") and cond["method"] == "in":
            return [int(v, 16) for v in cond["value"]]  # each checked by _id_value
    return None


def _page(records: Iterable[dict[str, Any]]) -> bytes:
    return b'{"data":[' + b",".join(orjson.dumps(record) for record in records) + b"]}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _none_if_empty(value: Any) -> Any:
    return None if value in (None, "", []) else value


def _instant_or_none(value: Any) -> int | None:
    return None if value in (None, "") else parse_instant(value)


def _username_or_none(value: Any) -> str | None:
    return value.get("username") if isinstance(value, dict) else None


def _converter(kind: str) -> Callable[[Any], Any]:
    if kind == "datetime":
        return parse_instant
    if kind == "id":
        return _id_value
    if kind == "number":
        return _number_value
    return _string_value


def _id_value(value: Any) -> int:
    if not isinstance(value, str) or not _HEX24.fullmatch(value):
        raise error(4815)
    return int(value, 16)


def _number_value(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(4815)
    return value


def _string_value(value: Any) -> str:
    if not isinstance(value, str):
        raise error(4815)
    return value
