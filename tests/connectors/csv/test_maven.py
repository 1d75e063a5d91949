"""The Maven CRM dataset through config/examples/maven.yaml, checked against the files themselves."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from crm_perf_sync.connector_sdk import (
    BadRecord,
    Message,
    OpportunityRecord,
    OwnerRecord,
    PipelineStageRecord,
    SnapshotComplete,
    TeamRecord,
)
from crm_perf_sync_csv.connector import CsvConnector
from tests.connectors.csv.support import by_id, connector, csv_rows, dataset, example_settings, of_type, read

DATA = dataset("maven_crm_sales_opportunities")
PIPELINE = csv_rows(DATA / "sales_pipeline.csv")
AGENTS = csv_rows(DATA / "sales_teams.csv")


@pytest.fixture(scope="module")
def conn() -> CsvConnector:
    return connector(example_settings("maven"))


@pytest.fixture(scope="module")
def deals(conn: CsvConnector) -> list[Message]:
    return read(conn, "opportunities")


def test_streams_are_teams_owners_stages_accounts_and_deals_without_invented_history(
    conn: CsvConnector,
) -> None:
    assert [s.name for s in conn.streams()] == [
        "teams",
        "owners",
        "pipeline_stages",
        "accounts",
        "opportunities",
    ]


def test_every_deal_is_kept_once(deals: list[Message]) -> None:
    records = by_id(deals, OpportunityRecord)
    assert len(PIPELINE) == 8800
    assert set(records) == {row["opportunity_id"] for row in PIPELINE}
    assert of_type(deals, BadRecord) == []
    assert of_type(deals, SnapshotComplete) == [SnapshotComplete()]


def test_stage_classification_matches_the_file(deals: list[Message]) -> None:
    records = of_type(deals, OpportunityRecord)
    file_stages = Counter(row["deal_stage"] for row in PIPELINE)
    assert Counter(r.stage for r in records) == file_stages
    assert sum(r.is_won for r in records) == file_stages["Won"] == 4238
    assert sum(r.is_closed for r in records) == file_stages["Won"] + file_stages["Lost"] == 6711
    assert {r.pipeline for r in records} == {"maven"}


def test_amount_sums_match_an_independent_parse(deals: list[Message]) -> None:
    records = of_type(deals, OpportunityRecord)
    expected = sum((Decimal(row["close_value"]) for row in PIPELINE if row["close_value"]), Decimal(0))
    won = sum((Decimal(row["close_value"]) for row in PIPELINE if row["deal_stage"] == "Won"), Decimal(0))
    assert sum((r.amount for r in records if r.amount is not None), Decimal(0)) == expected == won
    assert sum((r.amount for r in records if r.is_won and r.amount is not None), Decimal(0)) == won
    assert won == Decimal(10005534)
    assert {r.currency for r in records} == {"USD"}


def test_first_won_deal_field_by_field(deals: list[Message]) -> None:
    # 1C1I7A6R,Moses Frase,GTX Plus Basic,Cancity,Won,2016-10-20,2017-03-01,1054
    deal = by_id(deals, OpportunityRecord)["1C1I7A6R"]
    assert deal.owner_external_id == "Moses Frase"
    assert deal.product == "GTX Plus Basic"
    assert deal.account_external_id == "Cancity"
    assert (deal.stage, deal.is_closed, deal.is_won, deal.probability) == ("Won", True, True, 1.0)
    assert deal.created_at == datetime(2016, 10, 20, tzinfo=UTC)  # engage_date: no created date exists
    assert deal.close_date == date(2017, 3, 1)
    assert deal.closed_at == datetime(2017, 3, 1, tzinfo=UTC)
    assert (deal.amount, deal.currency) == (Decimal(1054), "USD")
    assert deal.custom == {
        "product_series": "GTX",
        "list_price": "1096",
        "account_sector": "retail",
        "account_office": "United States",
    }
    assert deal.raw is not None
    assert deal.raw["close_value"] == "1054"


def test_lost_deal_keeps_its_zero_value_and_gtxpro_is_renamed(deals: list[Message]) -> None:
    # KWVA7VR1,Gladys Colclough,GTXPro,Genco Pura Olive Oil Company,Lost,2016-11-04,2017-03-18,0
    deal = by_id(deals, OpportunityRecord)["KWVA7VR1"]
    assert (deal.stage, deal.is_closed, deal.is_won, deal.probability) == ("Lost", True, False, 0.0)
    assert deal.amount == Decimal(0)
    assert deal.product == "GTX Pro"
    assert deal.custom["product_series"] == "GTX"
    assert deal.custom["list_price"] == "4821"
    assert deal.closed_at == datetime(2017, 3, 18, tzinfo=UTC)
    assert deal.raw is not None
    assert deal.raw["product"] == "GTXPro"


def test_no_deal_keeps_the_pipeline_spelling_of_gtx_pro(deals: list[Message]) -> None:
    products = Counter(r.product for r in of_type(deals, OpportunityRecord))
    assert "GTXPro" not in products
    assert products["GTX Pro"] == sum(row["product"] == "GTXPro" for row in PIPELINE) == 1480


def test_prospecting_deal_has_no_dates_and_no_value(deals: list[Message]) -> None:
    # 6CWZFOHJ,Anna Snelling,GTX Basic,Green-Plus,Prospecting,,,
    deal = by_id(deals, OpportunityRecord)["6CWZFOHJ"]
    assert (deal.stage, deal.is_closed, deal.is_won, deal.probability) == ("Prospecting", False, False, None)
    assert (deal.created_at, deal.close_date, deal.closed_at, deal.amount) == (None, None, None, None)
    assert deal.account_external_id == "Green-Plus"
    assert deal.custom["account_sector"] == "services"


def test_misspelt_sector_is_corrected_in_the_custom_dimension(deals: list[Message]) -> None:
    # N4SD17JR,Reed Clapper,GTX Basic,Acme Corporation,Won,... and accounts.csv says "technolgy"
    deal = by_id(deals, OpportunityRecord)["N4SD17JR"]
    assert deal.custom["account_sector"] == "technology"
    sectors = Counter(r.custom["account_sector"] for r in of_type(deals, OpportunityRecord))
    assert "technolgy" not in sectors


def test_open_deal_with_blank_account(deals: list[Message]) -> None:
    # HAXMC4IX,James Ascencio,MG Advanced,,Engaging,2016-11-03,,
    deal = by_id(deals, OpportunityRecord)["HAXMC4IX"]
    assert deal.account_external_id is None
    assert deal.custom["account_sector"] is None
    assert deal.created_at == datetime(2016, 11, 3, tzinfo=UTC)
    assert (deal.close_date, deal.closed_at, deal.amount, deal.is_closed) == (None, None, None, False)


def test_dates_present_exactly_where_the_file_has_them(deals: list[Message]) -> None:
    records = by_id(deals, OpportunityRecord)
    for row in PIPELINE:
        deal = records[row["opportunity_id"]]
        assert (deal.created_at is None) == (row["engage_date"] == "")
        assert (deal.close_date is None) == (row["close_date"] == "")
        assert (deal.closed_at is None) == (row["close_date"] == "")
        if row["close_date"]:
            assert deal.close_date is not None
            assert deal.close_date.isoformat() == row["close_date"]


def test_owners_are_all_agents_including_those_without_deals(conn: CsvConnector) -> None:
    owners = by_id(read(conn, "owners"), OwnerRecord)
    assert set(owners) == {row["sales_agent"] for row in AGENTS}
    assert len(owners) == 35
    without_deals = set(owners) - {row["sales_agent"] for row in PIPELINE}
    assert without_deals == {
        "Carl Lin",
        "Carol Thompson",
        "Elizabeth Anderson",
        "Mei-Mei Johns",
        "Natalya Ivanova",
    }
    for row in AGENTS:
        assert owners[row["sales_agent"]].team_external_id == f"team:{row['manager']}"
    assert owners["Anna Snelling"] == OwnerRecord(
        external_id="Anna Snelling",
        name="Anna Snelling",
        team_external_id="team:Dustin Brinkmann",
        raw={"sales_agent": "Anna Snelling", "manager": "Dustin Brinkmann", "regional_office": "Central"},
    )


def test_teams_are_managers_inside_regions(conn: CsvConnector) -> None:
    messages = read(conn, "teams")
    teams = by_id(messages, TeamRecord)
    regions = {row["regional_office"] for row in AGENTS}
    managers = {row["manager"]: row["regional_office"] for row in AGENTS}
    assert len(teams) == len(regions) + len(managers) == 9
    for region in regions:
        assert teams[f"region:{region}"] == TeamRecord(
            external_id=f"region:{region}", name=region, parent_external_id=None, level="region"
        )
    for manager, region in managers.items():
        assert teams[f"team:{manager}"] == TeamRecord(
            external_id=f"team:{manager}", name=manager, parent_external_id=f"region:{region}", level="team"
        )


def test_every_deal_owner_is_an_owner(conn: CsvConnector, deals: list[Message]) -> None:
    owners = set(by_id(read(conn, "owners"), OwnerRecord))
    assert {r.owner_external_id for r in of_type(deals, OpportunityRecord)} <= owners


def test_pipeline_stages_come_from_the_stage_table(conn: CsvConnector) -> None:
    stages = of_type(read(conn, "pipeline_stages"), PipelineStageRecord)
    assert [(s.stage, s.sort_order, s.is_closed, s.is_won, s.probability) for s in stages] == [
        ("Prospecting", 0, False, False, None),
        ("Engaging", 1, False, False, None),
        ("Won", 2, True, True, 1.0),
        ("Lost", 3, True, False, 0.0),
    ]
    assert {s.pipeline for s in stages} == {"maven"}


def test_records_are_valid_canonical_records(conn: CsvConnector) -> None:
    for stream in conn.streams():
        for message in read(conn, stream.name):
            validate = getattr(message, "validate", None)
            if validate is not None:
                validate()
