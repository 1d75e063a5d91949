"""Accounts and activities through the shipped specs: each emulator's objects synced into a real
store (SQLite and PostgreSQL) and compared field by field with the emulator's own data, re-read
when they change, soft-deleted when they go, and counted per kind and owner independently."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.connector_sdk import AccountRecord, ActivityRecord
from crm_perf_sync.models import Account, Activity, Opportunity
from tests.connectors.rest.emulators import huoban_data, jiandaoyun_data, pipedrive_data, zoho_data
from tests.connectors.rest.emulators.base import SimClock
from tests.connectors.rest.emulators.huoban import HuobanEmulator
from tests.connectors.rest.emulators.jiandaoyun import JiandaoyunEmulator
from tests.connectors.rest.emulators.pipedrive import PipedriveEmulator
from tests.connectors.rest.emulators.zoho import ZohoEmulator
from tests.connectors.rest.support import (
    connector,
    huoban_settings,
    jiandaoyun_settings,
    last_state,
    of_type,
    pipedrive_settings,
    read,
    stored,
    sync_into,
    zoho_settings,
)

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> SimClock:
    return SimClock(START)


def at(epoch: int | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def kinds_per_owner(rows: dict[str, dict[str, Any]]) -> Counter[tuple[str, str | None]]:
    return Counter((r["type"], r["owner_external_id"]) for r in rows.values() if not r["is_deleted"])


# -- Pipedrive ---------------------------------------------------------------------------------------

#: What the spec maps Pipedrive's default activity types to, and the key a company added itself,
#: mapped by the connection below.
PIPEDRIVE_KINDS = {
    "call": "call",
    "meeting": "meeting",
    "task": "task",
    "deadline": "task",
    "email": "email",
    "lunch": "meeting",
    pipedrive_data.CUSTOM_TYPE: "visit",
}


@pytest.fixture
def pd(clock: SimClock) -> Iterator[PipedriveEmulator]:
    company = pipedrive_data.synthetic(80, leads=30, start=START - timedelta(days=90))
    with PipedriveEmulator(pipedrive_data.with_activities(company), clock=clock.now) as emulator:
        emulator.rate_limit = None
        yield emulator


def pd_settings(emulator: PipedriveEmulator, **extra: Any) -> dict[str, Any]:
    settings = pipedrive_settings(emulator, **extra)
    settings["inputs"]["activity_types"] = {pipedrive_data.CUSTOM_TYPE: "visit"}
    return settings


def test_pipedrive_organizations_and_activities_are_stored_field_by_field(
    pd: PipedriveEmulator, clock: SimClock, session_factory: sessionmaker[Session]
) -> None:
    clock.advance(3600)
    sync_into(session_factory, pd_settings(pd), clock)

    accounts = stored(session_factory, Account)
    assert sorted(accounts, key=int) == [str(i) for i in sorted(pd.organizations)]
    for org in pd.organizations.values():
        row = accounts[str(org.id)]
        assert row["name"] == org.name
        assert row["owner_external_id"] == str(org.owner_id)
        assert row["created_at"] == at(org.add_time)
        assert row["remote_updated_at"] == at(org.update_time)
        assert row["is_deleted"] is False

    activities = stored(session_factory, Activity)
    assert len(activities) == len(pd.activities) > 100
    for activity in pd.activities.values():
        row = activities[str(activity.id)]
        assert row["type"] == PIPEDRIVE_KINDS[activity.type]
        assert row["subtype"] == activity.type
        assert row["subject"] == activity.subject
        assert row["owner_external_id"] == str(activity.owner_id)
        assert row["occurred_at"] == pipedrive_data.due_instant(activity)
        expected_seconds = None
        if activity.duration is not None:
            hours, minutes = activity.duration.split(":")
            expected_seconds = int(hours) * 3600 + int(minutes) * 60
        assert row["duration_seconds"] == expected_seconds
        assert row["is_completed"] is activity.done
        assert row["account_external_id"] == (None if activity.org_id is None else str(activity.org_id))
        assert row["opportunity_external_id"] == (None if activity.deal_id is None else str(activity.deal_id))
        assert row["lead_external_id"] == activity.lead_id
        assert row["created_at"] == at(activity.add_time)
        assert row["remote_updated_at"] == at(activity.update_time)
    # Each kind is there: the defaults, an all-day one, one with no duration, one not done.
    assert {r["type"] for r in activities.values()} == set(PIPEDRIVE_KINDS.values())
    assert any(a.due_time is None for a in pd.activities.values())
    assert any(r["duration_seconds"] is None for r in activities.values())
    assert any(r["is_completed"] is False for r in activities.values())

    # A deal's organization is its account.
    deals = stored(session_factory, Opportunity)
    for deal in pd.deals.values():
        expected = None if deal.org_id is None else str(deal.org_id)
        assert deals[str(deal.id)]["account_external_id"] == expected

    # Activities per kind per owner, counted from the emulator's data in plain Python.
    independent = Counter((PIPEDRIVE_KINDS[a.type], str(a.owner_id)) for a in pd.activities.values())
    assert kinds_per_owner(activities) == independent


def test_pipedrive_changed_organizations_and_activities_are_read_again_and_only_they(
    pd: PipedriveEmulator, clock: SimClock
) -> None:
    clock.advance(3600)
    conn = connector(pd_settings(pd), clock)
    first_accounts = read(conn, "accounts")
    first_activities = read(conn, "activities")
    assert len(of_type(first_accounts, AccountRecord)) == len(pd.organizations)
    assert len(of_type(first_activities, ActivityRecord)) == len(pd.activities)
    clock.advance(120)
    pd.change("organization", 3, name="Organization 3 (renamed)")
    undone = next(a for a in pd.activities.values() if not a.done)
    pd.change("activity", undone.id, done=True, duration="01:05")
    clock.advance(120)
    again = connector(pd_settings(pd), clock)
    accounts = of_type(read(again, "accounts", last_state(first_accounts)), AccountRecord)
    activities = of_type(read(again, "activities", last_state(first_activities)), ActivityRecord)
    assert [(a.external_id, a.name) for a in accounts] == [("3", "Organization 3 (renamed)")]
    assert [(a.external_id, a.is_completed, a.duration_seconds) for a in activities] == [
        (str(undone.id), True, 3900)
    ]


def test_pipedrive_deleted_organizations_and_activities_are_soft_deleted_by_a_snapshot(
    pd: PipedriveEmulator, clock: SimClock, session_factory: sessionmaker[Session]
) -> None:
    # The organization and activity lists leave deleted ones out and have no deleted filter: a
    # connection that wants their deletions reads them whole at every sync.
    whole = {"accounts": {"snapshot": True}, "activities": {"snapshot": True}}
    clock.advance(3600)
    sync_into(session_factory, pd_settings(pd, streams=whole), clock)
    clock.advance(60)
    pd.change("organization", 5, is_deleted=True)
    pd.change("activity", 7, is_deleted=True)
    clock.advance(60)
    sync_into(session_factory, pd_settings(pd, streams=whole), clock)
    accounts = stored(session_factory, Account)
    activities = stored(session_factory, Activity)
    assert [k for k, r in accounts.items() if r["is_deleted"]] == ["5"]
    assert [k for k, r in activities.items() if r["is_deleted"]] == ["7"]
    assert len(accounts) == len(pd.organizations)


# -- Zoho CRM ------------------------------------------------------------------------------------------

ZOHO_KINDS = {"Calls": "call", "Events": "meeting", "Tasks": "task"}


@pytest.fixture
def zoho(clock: SimClock) -> Iterator[ZohoEmulator]:
    org = zoho_data.with_activities(zoho_data.synthetic(60, leads=30, start=START - timedelta(days=60)))
    with ZohoEmulator(org, clock=clock.now) as emulator:
        yield emulator


def zoho_expected(record: Any) -> dict[str, Any]:
    """What the store should hold for one of the emulator's activities, read off its values."""
    values = record.values
    module = values["$se_module"]
    linked = values["What_Id"]["id"]
    out: dict[str, Any] = {
        "type": ZOHO_KINDS[record.module],
        "owner_external_id": values["Owner"]["id"],
        "account_external_id": linked if module == "Accounts" else None,
        "opportunity_external_id": linked if module == "Deals" else None,
        "lead_external_id": linked if module == "Leads" else None,
        "created_at": record.created,
        "remote_updated_at": record.modified,
    }
    if record.module == "Calls":
        out |= {
            "subtype": values["Call_Type"],
            "subject": values["Subject"],
            "occurred_at": values["Call_Start_Time"],
            "duration_seconds": values["Call_Duration_in_seconds"],
            "outcome": values["Call_Result"],
            "is_completed": values["Outgoing_Call_Status"] != "Scheduled",
        }
    elif record.module == "Events":
        out |= {
            "subtype": None,
            "subject": values["Event_Title"],
            "occurred_at": values["Start_DateTime"],
            "duration_seconds": int((values["End_DateTime"] - values["Start_DateTime"]).total_seconds()),
            "outcome": None,
            "is_completed": True,
        }
    else:
        due = datetime.fromisoformat(values["Due_Date"]).replace(tzinfo=UTC)
        out |= {
            "subtype": values["Status"],
            "subject": values["Subject"],
            "occurred_at": values["Closed_Time"] or due,
            "duration_seconds": None,
            "outcome": None,
            "is_completed": values["Status"] == "Completed",
        }
    return out


def test_zoho_accounts_calls_events_and_tasks_are_stored_field_by_field(
    zoho: ZohoEmulator, clock: SimClock, session_factory: sessionmaker[Session]
) -> None:
    clock.advance(3600)
    sync_into(session_factory, zoho_settings(zoho), clock)

    accounts = stored(session_factory, Account)
    module = zoho.modules["Accounts"].records
    assert sorted(accounts) == sorted(str(i) for i in module)
    assert any(r.values["Parent_Account"] for r in module.values())
    for record in module.values():
        row = accounts[str(record.id)]
        values = record.values
        assert row["name"] == values["Account_Name"]
        assert row["owner_external_id"] == values["Owner"]["id"]
        assert row["industry"] == values["Industry"]
        assert row["segment"] == values["Account_Type"]
        parent = values["Parent_Account"]
        assert row["parent_external_id"] == (parent["id"] if parent else None)
        assert row["created_at"] == record.created
        assert row["remote_updated_at"] == record.modified

    activities = stored(session_factory, Activity)
    everything = [r for name in ZOHO_KINDS for r in zoho.modules[name].records.values()]
    assert sorted(activities) == sorted(str(r.id) for r in everything)
    for record in everything:
        row = activities[str(record.id)]
        assert {key: row[key] for key in zoho_expected(record)} == zoho_expected(record), record.id
    assert {r["lead_external_id"] is not None for r in activities.values()} == {True, False}
    assert {r["is_completed"] for r in activities.values()} == {True, False}

    deals = stored(session_factory, Opportunity)
    for deal in zoho.modules["Deals"].records.values():
        account = deal.values["Account_Name"]
        assert deals[str(deal.id)]["account_external_id"] == (account["id"] if account else None)

    independent = Counter((ZOHO_KINDS[r.module], r.values["Owner"]["id"]) for r in everything)
    assert kinds_per_owner(activities) == independent


def test_zoho_changed_accounts_and_activities_are_read_again_and_deleted_ones_soft_deleted(
    zoho: ZohoEmulator, clock: SimClock, session_factory: sessionmaker[Session]
) -> None:
    clock.advance(3600)
    first = sync_into(session_factory, zoho_settings(zoho), clock)
    clock.advance(120)
    account = min(zoho.modules["Accounts"].records)
    call = min(zoho.modules["Calls"].records)
    task = min(zoho.modules["Tasks"].records)
    event = min(zoho.modules["Events"].records)
    zoho.update(account, {"Industry": "Healthcare"})
    zoho.update(call, {"Call_Result": "Booked a demo", "Call_Duration_in_seconds": 615})
    zoho.delete(task)
    zoho.delete(event, permanent=True)
    clock.advance(120)
    second = sync_into(session_factory, zoho_settings(zoho), clock)
    assert second.total("inserted") == 0
    accounts = stored(session_factory, Account)
    activities = stored(session_factory, Activity)
    assert accounts[str(account)]["industry"] == "Healthcare"
    assert (activities[str(call)]["outcome"], activities[str(call)]["duration_seconds"]) == (
        "Booked a demo",
        615,
    )
    assert sorted(k for k, r in activities.items() if r["is_deleted"]) == sorted([str(task), str(event)])
    assert not any(r["is_deleted"] for r in accounts.values())
    assert first.total("inserted") > second.total("updated") > 0


# -- 简道云 ------------------------------------------------------------------------------------------

#: The spec's 跟进方式 → kind table.
FOLLOWUP_KINDS = {
    "电话": "call",
    "拜访": "visit",
    "会议": "meeting",
    "微信": "wechat",
    "邮件": "email",
    "方案": "proposal",
}


def instant(text: str | None) -> datetime | None:
    return None if not text else datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def jdy(clock: SimClock) -> Iterator[JiandaoyunEmulator]:
    with JiandaoyunEmulator(jiandaoyun_data.synthetic(150), clock=clock.now) as emulator:
        emulator.add_form(jiandaoyun_data.customers_form(emulator.members))
        emulator.add_form(jiandaoyun_data.followups_form(emulator.records(), emulator.members))
        yield emulator


def jdy_settings(emulator: JiandaoyunEmulator, **extra: Any) -> dict[str, Any]:
    settings = jiandaoyun_settings(emulator, **extra)
    settings["inputs"]["customers_entry_id"] = jiandaoyun_data.CUSTOMERS_ENTRY_ID
    settings["inputs"]["activities_entry_id"] = jiandaoyun_data.FOLLOWUPS_ENTRY_ID
    return settings


def by_label(emulator: JiandaoyunEmulator, form: str, record: dict[str, Any], label: str) -> Any:
    return record[emulator.widget(label, form=form).name]


def test_jiandaoyun_customers_and_follow_ups_are_stored_field_by_field(
    jdy: JiandaoyunEmulator, clock: SimClock, session_factory: sessionmaker[Session]
) -> None:
    customers, followups = jiandaoyun_data.CUSTOMERS_ENTRY_ID, jiandaoyun_data.FOLLOWUPS_ENTRY_ID
    sync_into(session_factory, jdy_settings(jdy), clock)

    accounts = stored(session_factory, Account)
    rendered = jdy.records(customers)
    assert len(accounts) == len(rendered) == 85
    for record in rendered:

        def value(label: str, record: dict[str, Any] = record) -> Any:
            return by_label(jdy, customers, record, label)

        row = accounts[value("客户名称")]
        assert row["name"] == value("客户名称")
        assert row["owner_external_id"] == value("负责人")["username"]
        assert row["industry"] == value("所属行业")
        assert row["segment"] == value("客户级别")
        assert row["parent_external_id"] == (value("上级客户") or None)
        assert row["created_at"] == instant(value("创建日期"))
        assert row["remote_updated_at"] == instant(record["updateTime"])
    assert any(r["parent_external_id"] for r in accounts.values())

    activities = stored(session_factory, Activity)
    rendered = jdy.records(followups)
    assert len(activities) == len(rendered) > 100
    for record in rendered:

        def value(label: str, record: dict[str, Any] = record) -> Any:
            return by_label(jdy, followups, record, label)

        row = activities[record["_id"]]
        assert row["type"] == FOLLOWUP_KINDS[value("跟进方式")]
        assert row["subtype"] == value("跟进方式")
        assert row["occurred_at"] == instant(value("跟进时间"))
        assert row["owner_external_id"] == value("跟进人")["username"]
        assert row["account_external_id"] == (value("关联客户") or None)
        assert row["opportunity_external_id"] == (value("关联商机") or None)
        assert row["subject"] == value("跟进内容")
        assert row["created_at"] == instant(record["createTime"])
    assert {r["type"] for r in activities.values()} == set(FOLLOWUP_KINDS.values())

    # The deals name their customer as the customers form does: every one is a stored account,
    # and every follow-up's deal a stored deal.
    deals = stored(session_factory, Opportunity)
    named = {r["account_external_id"] for r in deals.values()} - {None}
    assert named
    assert named <= set(accounts)
    assert {r["opportunity_external_id"] for r in activities.values()} - {None} <= set(deals)

    independent = Counter(
        (
            FOLLOWUP_KINDS[by_label(jdy, followups, r, "跟进方式")],
            by_label(jdy, followups, r, "跟进人")["username"],
        )
        for r in rendered
    )
    assert kinds_per_owner(activities) == independent


def test_jiandaoyun_changed_follow_ups_are_read_again_and_deleted_ones_found_by_a_snapshot(
    jdy: JiandaoyunEmulator, clock: SimClock, session_factory: sessionmaker[Session]
) -> None:
    customers, followups = jiandaoyun_data.CUSTOMERS_ENTRY_ID, jiandaoyun_data.FOLLOWUPS_ENTRY_ID
    clock.advance(3600)
    conn = connector(jdy_settings(jdy), clock)
    first_accounts = read(conn, "accounts")
    first_activities = read(conn, "activities")
    clock.advance(120)
    customer = jdy.records(customers)[4]
    followup, gone = (r["_id"] for r in jdy.records(followups)[10:12])
    jdy.update(customer["_id"], {"客户级别": "战略客户"}, form=customers)
    jdy.update(followup, {"跟进方式": "方案", "跟进内容": "报价单已发送"}, form=followups)
    clock.advance(120)
    again = connector(jdy_settings(jdy), clock)
    accounts = of_type(read(again, "accounts", last_state(first_accounts)), AccountRecord)
    activities = of_type(read(again, "activities", last_state(first_activities)), ActivityRecord)
    assert [(a.external_id, a.segment) for a in accounts] == [
        (by_label(jdy, customers, customer, "客户名称"), "战略客户")
    ]
    assert [(a.external_id, a.type, a.subtype, a.subject) for a in activities] == [
        (followup, "proposal", "方案", "报价单已发送")
    ]

    # The API lists no deleted records: a connection reading the form whole finds what is gone.
    whole = jdy_settings(jdy, streams={"activities": {"snapshot": True}})
    sync_into(session_factory, whole, clock)
    jdy.delete(gone, form=followups)
    clock.advance(60)
    sync_into(session_factory, whole, clock)
    assert [k for k, r in stored(session_factory, Activity).items() if r["is_deleted"]] == [gone]


def test_jiandaoyun_without_the_forms_ids_offers_no_customers_or_follow_ups(
    jdy: JiandaoyunEmulator, clock: SimClock
) -> None:
    conn = connector(jiandaoyun_settings(jdy), clock)
    assert [s.name for s in conn.streams()] == ["pipeline_stages", "teams", "owners", "opportunities"]
    read(conn, "opportunities")
    asked = [r.body["entry_id"] for r in jdy.requests if r.path.endswith("/widget/list")]
    assert asked == [jdy.entry_id]  # the other forms' widgets are not asked for


# -- 伙伴云 ------------------------------------------------------------------------------------------

BEIJING = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def hb(clock: SimClock) -> Iterator[HuobanEmulator]:
    deals = huoban_data.synthetic(120)
    with HuobanEmulator(deals, clock=clock.now) as emulator:
        customers = emulator.add_table(huoban_data.customers_table(deals))
        emulator.add_table(huoban_data.followups_table(emulator, customers))
        yield emulator


def hb_settings(emulator: HuobanEmulator, **extra: Any) -> dict[str, Any]:
    settings = huoban_settings(emulator, **extra)
    settings["inputs"]["customers_table_id"] = huoban_data.CUSTOMERS_TABLE_ID
    settings["inputs"]["activities_table_id"] = huoban_data.FOLLOWUPS_TABLE_ID
    return settings


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BEIJING).astimezone(UTC)


def test_huoban_customers_and_follow_ups_are_stored_field_by_field(
    hb: HuobanEmulator, clock: SimClock, session_factory: sessionmaker[Session]
) -> None:
    clock.advance(400 * 24 * 3600)  # past every synthetic item's updated_on
    sync_into(session_factory, hb_settings(hb), clock)
    customers = hb.tables[huoban_data.CUSTOMERS_TABLE_ID]
    followups = hb.tables[huoban_data.FOLLOWUPS_TABLE_ID]
    c, f = huoban_data.CUSTOMER_FIELDS, huoban_data.FOLLOWUP_FIELDS
    tiers, methods = dict(huoban_data.TIERS), dict(huoban_data.METHODS)

    accounts = stored(session_factory, Account)
    assert len(accounts) == len(customers.items) == 11
    for item in customers.items.values():
        values = item.values
        row = accounts[values[c.name]]
        assert row["name"] == values[c.name]
        assert row["owner_external_id"] == values[c.owner][0]
        assert row["industry"] == values[c.industry]
        assert row["segment"] == tiers[values[c.tier][0]]
        assert row["parent_external_id"] == values.get(c.parent)
        assert row["created_at"] == local(values[c.created])
        assert row["remote_updated_at"] == datetime.fromtimestamp(item.updated_on, UTC)
    assert any(r["parent_external_id"] for r in accounts.values())

    activities = stored(session_factory, Activity)
    assert len(activities) == len(followups.items) > 100
    for item in followups.items.values():
        values = item.values
        row = activities[str(item.item_id)]
        method = methods[values[f.method][0]]
        assert row["type"] == FOLLOWUP_KINDS[method]
        assert row["subtype"] == method
        assert row["occurred_at"] == local(values[f.when])
        assert row["owner_external_id"] == values[f.owner][0]
        customer = values.get(f.customer)
        assert row["account_external_id"] == (customer[0]["title"] if customer else None)
        deal = values.get(f.deal)
        assert row["opportunity_external_id"] == (str(deal[0]["item_id"]) if deal else None)
        assert row["subject"] == values[f.subject]
        assert row["created_at"] == datetime.fromtimestamp(item.created_on, UTC)

    deals = stored(session_factory, Opportunity)
    named = {r["account_external_id"] for r in deals.values()} - {None}
    assert named
    assert named <= set(accounts)
    assert {r["opportunity_external_id"] for r in activities.values()} - {None} <= set(deals)

    independent = Counter(
        (FOLLOWUP_KINDS[methods[i.values[f.method][0]]], i.values[f.owner][0])
        for i in followups.items.values()
    )
    assert kinds_per_owner(activities) == independent


def test_huoban_changed_follow_ups_are_read_again_and_deleted_ones_found_by_a_snapshot(
    hb: HuobanEmulator, clock: SimClock, session_factory: sessionmaker[Session]
) -> None:
    clock.advance(400 * 24 * 3600)
    conn = connector(hb_settings(hb), clock)
    first_accounts = read(conn, "accounts")
    first_activities = read(conn, "activities")
    customers = hb.tables[huoban_data.CUSTOMERS_TABLE_ID]
    followups = hb.tables[huoban_data.FOLLOWUPS_TABLE_ID]
    c, f = huoban_data.CUSTOMER_FIELDS, huoban_data.FOLLOWUP_FIELDS
    customer = sorted(customers.items)[2]
    followup, gone = sorted(followups.items)[10:12]
    at = clock.now() - timedelta(seconds=1)  # inside the first reads' lookback
    customers.update(customer, {c.tier: ["1"]}, at=at)
    followups.update(followup, {f.method: ["6"], f.subject: "报价单已发送"}, at=at)
    clock.advance(60)
    again = connector(hb_settings(hb), clock)
    accounts = of_type(read(again, "accounts", last_state(first_accounts)), AccountRecord)
    activities = of_type(read(again, "activities", last_state(first_activities)), ActivityRecord)
    assert [(a.external_id, a.segment) for a in accounts] == [
        (customers.items[customer].values[c.name], "战略客户")
    ]
    assert [(a.external_id, a.type, a.subtype, a.subject) for a in activities] == [
        (str(followup), "proposal", "方案", "报价单已发送")
    ]

    whole = hb_settings(hb, streams={"activities": {"snapshot": True}})
    sync_into(session_factory, whole, clock)
    followups.delete(gone)
    clock.advance(60)
    sync_into(session_factory, whole, clock)
    assert [k for k, r in stored(session_factory, Activity).items() if r["is_deleted"]] == [str(gone)]
