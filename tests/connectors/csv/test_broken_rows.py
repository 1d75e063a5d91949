"""Broken rows of a real export, synced through the real engine into both stores.

Each test copies the Maven dataset, breaks ``sales_pipeline.csv`` the way exports get broken (a
stray quote, a row cut short, an empty row, a NUL byte) and checks exactly which deals are stored
and which rows are reported, with file, line and reason.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.cli.data import EXIT_REJECTED
from crm_perf_sync.config import ConnectionConfig
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.leases import new_holder_id
from crm_perf_sync.models import Opportunity, SyncRecordError
from crm_perf_sync.sync import repository as repo
from crm_perf_sync.sync.outcomes import SyncOutcome
from crm_perf_sync.sync.service import SyncEngine, SyncOptions
from tests.cli_inprocess import invoke
from tests.connectors.csv.support import connector, dataset, example_settings

PIPELINE = "sales_pipeline.csv"


def _copy_maven(tmp_path: Path, edit: Callable[[list[str]], None]) -> Path:
    """The Maven files in ``tmp_path/maven``, with ``edit`` applied to the pipeline's lines."""
    target = tmp_path / "maven"
    shutil.copytree(dataset("maven_crm_sales_opportunities"), target)
    for path in target.iterdir():
        path.chmod(0o644)
    pipeline = target / PIPELINE
    lines = pipeline.read_text(encoding="utf-8").splitlines(keepends=True)
    edit(lines)
    pipeline.write_text("".join(lines), encoding="utf-8")
    return target


def _original() -> list[str]:
    """The dataset's pipeline lines as shipped; ``lines[n - 1]`` is line ``n`` of the file."""
    path = dataset("maven_crm_sales_opportunities") / PIPELINE
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def _id(line: str) -> str:
    return line.split(",", 1)[0]


def _sync(
    session_factory: sessionmaker[Session], data_dir: Path, *, full: bool = False, **stream: Any
) -> tuple[SyncOutcome, dict[str, Opportunity], list[tuple[str | None, str | None, str]]]:
    """Sync the Maven opportunities from ``data_dir``: the outcome, the deals and the bad rows."""
    with session_scope(session_factory) as session:
        repo.sync_connections(
            session, [ConnectionConfig.model_validate({"id": "maven", "kind": "csv"})], utc_now()
        )
    settings = example_settings("maven").model_dump(exclude_unset=True)
    settings["data_dir"] = str(data_dir)
    settings["streams"] = {"opportunities": {**settings["streams"]["opportunities"], **stream}}
    engine = SyncEngine(
        session_factory=session_factory,
        connector=connector(settings),
        connection_id="maven",
        options=SyncOptions(),
        holder=new_holder_id(),
    )
    outcome = engine.run(trigger="manual", full_refresh=full)
    with session_scope(session_factory) as session:
        deals = {deal.external_id: deal for deal in session.scalars(select(Opportunity))}
        for deal in deals.values():
            session.expunge(deal)
        errors = session.execute(
            select(SyncRecordError.record_key, SyncRecordError.field, SyncRecordError.message)
            .where(SyncRecordError.run_id == outcome.run_id)
            .order_by(SyncRecordError.id)
        ).all()
    return outcome, deals, [(key, field, message) for key, field, message in errors]


def test_a_stray_quote_reports_its_row_and_keeps_every_row_after_it(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    original = _original()
    # Line 8782 of 8801: a quote opening its first cell is never closed, and the csv module would
    # read the 19 rows after it as the rest of that cell (one deal with a 1,000-character id).
    stray = 8782

    def edit(lines: list[str]) -> None:
        lines[stray - 1] = '"' + lines[stray - 1]

    outcome, deals, errors = _sync(session_factory, _copy_maven(tmp_path, edit))

    assert outcome.status == "succeeded", outcome.error
    assert set(deals) == {_id(line) for line in original[1:]} - {_id(original[stray - 1])}
    assert errors == [
        (
            f"{PIPELINE}:{stray}",
            None,
            f"{PIPELINE} line {stray}: a quoted field opened on this line is never closed "
            "(a stray quote?); the lines after it are read as rows of their own",
        )
    ]
    deals_read = outcome.streams["opportunities"]
    assert (deals_read.read, deals_read.inserted, deals_read.skipped) == (8800, 8799, 1)
    assert "skipped 1 bad record" in outcome.summary()


def test_short_and_empty_rows_and_rows_without_a_stage_are_bad_records(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    original = _original()
    short, empty, stageless, spaces = 101, 201, 301, 401

    def edit(lines: list[str]) -> None:
        cells = lines[short - 1].split(",")
        lines[short - 1] = ",".join(cells[:2]) + "\n"
        lines[empty - 1] = ",,,,,,,\n"
        lines[stageless - 1] = _id(lines[stageless - 1]) + ",,,,,,,\n"
        lines[spaces - 1] = "  ,  , ,,,,,\n"
        # Rows of empty cells that a spreadsheet leaves after the data are not rows of data.
        lines.extend([",,,,,,,\n", ",,,,,,,\n", "\n"])

    outcome, deals, errors = _sync(session_factory, _copy_maven(tmp_path, edit))

    assert outcome.status == "succeeded", outcome.error
    broken = {short, empty, stageless, spaces}
    assert set(deals) == {_id(line) for number, line in enumerate(original[1:], 2) if number not in broken}
    assert errors == [
        (
            _id(original[short - 1]),
            None,
            f"{PIPELINE} line {short}: 2 cells but the header has 8 columns "
            "(a row cut short, or a line break that is not quoted?)",
        ),
        (f"{PIPELINE}:{empty}", None, f"{PIPELINE} line {empty}: every cell is empty"),
        (
            _id(original[stageless - 1]),
            "stage",
            f"{PIPELINE} line {stageless}: stage is empty (column 'deal_stage')",
        ),
        (f"{PIPELINE}:{spaces}", None, f"{PIPELINE} line {spaces}: every cell is empty"),
    ]
    deals_read = outcome.streams["opportunities"]
    assert (deals_read.read, deals_read.inserted, deals_read.skipped) == (8800, 8796, 4)
    assert "skipped 4 bad records" in outcome.summary()


def test_an_id_the_mapping_does_not_accept_is_a_bad_record(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    original = _original()
    long_id, odd_id = 11, 12

    def edit(lines: list[str]) -> None:
        lines[long_id - 1] = "X" * 300 + lines[long_id - 1][8:]
        lines[odd_id - 1] = "ab-12345" + lines[odd_id - 1][8:]

    # The default rule takes any id up to 255 characters without control characters; this mapping
    # knows Maven's ids are 8 capitals and digits.
    outcome, deals, errors = _sync(
        session_factory,
        _copy_maven(tmp_path, edit),
        id_rule={"pattern": "[A-Z0-9]{8}", "max_length": 8},
    )

    assert outcome.status == "succeeded", outcome.error
    assert set(deals) == {
        _id(line) for number, line in enumerate(original[1:], 2) if number not in (long_id, odd_id)
    }
    assert errors == [
        (
            f"{PIPELINE}:{long_id}",
            "external_id",
            f"{PIPELINE} line {long_id}: external_id is not a plausible id (column 'opportunity_id'): "
            "300 characters, more than the 8 the mapping allows",
        ),
        (
            f"{PIPELINE}:{odd_id}",
            "external_id",
            f"{PIPELINE} line {odd_id}: external_id 'ab-12345' is not a plausible id "
            "(column 'opportunity_id'): it does not match the pattern [A-Z0-9]{8}",
        ),
    ]


def test_a_nul_byte_in_a_cell_is_removed_with_a_warning_on_both_stores(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    original = _original()
    # Line 2 is deal 1C1I7A6R of agent Moses Frase; line 3 gets a NUL in its id.
    nul_cell, nul_id = 2, 3

    def edit(lines: list[str]) -> None:
        lines[nul_cell - 1] = lines[nul_cell - 1].replace("Moses Frase", "Moses\x00 Frase")
        lines[nul_id - 1] = "Z063\x00OYW0" + lines[nul_id - 1][8:]

    data_dir = _copy_maven(tmp_path, edit)
    outcome, deals, _ = _sync(session_factory, data_dir)
    assert outcome.status == "succeeded", outcome.error
    # A full re-read of the same file goes as well: nothing sticks to the connection.
    again, _, _ = _sync(session_factory, data_dir, full=True)
    assert again.status == "succeeded", again.error
    deals_read = again.streams["opportunities"]
    assert (deals_read.unchanged, deals_read.skipped, deals_read.warnings) == (8799, 1, 1)

    assert set(deals) == {_id(line) for line in original[1:]} - {"Z063OYW0"}
    deal = deals["1C1I7A6R"]
    assert deal.owner_external_id == "Moses Frase"
    assert deal.raw is not None
    assert deal.raw["sales_agent"] == "Moses Frase"
    assert "\x00" not in "".join(deal.external_id for deal in deals.values())
    first_run_errors = _run_errors(session_factory, first=True)
    assert first_run_errors == [
        (
            "warning",
            "1C1I7A6R",
            "owner_external_id",
            "NUL characters removed from owner_external_id, raw.sales_agent: no store can hold them",
        ),
        (
            "error",
            f"{PIPELINE}:{nul_id}",
            "external_id",
            f"{PIPELINE} line {nul_id}: external_id 'Z063\\x00OYW0' is not a plausible id "
            "(column 'opportunity_id'): it holds a control character",
        ),
    ]
    assert "skipped 1 bad record, 1 warning" in outcome.summary()


def _run_errors(
    session_factory: sessionmaker[Session], *, first: bool
) -> list[tuple[str, str | None, str | None, str]]:
    with session_scope(session_factory) as session:
        run_ids = sorted(set(session.scalars(select(SyncRecordError.run_id))))
        run_id = run_ids[0] if first else run_ids[-1]
        rows = session.execute(
            select(
                SyncRecordError.level,
                SyncRecordError.record_key,
                SyncRecordError.field,
                SyncRecordError.message,
            )
            .where(SyncRecordError.run_id == run_id)
            .order_by(SyncRecordError.id)
        ).all()
    return [(level, key, field, message) for level, key, field, message in rows]


def test_the_sync_command_counts_bad_records_and_warnings_and_says_what_and_where(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "leads.csv").write_bytes(b"id,source\nL1,Web\nL2\nL3,We\x00b\nL4,Event\n,Web\n")
    config = tmp_path / "crm-perf-sync.yaml"
    config.write_text(
        "connections:\n"
        "  - id: exports\n"
        "    kind: csv\n"
        "    settings:\n"
        f"      data_dir: {exports}\n"
        "      streams:\n"
        "        leads: {file: leads.csv, fields: {external_id: id, source: source}}\n",
        encoding="utf-8",
    )
    result = invoke(
        "sync",
        env={
            "COLUMNS": "200",
            "CRM_PERF_SYNC_CONFIG": str(config),
            "CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        },
    )
    assert result.exit_code == EXIT_REJECTED, result.stderr  # the run succeeded with rejected records
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("exports: succeeded in ")
    counts = "read 5, inserted 3, updated 0, unchanged 0, deleted 0, skipped 2 bad records, 1 warning,"
    assert counts in lines[0]
    assert lines[1:] == [
        "  error: leads: leads.csv line 3: 1 cell but the header has 2 columns "
        "(a row cut short, or a line break that is not quoted?)",
        "  warning: leads: NUL characters removed from source, raw.source: no store can hold them",
        "  error: leads: leads.csv line 6: external_id is empty (column 'id')",
    ]
