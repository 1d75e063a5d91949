"""The dashboard's remembered number formatting writes what Babel writes, value for value."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from babel.dates import format_skeleton
from babel.numbers import format_currency, format_decimal, format_percent

from crm_perf_sync.api.dashboard.i18n import Formatter

VALUES = [0, 0.0, -0.0, 1, 1.0, -1, 2.675, 0.125, -0.001, 1234.5678, 1e9, 12_345.6, 0.3333333]
LOCALES = {"en": "en_US", "zh": "zh_Hans_CN"}


@pytest.mark.parametrize("language", ["en", "zh"])
def test_numbers_amounts_and_percentages_match_babel_on_every_call(language: str) -> None:
    fmt = Formatter("en" if language == "en" else "zh")
    locale = LOCALES[language]
    for _ in range(2):  # the second round answers from what the first remembered
        for value in VALUES:
            assert fmt.number(value) == format_decimal(value, "#,##0", locale=locale)
            assert fmt.number(value, 1) == format_decimal(value, "#,##0.0", locale=locale)
            assert fmt.percent(value) == format_percent(value, "#,##0.0%", locale=locale)
            assert fmt.money(value, "USD") == format_currency(value, "USD", locale=locale)
            assert fmt.money(value, "CNY") == format_currency(value, "CNY", locale=locale)


def test_negative_zero_keeps_its_sign_after_zero_was_formatted() -> None:
    fmt = Formatter("en")
    assert fmt.number(0.0) == "0"
    assert fmt.number(-0.0) == "-0"
    assert fmt.percent(0.0) == "0.0%"
    assert fmt.percent(-0.0) == "-0.0%"
    assert fmt.number(2.675, 2) == "2.68"


@pytest.mark.parametrize("language", ["en", "zh"])
def test_dates_and_periods_match_babel_on_every_call(language: str) -> None:
    fmt = Formatter("en" if language == "en" else "zh")
    locale = LOCALES[language]
    for _ in range(2):
        for day in (date(2024, 3, 1), date(2025, 12, 29), datetime(2024, 3, 1, 23, 30)):  # noqa: DTZ001
            assert fmt.day(day) == format_skeleton("yMMMd", day, locale=locale)
            assert fmt.period("month", day) == format_skeleton("yMMM", day, locale=locale)
    assert Formatter("en").period("month", date(2024, 3, 1)) == "Mar 2024"
    assert Formatter("zh").period("month", date(2024, 3, 1)) == "2024年3月"
