"""How the connector reads files: bad rows, configuration errors, checkpoints, resumption, memory."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crm_perf_sync.connector_sdk import (
    BadRecord,
    Checkpoint,
    ConnectorConfigError,
    LeadRecord,
    Message,
    OpportunityRecord,
    RetriableError,
    SnapshotComplete,
    StageChangeRecord,
    TeamRecord,
)
from crm_perf_sync_csv.connector import CsvConnector
from tests.connectors.csv.support import (
    by_id,
    connector,
    example_settings,
    last_checkpoint,
    of_type,
    read,
    spec,
)

DEALS = """\
id,owner,stage,amount,created,closed
D1,ann,Won,"$1,000.00",2024-01-02 10:00,2024-02-01
D2,bob,Won,$250,02/01/2024 10:00,2024-02-03
D3,ann,Lost,"12,50",2024-01-03 09:00,2024-02-04
D4,bob,Maybe,$10,2024-01-04 09:00,
D5,"ann
with a note",Open,$20,2024-01-05 09:00,
D6,bob,Lost,$0,2024-01-06 09:00,2024-03-01
"""


def deal_settings(data_dir: Path, **stream: Any) -> dict[str, Any]:
    opportunities: dict[str, Any] = {
        "file": "deals.csv",
        "fields": {
            "external_id": "id",
            "owner_external_id": "owner",
            "stage": "stage",
            "amount": "amount",
            "currency": {"value": "EUR"},
            "created_at": {"column": "created", "format": "%Y-%m-%d %H:%M"},
            "close_date": "closed",
            "closed_at": "closed",
        },
        "stages": {
            "table": [
                {"stage": "Open"},
                {"stage": "Won", "is_won": True, "probability": 1},
                {"stage": "Lost", "is_closed": True, "probability": 0},
            ]
        },
    }
    opportunities.update(stream)
    return {"data_dir": str(data_dir), "streams": {"opportunities": opportunities}}


def write(path: Path, text: str, encoding: str = "utf-8", newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


# --- bad rows ---------------------------------------------------------------------------------------


def test_malformed_rows_become_bad_records_naming_file_line_column_and_value(tmp_path: Path) -> None:
    write(tmp_path / "deals.csv", DEALS)
    messages = read(connector(deal_settings(tmp_path)), "opportunities")
    bad = of_type(messages, BadRecord)
    assert [(b.key, b.field) for b in bad] == [
        ("D2", "fields.created_at"),
        ("D3", "fields.amount"),
        ("D4", "stage"),
    ]
    assert bad[0].message == (
        "deals.csv line 3, column 'created': '02/01/2024 10:00' is not a date-time in format %Y-%m-%d %H:%M"
    )
    assert bad[1].message == (
        "deals.csv line 4, column 'amount': '12,50' is not an amount (thousands separator ',')"
    )
    assert bad[2].message == (
        "deals.csv line 5: stage 'Maybe' is not in the stage table (known: 'Open', 'Won', 'Lost')"
    )
    assert bad[0].raw["created"] == "02/01/2024 10:00"
    assert bad[0].raw["id"] == "D2"
    # The stream goes on: the rows around the bad ones are kept, and D6 is still on line 8
    # although D5's quoted owner spans two lines.
    deals = by_id(messages, OpportunityRecord)
    assert set(deals) == {"D1", "D5", "D6"}
    assert deals["D1"].amount == Decimal("1000.00")
    assert deals["D1"].closed_at == datetime(2024, 2, 1, tzinfo=UTC)
    assert deals["D5"].owner_external_id == "ann\nwith a note"
    assert deals["D5"].closed_at is None
    assert deals["D6"].amount == Decimal(0)
    assert isinstance(messages[-1], Checkpoint)
    assert messages[-1].state["done"] is True
    assert messages[-2] == SnapshotComplete()


def test_line_numbers_count_quoted_newlines(tmp_path: Path) -> None:
    write(
        tmp_path / "deals.csv",
        DEALS + 'D7,"multi\nline\nowner",Won,$5,2024-01-07,2024-01-08\nD8,ann,Won,$x,,\n',
    )
    bad = of_type(read(connector(deal_settings(tmp_path)), "opportunities"), BadRecord)
    assert bad[-1].key == "D8"
    assert bad[-1].message.startswith("deals.csv line 12, column 'amount': '$x'")


def test_an_unknown_stage_is_kept_when_the_table_allows_it(tmp_path: Path) -> None:
    write(tmp_path / "deals.csv", DEALS)
    settings = deal_settings(tmp_path)
    settings["streams"]["opportunities"]["stages"]["unknown"] = "keep"
    deals = by_id(read(connector(settings), "opportunities"), OpportunityRecord)
    assert (deals["D4"].stage, deals["D4"].is_closed, deals["D4"].probability) == ("Maybe", False, None)


def test_a_row_with_more_or_fewer_cells_than_the_header_is_bad_but_trailing_empty_cells_are_not(
    tmp_path: Path,
) -> None:
    write(tmp_path / "leads.csv", "id,source\nL1,Web\nL2,Web,,\nL3,Web,oops\nL4\nL5,Web\n")
    settings = {
        "data_dir": str(tmp_path),
        "streams": {"leads": {"file": "leads.csv", "fields": {"external_id": "id", "source": "source"}}},
    }
    messages = read(connector(settings), "leads")
    leads = by_id(messages, LeadRecord)
    assert {k: v.source for k, v in leads.items()} == {"L1": "Web", "L2": "Web", "L5": "Web"}
    assert [(bad.key, bad.message, dict(bad.raw)) for bad in of_type(messages, BadRecord)] == [
        (
            "L3",
            "leads.csv line 4: 3 cells but the header has 2 columns (an unquoted delimiter or quote?)",
            {"id": "L3", "source": "Web", "cell 3": "oops"},
        ),
        (
            "L4",
            "leads.csv line 5: 1 cell but the header has 2 columns "
            "(a row cut short, or a line break that is not quoted?)",
            {"id": "L4"},
        ),
    ]


def _leads(data_dir: Path, **stream: Any) -> dict[str, Any]:
    fields = {"external_id": "id", "source": "source", "name": "notes"}
    return {
        "data_dir": str(data_dir),
        "streams": {"leads": {"file": "leads.csv", "fields": fields, **stream}},
    }


def test_a_stray_quote_closed_by_a_later_one_costs_only_its_own_row(tmp_path: Path) -> None:
    # Line 3's quote runs on to the quote that opens line 4's amount: the csv module would make one
    # row of both. The broken row is line 3 alone, and line 4 is read again as the row it is.
    write(
        tmp_path / "deals.csv",
        'id,owner,stage,amount,created,closed\nD1,ann,Won,"$1,000.00",,\nD2,"bob,Won,$5,,\n'
        'D3,ann,Won,"$2,000.00",,\nD4,ann,Lost,$7,,\n',
    )
    messages = read(connector(deal_settings(tmp_path)), "opportunities")
    assert {key: deal.amount for key, deal in by_id(messages, OpportunityRecord).items()} == {
        "D1": Decimal("1000.00"),
        "D3": Decimal("2000.00"),
        "D4": Decimal(7),
    }
    assert [(bad.key, bad.message, dict(bad.raw)) for bad in of_type(messages, BadRecord)] == [
        (
            "deals.csv:3",
            "deals.csv line 3: a quoted field opened on this line runs over 2 lines and has text after "
            "its closing quote (a stray quote?); the lines after it are read as rows of their own",
            {"line": 'D2,"bob,Won,$5,,'},
        )
    ]


def test_text_after_a_closing_quote_is_a_bad_record(tmp_path: Path) -> None:
    write(tmp_path / "leads.csv", 'id,source,notes\nL1,"Web" site,\nL2,Web,\n')
    messages = read(connector(_leads(tmp_path)), "leads")
    assert list(by_id(messages, LeadRecord)) == ["L2"]
    ((key, message),) = [(bad.key, bad.message) for bad in of_type(messages, BadRecord)]
    assert (key, message) == (
        "leads.csv:2",
        "leads.csv line 2: text follows the closing quote of a quoted field "
        '(a quote inside a value is written "")',
    )


def test_a_row_may_span_max_row_lines_lines(tmp_path: Path) -> None:
    write(tmp_path / "leads.csv", 'id,source,notes\nL1,Web,"called\nleft a message\nwill retry"\nL2,Web,\n')
    leads = by_id(read(connector(_leads(tmp_path)), "leads"), LeadRecord)
    assert {key: lead.name for key, lead in leads.items()} == {
        "L1": "called\nleft a message\nwill retry",
        "L2": None,
    }

    # Beyond the bound the row is broken, and its lines are read again: here they are no rows.
    messages = read(connector(_leads(tmp_path, max_row_lines=2)), "leads")
    assert list(by_id(messages, LeadRecord)) == ["L2"]
    assert [(bad.key, bad.message) for bad in of_type(messages, BadRecord)] == [
        (
            "leads.csv:2",
            "leads.csv line 2: a quoted field opened on this line runs over more than 2 lines "
            "(a stray quote? or raise max_row_lines); the lines after it are read as rows of their own",
        ),
        (
            "left a message",
            "leads.csv line 3: 1 cell but the header has 3 columns "
            "(a row cut short, or a line break that is not quoted?)",
        ),
        (
            'will retry"',
            "leads.csv line 4: 1 cell but the header has 3 columns "
            "(a row cut short, or a line break that is not quoted?)",
        ),
    ]


def test_ids_are_checked_against_the_id_rule(tmp_path: Path) -> None:
    write(tmp_path / "leads.csv", "id,source,notes\nL-1,Web,\nL2,Web,\nL\t3,Web,\n" + "L" * 256 + ",Web,\n")
    # The default rule: no control characters, at most 255 characters (the store's id columns).
    messages = read(connector(_leads(tmp_path)), "leads")
    assert list(by_id(messages, LeadRecord)) == ["L-1", "L2"]
    assert [(bad.key, bad.field, bad.message) for bad in of_type(messages, BadRecord)] == [
        (
            "leads.csv:4",
            "external_id",
            "leads.csv line 4: external_id 'L\\t3' is not a plausible id (column 'id'): "
            "it holds a control character",
        ),
        (
            "leads.csv:5",
            "external_id",
            "leads.csv line 5: external_id is not a plausible id (column 'id'): "
            "256 characters, more than the 255 the mapping allows",
        ),
    ]
    messages = read(connector(_leads(tmp_path, id_rule={"pattern": "L[0-9]+"})), "leads")
    assert list(by_id(messages, LeadRecord)) == ["L2"]
    assert of_type(messages, BadRecord)[0].message == (
        "leads.csv line 2: external_id 'L-1' is not a plausible id (column 'id'): "
        "it does not match the pattern L[0-9]+"
    )


def test_a_required_field_that_is_empty_makes_a_bad_record(tmp_path: Path) -> None:
    write(tmp_path / "leads.csv", "id,source,notes\nL1,Web,\nL2,,\n")
    settings = _leads(tmp_path)
    settings["streams"]["leads"]["fields"]["source"] = {"column": "source", "required": True}
    messages = read(connector(settings), "leads")
    assert list(by_id(messages, LeadRecord)) == ["L1"]
    ((key, field, message),) = [(bad.key, bad.field, bad.message) for bad in of_type(messages, BadRecord)]
    assert (key, field, message) == ("L2", "source", "leads.csv line 3: source is empty (column 'source')")


def test_empty_id_is_a_bad_record(tmp_path: Path) -> None:
    write(tmp_path / "leads.csv", "id,source\n,Web\nL2,Web\n")
    settings = {
        "data_dir": str(tmp_path),
        "streams": {"leads": {"file": "leads.csv", "fields": {"external_id": "id"}}},
    }
    messages = read(connector(settings), "leads")
    (bad,) = of_type(messages, BadRecord)
    assert (bad.key, bad.field) == ("leads.csv:2", "external_id")
    assert bad.message == "leads.csv line 2: external_id is empty (column 'id')"
    assert list(by_id(messages, LeadRecord)) == ["L2"]


def test_unmapped_value_error_and_null(tmp_path: Path) -> None:
    write(tmp_path / "leads.csv", "id,status\nL1,new\nL2,odd\n")
    fields: dict[str, Any] = {
        "external_id": "id",
        "status": {"column": "status", "map": {"NEW": "New"}, "ignore_case": True, "unmapped": "error"},
    }
    settings = {"data_dir": str(tmp_path), "streams": {"leads": {"file": "leads.csv", "fields": fields}}}
    messages = read(connector(settings), "leads")
    assert by_id(messages, LeadRecord)["L1"].status == "New"
    (bad,) = of_type(messages, BadRecord)
    assert (bad.key, bad.field) == ("L2", "fields.status")
    assert bad.message == "leads.csv line 3, column 'status': 'odd' is not a value the map lists"
    fields["status"]["unmapped"] = "null"
    assert by_id(read(connector(settings), "leads"), LeadRecord)["L2"].status is None


# --- joins and keys ---------------------------------------------------------------------------------


def test_joins_match_ignoring_case_and_spaces_and_report_ambiguity(tmp_path: Path) -> None:
    write(tmp_path / "users.csv", "uid,full name\n7,Ann  Lee\n8,Bob Roy\n9,bob roy\n")
    write(tmp_path / "leads.csv", "id,owner\nL1,ann lee\nL2,Bob Roy\nL3,Nobody\nL4,\n")
    settings: dict[str, Any] = {
        "data_dir": str(tmp_path),
        "streams": {
            "leads": {
                "file": "leads.csv",
                "joins": {
                    "user": {"file": "users.csv", "key": "owner", "match": "full name", "ignore_case": True}
                },
                "fields": {"external_id": "id", "owner_external_id": {"join": "user", "column": "uid"}},
            }
        },
    }
    messages = read(connector(settings), "leads")
    leads = by_id(messages, LeadRecord)
    assert {k: v.owner_external_id for k, v in leads.items()} == {"L1": "7", "L3": None, "L4": None}
    (bad,) = of_type(messages, BadRecord)
    assert (bad.key, bad.field) == ("L2", "joins.user")
    assert bad.message == (
        "leads.csv line 3: 'Bob Roy' matches several rows of users.csv (first on line 3); "
        "join 'user' cannot choose"
    )
    settings["streams"]["leads"]["joins"]["user"]["required"] = True
    bad_keys = {b.key: b.message for b in of_type(read(connector(settings), "leads"), BadRecord)}
    assert bad_keys["L3"] == "leads.csv line 4: no row of users.csv has full name = 'Nobody' (join 'user')"
    assert bad_keys["L4"] == "leads.csv line 5: the key of join 'user' is empty"


def test_composite_key_is_stable_and_unambiguous(tmp_path: Path) -> None:
    # Joined naively with "|", both rows would have the key "D|1|2".
    write(
        tmp_path / "history.csv",
        "deal,seq,at,to\nD|1,2,2024-01-01T10:00:00+02:00,Won\nD,1|2,2024-01-02,Lost\n",
    )
    settings = {
        "data_dir": str(tmp_path),
        "streams": {
            "stage_changes": {
                "file": "history.csv",
                "key": ["deal", "seq"],
                "fields": {"opportunity_external_id": "deal", "to_stage": "to", "changed_at": "at"},
            }
        },
    }
    changes = of_type(read(connector(settings), "stage_changes"), StageChangeRecord)
    assert [c.external_id for c in changes] == [r"D\|1|2", r"D|1\|2"]
    assert changes[0].changed_at == datetime(2024, 1, 1, 8, 0, tzinfo=UTC)  # the offset is honoured
    assert changes[1].changed_at == datetime(2024, 1, 2, tzinfo=UTC)
    assert [(c.opportunity_external_id, c.to_stage, c.from_stage) for c in changes] == [
        ("D|1", "Won", None),
        ("D", "Lost", None),
    ]


def test_naive_timestamps_are_read_in_the_configured_zone(tmp_path: Path) -> None:
    write(tmp_path / "leads.csv", "id,created\nL1,2024-07-01 12:00\nL2,2024-01-15\n")
    settings = {
        "data_dir": str(tmp_path),
        "timezone": "Europe/Berlin",
        "streams": {"leads": {"file": "leads.csv", "fields": {"external_id": "id", "created_at": "created"}}},
    }
    leads = by_id(read(connector(settings), "leads"), LeadRecord)
    assert leads["L1"].created_at == datetime(2024, 7, 1, 10, 0, tzinfo=UTC)  # CEST is UTC+2
    assert leads["L2"].created_at == datetime(2024, 1, 14, 23, 0, tzinfo=UTC)  # midnight CET


def test_teams_from_a_team_file_with_parents(tmp_path: Path) -> None:
    write(tmp_path / "teams.csv", "id,name,parent\nemea,EMEA,\ndach,DACH,emea\n")
    settings = {
        "data_dir": str(tmp_path),
        "streams": {
            "teams": {
                "file": "teams.csv",
                "keep_raw": False,
                "fields": {"external_id": "id", "name": "name", "parent_external_id": "parent"},
            }
        },
    }
    teams = of_type(read(connector(settings), "teams"), TeamRecord)
    assert teams == [
        TeamRecord(external_id="emea", name="EMEA"),
        TeamRecord(external_id="dach", name="DACH", parent_external_id="emea"),
    ]


def test_windows_export_with_bom_crlf_semicolons_and_cp1252(tmp_path: Path) -> None:
    text = "\ufeffid;company;amount\nL1;Café Müller;1.234,50 €\n"
    write(tmp_path / "a.csv", text, encoding="utf-8", newline="\r\n")
    write(tmp_path / "b.csv", text.lstrip("\ufeff"), encoding="cp1252", newline="\r\n")
    for name, encoding in (("a.csv", None), ("b.csv", "cp1252")):
        stream: dict[str, Any] = {
            "file": name,
            "delimiter": ";",
            "key": ["id"],
            "fields": {
                "account_external_id": "company",
                "amount": {"column": "amount", "decimal_separator": ",", "thousands_separator": "."},
            },
        }
        if encoding:
            stream["encoding"] = encoding
        deals = by_id(
            read(
                connector({"data_dir": str(tmp_path), "streams": {"opportunities": stream}}), "opportunities"
            ),
            OpportunityRecord,
        )
        assert (deals["L1"].account_external_id, deals["L1"].amount) == ("Café Müller", Decimal("1234.50"))
        assert deals["L1"].raw == {"id": "L1", "company": "Café Müller", "amount": "1.234,50 €"}


# --- configuration errors ---------------------------------------------------------------------------


def test_missing_column_is_a_config_error_before_any_record(tmp_path: Path) -> None:
    write(tmp_path / "deals.csv", DEALS.replace("amount", "value", 1))
    conn = connector(deal_settings(tmp_path))
    stream = conn.read(spec(conn, "opportunities"), None)
    with pytest.raises(ConnectorConfigError) as raised:
        next(stream)
    assert str(raised.value) == (
        "deals.csv (streams.opportunities): no column 'amount' (fields.amount). "
        "The file's columns: 'id', 'owner', 'stage', 'value', 'created', 'closed'"
    )
    with pytest.raises(ConnectorConfigError, match="no column 'amount'"):
        conn.check()


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    conn = connector(deal_settings(tmp_path))
    with pytest.raises(ConnectorConfigError) as raised:
        read(conn, "opportunities")
    assert str(raised.value) == (
        f"streams.opportunities: deals.csv does not exist (looked at {tmp_path / 'deals.csv'})"
    )
    with pytest.raises(ConnectorConfigError, match=r"deals\.csv does not exist"):
        conn.check()


def test_missing_join_file_and_join_column_are_config_errors(tmp_path: Path) -> None:
    write(tmp_path / "deals.csv", DEALS)
    joins = {"team": {"file": "teams.csv", "key": "owner", "match": "rep"}}
    custom = {"team": {"join": "team", "column": "team_name"}}
    conn = connector(deal_settings(tmp_path, joins=joins, custom=custom))
    with pytest.raises(
        ConnectorConfigError, match=r"streams.opportunities.joins.team: teams.csv does not exist"
    ):
        read(conn, "opportunities")
    write(tmp_path / "teams.csv", "rep,team\nann,A\n")
    with pytest.raises(ConnectorConfigError) as raised:
        read(conn, "opportunities")
    assert str(raised.value) == (
        "teams.csv (streams.opportunities.joins.team): no column 'team_name' (taken as 'team_name'). "
        "The file's columns: 'rep', 'team'"
    )


def test_wrong_encoding_is_a_config_error_before_any_record(tmp_path: Path) -> None:
    write(tmp_path / "leads.csv", "id,company\nL1,ok\nL2,Caf\xe9\n", encoding="latin-1")
    settings = {
        "data_dir": str(tmp_path),
        "streams": {"leads": {"file": "leads.csv", "fields": {"external_id": "id"}}},
    }
    conn = connector(settings)
    stream = conn.read(spec(conn, "leads"), None)
    with pytest.raises(ConnectorConfigError, match=r"leads.csv is not valid utf-8-sig near line 3"):
        next(stream)


def test_data_dir_is_relative_to_the_working_directory(tmp_path: Path) -> None:
    write(tmp_path / "exports" / "deals.csv", DEALS)
    settings = deal_settings(Path("exports"))
    deals = of_type(read(connector(settings, base_dir=tmp_path), "opportunities"), OpportunityRecord)
    assert len(deals) == 3


# --- checkpoints ------------------------------------------------------------------------------------


def _leads_file(path: Path, count: int) -> Path:
    lines = ["id,source,converted"] + [
        f"L{n:06d},src{n % 7},{'Yes' if n % 3 == 0 else 'No'}" for n in range(count)
    ]
    return write(path, "\n".join(lines) + "\n")


def _lead_settings(data_dir: Path, batch_size: int) -> dict[str, Any]:
    return {
        "data_dir": str(data_dir),
        "batch_size": batch_size,
        "streams": {
            "leads": {
                "file": "leads.csv",
                "fields": {"external_id": "id", "source": "source", "is_converted": "converted"},
            }
        },
    }


def _read_until_checkpoints(
    conn: CsvConnector, k: int, checkpoint: dict[str, Any] | None = None
) -> list[Message]:
    messages: list[Message] = []
    for message in conn.read(spec(conn, "leads"), checkpoint):
        messages.append(message)
        if isinstance(message, Checkpoint) and len(of_type(messages, Checkpoint)) == k:
            break
    return messages


def test_checkpoints_every_batch_and_done_at_the_end(tmp_path: Path) -> None:
    _leads_file(tmp_path / "leads.csv", 25)
    messages = read(connector(_lead_settings(tmp_path, 10)), "leads")
    checkpoints = of_type(messages, Checkpoint)
    assert [(c.state["row"], c.state["done"]) for c in checkpoints] == [(10, False), (20, False), (25, True)]
    assert {c.state["file"] for c in checkpoints} == {"leads.csv"}
    assert len({c.state["sha256"] for c in checkpoints}) == 1
    # Each checkpoint covers exactly the records yielded before it.
    first = messages.index(checkpoints[0])
    assert len(of_type(messages[:first], LeadRecord)) == 10
    assert messages[-2:] == [SnapshotComplete(), checkpoints[-1]]


def test_resume_after_an_interrupted_read_yields_the_rest_without_a_snapshot(tmp_path: Path) -> None:
    _leads_file(tmp_path / "leads.csv", 2345)
    full = read(connector(_lead_settings(tmp_path, 500)), "leads")
    first = _read_until_checkpoints(connector(_lead_settings(tmp_path, 500)), 2)
    assert last_checkpoint(first).state["row"] == 1000
    assert len(of_type(first, LeadRecord)) == 1000
    assert of_type(first, SnapshotComplete) == []
    rest = read(connector(_lead_settings(tmp_path, 500)), "leads", dict(last_checkpoint(first).state))
    assert of_type(rest, SnapshotComplete) == []
    assert [c.state["row"] for c in of_type(rest, Checkpoint)] == [1500, 2000, 2345]
    assert last_checkpoint(rest).state["done"] is True
    resumed = of_type(first, LeadRecord) + of_type(rest, LeadRecord)
    assert len(resumed) == 2345
    assert resumed == of_type(full, LeadRecord)


def test_resume_on_a_real_dataset() -> None:
    settings = example_settings("x_education").model_copy(update={"batch_size": 1000})
    conn = connector(settings)
    full = {r.external_id for r in of_type(read(conn, "leads"), LeadRecord)}
    first = _read_until_checkpoints(conn, 3)
    rest = read(conn, "leads", dict(last_checkpoint(first).state))
    ids = [r.external_id for r in of_type(first + rest, LeadRecord)]
    assert len(ids) == len(set(ids)) == len(full) == 9240
    assert set(ids) == full
    assert of_type(first + rest, SnapshotComplete) == []


def test_an_unchanged_file_after_a_complete_read_yields_nothing_but_its_checkpoint(tmp_path: Path) -> None:
    _leads_file(tmp_path / "leads.csv", 30)
    conn = connector(_lead_settings(tmp_path, 10))
    done = last_checkpoint(read(conn, "leads"))
    again = read(conn, "leads", dict(done.state))
    assert again == [Checkpoint(dict(done.state))]


def test_a_changed_file_is_read_from_the_start(tmp_path: Path) -> None:
    path = _leads_file(tmp_path / "leads.csv", 30)
    conn = connector(_lead_settings(tmp_path, 10))
    done = last_checkpoint(read(conn, "leads"))
    middle = Checkpoint({**done.state, "row": 10, "done": False})
    path.write_text(path.read_text().replace("L000003,src3,Yes", "L000003,src3,No"))
    for checkpoint in (done, middle):
        again = read(conn, "leads", dict(checkpoint.state))
        assert len(of_type(again, LeadRecord)) == 30
        assert SnapshotComplete() in again
        assert last_checkpoint(again).state["sha256"] != done.state["sha256"]
        assert by_id(again, LeadRecord)["L000003"].is_converted is False


def test_a_changed_mapping_rereads_the_file(tmp_path: Path) -> None:
    _leads_file(tmp_path / "leads.csv", 30)
    done = last_checkpoint(read(connector(_lead_settings(tmp_path, 10)), "leads"))
    settings = _lead_settings(tmp_path, 10)
    settings["streams"]["leads"]["fields"]["status"] = {"value": "imported"}
    again = read(connector(settings), "leads", dict(done.state))
    assert {r.status for r in of_type(again, LeadRecord)} == {"imported"}
    assert len(of_type(again, LeadRecord)) == 30


def test_a_file_replaced_during_the_read_is_a_retriable_error(tmp_path: Path) -> None:
    path = _leads_file(tmp_path / "leads.csv", 30)
    conn = connector(_lead_settings(tmp_path, 10))
    stream = conn.read(spec(conn, "leads"), None)
    first = next(stream)
    assert isinstance(first, LeadRecord)
    # The reader holds 1 MiB of the file; rewrite it beyond that so the change is seen.
    path.write_text(path.read_text() + "".join(f"X{n:07d},late,No\n" for n in range(60_000)))
    with pytest.raises(RetriableError, match=r"leads\.csv changed while it was being read"):
        list(stream)


def test_stage_table_stream_checkpoints(tmp_path: Path) -> None:
    write(tmp_path / "deals.csv", DEALS)
    conn = connector(deal_settings(tmp_path))
    messages = read(conn, "pipeline_stages")
    assert messages[-2] == SnapshotComplete()
    assert read(conn, "pipeline_stages", dict(last_checkpoint(messages).state)) == [messages[-1]]


@pytest.mark.slow
def test_memory_stays_flat_for_a_large_file(tmp_path: Path) -> None:
    rows = 150_000
    padding = "x" * 120
    path = tmp_path / "leads.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("id,source,converted,notes\n")
        for n in range(rows):
            handle.write(f"L{n:07d},src{n % 11},{'Yes' if n % 4 == 0 else 'No'},{padding}\n")
    size = path.stat().st_size
    assert size > 20_000_000
    conn = connector(_lead_settings(tmp_path, 2000))
    tracemalloc.start()
    try:
        count = 0
        for message in conn.read(spec(conn, "leads"), None):
            count += isinstance(message, LeadRecord)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == rows
    assert peak < size / 4, f"peak {peak:,} bytes for a {size:,}-byte file"


def test_every_example_config_checks_against_its_dataset() -> None:
    for name in ("maven", "zoho", "x_education"):
        connector(example_settings(name)).check()
