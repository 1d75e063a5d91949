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
