"""Datasets for the 简道云 (Jiandaoyun) emulator: the Maven deals as a 商机 form, and synthetic forms.

A :class:`Dataset` is columnar so that a million records cost a few arrays, not a million dicts:
``created`` / ``updated`` (epoch ms), ``owner`` (the index of the member who created and last
updated the record) and ``values(key)``, which renders the widget values of row ``key`` in the
API's own shapes (text as strings, numbers as numbers, datetimes as ISO UTC strings with
milliseconds, member widgets as member objects) in the order of ``widgets``.

The 商机 form (:func:`maven_form`):

- 商机编号 (text) ← ``opportunity_id``; 负责人 (user) ← ``sales_agent`` as a member;
  产品 (combo) ← ``product``; 客户 (text) ← ``account`` (``""`` when blank);
  销售阶段 (combo) ← ``deal_stage`` (Prospecting→初步接洽, Engaging→需求沟通, Won→赢单, Lost→输单);
  接洽日期 / 成交日期 (datetime) ← ``engage_date`` / ``close_date`` at midnight UTC (``null`` when
  blank); 金额 (number) ← ``close_value`` (``null`` when blank);
- rows keep the CSV order, which is the order of their data ids: row ``i`` was created at
  ``CREATED_FROM + i`` minutes; an open deal was last updated when it was created, a closed one at
  10:00 UTC of its close date (or when it was created, if that is later), so that many closed deals
  share one ``updateTime``;
- members: the 35 agents of ``sales_teams.csv`` (username = the name in lower case with ``_``
  for spaces and dashes), each in the department of their manager's team; departments: the company
  (``dept_no`` 1), under it the regional offices, under each office its managers' teams (named
  after the manager).

:func:`synthetic` builds ``n`` deals of the same form from the same members, products and accounts,
with values derived from the row number, in well under a second per million rows.
"""

from __future__ import annotations

import csv
import os
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(
    os.environ.get("CRM_DATA_DIR", Path(__file__).resolve().parents[4].parent / "shared" / "data")
).resolve()
MAVEN_DIR = DATA_DIR / "maven_crm_sales_opportunities"

APP_ID = "6566f0a1c2d3e4f5a6b7c8d9"
ENTRY_ID = "6566f0b2c2d3e4f5a6b7c8e0"
APP_NAME = "销售管理"
FORM_NAME = "商机"

#: When row 0 of a dataset was created; row ``i`` was created ``i`` minutes later.
CREATED_FROM = datetime(2016, 10, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE_MS = 60_000
_DAY_MS = 86_400_000
#: Closed deals were last touched at this hour (UTC) of their close date.
_CLOSE_HOUR_MS = 10 * 3_600_000

STAGES: dict[str, str] = {
    "Prospecting": "初步接洽",
    "Engaging": "需求沟通",
    "Won": "赢单",
    "Lost": "输单",
}


@dataclass(frozen=True)
class Widget:
    name: str
    label: str
    type: str


#: The 商机 form's widgets, in form order.
WIDGETS: tuple[Widget, ...] = (
    Widget("_widget_1701000000001", "商机编号", "text"),
    Widget("_widget_1701000000002", "负责人", "user"),
    Widget("_widget_1701000000003", "产品", "combo"),
    Widget("_widget_1701000000004", "客户", "text"),
    Widget("_widget_1701000000005", "销售阶段", "combo"),
    Widget("_widget_1701000000006", "接洽日期", "datetime"),
    Widget("_widget_1701000000007", "成交日期", "datetime"),
    Widget("_widget_1701000000008", "金额", "number"),
)


@dataclass
class Member:
    username: str
    name: str
    departments: list[int]

    def entity(self) -> dict[str, Any]:
        """The member as member widgets, ``creator`` and ``updater`` render it."""
        return {
            "name": self.name,
            "username": self.username,
            "status": 1,
            "type": 0,
            "departments": list(self.departments),
        }


@dataclass(frozen=True)
class Department:
    dept_no: int
    name: str
    parent_no: int | None


@dataclass
class Dataset:
    """One app with one form, its records (columnar) and the company's contacts."""

    widgets: tuple[Widget, ...]
    members: list[Member]
    departments: list[Department]
    created: array[int]
    updated: array[int]
    owner: array[int]
    values: Callable[[int], tuple[Any, ...]]
    app_id: str = APP_ID
    app_name: str = APP_NAME
    entry_id: str = ENTRY_ID
    form_name: str = FORM_NAME

    def __len__(self) -> int:
        return len(self.created)


def ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


@lru_cache(maxsize=1 << 16)
def iso(value: int) -> str:
    """Jiandaoyun's rendering of an instant: ISO 8601 UTC with milliseconds and a Z."""
    moment = _EPOCH + timedelta(milliseconds=value)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def username_of(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _read(name: str) -> list[dict[str, str]]:
    path = MAVEN_DIR / name
    assert path.is_file(), f"{path} not found; set CRM_DATA_DIR to the shared data folder"
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def contacts() -> tuple[list[Member], list[Department]]:
    """The agents as members and the company → office → manager's team department tree."""
    teams = _read("sales_teams.csv")
    offices = sorted({row["regional_office"] for row in teams})
    departments = [Department(1, "Maven 销售", None)]
    office_no: dict[str, int] = {}
    for office in offices:
        office_no[office] = len(departments) + 1
        departments.append(Department(office_no[office], office, 1))
    team_no: dict[str, int] = {}
    for row in teams:
        manager = row["manager"]
        if manager not in team_no:
            team_no[manager] = len(departments) + 1
            departments.append(Department(team_no[manager], manager, office_no[row["regional_office"]]))
    members = [
        Member(username_of(row["sales_agent"]), row["sales_agent"], [team_no[row["manager"]]])
        for row in teams
    ]
    return members, departments


def _day_ms(text: str) -> int | None:
    if not text:
        return None
    return ms(datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC))


def _updated(created: int, close_day: int | None) -> int:
    if close_day is None:
        return created
    return max(created, close_day + _CLOSE_HOUR_MS)


def maven_form() -> Dataset:
    """The 8,800 Maven deals as the 商机 form, in CSV order."""
    members, departments = contacts()
    member_index = {member.name: i for i, member in enumerate(members)}
    entities = [member.entity() for member in members]
    start = ms(CREATED_FROM)
    rows: list[tuple[Any, ...]] = []
    created = array("q")
    updated = array("q")
    owner = array("i")
    for i, row in enumerate(_read("sales_pipeline.csv")):
        agent = member_index[row["sales_agent"]]
        engage = _day_ms(row["engage_date"])
        close = _day_ms(row["close_date"])
        value = row["close_value"]
        rows.append(
            (
                row["opportunity_id"],
                entities[agent],
                row["product"],
                row["account"],
                STAGES[row["deal_stage"]],
                None if engage is None else iso(engage),
                None if close is None else iso(close),
                None if value == "" else _number(value),
            )
        )
        made = start + i * _MINUTE_MS
        created.append(made)
        updated.append(_updated(made, close))
        owner.append(agent)
    return Dataset(WIDGETS, members, departments, created, updated, owner, rows.__getitem__)


def _number(text: str) -> int | float:
    number = float(text)
    return int(number) if number.is_integer() else number


def synthetic(n: int, *, seed: int = 7) -> Dataset:
    """``n`` deals of the 商机 form with values derived from the row number (deterministic)."""
    members, departments = contacts()
    entities = [member.entity() for member in members]
    products = sorted({row["product"]: row["sales_price"] for row in _read("products.csv")}.items())
    accounts = [row["account"] for row in _read("accounts.csv")]
    stages = list(STAGES.values())
    start = ms(CREATED_FROM)
    first_engage = _day_ms("2016-10-20")
    assert first_engage is not None

    def mix(key: int) -> int:
        return ((key + seed) * 2654435761 + 0x9E3779B9) & 0xFFFFFFFF

    def close_day(key: int) -> int | None:
        h = mix(key)
        if (h >> 16) % 4 < 2:
            return None
        return first_engage + ((h >> 3) % 400) * _DAY_MS + (1 + (h >> 20) % 120) * _DAY_MS

    def values(key: int) -> tuple[Any, ...]:
        h = mix(key)
        stage = (h >> 16) % 4
        product, price = products[(h >> 8) % len(products)]
        engage = None if stage == 0 else first_engage + ((h >> 3) % 400) * _DAY_MS
        close = close_day(key)
        amount: int | None = None
        if stage == 2:
            amount = int(price) - (h >> 24) % 50
        elif stage == 3:
            amount = 0
        return (
            f"SY{key:08X}",
            entities[h % len(members)],
            product,
            "" if (h >> 12) % 7 == 0 else accounts[(h >> 12) % len(accounts)],
            stages[stage],
            None if engage is None else iso(engage),
            None if close is None else iso(close),
            amount,
        )

    created = array("q", range(start, start + n * _MINUTE_MS, _MINUTE_MS))
    updated = array("q", created)
    owner = array("i", bytes(4 * n))
    agents = len(members)
    for key in range(n):
        h = mix(key)
        owner[key] = h % agents
        if (h >> 16) % 4 >= 2:
            updated[key] = _updated(created[key], close_day(key))
    return Dataset(WIDGETS, members, departments, created, updated, owner, values)


def widget_by_label(widgets: Sequence[Widget], label: str) -> Widget:
    return next(widget for widget in widgets if widget.label == label)


# -- the customers (客户) and follow-up (跟进记录) forms ------------------------------------------------

CUSTOMERS_ENTRY_ID = "6566f0b2c2d3e4f5a6b7c8e1"
FOLLOWUPS_ENTRY_ID = "6566f0b2c2d3e4f5a6b7c8e2"

#: The 客户 form's widgets: the customer's name is what the deals' 客户 field holds.
CUSTOMER_WIDGETS: tuple[Widget, ...] = (
    Widget("_widget_1702000000001", "客户名称", "text"),
    Widget("_widget_1702000000002", "负责人", "user"),
    Widget("_widget_1702000000003", "所属行业", "combo"),
    Widget("_widget_1702000000004", "客户级别", "combo"),
    Widget("_widget_1702000000005", "上级客户", "text"),
    Widget("_widget_1702000000006", "创建日期", "datetime"),
)
#: The 跟进记录 form's widgets: 关联商机 is a linked-data widget holding the deal's data id.
FOLLOWUP_WIDGETS: tuple[Widget, ...] = (
    Widget("_widget_1703000000001", "跟进方式", "combo"),
    Widget("_widget_1703000000002", "跟进时间", "datetime"),
    Widget("_widget_1703000000003", "跟进人", "user"),
    Widget("_widget_1703000000004", "关联客户", "text"),
    Widget("_widget_1703000000005", "关联商机", "linkdata"),
    Widget("_widget_1703000000006", "跟进内容", "textarea"),
)
#: The 跟进方式 options, in the order follow-ups cycle through them.
FOLLOWUP_METHODS = ("电话", "拜访", "会议", "微信", "邮件", "方案")


def tier(revenue: float) -> str:
    """The 客户级别 of a customer by its revenue (millions)."""
    return "战略客户" if revenue >= 5000 else "重点客户" if revenue >= 1000 else "普通客户"


def customers_form(members: Sequence[Member]) -> Dataset:
    """The 85 accounts of ``accounts.csv`` as the 客户 form: 客户名称 ← ``account``, 所属行业 ←
    ``sector``, 客户级别 ← :func:`tier` of ``revenue``, 上级客户 ← ``subsidiary_of``, 负责人 ←
    member ``i % len(members)``; customer ``i`` created (创建日期 too) ``i`` hours before
    :data:`CREATED_FROM`, last updated then."""
    entities = [member.entity() for member in members]
    rows: list[tuple[Any, ...]] = []
    created = array("q")
    owner = array("i")
    accounts = _read("accounts.csv")
    start = ms(CREATED_FROM) - len(accounts) * 3_600_000
    for i, row in enumerate(accounts):
        made = start + i * 3_600_000
        rows.append(
            (
                row["account"],
                entities[i % len(members)],
                row["sector"],
                tier(float(row["revenue"])),
                row["subsidiary_of"],
                iso(made),
            )
        )
        created.append(made)
        owner.append(i % len(members))
    return Dataset(
        CUSTOMER_WIDGETS,
        list(members),
        [],
        created,
        array("q", created),
        owner,
        rows.__getitem__,
        entry_id=CUSTOMERS_ENTRY_ID,
        form_name="客户",
    )


def followups_form(deals: Sequence[Mapping[str, Any]], members: Sequence[Member]) -> Dataset:
    """Follow-ups of ``deals`` (the 商机 form's records as the API renders them) as the 跟进记录 form.

    Deal ``k`` has ``k % 3`` follow-ups by its 负责人, about its 客户 and itself, the ``j``-th
    ``j + 1`` days after the deal was created, by :data:`FOLLOWUP_METHODS` ``[(k + j) % 6]``;
    every tenth deal's customer also has one not about a deal. A follow-up is created when it
    happened and not changed since; the form's rows are in the order they were created.
    """
    index = {member.username: i for i, member in enumerate(members)}
    owner_of = widget_by_label(WIDGETS, "负责人").name
    account_of = widget_by_label(WIDGETS, "客户").name
    found: list[tuple[int, int, tuple[Any, ...]]] = []
    for k, deal in enumerate(deals):
        person = deal[owner_of]
        made = ms(datetime.fromisoformat(deal["createTime"].replace("Z", "+00:00")))
        visits = [(j, deal["_id"]) for j in range(k % 3)]
        if k % 10 == 0 and deal[account_of]:
            visits.append((3, ""))
        for j, linked in visits:
            when = made + (j + 1) * _DAY_MS
            method = FOLLOWUP_METHODS[(k + j) % len(FOLLOWUP_METHODS)]
            about = f"{deal[account_of] or '客户'} {method}"
            found.append(
                (
                    when,
                    index[person["username"]],
                    (method, iso(when), person, deal[account_of], linked, about),
                )
            )
    found.sort(key=lambda item: item[0])
    created = array("q", (item[0] for item in found))
    rows = [item[2] for item in found]
    return Dataset(
        FOLLOWUP_WIDGETS,
        list(members),
        [],
        created,
        array("q", created),
        array("i", (item[1] for item in found)),
        rows.__getitem__,
        entry_id=FOLLOWUPS_ENTRY_ID,
        form_name="跟进记录",
    )
