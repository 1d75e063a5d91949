"""The Jiandaoyun emulator itself, driven with plain httpx as any client would drive the real API."""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.connectors.rest.emulators.base import SimClock
from tests.connectors.rest.emulators.jiandaoyun import DOCUMENTED_RATE_LIMITS, JiandaoyunEmulator
from tests.connectors.rest.emulators.jiandaoyun_data import MAVEN_DIR, maven_form, synthetic

LIST = "/api/v5/app/entry/data/list"
GET = "/api/v5/app/entry/data/get"
WIDGETS = "/api/v5/app/entry/widget/list"
ISO_MS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def maven() -> Iterator[JiandaoyunEmulator]:
    with JiandaoyunEmulator(clock=SimClock(START).now, record=False) as emulator:
        yield emulator


@pytest.fixture
def clock() -> SimClock:
    return SimClock(START)


@pytest.fixture
def small(clock: SimClock) -> Iterator[JiandaoyunEmulator]:
    with JiandaoyunEmulator(synthetic(200), clock=clock.now) as emulator:
        yield emulator


_clients: list[httpx.Client] = []


@pytest.fixture(scope="module", autouse=True)
def http() -> Iterator[httpx.Client]:
    """One client for the module: a new one per call would cost more than the emulator does."""
    with httpx.Client(timeout=10) as opened:
        _clients.append(opened)
        yield opened
        _clients.remove(opened)


def client() -> httpx.Client:
    return _clients[-1]


def call(emulator: JiandaoyunEmulator, path: str, body: Any, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or emulator.api_key}"}
    return client().post(emulator.url + path, json=body, headers=headers)


def form(emulator: JiandaoyunEmulator, **body: Any) -> dict[str, Any]:
    return {"app_id": emulator.app_id, "entry_id": emulator.entry_id, **body}


def page(emulator: JiandaoyunEmulator, **body: Any) -> list[dict[str, Any]]:
    response = call(emulator, LIST, form(emulator, **body))
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def every(
    emulator: JiandaoyunEmulator, limit: int = 100, **body: Any
) -> tuple[list[dict[str, Any]], list[int]]:
    """Every record, paged by data id as the documentation says; and the size of each page."""
    records: list[dict[str, Any]] = []
    sizes: list[int] = []
    after: str | None = None
    while True:
        got = page(emulator, limit=limit, **({"data_id": after} if after else {}), **body)
        sizes.append(len(got))
        records += got
        if len(got) < limit:
            return records, sizes
        after = got[-1]["_id"]


def error(response: httpx.Response) -> tuple[int, int]:
    return response.status_code, response.json()["code"]


def name(emulator: JiandaoyunEmulator, label: str) -> str:
    return emulator.widget(label).name


# -- the dataset --------------------------------------------------------------------------------


def read_csv(file: str) -> list[dict[str, str]]:
    with (MAVEN_DIR / file).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_the_maven_form_holds_every_deal_in_csv_order() -> None:
    rows = read_csv("sales_pipeline.csv")
    data = maven_form()
    assert len(data) == len(rows) == 8800
    values = [data.values(i) for i in range(len(data))]
    assert [v[0] for v in values] == [row["opportunity_id"] for row in rows]
    stages = Counter(v[4] for v in values)
    expected = Counter(row["deal_stage"] for row in rows)
    assert stages == {
        "初步接洽": expected["Prospecting"],
        "需求沟通": expected["Engaging"],
        "赢单": expected["Won"],
        "输单": expected["Lost"],
    }
    assert sum(v[5] is None for v in values) == sum(not row["engage_date"] for row in rows) == 500
    assert sum(v[6] is None for v in values) == sum(not row["close_date"] for row in rows)
    assert sum(v[7] is None for v in values) == sum(not row["close_value"] for row in rows)
    assert sum(v[7] or 0 for v in values) == sum(int(row["close_value"] or 0) for row in rows)
    assert [v[1]["name"] for v in values] == [row["sales_agent"] for row in rows]
    assert values[0][5] == "2016-10-20T00:00:00.000Z"
    assert list(data.created) == sorted(data.created)


def test_the_contacts_are_the_agents_in_their_managers_teams() -> None:
    teams = read_csv("sales_teams.csv")
    data = maven_form()
    assert [m.name for m in data.members] == [row["sales_agent"] for row in teams]
    assert len({m.username for m in data.members}) == 35
    assert all(re.fullmatch(r"[a-z_]+", m.username) for m in data.members)
    by_no = {d.dept_no: d for d in data.departments}
    offices = {row["regional_office"] for row in teams}
    managers = {row["manager"] for row in teams}
    assert len(data.departments) == 1 + len(offices) + len(managers)
    for member, row in zip(data.members, teams, strict=True):
        (team,) = member.departments
        assert by_no[team].name == row["manager"]
        parent = by_no[team].parent_no
        assert parent is not None
        assert by_no[parent].name == row["regional_office"]
        assert by_no[parent].parent_no == 1


def test_synthetic_forms_are_deterministic_and_in_id_order() -> None:
    data = synthetic(100_000)
    assert len(data) == 100_000
    assert data.values(99_999) == synthetic(100_000).values(99_999)
    assert list(data.created[:3]) == sorted(data.created[:3])
    assert all(u >= c for u, c in zip(data.updated[:1000], data.created[:1000], strict=True))
    assert {data.values(i)[4] for i in range(200)} == {"初步接洽", "需求沟通", "赢单", "输单"}


# -- paging -------------------------------------------------------------------------------------


def test_every_deal_comes_once_in_data_id_order(maven: JiandaoyunEmulator) -> None:
    records, sizes = every(maven)
    assert sizes == [100] * 88 + [0]  # 8,800 is an exact multiple of the page size
    ids = [r["_id"] for r in records]
    assert ids == sorted(ids)
    assert len(set(ids)) == 8800
    assert all(re.fullmatch(r"[0-9a-f]{24}", i) for i in ids)
    number = name(maven, "商机编号")
    assert [r[number] for r in records] == [row["opportunity_id"] for row in read_csv("sales_pipeline.csv")]


def test_a_record_has_the_documented_shape(maven: JiandaoyunEmulator) -> None:
    (first,) = page(maven, limit=1)
    assert first["appId"] == maven.app_id
    assert first["entryId"] == maven.entry_id
    for key in ("createTime", "updateTime"):
        assert ISO_MS_Z.fullmatch(first[key])
    moses = {"name": "Moses Frase", "username": "moses_frase", "status": 1, "type": 0, "departments": [5]}
    assert first["creator"] == first["updater"] == first[name(maven, "负责人")] == moses
    assert first[name(maven, "金额")] == 1054
    assert first[name(maven, "成交日期")] == "2017-03-01T00:00:00.000Z"
    assert first[name(maven, "销售阶段")] == "赢单"
    assert first["updateTime"] == "2017-03-01T10:00:00.000Z"
    prospect = page(
        maven, limit=1, filter={"rel": "and", "cond": [{"field": name(maven, "接洽日期"), "method": "empty"}]}
    )
    assert prospect[0][name(maven, "金额")] is None
    assert prospect[0][name(maven, "成交日期")] is None


def test_the_default_page_is_ten_and_limits_outside_1_to_100_are_refused(maven: JiandaoyunEmulator) -> None:
    assert len(page(maven)) == 10
    for limit in (0, 101, "10", 2.5):
        assert error(call(maven, LIST, form(maven, limit=limit))) == (400, 3005)
    assert error(call(maven, LIST, form(maven, data_id="nope"))) == (400, 3005)


def test_a_page_after_the_last_record_is_empty(small: JiandaoyunEmulator) -> None:
    records, sizes = every(small)
    assert sizes == [100, 100, 0]
    assert page(small, data_id=records[-1]["_id"]) == []
    assert len(page(small, data_id=records[150]["_id"], limit=100)) == 49


def test_fields_bring_the_id_and_the_named_fields(maven: JiandaoyunEmulator) -> None:
    amount = name(maven, "金额")
    got = page(maven, limit=2, fields=[amount, "updateTime", "_widget_nope"])
    assert [set(r) for r in got] == [{"_id", amount, "updateTime"}] * 2


# -- filters ------------------------------------------------------------------------------------


def test_filters_on_widgets(maven: JiandaoyunEmulator) -> None:
    stage, amount, owner = name(maven, "销售阶段"), name(maven, "金额"), name(maven, "负责人")
    rows = read_csv("sales_pipeline.csv")

    def count(rel: str, *cond: dict[str, Any]) -> int:
        records, _ = every(maven, filter={"rel": rel, "cond": list(cond)}, fields=[stage])
        return len(records)

    won = {"field": stage, "type": "combo", "method": "eq", "value": ["赢单"]}
    assert count("and", won) == sum(row["deal_stage"] == "Won" for row in rows)
    big = {"field": amount, "type": "number", "method": "gt", "value": [5000]}
    assert count("and", won, big) == sum(int(row["close_value"] or 0) > 5000 for row in rows)
    lost = {"field": stage, "method": "in", "value": ["输单"]}
    assert count("or", won, lost) == sum(row["deal_stage"] in ("Won", "Lost") for row in rows)
    moses = {"field": owner, "method": "eq", "value": ["moses_frase"]}
    assert count("and", moses) == sum(row["sales_agent"] == "Moses Frase" for row in rows)
    creator = {"field": "creator", "method": "nin", "value": ["moses_frase"]}
    assert count("and", creator) == sum(row["sales_agent"] != "Moses Frase" for row in rows)
    nothing = {"field": amount, "method": "range", "value": [10**9, None]}
    assert count("and", nothing) == 0


def test_records_listed_by_id_come_in_id_order_paged_and_filtered_further(maven: JiandaoyunEmulator) -> None:
    """A push's records fetched by id (``_id in``): only those, in data-id order, a page at a time
    after ``data_id``, and with the filter's other conditions applied."""
    stage = name(maven, "销售阶段")
    records, _ = every(maven, fields=[stage])
    chosen = records[::97][:60]
    listed = [r["_id"] for r in reversed(chosen)] + ["0" * 24]  # any order; one id of no record
    by_id = {"field": "_id", "method": "in", "value": listed}
    got, sizes = every(maven, limit=25, filter={"rel": "and", "cond": [by_id]}, fields=[stage])
    assert [r["_id"] for r in got] == [r["_id"] for r in chosen]
    assert sizes == [25, 25, 10]
    won = {"field": stage, "method": "eq", "value": ["赢单"]}
    got, _ = every(maven, limit=25, filter={"rel": "and", "cond": [won, by_id]}, fields=[stage])
    assert [r["_id"] for r in got] == [r["_id"] for r in chosen if r[stage] == "赢单"]
    assert 0 < len(got) < len(chosen)
    either, _ = every(maven, limit=25, filter={"rel": "or", "cond": [won, by_id]}, fields=[stage])
    assert {r["_id"] for r in either} == {r["_id"] for r in records if r[stage] == "赢单"} | {
        r["_id"] for r in chosen
    }


def test_datetime_filters_read_strings_without_an_offset_as_beijing_time(maven: JiandaoyunEmulator) -> None:
    engaged = name(maven, "接洽日期")
    rows = read_csv("sales_pipeline.csv")
    expected = sum(row["engage_date"] == "2016-10-20" for row in rows)
    for value in ("2016-10-20T00:00:00.000Z", "2016-10-20 08:00:00", "2016-10-20T08:00:00", 1476921600000):
        cond = [{"field": engaged, "type": "datetime", "method": "eq", "value": [value]}]
        records, _ = every(maven, filter={"rel": "and", "cond": cond})
        assert len(records) == expected, value
    window = [{"field": engaged, "method": "range", "value": ["2016-10-20", "2016-10-31T16:00:00Z"]}]
    records, _ = every(maven, filter={"rel": "and", "cond": window})
    assert len(records) == sum("2016-10-20" <= row["engage_date"] <= "2016-10-31" for row in rows)


def test_time_windows_find_what_a_full_scan_finds(maven: JiandaoyunEmulator) -> None:
    stage = name(maven, "销售阶段")
    june = ["2017-06-01T00:00:00Z", "2017-06-30T10:00:00Z"]
    window = {"field": "updateTime", "method": "range", "value": june}
    won = {"field": stage, "method": "eq", "value": ["赢单"]}
    fast, _ = every(maven, limit=7, filter={"rel": "and", "cond": [won, window]})
    alone, _ = every(maven, filter={"rel": "or", "cond": [window]})  # "or" takes the full scan
    assert [r["_id"] for r in fast] == [r["_id"] for r in alone if r[stage] == "赢单"]
    assert len(fast) > 7
    assert all("2017-06-01" <= r["updateTime"][:10] <= "2017-06-30" for r in alone)
    created = {"field": "createTime", "method": "eq", "value": ["2016-10-01T00:01:00.000Z"]}
    (second,) = page(maven, filter={"rel": "and", "cond": [created]})
    assert second[name(maven, "商机编号")] == read_csv("sales_pipeline.csv")[1]["opportunity_id"]


@pytest.mark.parametrize(
    "spec",
    [
        {"rel": "and", "cond": [{"field": "updateTime", "method": "gt", "value": ["2017-01-01T00:00:00Z"]}]},
        {"rel": "and", "cond": [{"field": "_widget_9", "method": "empty"}]},
        {"rel": "xor", "cond": []},
        {"rel": "and", "cond": [{"field": "updateTime", "method": "range", "value": ["not a date", None]}]},
        {"rel": "and", "cond": [{"field": "creator", "method": "in", "value": ["x"] * 1001}]},
        {"rel": "and", "cond": [{"field": "_id", "method": "ne", "value": ["0" * 24]}]},
    ],
)
def test_filters_the_documentation_does_not_allow_are_refused(maven: JiandaoyunEmulator, spec: Any) -> None:
    assert error(call(maven, LIST, form(maven, filter=spec))) == (400, 4815)


def test_increments_by_update_time_and_data_id(small: JiandaoyunEmulator, clock: SimClock) -> None:
    records, _ = every(small)
    ids = [r["_id"] for r in records]
    since = clock.now()
    clock.advance(60)
    tied = clock.now()
    for data_id in (ids[150], ids[3], ids[77]):  # three changes within one millisecond
        small.update(data_id, {"金额": 1})
    new = small.create({"商机编号": "NEW00001", "负责人": "carl_lin", "金额": 5}, creator="carl_lin")
    cond = [
        {"field": "updateTime", "type": "datetime", "method": "range", "value": [since.isoformat(), None]}
    ]
    changed, sizes = every(small, limit=2, filter={"rel": "and", "cond": cond})
    assert [r["_id"] for r in changed] == [ids[3], ids[77], ids[150], new]  # data-id order, not time order
    assert sizes == [2, 2, 0]
    stamp = tied.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert {r["updateTime"] for r in changed} == {stamp}
    assert new > ids[-1]
    assert small.get_record(new)["createTime"] == stamp
    assert changed[-1]["creator"]["username"] == "carl_lin"
    assert changed[-1][name(small, "负责人")]["name"] == "Carl Lin"
    assert changed[-1][name(small, "客户")] == ""  # an empty text widget
    assert changed[-1][name(small, "成交日期")] is None


def test_deleted_records_are_gone(small: JiandaoyunEmulator) -> None:
    records, _ = every(small)
    victim = records[100]["_id"]
    small.delete(victim)
    after, _ = every(small)
    assert len(after) == 199
    assert victim not in {r["_id"] for r in after}
    assert len(page(small, data_id=victim, limit=100)) == 99  # a deleted id still pages on
    assert error(call(small, GET, form(small, data_id=victim))) == (400, 4001)


# -- single records, widgets, apps --------------------------------------------------------------


def test_one_record(maven: JiandaoyunEmulator) -> None:
    (first,) = page(maven, limit=1)
    response = call(maven, GET, form(maven, data_id=first["_id"]))
    assert response.status_code == 200
    assert response.json() == {"data": first}
    assert error(call(maven, GET, form(maven, data_id="f" * 24))) == (400, 4001)
    assert error(
        call(maven, GET, {"app_id": maven.app_id, "entry_id": "x" * 24, "data_id": first["_id"]})
    ) == (
        400,
        3000,
    )
    assert error(call(maven, GET, {"entry_id": maven.entry_id, "data_id": first["_id"]})) == (400, 1)


def test_the_widget_list(small: JiandaoyunEmulator, clock: SimClock) -> None:
    body = call(small, WIDGETS, form(small)).json()
    assert [(w["label"], w["type"]) for w in body["widgets"]] == [
        ("商机编号", "text"),
        ("负责人", "user"),
        ("产品", "combo"),
        ("客户", "text"),
        ("销售阶段", "combo"),
        ("接洽日期", "datetime"),
        ("成交日期", "datetime"),
        ("金额", "number"),
    ]
    assert all(
        re.fullmatch(r"_widget_\d{13}", w["name"]) and w["widgetName"] == w["name"] for w in body["widgets"]
    )
    assert {"creator", "updater", "createTime", "updateTime"} <= {w["name"] for w in body["sysWidgets"]}
    clock.advance(3600)
    small.update(every(small)[0][0]["_id"], {"客户": "Acme Corporation"})
    assert call(small, WIDGETS, form(small)).json()["dataModifyTime"] == "2026-12-01T10:00:00.000Z"


def test_apps_and_forms(maven: JiandaoyunEmulator) -> None:
    apps = call(maven, "/api/v5/app/list", {}).json()
    assert apps == {"apps": [{"name": "销售管理", "app_id": maven.app_id}]}
    assert call(maven, "/api/v5/app/list", {"skip": 1}).json() == {"apps": []}
    forms = call(maven, "/api/v5/app/entry/list", {"app_id": maven.app_id}).json()
    assert forms == {"forms": [{"name": "商机", "app_id": maven.app_id, "entry_id": maven.entry_id}]}
    assert error(call(maven, "/api/v5/app/entry/list", {"app_id": "0" * 24})) == (400, 2004)


# -- contacts -----------------------------------------------------------------------------------


def test_departments_and_their_members(maven: JiandaoyunEmulator) -> None:
    top = call(maven, "/api/v5/corp/department/list", {"dept_no": 1}).json()["departments"]
    assert [(d["name"], d["parent_no"]) for d in top] == [("Central", 1), ("East", 1), ("West", 1)]
    assert all(d["type"] == 0 and d["status"] == 1 for d in top)
    tree = call(maven, "/api/v5/corp/department/list", {"dept_no": 1, "has_child": True}).json()[
        "departments"
    ]
    assert len(tree) == 9
    east = next(d["dept_no"] for d in top if d["name"] == "East")
    direct = call(maven, "/api/v5/corp/department/user/list", {"dept_no": east}).json()["users"]
    assert direct == []
    users = call(maven, "/api/v5/corp/department/user/list", {"dept_no": east, "has_child": True}).json()[
        "users"
    ]
    teams = read_csv("sales_teams.csv")
    assert [u["name"] for u in users] == [
        row["sales_agent"] for row in teams if row["regional_office"] == "East"
    ]
    assert set(users[0]) == {"username", "name", "departments", "type", "status"}
    everyone = call(maven, "/api/v5/corp/department/user/list", {"dept_no": 1, "has_child": True}).json()
    assert len(everyone["users"]) == 35
    assert error(call(maven, "/api/v5/corp/department/list", {"dept_no": 99})) == (400, 6002)
    v6 = call(maven, "/api/v6/corp/department/list", {"dept_no": 1}).json()["departments"]
    assert [(d["name"], d["seq"]) for d in v6] == [("Central", 1), ("East", 2), ("West", 3)]


def test_one_member(maven: JiandaoyunEmulator) -> None:
    user = call(maven, "/api/v5/corp/user/get", {"username": "carl_lin"}).json()
    carl = {"username": "carl_lin", "name": "Carl Lin", "departments": [10], "type": 0, "status": 1}
    assert user == {"user": carl}
    assert call(maven, "/api/v5/corp/user/get", {"username": "nobody"}).json() == {
        "code": 1010,
        "msg": "The member doesn't exist.",
    }


# -- refusals and limits ------------------------------------------------------------------------


def test_a_wrong_or_missing_key_is_refused(maven: JiandaoyunEmulator) -> None:
    response = call(maven, LIST, form(maven), key="wrong")
    assert response.status_code == 400
    assert response.json() == {"code": 8301, "msg": "Failed to verify the API key for authorization."}
    bare = httpx.post(maven.url + LIST, json=form(maven))
    assert error(bare) == (400, 8301)
    headers = {"Authorization": f"Bearer {maven.api_key}", "Content-Type": "application/json"}
    garbled = httpx.post(maven.url + LIST, content=b"{not json", headers=headers)
    assert garbled.status_code == 400
    assert garbled.json() == {"code": 1, "msg": "The request is invalid."}
    assert call(maven, "/api/v5/app/entry/nothing", {}).status_code == 404


def test_the_rate_limits_per_api_and_per_company(small: JiandaoyunEmulator, clock: SimClock) -> None:
    small.rate_limit = {LIST: 3}
    codes = [call(small, LIST, form(small, limit=1)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 400]
    refused = call(small, LIST, form(small, limit=1))
    assert refused.json() == {"code": 8304, "msg": "The call frequency exceeds the frequency limit."}
    assert call(small, WIDGETS, form(small)).status_code == 200  # another API has its own budget
    clock.advance(1.0)
    assert call(small, LIST, form(small, limit=1)).status_code == 200
    small.use_documented_rate_limits()
    assert small.rate_limit == DOCUMENTED_RATE_LIMITS
    small.global_rate_limit = 2
    clock.advance(1.0)
    call(small, LIST, form(small, limit=1))
    call(small, WIDGETS, form(small))
    assert error(call(small, GET, form(small, data_id="0" * 24))) == (400, 8303)
    clock.advance(0.5)
    assert error(call(small, LIST, form(small, limit=1))) == (400, 8303)  # a sliding second
    clock.advance(0.6)
    assert call(small, LIST, form(small, limit=1)).status_code == 200


def test_injected_faults(small: JiandaoyunEmulator) -> None:
    small.fail(LIST, 429, body={"code": 8303, "msg": "busy"})
    assert call(small, LIST, form(small)).status_code == 429
    small.fail(LIST, drop=True)
    with pytest.raises(httpx.TransportError):
        call(small, LIST, form(small))
    assert len(page(small)) == 10
    assert small.count(LIST, status=200) == 1
