"""The X Education leads through config/examples/x_education.yaml, checked against the file itself."""

from __future__ import annotations

from collections import Counter

import pytest

from crm_perf_sync.connector_sdk import BadRecord, Checkpoint, LeadRecord, Message, SnapshotComplete
from crm_perf_sync_csv.connector import CsvConnector
from tests.connectors.csv.support import by_id, connector, csv_rows, dataset, example_settings, of_type, read

DATA = dataset("x_education_leads")
ROWS = csv_rows(DATA / "Leads.csv")


@pytest.fixture(scope="module")
def conn() -> CsvConnector:
    return connector(example_settings("x_education"))


@pytest.fixture(scope="module")
def leads(conn: CsvConnector) -> list[Message]:
    return read(conn, "leads")


def test_the_file_has_the_quirks_this_config_handles() -> None:
    raw = (DATA / "Leads.csv").read_bytes()
    assert raw.count(b"\r\n") == 9241
    assert list(ROWS[0])[-1] == ""  # the trailing comma: a nameless 38th column
    assert sum(row["City"] == "Select" for row in ROWS) == 2249


def test_every_lead_is_kept(conn: CsvConnector, leads: list[Message]) -> None:
    assert [s.name for s in conn.streams()] == ["leads"]
    records = by_id(leads, LeadRecord)
    assert set(records) == {row["Prospect ID"] for row in ROWS}
    assert len(records) == 9240
    assert of_type(leads, BadRecord) == []
    assert of_type(leads, SnapshotComplete) == [SnapshotComplete()]
    # 9,240 rows at the default batch size: one checkpoint after row 5,000, one at the end.
    assert [c.state["row"] for c in of_type(leads, Checkpoint)] == [5000, 9240]


def test_conversions_match_the_file(leads: list[Message]) -> None:
    records = by_id(leads, LeadRecord)
    assert (
        sum(r.is_converted for r in records.values()) == sum(row["Converted"] == "1" for row in ROWS) == 3561
    )
    for row in ROWS:
        assert records[row["Prospect ID"]].is_converted == (row["Converted"] == "1")


def test_no_owner_and_no_dates(leads: list[Message]) -> None:
    records = of_type(leads, LeadRecord)
    assert {(r.owner_external_id, r.created_at, r.converted_at) for r in records} == {(None, None, None)}


def test_lead_source_case_duplicates_are_folded(leads: list[Message]) -> None:
    sources = Counter(r.source for r in of_type(leads, LeadRecord))
    in_file = Counter(row["Lead Source"] for row in ROWS)
    assert in_file["google"] == 5
    assert in_file["bing"] == 6
    assert sources["Google"] == in_file["Google"] + in_file["google"] == 2873
    assert sources["Bing"] == 6
    assert "google" not in sources
    assert "bing" not in sources
    assert sources[None] == in_file[""] == 36
    folded = Counter(source.casefold() for source in in_file.elements() if source)
    assert len({s for s in sources if s is not None}) == len(folded)


def test_lead_with_select_answers_field_by_field(leads: list[Message]) -> None:
    # 2a272436-...,660728,API,Organic Search,No,No,0,5,674,2.5,Email Opened,India,Select,Select,
    # Unemployed,...,Ringing,,No,No,Select,Select,02.Medium,...,Email Opened,
    lead = by_id(leads, LeadRecord)["2a272436-5132-4136-86fa-dcc88c88f482"]
    assert (lead.source, lead.is_converted) == ("Organic Search", False)
    assert lead.custom == {
        "lead_origin": "API",
        "lead_number": 660728,
        "last_activity": "Email Opened",
        "country": "India",
        "city": None,  # "Select"
        "specialization": None,  # "Select"
        "occupation": "Unemployed",
        "lead_quality": None,  # empty
        "total_visits": 5.0,
        "do_not_email": False,
    }
    assert lead.raw is not None
    assert lead.raw["City"] == "Select"  # the raw payload keeps the file's text
    assert "" not in lead.raw
    assert len(lead.raw) == 37


def test_lowercase_google_lead(leads: list[Message]) -> None:
    # line 145: 2b5fb07b-5930-4e1f-a1f6-21f8a333ee2c,659094,Landing Page Submission,google,...
    lead = by_id(leads, LeadRecord)["2b5fb07b-5930-4e1f-a1f6-21f8a333ee2c"]
    assert lead.source == "Google"
    assert lead.custom["lead_origin"] == "Landing Page Submission"
    assert lead.raw is not None
    assert lead.raw["Lead Source"] == "google"


def test_custom_dimensions_match_the_file(leads: list[Message]) -> None:
    records = by_id(leads, LeadRecord)
    assert Counter(r.custom["lead_origin"] for r in records.values()) == Counter(
        row["Lead Origin"] for row in ROWS
    )
    for row in ROWS:
        custom = records[row["Prospect ID"]].custom
        assert custom["lead_number"] == int(row["Lead Number"])
        assert custom["city"] == (None if row["City"] in ("", "Select") else row["City"])
        assert custom["total_visits"] == (float(row["TotalVisits"]) if row["TotalVisits"] else None)
