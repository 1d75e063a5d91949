"""Datasets for the Huoban emulator: the Maven deals as a 商机 table, and synthetic tables of any size.

:func:`maven_table` reads ``../shared/data/maven_crm_sales_opportunities`` (or ``$CRM_DATA_DIR``):
one item per row of ``sales_pipeline.csv`` in file order (so ``item_id`` order is CSV order), the
35 agents of ``sales_teams.csv`` as users (user ids ``1000001`` … in file order), each deal's
agent in the 负责人 user field, with the agent's 区域 (regional office, a category) and 经理
(manager, as text) beside it. Values are as the CSV has them: 产品 keeps ``GTXPro``, an open
deal has no 客户 when the CSV has none, a Prospecting deal no dates and no 金额, a Lost deal 金额 0.

The CSV has no creation or modification times, so: ``created_on`` is the engage date at 09:00
Beijing time (Prospecting deals, which have none, were created on :data:`PROSPECTING_CREATED`),
plus the row's position in seconds so that creation order is file order; ``updated_on`` is the
close date at 18:00 when there is one, else ``created_on``. Many deals close on one day, so
``updated_on`` has ties (same second) across items.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.connectors.rest.emulators.huoban import BEIJING, Dataset, Field, Option, Row, User

TABLE_ID = "2100000000000001"
SPACE_ID = "4000000000000001"
PROSPECTING_CREATED = date(2017, 10, 1)

#: 销售阶段 options: the CSV's stage → (option id, 中文名).
STAGES: dict[str, tuple[str, str]] = {
    "Prospecting": ("1", "初步接洽"),
    "Engaging": ("2", "需求沟通"),
    "Won": ("3", "赢单"),
    "Lost": ("4", "输单"),
}
REGIONS: dict[str, tuple[str, str]] = {
    "Central": ("1", "中部"),
    "East": ("2", "东部"),
    "West": ("3", "西部"),
}


@dataclass(frozen=True)
class FieldIds:
    """The 商机 table's field ids, by role."""

    number: str = "2200000000000001"  # 商机编号 (text, the title)
    owner: str = "2200000000000002"  # 负责人 (user)
    product: str = "2200000000000003"  # 产品 (text)
    account: str = "2200000000000004"  # 客户 (text)
    stage: str = "2200000000000005"  # 销售阶段 (category)
    engaged: str = "2200000000000006"  # 接洽日期 (date)
    closed: str = "2200000000000007"  # 成交日期 (date)
    amount: str = "2200000000000008"  # 金额 (number)
    region: str = "2200000000000009"  # 区域 (category)
    manager: str = "2200000000000010"  # 经理 (text)


FIELDS = FieldIds()


def data_dir() -> Path:
    configured = os.environ.get("CRM_DATA_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[4].parent / "shared" / "data"


def maven_dir() -> Path:
    return data_dir() / "maven_crm_sales_opportunities"


def table_fields() -> list[Field]:
    return [
        Field(FIELDS.number, "商机编号", "text", required=True),
        Field(FIELDS.owner, "负责人", "user"),
        Field(FIELDS.product, "产品", "text"),
        Field(FIELDS.account, "客户", "text"),
        Field(
            FIELDS.stage,
            "销售阶段",
            "category",
            tuple(Option(oid, name, f"c{oid}") for oid, name in STAGES.values()),
        ),
        Field(FIELDS.engaged, "接洽日期", "date"),
        Field(FIELDS.closed, "成交日期", "date"),
        Field(FIELDS.amount, "金额", "number"),
        Field(
            FIELDS.region,
            "区域",
            "category",
            tuple(Option(oid, name, f"c{oid}") for oid, name in REGIONS.values()),
        ),
        Field(FIELDS.manager, "经理", "text"),
    ]


def _at(day: date, hour: int, seconds: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=BEIJING) + timedelta(seconds=seconds)


def maven_table() -> Dataset:
    """The 8,800 Maven deals as a 商机 table (see the module docstring)."""
    with (maven_dir() / "sales_teams.csv").open(newline="", encoding="utf-8") as handle:
        teams = list(csv.DictReader(handle))
    users = [User(str(1000001 + n), row["sales_agent"]) for n, row in enumerate(teams)]
    user_of = {u.name: u.user_id for u in users}
    team_of = {row["sales_agent"]: row for row in teams}
    rows: list[Row] = []
    with (maven_dir() / "sales_pipeline.csv").open(newline="", encoding="utf-8") as handle:
        for position, deal in enumerate(csv.DictReader(handle)):
            agent = deal["sales_agent"]
            owner = user_of[agent]
            values: dict[str, object] = {
                FIELDS.number: deal["opportunity_id"],
                FIELDS.owner: [owner],
                FIELDS.product: deal["product"],
                FIELDS.stage: [STAGES[deal["deal_stage"]][0]],
                FIELDS.region: [REGIONS[team_of[agent]["regional_office"]][0]],
                FIELDS.manager: team_of[agent]["manager"],
            }
            if deal["account"]:
                values[FIELDS.account] = deal["account"]
            if deal["engage_date"]:
                values[FIELDS.engaged] = deal["engage_date"]
            if deal["close_date"]:
                values[FIELDS.closed] = deal["close_date"]
            if deal["close_value"]:
                values[FIELDS.amount] = int(deal["close_value"])
            engaged = date.fromisoformat(deal["engage_date"]) if deal["engage_date"] else PROSPECTING_CREATED
            created = _at(engaged, 9, position)
            updated = _at(date.fromisoformat(deal["close_date"]), 18) if deal["close_date"] else created
            rows.append(Row(values, created, max(created, updated), owner, owner))
    return Dataset(TABLE_ID, "商机", SPACE_ID, "销售管理", table_fields(), users, rows)


def synthetic(n: int, *, users: int = 5, start: datetime | None = None) -> Dataset:
    """``n`` deals cycling through stages, products and owners. Item ``k`` is created ``k`` minutes
    after ``start`` and updated 365 days after ``start`` plus ``k // 3`` minutes: three items share
    each ``updated_on`` (ties), and ``updated_on`` order is creation order."""
    base = start or datetime(2024, 1, 1, 9, tzinfo=BEIJING)
    people = [User(str(1000001 + k), f"销售{k + 1}") for k in range(users)]
    stages = list(STAGES)
    regions = list(REGIONS)
    rows: list[Row] = []
    days: dict[datetime, tuple[str, str]] = {}
    number, owner_id, product, account, stage_id = (
        FIELDS.number,
        FIELDS.owner,
        FIELDS.product,
        FIELDS.account,
        FIELDS.stage,
    )
    for k in range(n):
        owner = people[k % users].user_id
        stage = stages[k % len(stages)]
        created = base + timedelta(minutes=k)
        midnight = created.replace(hour=0, minute=0)
        if midnight not in days:
            days[midnight] = (created.date().isoformat(), (created.date() + timedelta(days=30)).isoformat())
        engaged, closed = days[midnight]
        values: dict[str, object] = {
            number: f"SYN{k:07d}",
            owner_id: [owner],
            product: f"产品{k % 7}",
            account: f"客户{k % 11}",
            stage_id: [STAGES[stage][0]],
            FIELDS.engaged: engaged,
            FIELDS.region: [REGIONS[regions[k % len(regions)]][0]],
            FIELDS.manager: f"经理{k % users % 2 + 1}",
        }
        if stage in ("Won", "Lost"):
            values[FIELDS.closed] = closed
            values[FIELDS.amount] = 1000 + k if stage == "Won" else 0
        rows.append(Row(values, created, base + timedelta(days=365, minutes=k // 3), owner, owner))
    return Dataset(TABLE_ID, "商机", SPACE_ID, "销售管理", table_fields(), people, rows)


# -- the customers (客户) and follow-up (跟进记录) tables ------------------------------------------------

CUSTOMERS_TABLE_ID = "2100000000000002"
FOLLOWUPS_TABLE_ID = "2100000000000003"
#: 客户级别 and 跟进方式 options: (option id, name).
TIERS: tuple[tuple[str, str], ...] = (("1", "战略客户"), ("2", "重点客户"), ("3", "普通客户"))
METHODS: tuple[tuple[str, str], ...] = (
    ("1", "电话"),
    ("2", "拜访"),
    ("3", "会议"),
    ("4", "微信"),
    ("5", "邮件"),
    ("6", "方案"),
)
INDUSTRIES = ("制造业", "零售", "软件", "医疗", "金融")


@dataclass(frozen=True)
class CustomerFieldIds:
    name: str = "2210000000000001"  # 客户名称 (text, the title)
    owner: str = "2210000000000002"  # 负责人 (user)
    industry: str = "2210000000000003"  # 所属行业 (text)
    tier: str = "2210000000000004"  # 客户级别 (category)
    parent: str = "2210000000000005"  # 上级客户 (text: the parent's name)
    created: str = "2210000000000006"  # 创建日期 (date)


@dataclass(frozen=True)
class FollowupFieldIds:
    subject: str = "2220000000000001"  # 跟进内容 (text, the title)
    method: str = "2220000000000002"  # 跟进方式 (category)
    when: str = "2220000000000003"  # 跟进时间 (date and time)
    owner: str = "2220000000000004"  # 跟进人 (user)
    customer: str = "2220000000000005"  # 关联客户 (relation to 客户)
    deal: str = "2220000000000006"  # 关联商机 (relation to 商机)


CUSTOMER_FIELDS = CustomerFieldIds()
FOLLOWUP_FIELDS = FollowupFieldIds()


def customers_table(deals: Dataset) -> Dataset:
    """The customers the deals name in 客户, as the 客户 table: one per name in order of first
    appearance, owned by the owner of that first deal and created a day before it; customer ``c``'s
    所属行业 is :data:`INDUSTRIES` ``[c % 5]``, its 客户级别 :data:`TIERS` ``[c % 3]``, and every
    fourth one (after the first) names the first as its 上级客户."""
    account = FIELDS.account
    first: dict[str, Row] = {}
    for row in deals.rows:
        name = row.values.get(account)
        if isinstance(name, str) and name and name not in first:
            first[name] = row
    rows = []
    top = next(iter(first), None)
    for c, (name, deal) in enumerate(first.items()):
        created = deal.created_on - timedelta(days=1)
        values: dict[str, object] = {
            CUSTOMER_FIELDS.name: name,
            CUSTOMER_FIELDS.owner: [deal.created_by],
            CUSTOMER_FIELDS.industry: INDUSTRIES[c % len(INDUSTRIES)],
            CUSTOMER_FIELDS.tier: [TIERS[c % len(TIERS)][0]],
            CUSTOMER_FIELDS.created: created.astimezone(BEIJING).date().isoformat(),
        }
        if c % 4 == 3 and top is not None:
            values[CUSTOMER_FIELDS.parent] = top
        rows.append(Row(values, created, created, deal.created_by, deal.created_by))
    rows.sort(key=lambda r: r.created_on)
    fields = [
        Field(CUSTOMER_FIELDS.name, "客户名称", "text", required=True),
        Field(CUSTOMER_FIELDS.owner, "负责人", "user"),
        Field(CUSTOMER_FIELDS.industry, "所属行业", "text"),
        Field(CUSTOMER_FIELDS.tier, "客户级别", "category", tuple(Option(i, n, f"c{i}") for i, n in TIERS)),
        Field(CUSTOMER_FIELDS.parent, "上级客户", "text"),
        Field(CUSTOMER_FIELDS.created, "创建日期", "date"),
    ]
    return Dataset(
        CUSTOMERS_TABLE_ID, "客户", deals.space_id, deals.space_name, fields, list(deals.users), rows
    )


def followups_table(deals: Any, customers: Any) -> Dataset:
    """Follow-ups of the items of ``deals`` (the 商机 table's emulator) as the 跟进记录 table,
    linked to ``customers`` (the 客户 table's) by name.

    Deal ``k`` (in item order) has ``k % 3`` follow-ups by its 负责人, about its customer and
    itself, the ``j``-th ``j + 1`` days after the deal was created, by :data:`METHODS`
    ``[(k + j) % 6]``; every tenth deal's customer also has one not about a deal. A follow-up is
    created when it happened and not changed since.
    """
    by_name = {item.values[CUSTOMER_FIELDS.name]: item.item_id for item in customers.items.values()}
    rows: list[Row] = []
    for k, item_id in enumerate(sorted(deals.items)):
        deal = deals.items[item_id]
        name = deal.values.get(FIELDS.account)
        owner = (deal.values.get(FIELDS.owner) or [deal.created_by])[0]
        visits = [(j, True) for j in range(k % 3)] + ([(3, False)] if k % 10 == 0 and name else [])
        for j, about_deal in visits:
            when = datetime.fromtimestamp(deal.created_on, BEIJING) + timedelta(days=j + 1)
            option, method = METHODS[(k + j) % len(METHODS)]
            values: dict[str, object] = {
                FOLLOWUP_FIELDS.subject: f"{name or '客户'} {method}",
                FOLLOWUP_FIELDS.method: [option],
                FOLLOWUP_FIELDS.when: when.strftime("%Y-%m-%d %H:%M:%S"),
                FOLLOWUP_FIELDS.owner: [owner],
            }
            if name:
                values[FOLLOWUP_FIELDS.customer] = [{"item_id": by_name[name], "title": name}]
            if about_deal:
                title = str(deal.values.get(FIELDS.number, ""))
                values[FOLLOWUP_FIELDS.deal] = [{"item_id": item_id, "title": title}]
            rows.append(Row(values, when, when, owner, owner))
    rows.sort(key=lambda r: r.created_on)
    fields = [
        Field(FOLLOWUP_FIELDS.subject, "跟进内容", "text", required=True),
        Field(
            FOLLOWUP_FIELDS.method, "跟进方式", "category", tuple(Option(i, n, f"c{i}") for i, n in METHODS)
        ),
        Field(FOLLOWUP_FIELDS.when, "跟进时间", "date", time=True),
        Field(FOLLOWUP_FIELDS.owner, "跟进人", "user"),
        Field(FOLLOWUP_FIELDS.customer, "关联客户", "relation", linked=CUSTOMERS_TABLE_ID),
        Field(FOLLOWUP_FIELDS.deal, "关联商机", "relation", linked=TABLE_ID),
    ]
    return Dataset(
        FOLLOWUPS_TABLE_ID,
        "跟进记录",
        customers.space_id,
        customers.space_name,
        fields,
        list(deals.users),
        rows,
    )
