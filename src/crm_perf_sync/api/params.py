"""Query parameters that several route modules read: grain, scope and period."""

from __future__ import annotations

from typing import Literal

from crm_perf_sync.kit.errors import InvalidInput
from crm_perf_sync.kit.timeutil import first_day
from crm_perf_sync.kpi import periods

GrainParam = Literal["week", "month", "quarter", "year", "all"]
ScopeParam = Literal["company", "team", "owner"]
PERIOD_HELP = (
    "A period: its key (its first day, e.g. 2024-04-01, or `all`), or with `grain` any date in it "
    "(2024-05-17, 2024-05 or 2024)."
)


def period_key(period: str | None, grain: str | None, fiscal_start_month: int) -> str | None:
    """A period parameter as the key values are stored under (400-class error if unreadable)."""
    if period is None:
        return None
    if period == "all":
        if grain not in (None, "all"):
            raise InvalidInput(f"period all belongs to grain all, not {grain}")
        return "all"
    try:
        day = first_day(period)
    except ValueError:
        raise InvalidInput(
            f"period {period!r} is not a date (YYYY-MM-DD, YYYY-MM or YYYY) or `all`"
        ) from None
    if grain is None or grain == "all":
        if grain == "all":
            raise InvalidInput("the grain all has one period: `all`")
        return day.isoformat()
    try:
        index = periods.local_period_index(day, "UTC", grain, fiscal_start_month)  # type: ignore[arg-type]
        start, _end = periods.period_bounds(index, grain)  # type: ignore[arg-type]
    except (OverflowError, ValueError):
        # The first week of year 1 or the last of 9999, or a fiscal year starting in year 0.
        raise InvalidInput(
            f"period: the {grain} holding {day} reaches outside the calendar (years 1 to 9999)"
        ) from None
    return start.isoformat()
