"""Text → typed values: the parsers behind a connector's field mappings (the csv and rest connectors').

Amounts as exports and APIs write them (``"$22,700.00"``, ``"1.200,50 €"``, ``"(300)"``), dates and
date-times in strptime formats or ISO 8601 read in a zone, probabilities as fractions or percent,
yes/no values in configured spellings. Each parser takes a trimmed, non-missing cell and returns
the value or raises ``ValueError`` with a reason that reads after the quoted value
("'2017-13-01' is not a date (format %Y-%m-%d)").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from crm_perf_sync.kit.timeutil import ensure_utc

Parser = Callable[[str], Any]

# A currency is written as an ISO code or a symbol (optionally prefixed, as in US$ or R$) on either
# side of the number. Nothing else is dropped: "342.09K" is not silently read as 342.09.
_SYMBOL = r"(?:[A-Z]{3}|[A-Z]{0,2}[$€£¥₹₩₽₺₪]|kr|zł)"
_AMOUNT = re.compile(
    rf"^(?P<sign>[-+])?\s*(?:{_SYMBOL}\s*)?(?P<sign2>[-+])?\s*(?P<number>\d[\d.,' ]*?)\s*(?:{_SYMBOL})?$"
)
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# Dates repeat a lot in exports (every deal of a day); caching spares most strptime calls.
_CACHE_SIZE = 8192


def text(value: str) -> str:
    """Text stays as it is (already trimmed)."""
    return value


def amount_parser(decimal_separator: str = ".", thousands_separator: str = ",") -> Callable[[str], Decimal]:
    """Money: ``"$22,700.00"`` → ``Decimal("22700.00")``; ``"(300)"`` and ``"-$300"`` are negative."""
    # Most cells are bare numbers ("1054", "99.50"): Decimal reads those directly.
    plain = _PLAIN_NUMBER if decimal_separator == "." else None

    def parse(value: str) -> Decimal:
        if plain is not None and plain.fullmatch(value):
            return Decimal(value)
        body = value
        negative = False
        if body.startswith("(") and body.endswith(")"):
            negative, body = True, body[1:-1].strip()
        match = _AMOUNT.match(body)
        if match is None:
            raise ValueError("is not an amount")
        if match["sign"] == "-" or match["sign2"] == "-":
            negative = not negative
        number = match["number"].strip()
        whole, _, fraction = number.partition(decimal_separator)
        if thousands_separator and thousands_separator in whole:
            groups = whole.split(thousands_separator)
            if not (1 <= len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])):
                raise ValueError(f"is not an amount (thousands separator {thousands_separator!r})")
            whole = "".join(groups)
        if not whole.isdigit() or (fraction and not fraction.isdigit()):
            raise ValueError(
                f"is not an amount (decimal separator {decimal_separator!r}, "
                f"thousands separator {thousands_separator!r})"
            )
        try:
            result = Decimal(f"{whole}.{fraction}" if fraction else whole)
        except InvalidOperation:
            raise ValueError("is not an amount") from None
        return -result if negative else result

    return parse


def probability_parser(scale: str) -> Callable[[str], float]:
    """A probability as a fraction in [0, 1]; ``scale="percent"`` reads 0-100 (``"75%"`` too)."""
    divisor = 100.0 if scale == "percent" else 1.0
    bound = "0-100" if scale == "percent" else "0-1"

    def parse(value: str) -> float:
        try:
            number = float(value.removesuffix("%").strip()) / divisor
        except ValueError:
            raise ValueError("is not a number") from None
        if not 0.0 <= number <= 1.0:
            raise ValueError(f"is outside {bound}")
        return number

    return parse


def bool_parser(true_values: Iterable[str], false_values: Iterable[str]) -> Callable[[str], bool]:
    """Yes/no from the configured spellings, matched case-insensitively."""
    table = {v.casefold(): True for v in true_values} | {v.casefold(): False for v in false_values}
    expected = ", ".join(sorted(table))

    def parse(value: str) -> bool:
        try:
            return table[value.casefold()]
        except KeyError:
            raise ValueError(f"is not a yes/no value (expected one of: {expected})") from None

    return parse


def datetime_parser(formats: tuple[str, ...], zone: tzinfo) -> Callable[[str], datetime]:
    """An aware UTC datetime; naive text is read in ``zone``, a date alone is midnight there."""

    def parse(value: str) -> datetime:
        if not formats:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError("is not an ISO 8601 date-time") from None
            return ensure_utc(parsed, assume=zone)
        for fmt in formats:
            try:
                if "%z" in fmt:
                    # The text carries its own offset; the zone only applies to naive values.
                    return datetime.strptime(value, fmt).astimezone(UTC)
                return ensure_utc(datetime.strptime(value, fmt).replace(tzinfo=zone))
            except ValueError:
                continue
        raise ValueError(f"is not a date-time in format {' or '.join(formats)}")

    return lru_cache(maxsize=_CACHE_SIZE)(parse)


def date_parser(formats: tuple[str, ...]) -> Callable[[str], date]:
    """A calendar date as written (a time of day, if any, is dropped without a zone conversion)."""

    def parse(value: str) -> date:
        if not formats:
            with suppress(ValueError):
                return date.fromisoformat(value)
            try:
                return datetime.fromisoformat(value).date()
            except ValueError:
                raise ValueError("is not an ISO 8601 date") from None
        for fmt in formats:
            try:
                # The zone is irrelevant to the calendar date: UTC only keeps the value aware.
                return datetime.strptime(value, fmt).replace(tzinfo=UTC).date()
            except ValueError:
                continue
        raise ValueError(f"is not a date in format {' or '.join(formats)}")

    return lru_cache(maxsize=_CACHE_SIZE)(parse)


def integer(value: str) -> int:
    """A whole number."""
    try:
        return int(value)
    except ValueError:
        raise ValueError("is not a whole number") from None
