"""What the commands print: a console that shows text verbatim, numbers formatted for reading,
and rows as CSV or JSON."""

from __future__ import annotations

import re
import sys
from typing import Any

from rich.console import Console
from rich.text import Text

#: C0 and C1 control characters but newline and tab: ESC starts terminal commands (colours,
#: hyperlinks, cursor moves, window titles), which text from a CRM must never be able to send.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """``text`` with each control character written out as its escape (ESC as ``\\x1b``)."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


class _Verbatim(Console):
    """A console that prints every string exactly as it is: never read as Rich markup or emoji
    codes (`[link=…]` would become a hyperlink, `https://[fd00::1]/` lose its address, a regex its
    brackets), and with its control characters shown rather than obeyed. Everything printed
    comes from the CRM, the configuration or the user; styled words are ``Text`` objects built
    with :func:`styled`."""

    def __init__(self, **options: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **options)

    def render_str(self, text: str, **options: Any) -> Text:  # every str printed or in a table
        return super().render_str(visible(text), **options)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Text from plain strings and (string, style) pairs, control characters shown."""
    return Text.assemble(*(visible(p) if isinstance(p, str) else (visible(p[0]), p[1]) for p in parts))


err = _Verbatim(stderr=True)
# Piped output (less, a file) gets room for wide tables; a terminal uses its own width.
out = _Verbatim(width=None if sys.stdout.isatty() else 160)


def cell_value(value: Any) -> Any:
    if value is None:
        return ""
    return value.isoformat() if hasattr(value, "isoformat") else value


def emit(rows: list[dict[str, Any]], columns: tuple[str, ...], output: str) -> bool:
    """Write rows as csv or json; ``False`` when the caller should draw a table instead."""
    import csv

    import orjson

    if output == "json":
        sys.stdout.write(
            orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
            + "\n"
        )
        return True
    if output == "csv":
        from crm_perf_sync.kit.csvout import cell

        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: cell(v) for k, v in row.items()})
        return True
    return False


def number(value: float | None, low_sample: bool = False, percent: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value:.1%}" if percent else f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return text + (" *" if low_sample else "")


def quantity(value: float | None) -> str:
    """A numerator or denominator: a count as the whole number it is, an amount to the cent."""
    if value is None:
        return ""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def json_text(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
