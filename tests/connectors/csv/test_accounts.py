"""Accounts and activities from CSV exports: Maven's accounts.csv, Zoho's Accounts.csv, and an
activities file whose CRM kinds are mapped onto the canonical types."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import ConnectionConfig
from crm_perf_sync.connector_sdk import (
    AccountRecord,
    ActivityRecord,
    BadRecord,
    Message,
    OpportunityRecord,
    SnapshotComplete,
)
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.leases import new_holder_id
from crm_perf_sync.models import Account, Activity, Opportunity
from crm_perf_sync.sync import repository as repo
from crm_perf_sync.sync.service import SyncEngine, SyncOptions
from crm_perf_sync_csv.connector import CsvConnector
from crm_perf_sync_csv.settings import CsvSettings
from tests.connectors.csv.support import by_id, connector, csv_rows, dataset, example_settings, of_type, read

MAVEN = dataset("maven_crm_sales_opportunities")
ZOHO = dataset("zoho_crm_sample")
MAVEN_ACCOUNTS = csv_rows(MAVEN / "accounts.csv")
MAVEN_DEALS = csv_rows(MAVEN / "sales_pipeline.csv")
ZOHO_ACCOUNTS = csv_rows(ZOHO / "Accounts.csv")


@pytest.fixture(scope="module")
def maven() -> CsvConnector:
    return connector(example_settings("maven"))


@pytest.fixture(scope="module")
def maven_accounts(maven: CsvConnector) -> list[Message]:
    return read(maven, "accounts")


@pytest.fixture(scope="module")
def zoho_accounts() -> list[Message]:
    return read(connector(example_settings("zoho")), "accounts")


# --- Maven --------------------------------------------------------------------------------------


def test_maven_accounts_are_the_file_rows(maven_accounts: list[Message]) -> None:
    accounts = by_id(maven_accounts, AccountRecord)
    assert len(MAVEN_ACCOUNTS) == 85
    assert set(accounts) == {row["account"] for row in MAVEN_ACCOUNTS}
    assert of_type(maven_accounts, BadRecord) == []
    assert of_type(maven_accounts, SnapshotComplete) == [SnapshotComplete()]


def test_maven_account_field_by_field(maven_accounts: list[Message]) -> None:
    # Acme Corporation,technolgy,1996,1100.04,2822,United States,
    acme = by_id(maven_accounts, AccountRecord)["Acme Corporation"]
    assert (acme.name, acme.industry, acme.parent_external_id) == ("Acme Corporation", "technology", None)
    assert (acme.owner_external_id, acme.segment, acme.created_at) == (None, None, None)
    assert acme.custom == {
        "year_established": 1996,
        "revenue": "1100.04",
        "employees": 2822,
        "office_location": "United States",
    }
    assert acme.raw is not None
    assert acme.raw["sector"] == "technolgy"
    # Bioholding,medical,2012,587.34,1356,Philipines,  (the file's spelling of the country is kept)
    bio = by_id(maven_accounts, AccountRecord)["Bioholding"]
    assert (bio.industry, bio.custom["office_location"], bio.custom["revenue"]) == (
        "medical",
        "Philipines",
        "587.34",
    )


def test_maven_subsidiaries_name_their_parent(maven_accounts: list[Message]) -> None:
    accounts = by_id(maven_accounts, AccountRecord)
    expected = {row["account"]: row["subsidiary_of"] for row in MAVEN_ACCOUNTS if row["subsidiary_of"]}
    found = {a.external_id: a.parent_external_id for a in accounts.values() if a.parent_external_id}
    assert found == expected
    assert len(found) == 15
    assert Counter(found.values())["Acme Corporation"] == 4
    assert set(found.values()) <= set(accounts)


def test_maven_industries_are_the_sectors_with_the_typo_fixed(maven_accounts: list[Message]) -> None:
    industries = Counter(a.industry for a in of_type(maven_accounts, AccountRecord))
    sectors = Counter(row["sector"] for row in MAVEN_ACCOUNTS)
    assert "technolgy" in sectors
    assert "technolgy" not in industries
    assert industries["technology"] == sectors["technolgy"] == 12
    assert sum(industries.values()) == 85
    assert len(industries) == len(sectors) == 10


def test_every_maven_deal_account_resolves_to_an_account(
    maven: CsvConnector, maven_accounts: list[Message]
) -> None:
    accounts = set(by_id(maven_accounts, AccountRecord))
    deals = of_type(read(maven, "opportunities"), OpportunityRecord)
    named = Counter(d.account_external_id for d in deals)
    assert named[None] == sum(1 for row in MAVEN_DEALS if not row["account"]) == 1425
    assert set(named) - {None} == accounts  # every account has deals; no deal names a stranger
    # Deals without an account are all open ones.
    assert {d.stage for d in deals if d.account_external_id is None} == {"Prospecting", "Engaging"}


# --- Zoho ---------------------------------------------------------------------------------------


def test_zoho_accounts_field_by_field(zoho_accounts: list[Message]) -> None:
    accounts = by_id(zoho_accounts, AccountRecord)
    assert len(accounts) == len(ZOHO_ACCOUNTS) == 2229
    assert of_type(zoho_accounts, BadRecord) == []
    # 2,Laura Ashley,1011,Tina Thomas,Customer,Technology,BetaPages.com,Yes,No,No,Yes
    laura = accounts["2"]
    assert (laura.name, laura.owner_external_id, laura.segment, laura.industry) == (
        "Laura Ashley",
        "1011",
        "Customer",
        "Technology",
    )
    assert laura.custom == {"website": "BetaPages.com"}
    # A nameless account keeps no name rather than its id.
    assert accounts["1093"].name is None
    assert accounts["1093"].owner_external_id == "1005"


def test_zoho_accounts_agree_with_the_file(zoho_accounts: list[Message]) -> None:
    records = of_type(zoho_accounts, AccountRecord)
    owners = {row["USER_ID"] for row in csv_rows(ZOHO / "Users.csv")}
    assert Counter(a.segment for a in records) == Counter(r["Account Type"] for r in ZOHO_ACCOUNTS)
    assert Counter(a.industry for a in records) == Counter(r["Industry"] for r in ZOHO_ACCOUNTS)
    assert Counter(a.owner_external_id for a in records) == Counter(
        r["Account Owner Id"] for r in ZOHO_ACCOUNTS
    )
    assert {a.owner_external_id for a in records} <= owners
    # Names do not identify Zoho accounts: 2,229 accounts, 910 names.
    assert len({a.name for a in records if a.name}) == 910


def test_zoho_deals_name_no_account_because_the_export_links_none() -> None:
    # Potentials.csv has no account column; its LEADID leads to a lead whose Company is a name that
    # matches no account or several for most deals (see config/examples/zoho.yaml).
    leads = {row["LEADID"]: row for row in csv_rows(ZOHO / "Leads.csv")}
    names = Counter(row["Account Name"] for row in ZOHO_ACCOUNTS)
    companies = [leads[row["LEADID"]]["Company"] for row in csv_rows(ZOHO / "Potentials.csv")]
    resolved = Counter(min(names[c], 2) for c in companies)
    assert resolved == {0: 180, 1: 628, 2: 2824}
    deals = of_type(read(connector(example_settings("zoho")), "opportunities"), OpportunityRecord)
    assert {d.account_external_id for d in deals} == {None}


# --- into the store -----------------------------------------------------------------------------


def _sync(session_factory: sessionmaker[Session], connection_id: str, settings: CsvSettings) -> None:
    with session_scope(session_factory) as session:
        repo.sync_connections(
            session, [ConnectionConfig.model_validate({"id": connection_id, "kind": "csv"})], utc_now()
        )
    engine = SyncEngine(
        session_factory=session_factory,
        connector=connector(settings),
        connection_id=connection_id,
        options=SyncOptions(batch_size=1000),
        holder=new_holder_id(),
    )
    outcome = engine.run(trigger="manual", full_refresh=False)
    assert outcome.status == "succeeded", outcome.error


def test_maven_accounts_and_deals_per_account_in_the_store(session_factory: sessionmaker[Session]) -> None:
    _sync(session_factory, "maven", example_settings("maven"))
    deals_per_account = Counter(row["account"] for row in MAVEN_DEALS if row["account"])
    won_per_account = Counter(
        row["account"] for row in MAVEN_DEALS if row["account"] and row["deal_stage"] == "Won"
    )
    with session_scope(session_factory) as session:
        stored = dict(
            session.execute(
                select(Account.external_id, Account.industry).where(Account.connection_id == "maven")
            ).all()
        )
        per_account = dict(
            session.execute(
                select(Account.external_id, func.count(Opportunity.id))
                .join(
                    Opportunity,
                    (Opportunity.account_external_id == Account.external_id)
                    & (Opportunity.connection_id == Account.connection_id),
                )
                .where(Account.connection_id == "maven")
                .group_by(Account.external_id)
            ).all()
        )
        won = dict(
            session.execute(
                select(Opportunity.account_external_id, func.count())
                .where(Opportunity.connection_id == "maven", Opportunity.is_won.is_(True))
                .group_by(Opportunity.account_external_id)
            ).all()
        )
    assert len(stored) == len(MAVEN_ACCOUNTS) == 85
    assert stored == {
        row["account"]: row["sector"].replace("technolgy", "technology") for row in MAVEN_ACCOUNTS
    }
    assert per_account == dict(deals_per_account)
    assert sum(per_account.values()) == 8800 - 1425
    assert won == dict(won_per_account)


def test_zoho_accounts_in_the_store(session_factory: sessionmaker[Session]) -> None:
    _sync(session_factory, "zoho", example_settings("zoho"))
    with session_scope(session_factory) as session:
        per_owner = dict(
            session.execute(
                select(Account.owner_external_id, func.count())
                .where(Account.connection_id == "zoho", Account.is_deleted.is_(False))
                .group_by(Account.owner_external_id)
            ).all()
        )
        customers = session.scalar(
            select(func.count()).where(Account.connection_id == "zoho", Account.segment == "Customer")
        )
    assert per_owner == dict(Counter(row["Account Owner Id"] for row in ZOHO_ACCOUNTS))
    assert customers == sum(row["Account Type"] == "Customer" for row in ZOHO_ACCOUNTS) == 1105


# --- activities -----------------------------------------------------------------------------------

ACTIVITIES = """\
id,kind,when,rep,minutes,result,account,deal,done
A1,Call,2024-03-01 09:30,u1,12,Connected,Acme,D1,Yes
A2,Site visit,2024-03-02 14:00,u1,90,,Acme,D1,Yes
A3,Proposal sent,2024-03-05 10:00,u2,,,Globex,D2,Yes
A4,E-mail,2024-03-06 08:15,u2,,,Globex,,No
A5,Webinar,2024-03-07 16:00,u2,45,,Globex,,Yes
A6,Call,2024-03-08 11:00,u1,-5,Busy,Acme,D1,Yes
"""


def _activity_settings(data_dir: Path) -> CsvSettings:
    return CsvSettings.model_validate(
        {
            "data_dir": str(data_dir),
            "timezone": "Europe/Berlin",
            "streams": {
                "activities": {
                    "file": "activities.csv",
                    "fields": {
                        "external_id": "id",
                        "type": {
                            "column": "kind",
                            "ignore_case": True,
                            "map": {
                                "call": "call",
                                "site visit": "visit",
                                "proposal sent": "proposal",
                                "e-mail": "email",
                            },
                        },
                        "subtype": "kind",
                        "occurred_at": {"column": "when", "format": "%Y-%m-%d %H:%M"},
                        "owner_external_id": "rep",
                        "duration_seconds": {"column": "minutes"},
                        "outcome": "result",
                        "account_external_id": "account",
                        "opportunity_external_id": "deal",
                        "is_completed": "done",
                    },
                }
            },
        }
    )


def test_activities_map_the_crm_kinds_and_keep_them_as_subtype(tmp_path: Path) -> None:
    (tmp_path / "activities.csv").write_text(ACTIVITIES)
    messages = read(connector(_activity_settings(tmp_path)), "activities")
    activities = by_id(messages, ActivityRecord)
    assert {k: (a.type, a.subtype) for k, a in activities.items()} == {
        "A1": ("call", "Call"),
        "A2": ("visit", "Site visit"),
        "A3": ("proposal", "Proposal sent"),
        "A4": ("email", "E-mail"),
    }
    visit = activities["A2"]
    assert visit.occurred_at == datetime(2024, 3, 2, 13, 0, tzinfo=UTC)  # 14:00 in Berlin (CET)
    assert (visit.owner_external_id, visit.duration_seconds, visit.outcome) == ("u1", 90, None)
    assert (visit.account_external_id, visit.opportunity_external_id, visit.is_completed) == (
        "Acme",
        "D1",
        True,
    )
    assert activities["A4"].is_completed is False
    assert activities["A4"].opportunity_external_id is None
    # A kind nobody mapped is a bad record naming the row and the way out, not a new type.
    (bad_kind, bad_duration) = of_type(messages, BadRecord)
    assert bad_kind.key == "A5"
    assert bad_kind.field == "type"
    assert "activities.csv line 6: type 'Webinar'" in bad_kind.message
    assert "fields.type.map" in bad_kind.message
    assert bad_duration.key == "A6"
    assert bad_duration.field == "duration_seconds"


def test_activities_in_the_store_and_a_removed_row_is_soft_deleted(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    (tmp_path / "activities.csv").write_text(ACTIVITIES)
    _sync(session_factory, "acts", _activity_settings(tmp_path))
    (tmp_path / "activities.csv").write_text(
        ACTIVITIES.replace("A2,Site visit,2024-03-02 14:00,u1,90,,Acme,D1,Yes\n", "")
    )
    _sync(session_factory, "acts", _activity_settings(tmp_path))
    with session_scope(session_factory) as session:
        rows = session.execute(
            select(Activity.external_id, Activity.type, Activity.is_deleted)
            .where(Activity.connection_id == "acts")
            .order_by(Activity.external_id)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("A1", "call", False),
        ("A2", "visit", True),
        ("A3", "proposal", False),
        ("A4", "email", False),
    ]
