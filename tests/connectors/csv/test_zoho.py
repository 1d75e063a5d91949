"""The Zoho-style export through config/examples/zoho.yaml, checked against the files themselves."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from crm_perf_sync.connector_sdk import (
    BadRecord,
    LeadRecord,
    Message,
    OpportunityRecord,
    OwnerRecord,
    PipelineStageRecord,
    SnapshotComplete,
)
from crm_perf_sync_csv.connector import CsvConnector
from tests.connectors.csv.support import by_id, connector, csv_rows, dataset, example_settings, of_type, read

DATA = dataset("zoho_crm_sample")
POTENTIALS = csv_rows(DATA / "Potentials.csv")
LEADS = csv_rows(DATA / "Leads.csv")
USERS = csv_rows(DATA / "Users.csv")
USER_ID = {row["Last Name"]: row["USER_ID"] for row in USERS}


def money(text: str) -> Decimal:
    assert text.startswith("$"), text
    return Decimal(text[1:].replace(",", ""))


@pytest.fixture(scope="module")
def conn() -> CsvConnector:
    return connector(example_settings("zoho"))


@pytest.fixture(scope="module")
def deals(conn: CsvConnector) -> list[Message]:
    return read(conn, "opportunities")


@pytest.fixture(scope="module")
def leads(conn: CsvConnector) -> list[Message]:
    return read(conn, "leads")


def test_leadid_is_the_only_unique_key_of_potentials() -> None:
    assert len(POTENTIALS) == 3632
    assert len({row["LEADID"] for row in POTENTIALS}) == 3632
    assert all(row["LEADID"] for row in POTENTIALS)
    assert len({row["Potential Name"] for row in POTENTIALS}) < len(POTENTIALS)


def test_streams(conn: CsvConnector) -> None:
    assert [s.name for s in conn.streams()] == [
        "owners",
        "pipeline_stages",
        "accounts",
        "leads",
        "opportunities",
    ]


def test_every_deal_is_kept_and_classified(deals: list[Message]) -> None:
    records = by_id(deals, OpportunityRecord)
    assert set(records) == {row["LEADID"] for row in POTENTIALS}
    assert of_type(deals, BadRecord) == []
    assert of_type(deals, SnapshotComplete) == [SnapshotComplete()]
    stages = Counter(row["Stage"] for row in POTENTIALS)
    assert Counter(r.stage for r in records.values()) == stages
    assert sum(r.is_won for r in records.values()) == stages["Closed Won"] == 1425
    assert sum(r.is_closed for r in records.values()) == stages["Closed Won"] + stages["Closed Lost"] == 1910
    for row in POTENTIALS:
        deal = records[row["LEADID"]]
        assert deal.forecast_category == row["Forecast Type"]
        assert deal.owner_external_id == USER_ID[row["Potential Owner"]]
        assert deal.lead_external_id == row["LEADID"]
        assert (deal.closed_at is not None) == deal.is_closed


def test_amount_sums_match_an_independent_parse(deals: list[Message]) -> None:
    records = by_id(deals, OpportunityRecord)
    assert sum((r.amount for r in records.values() if r.amount is not None), Decimal(0)) == sum(
        (money(row["Amount"]) for row in POTENTIALS), Decimal(0)
    )
    won = sum((money(row["Amount"]) for row in POTENTIALS if row["Stage"] == "Closed Won"), Decimal(0))
    assert sum((r.amount for r in records.values() if r.is_won and r.amount is not None), Decimal(0)) == won
    assert {r.currency for r in records.values()} == {"USD"}


def test_deal_with_a_dollar_amount_field_by_field(deals: list[Message]) -> None:
    # "Lewis, James",Roger Terrence,"15 Apr, 2021 00:02:00","16 Apr, 2021 00:03:00","$22,700.00",
    # "$33,500.00",Needs Analysis,Open,Existing Business,Advertisement,100,...,1832,...,24000023
    deal = by_id(deals, OpportunityRecord)["1832"]
    assert deal.name == "Lewis, James"
    assert deal.owner_external_id == "1008"  # Roger Terrence in Users.csv
    assert (deal.amount, deal.currency) == (Decimal("22700.00"), "USD")
    assert (deal.stage, deal.is_closed, deal.is_won) == ("Needs Analysis", False, False)
    assert deal.probability == 1.0  # an open deal keeps the rep's 100%
    assert deal.pipeline == "zoho"
    assert (deal.type, deal.lead_source, deal.forecast_category) == (
        "Existing Business",
        "Advertisement",
        "Open",
    )
    assert deal.created_at == datetime(2021, 4, 15, 0, 2, tzinfo=UTC)
    assert deal.close_date == date(2021, 4, 16)
    assert deal.closed_at is None  # open: the closing date is a forecast
    assert deal.lead_external_id == "1832"
    assert deal.custom == {"expected_revenue": "33500.00", "campaign_id": "24000023"}


def test_closed_stages_override_a_contradicting_probability(deals: list[Message]) -> None:
    records = by_id(deals, OpportunityRecord)
    # "Vansickle, Francis",Tina Thomas,...,"07 Apr, 2021 00:03:00","$84,000.00",...,
    # Closed Lost,Lost,...,100,...,1946
    lost = records["1946"]
    assert (lost.stage, lost.is_closed, lost.is_won, lost.probability) == ("Closed Lost", True, False, 0.0)
    assert lost.amount == Decimal("84000.00")
    assert lost.closed_at == datetime(2021, 4, 7, 0, 3, tzinfo=UTC)
    assert lost.close_date == date(2021, 4, 7)
    # "Davis, Mae",Harold Pawlan,...,"$85,900.00",...,Closed Won,Won,...,0,...,1528
    won = records["1528"]
    assert (won.stage, won.is_closed, won.is_won, won.probability) == ("Closed Won", True, True, 1.0)
    assert won.owner_external_id == "1006"


def test_open_probabilities_are_fractions_of_the_percentages(deals: list[Message]) -> None:
    records = by_id(deals, OpportunityRecord)
    for row in POTENTIALS:
        deal = records[row["LEADID"]]
        if deal.is_closed:
            continue
        if row["Probability"] == "":
            assert deal.probability is None
        else:
            assert deal.probability == pytest.approx(int(row["Probability"]) / 100)


def test_owners_come_from_users_with_their_ids(conn: CsvConnector) -> None:
    owners = by_id(read(conn, "owners"), OwnerRecord)
    assert set(owners) == {row["USER_ID"] for row in USERS}
    assert len(owners) == 11
    assert owners["1009"] == OwnerRecord(
        external_id="1009",
        name="Thomas Mondrake",
        email="thomas@finepick.com",
        raw={
            "USER_ID": "1009",
            "First Name": "",
            "Last Name": "Thomas Mondrake",
            "Email": "thomas@finepick.com",
        },
    )


def test_every_lead_is_kept_with_its_owner_id(leads: list[Message]) -> None:
    records = by_id(leads, LeadRecord)
    assert set(records) == {row["LEADID"] for row in LEADS}
    assert len(records) == 3900
    assert of_type(leads, BadRecord) == []
    for row in LEADS:
        lead = records[row["LEADID"]]
        assert lead.owner_external_id == USER_ID[row["Lead Owner"]]
        assert lead.is_converted == (row["CONVERTED"] == "Yes")
    assert sum(r.is_converted for r in records.values()) == 3632


def test_converted_leads_are_exactly_the_leads_of_the_deals(leads: list[Message]) -> None:
    converted = {r.external_id for r in of_type(leads, LeadRecord) if r.is_converted}
    assert converted == {row["LEADID"] for row in POTENTIALS}


def test_lead_field_by_field(leads: list[Message]) -> None:
    records = by_id(leads, LeadRecord)
    # 4563,Denson,Maurice The Pants Man,David Love,GaryLDenson@cuvox.de,...,Education,
    # Employee Referral,Contacted,"15 Apr, 2021 00:03:00",Yes,April
    lead = records["4563"]
    assert (lead.name, lead.company, lead.email) == (
        "Denson",
        "Maurice The Pants Man",
        "GaryLDenson@cuvox.de",
    )
    assert lead.owner_external_id == "1007"
    assert (lead.source, lead.status) == ("Employee Referral", "Contacted")
    assert lead.created_at == datetime(2021, 4, 15, 0, 3, tzinfo=UTC)
    assert (lead.is_converted, lead.converted_at) == (True, None)
    assert lead.custom == {"industry": "Education"}
    # 2050,Lott,BASCO,Thomas Mondrake,...,Contact in Future,"04 Apr, 2021 00:03:00",No,April
    unconverted = records["2050"]
    assert (unconverted.is_converted, unconverted.owner_external_id) == (False, "1009")
    assert unconverted.created_at == datetime(2021, 4, 4, 0, 3, tzinfo=UTC)


def test_stage_table_lists_every_stage_of_the_file(conn: CsvConnector) -> None:
    stages = of_type(read(conn, "pipeline_stages"), PipelineStageRecord)
    assert {s.stage for s in stages} == {row["Stage"] for row in POTENTIALS}
    assert {s.stage for s in stages if s.is_closed} == {"Closed Won", "Closed Lost"}
    assert [s.stage for s in stages if s.is_won] == ["Closed Won"]
