"""The Huoban emulator answers as Huoban OpenAPI v1 does, over real HTTP (plain httpx)."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.connectors.rest.emulators.base import SimClock
from tests.connectors.rest.emulators.huoban import (
    BEIJING,
    DOCUMENTED_RATE_LIMIT,
    RATE_LIMITED_CODE,
    HuobanEmulator,
)
from tests.connectors.rest.emulators.huoban_data import FIELDS, maven_dir, maven_table, synthetic

LIST = "/openapi/v1/item/list"
START = datetime(2024, 1, 1, 9, tzinfo=BEIJING)


def post(emulator: HuobanEmulator, path: str, body: Any = None, *, key: str | None = None) -> Any:
    headers = {"Open-Authorization": f"Bearer {key or emulator.api_key}"}
    response = httpx.post(emulator.url + path, json=body if body is not None else {}, headers=headers)
    assert response.status_code == 200
    return response.json()


def items(emulator: HuobanEmulator, **body: Any) -> Any:
    answer = post(emulator, LIST, {"table_id": emulator.table_id, **body})
    assert answer["code"] == 0, answer
    return answer["data"]


def every(emulator: HuobanEmulator, limit: int = 100, **body: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    offset = 0
    while True:
        data = items(emulator, limit=limit, offset=offset, **body)
        out.extend(data["items"])
        if not data["has_more"]:
            return out
        offset += limit


@pytest.fixture(scope="module")
def maven() -> Iterator[HuobanEmulator]:
    with HuobanEmulator(maven_table()) as emulator:
        yield emulator


@pytest.fixture
def clock() -> SimClock:
    return SimClock(datetime(2025, 6, 1, 4, tzinfo=BEIJING))


@pytest.fixture
def small(clock: SimClock) -> Iterator[HuobanEmulator]:
    with HuobanEmulator(synthetic(45, start=START), clock=clock.now) as emulator:
        yield emulator


def csv_rows(name: str) -> list[dict[str, str]]:
    with (maven_dir() / name).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# -- the documented shapes -------------------------------------------------------------------------


def test_a_list_answer_has_the_documented_envelope_and_item_shape(maven: HuobanEmulator) -> None:
    answer = post(maven, LIST, {"table_id": maven.table_id, "limit": 1})
    as_number = post(maven, LIST, {"table_id": int(maven.table_id), "limit": 1})
    assert as_number["data"] == answer["data"]
    assert set(answer) == {"code", "message", "data", "trace_id"}
    assert (answer["code"], answer["message"]) == (0, "success")
    data = answer["data"]
    assert (data["total"], data["filtered"], data["has_more"], data["meta"]) == (8800, 8800, True, {})
    [item] = data["items"]
    assert set(item) == {"item_id", "title", "fields", "created_by", "created_on", "updated_by", "updated_on"}
    assert item["item_id"] == "2300000000000001"
    assert item["title"] == "1C1I7A6R"
    assert item["created_on"] == "2016-10-20 09:00:00"
    assert item["updated_on"] == "2017-03-01 18:00:00"
    moses = {
        "user_id": "1000005",
        "name": "Moses Frase",
        "avatar": "https://hb-v4-public-oss.huoban.com/user_avatar/1000005/0",
    }
    assert item["created_by"] == item["updated_by"] == moses
    assert item["fields"] == {
        FIELDS.number: "1C1I7A6R",
        FIELDS.owner: [moses],
        FIELDS.product: "GTX Plus Basic",
        FIELDS.account: "Cancity",
        FIELDS.stage: [{"id": "3", "name": "赢单"}],
        FIELDS.engaged: "2016-10-20",
        FIELDS.closed: "2017-03-01",
        FIELDS.amount: 1054,
        FIELDS.region: [{"id": "1", "name": "中部"}],
        FIELDS.manager: "Dustin Brinkmann",
    }


def test_empty_values_are_left_out_of_fields(maven: HuobanEmulator) -> None:
    prospect = items(maven, limit=1, filter={"and": [{"field": FIELDS.stage, "query": {"eq": ["1"]}}]})
    fields = prospect["items"][0]["fields"]
    assert FIELDS.engaged not in fields
    assert FIELDS.closed not in fields
    assert FIELDS.amount not in fields


def test_the_table_config_lists_fields_with_types_and_options(maven: HuobanEmulator) -> None:
    answer = post(maven, f"/openapi/v1/table/{maven.table_id}")
    table = answer["data"]["table"]
    assert (table["table_id"], table["name"], table["space_id"]) == (maven.table_id, "商机", maven.space_id)
    by_name = {f["name"]: f for f in table["fields"]}
    assert list(by_name) == [
        "商机编号",
        "负责人",
        "产品",
        "客户",
        "销售阶段",
        "接洽日期",
        "成交日期",
        "金额",
        "区域",
        "经理",
    ]
    assert {name: f["field_type"] for name, f in by_name.items()} == {
        "商机编号": "text",
        "负责人": "user",
        "产品": "text",
        "客户": "text",
        "销售阶段": "category",
        "接洽日期": "date",
        "成交日期": "date",
        "金额": "number",
        "区域": "category",
        "经理": "text",
    }
    options = by_name["销售阶段"]["config"]["options"]
    assert [(o["id"], o["name"]) for o in options] == [
        ("1", "初步接洽"),
        ("2", "需求沟通"),
        ("3", "赢单"),
        ("4", "输单"),
    ]
    assert by_name["金额"]["field_id"] == FIELDS.amount


def test_with_field_config_puts_the_fields_in_meta(maven: HuobanEmulator) -> None:
    data = items(maven, limit=1, with_field_config=1)
    assert [f["field_id"] for f in data["meta"]["fields"]][:2] == [FIELDS.number, FIELDS.owner]


def test_spaces_tables_and_a_single_item(maven: HuobanEmulator) -> None:
    spaces = httpx.get(
        maven.url + "/openapi/v1/space/list", headers={"Open-Authorization": f"Bearer {maven.api_key}"}
    ).json()
    assert spaces["data"]["spaces"] == [{"space_id": maven.space_id, "name": "销售管理"}]
    tables = post(maven, "/openapi/v1/table/list", {"space_id": maven.space_id})["data"]["tables"]
    assert tables == [{"table_id": maven.table_id, "name": "商机", "space_id": maven.space_id}]
    item = post(maven, "/openapi/v1/item/2300000000008800")["data"]["item"]
    assert item["title"] == csv_rows("sales_pipeline.csv")[-1]["opportunity_id"]


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Open-Authorization": "Bearer wrong"},
        {"Authorization": "Bearer KEY"},
        {"Open-Authorization": "KEY"},
    ],
)
def test_a_bad_or_missing_key_is_refused_with_code_100(
    small: HuobanEmulator, headers: dict[str, str]
) -> None:
    headers = {k: v.replace("KEY", small.api_key) for k, v in headers.items()}
    response = httpx.post(small.url + LIST, json={"table_id": small.table_id}, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"code": 100, "message": "authentication failed"}


def test_documented_error_codes(small: HuobanEmulator) -> None:
    not_found = {"code": 3500002, "message": "数据不存在或已删除"}
    assert post(small, LIST, {"table_id": "2100000000000999"}) == not_found
    assert post(small, "/openapi/v1/table/2100000000000999") == not_found
    assert post(small, "/openapi/v1/item/2399999999999999") == not_found
    missing = "One of the parameters specified was missing or invalid. parameters name "
    assert post(small, LIST, {}) == {"code": 502, "message": missing + "table_id"}
    assert post(small, "/openapi/v1/table/list", {}) == {"code": 502, "message": missing + "space_id"}
    assert post(small, LIST, {"table_id": small.table_id, "limit": "many"})["code"] == 502
    bad_filter = {"and": [{"field": "no-such-field", "query": {"eq": 1}}]}
    assert post(small, LIST, {"table_id": small.table_id, "filter": bad_filter})["code"] == 502
    assert (
        post(small, LIST, {"table_id": small.table_id, "order": {"field_id": "x", "type": "asc"}})["code"]
        == 502
    )
    assert post(small, "/openapi/v1/nothing/here") == {"code": 501, "message": "unknown method"}


def test_injected_faults_and_dropped_connections(small: HuobanEmulator) -> None:
    small.fail(LIST, 503, body={"code": 503, "message": "service unavailable"})
    response = httpx.post(
        small.url + LIST,
        json={"table_id": small.table_id},
        headers={"Open-Authorization": f"Bearer {small.api_key}"},
    )
    assert (response.status_code, response.json()["code"]) == (503, 503)
    small.fail(LIST, drop=True)
    with pytest.raises(httpx.TransportError):
        httpx.post(small.url + LIST, json={"table_id": small.table_id})
    assert items(small)["filtered"] == 45


# -- the rate limit --------------------------------------------------------------------------------


def test_the_rate_limit_is_counted_per_clock_second(small: HuobanEmulator, clock: SimClock) -> None:
    assert DOCUMENTED_RATE_LIMIT == 10
    small.rate_limit = 3
    answers = [post(small, LIST, {"table_id": small.table_id, "limit": 1})["code"] for _ in range(4)]
    assert answers == [0, 0, 0, RATE_LIMITED_CODE]
    assert post(small, LIST, {"table_id": small.table_id})["message"] == "请求过于频繁，请稍后再试"
    clock.advance(1)
    assert post(small, LIST, {"table_id": small.table_id})["code"] == 0
    small.rate_limit_status = 429
    clock.advance(1)
    for _ in range(3):
        post(small, LIST, {"table_id": small.table_id})
    response = httpx.post(
        small.url + LIST,
        json={"table_id": small.table_id},
        headers={"Open-Authorization": f"Bearer {small.api_key}"},
    )
    assert (response.status_code, response.json()["code"]) == (429, RATE_LIMITED_CODE)


# -- paging ----------------------------------------------------------------------------------------


def test_offset_paging_over_an_exact_multiple_of_the_page_size(small: HuobanEmulator) -> None:
    pages = [items(small, limit=15, offset=offset) for offset in (0, 15, 30, 45)]
    assert [len(p["items"]) for p in pages] == [15, 15, 15, 0]
    assert [p["has_more"] for p in pages] == [True, True, False, False]
    ids = [i["item_id"] for p in pages for i in p["items"]]
    assert ids == [str(2300000000000001 + k) for k in range(45)]
    assert all(p["total"] == p["filtered"] == 45 for p in pages)


def test_limit_defaults_to_20_and_is_capped_at_100(clock: SimClock) -> None:
    with HuobanEmulator(synthetic(150, start=START), clock=clock.now) as emulator:
        assert len(items(emulator)["items"]) == 20
        capped = items(emulator, limit=500)
        assert (len(capped["items"]), capped["has_more"]) == (100, True)
        emulator.max_page_size = 30
        assert len(items(emulator, limit=50)["items"]) == 30


def test_an_empty_result(small: HuobanEmulator) -> None:
    data = items(small, filter={"and": [{"field": "updated_on", "query": {"gt": "2030-01-01 00:00:00"}}]})
    assert (data["total"], data["filtered"], data["has_more"], data["items"]) == (45, 0, False, [])


def test_order_by_a_field_and_descending(small: HuobanEmulator) -> None:
    down = every(small, order={"field_id": "item_id", "type": "desc"})
    assert [i["item_id"] for i in down] == [str(2300000000000045 - k) for k in range(45)]
    by_amount = every(small, order={"field_id": FIELDS.amount, "type": "desc"})
    amounts = [i["fields"].get(FIELDS.amount) for i in by_amount]
    present = [a for a in amounts if a is not None]
    assert present == sorted(present, reverse=True)
    assert len(present) == 22  # Won and Lost deals of 45 cycling through four stages


# -- filters ---------------------------------------------------------------------------------------


def test_filters_on_fields_match_the_csv(maven: HuobanEmulator) -> None:
    deals = csv_rows("sales_pipeline.csv")

    def count(filter_: dict[str, Any]) -> int:
        return int(items(maven, limit=1, filter=filter_)["filtered"])

    won = sum(d["deal_stage"] == "Won" for d in deals)
    assert count({"and": [{"field": FIELDS.stage, "query": {"eq": ["3"]}}]}) == won
    assert count({"and": [{"field": FIELDS.stage, "query": {"in": ["3", "4"]}}]}) == sum(
        d["deal_stage"] in ("Won", "Lost") for d in deals
    )
    assert count({"and": [{"field": FIELDS.stage, "query": {"nin": ["3", "4"]}}]}) == sum(
        d["deal_stage"] in ("Prospecting", "Engaging") for d in deals
    )
    assert count({"and": [{"field": FIELDS.amount, "query": {"gte": 1000, "lt": 2000}}]}) == sum(
        1 for d in deals if d["close_value"] and 1000 <= int(d["close_value"]) < 2000
    )
    assert count({"and": [{"field": FIELDS.closed, "query": {"em": True}}]}) == sum(
        not d["close_date"] for d in deals
    )
    assert count({"and": [{"field": FIELDS.account, "query": {"nem": True}}]}) == sum(
        bool(d["account"]) for d in deals
    )
    assert count({"and": [{"field": FIELDS.product, "query": {"eq": "GTXPro"}}]}) == sum(
        d["product"] == "GTXPro" for d in deals
    )
    assert count(
        {"and": [{"field": FIELDS.closed, "query": {"gte": "2017-06-01", "lte": "2017-06-30"}}]}
    ) == sum("2017-06-01" <= d["close_date"] <= "2017-06-30" for d in deals if d["close_date"])
    agent = "Darcel Schlecht"
    user_id = next(u.user_id for u in maven.users if u.name == agent)
    mine = {
        "or": [
            {"field": FIELDS.owner, "query": {"eq": [user_id]}},
            {"field": "created_by", "query": {"eq": "0"}},
        ]
    }
    assert count(mine) == sum(d["sales_agent"] == agent for d in deals)
    nested = {
        "and": [
            {"field": FIELDS.owner, "query": {"eq": [user_id]}},
            {
                "or": [
                    {"field": FIELDS.stage, "query": {"eq": ["3"]}},
                    {"field": FIELDS.stage, "query": {"eq": ["4"]}},
                ]
            },
        ]
    }
    assert count(nested) == sum(
        d["sales_agent"] == agent and d["deal_stage"] in ("Won", "Lost") for d in deals
    )
    assert count({"and": [{"field": FIELDS.stage, "query": {"ne": ["3"]}}]}) == len(deals) - won


def test_a_filter_on_updated_on_reads_beijing_time_and_whole_days(maven: HuobanEmulator) -> None:
    deals = csv_rows("sales_pipeline.csv")
    closed = sum(d["close_date"] == "2017-03-01" for d in deals)
    engaged = sum(not d["close_date"] and d["engage_date"] == "2017-03-01" for d in deals)
    assert closed > 0
    assert engaged > 0
    day = items(
        maven,
        limit=100,
        filter={"and": [{"field": "updated_on", "query": {"gte": "2017-03-01", "lte": "2017-03-01"}}]},
    )
    assert day["filtered"] == closed + engaged
    assert all(i["updated_on"].startswith("2017-03-01 ") for i in day["items"])
    assert [i["item_id"] for i in day["items"]] == sorted(i["item_id"] for i in day["items"])
    on_day = closed
    exact = {
        "and": [
            {"field": "updated_on", "query": {"gte": "2017-03-01 18:00:00", "lte": "2017-03-01 18:00:00"}}
        ]
    }
    assert items(maven, limit=1, filter=exact)["filtered"] == on_day
    after = {"and": [{"field": "updated_on", "query": {"gt": "2017-03-01 18:00:00"}}]}
    ordered = {"field_id": "updated_on", "type": "asc"}
    assert items(maven, limit=1, filter=after, order=ordered)["filtered"] == sum(
        d["close_date"] > "2017-03-01" for d in deals if d["close_date"]
    ) + sum(not d["close_date"] and d["engage_date"] > "2017-03-01" for d in deals) + sum(
        not d["engage_date"] for d in deals
    )


# -- changes, increments and ties ------------------------------------------------------------------


def test_updates_move_updated_on_and_ties_page_in_item_id_order(
    small: HuobanEmulator, clock: SimClock
) -> None:
    order = {"field_id": "updated_on", "type": "asc"}
    before = every(small, limit=10, order=order)
    cursor = before[-1]["updated_on"]
    assert cursor == "2024-12-31 09:14:00"  # 365 days after the start, 45 items three a minute
    clock.advance(60)
    moment = clock.now()
    for item_id in ("2300000000000030", "2300000000000002", "2300000000000017"):
        small.update(item_id, {"金额": 7}, at=moment)
    since = {"and": [{"field": "updated_on", "query": {"gt": cursor}}]}
    changed = every(small, limit=2, order=order, filter=since)
    assert [i["item_id"] for i in changed] == ["2300000000000002", "2300000000000017", "2300000000000030"]
    assert {i["updated_on"] for i in changed} == {"2025-06-01 04:01:00"}
    newest_first = items(small, limit=3, order={"field_id": "updated_on", "type": "desc"})["items"]
    assert [i["item_id"] for i in newest_first] == [
        "2300000000000030",
        "2300000000000017",
        "2300000000000002",
    ]
    assert all(i["fields"][FIELDS.amount] == 7 for i in changed)
    assert {i["created_on"] for i in changed} == {
        "2024-01-01 09:01:00",
        "2024-01-01 09:16:00",
        "2024-01-01 09:29:00",
    }


def test_create_and_delete(small: HuobanEmulator, clock: SimClock) -> None:
    new_id = small.create({"商机编号": "NEW1", FIELDS.stage: ["2"], "负责人": ["1000002"]}, by="1000002")
    assert new_id == "2300000000000046"
    newest = items(small, limit=1, order={"field_id": "created_on", "type": "desc"})["items"][0]
    assert newest["item_id"] == new_id
    assert newest["created_on"] == newest["updated_on"] == "2025-06-01 04:00:00"
    assert newest["created_by"]["name"] == "销售2"
    assert newest["fields"][FIELDS.stage] == [{"id": "2", "name": "需求沟通"}]
    small.delete("2300000000000005", at=clock.now())
    data = items(small, limit=100)
    assert (data["total"], data["filtered"]) == (45, 45)
    assert "2300000000000005" not in [i["item_id"] for i in data["items"]]
    assert post(small, "/openapi/v1/item/2300000000000005")["code"] == 3500002
    small.update(new_id, {FIELDS.stage: None})
    assert FIELDS.stage not in post(small, f"/openapi/v1/item/{new_id}")["data"]["item"]["fields"]


def test_paging_deep_into_a_large_table_costs_no_scan(clock: SimClock) -> None:
    emulator = HuobanEmulator(synthetic(100_000, start=START), clock=clock.now, record=False)
    window = {"and": [{"field": "updated_on", "query": {"gte": "2024-12-31 09:00:00"}}]}
    order = {"field_id": "updated_on", "type": "asc"}
    with emulator:
        last = items(emulator, limit=100, offset=99_950)
        late = items(emulator, limit=100, offset=99_990, order=order, filter=window)
    assert [i["item_id"] for i in last["items"]][-1] == str(2300000000000000 + 100_000)
    assert (len(late["items"]), late["filtered"], late["has_more"]) == (10, 100_000, False)
    # Neither request built a list of the matching ids: both pages were cut from the sorted indexes.
    assert emulator._select("item_id", False, None, None) is emulator._by_id
    assert not isinstance(emulator._select("updated_on", False, window, emulator._compile(window)), list)
    scanned = {"and": [{"field": FIELDS.amount, "query": {"gte": 0}}]}
    assert isinstance(emulator._select("item_id", False, scanned, emulator._compile(scanned)), list)


# -- the datasets ----------------------------------------------------------------------------------


def test_the_maven_table_matches_the_csv_files() -> None:
    deals = csv_rows("sales_pipeline.csv")
    teams = csv_rows("sales_teams.csv")
    table = maven_table()
    assert len(table.rows) == len(deals) == 8800
    assert [u.name for u in table.users] == [t["sales_agent"] for t in teams]
    assert len(table.users) == 35
    assert [r.values[FIELDS.number] for r in table.rows] == [d["opportunity_id"] for d in deals]
    stage_ids = {"Prospecting": "1", "Engaging": "2", "Won": "3", "Lost": "4"}
    assert Counter(r.values[FIELDS.stage][0] for r in table.rows) == Counter(
        stage_ids[d["deal_stage"]] for d in deals
    )
    assert sum(r.values.get(FIELDS.amount, 0) for r in table.rows) == sum(
        int(d["close_value"] or 0) for d in deals
    )
    owners = {u.user_id: u.name for u in table.users}
    assert [owners[r.values[FIELDS.owner][0]] for r in table.rows] == [d["sales_agent"] for d in deals]
    assert sum(FIELDS.account not in r.values for r in table.rows) == sum(not d["account"] for d in deals)
    assert all(r.created_on <= r.updated_on for r in table.rows)
    assert [r.created_on for r in table.rows][:2] == [
        datetime(2016, 10, 20, 9, tzinfo=BEIJING),
        datetime(2016, 10, 25, 9, 0, 1, tzinfo=BEIJING),
    ]


def test_synthetic_tables_have_ties_and_every_stage() -> None:
    table = synthetic(12, start=START)
    assert len(table.rows) == 12
    updated = [r.updated_on for r in table.rows]
    assert updated == sorted(updated)
    assert Counter(updated).most_common(1)[0][1] == 3
    assert updated[0] - START == timedelta(days=365)
    assert {r.values[FIELDS.stage][0] for r in table.rows} == {"1", "2", "3", "4"}
