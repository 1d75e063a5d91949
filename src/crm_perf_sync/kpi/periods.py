"""Periods in the business timezone and fiscal calendar, in SQL and in Python, in one place.

In SQL a record's period is an integer *month index* (``year * 12 + month - 1`` of its local
date); grains are bucketed from it arithmetically, so one expression serves month, fiscal quarter
and fiscal year on every database. PostgreSQL converts to local time natively; SQLite has no time
zones, so the UTC offset is a CASE over the zone's transitions (computed from the tz database).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Date, Integer, cast, func, literal, literal_column, type_coerce
from sqlalchemy.sql.elements import ColumnElement

from crm_perf_sync.kpi.schemas import Grain

_FIRST_YEAR, _LAST_YEAR = 1990, 2060
_EPOCH = date(1970, 1, 1)
#: How far apart two consecutive periods' indexes are: a week's index counts weeks, every other
#: grain's counts months.
STEP: dict[Grain, int] = {"week": 1, "month": 1, "quarter": 3, "year": 12}
_EPOCH_JULIAN = 2440587.5  # julianday('1970-01-01')


@lru_cache(maxsize=16)
def utc_offsets(zone: str) -> tuple[tuple[datetime, int], ...]:
    """``(from UTC instant, offset seconds)`` steps of ``zone`` between 1990 and 2060."""
    tz = ZoneInfo(zone)
    start = datetime(_FIRST_YEAR, 1, 1, tzinfo=UTC)
    steps = [(start, int(start.astimezone(tz).utcoffset().total_seconds()))]  # type: ignore[union-attr]
    moment = start
    end = datetime(_LAST_YEAR, 1, 1, tzinfo=UTC)
    while moment < end:
        following = moment + timedelta(hours=6)
        offset = int(following.astimezone(tz).utcoffset().total_seconds())  # type: ignore[union-attr]
        if offset != steps[-1][1]:
            # Narrow the change down to the minute (transitions happen on minute boundaries).
            low, high = moment, following
            while high - low > timedelta(minutes=1):
                mid = low + (high - low) / 2
                if int(mid.astimezone(tz).utcoffset().total_seconds()) == offset:  # type: ignore[union-attr]
                    high = mid
                else:
                    low = mid
            steps.append((high.replace(second=0, microsecond=0), offset))
        moment = following
    return tuple(steps)


def _local(column: Any, *, kind: str, dialect: str, zone: str) -> Any:
    """SQL: ``column`` as a local timestamp (PostgreSQL) or local ``YYYY-MM-DD ...`` text (SQLite)."""
    if kind == "date":
        return column
    if dialect == "postgresql":
        return func.timezone(zone, column)
    # SQLite's date functions round to whole milliseconds: 23:59:59.9999 would become the next
    # day. Offsets are whole seconds, so cutting the fraction never changes the local period.
    seconds = func.substr(column, 1, 19)
    thresholds, first_offset = _sqlite_steps(zone)
    if not thresholds:
        return seconds if first_offset == 0 else func.datetime(seconds, literal(f"{first_offset:+d} seconds"))
    # The CASE over the zone's transitions is built once per zone and column as SQL text: its
    # constants come from the tz database (never from input), and compiling ~150 bound literals
    # for every query would cost more than running it.
    name = f'"{column.table.name}"."{column.name}"'
    return func.datetime(seconds, literal_column(_sqlite_offset_case(zone, name)))


@lru_cache(maxsize=16)
def _sqlite_steps(zone: str) -> tuple[tuple[tuple[str, str], ...], int]:
    """``zone``'s offset changes as (naive UTC text, SQLite modifier), latest first; the first offset."""
    steps = utc_offsets(zone)
    thresholds = tuple(
        (at.replace(tzinfo=None).isoformat(sep=" "), f"{offset:+d} seconds")
        for at, offset in reversed(steps[1:])
    )
    return thresholds, steps[0][1]


@lru_cache(maxsize=64)
def _sqlite_offset_case(zone: str, column_sql: str) -> str:
    """``CASE WHEN <column> >= '<UTC instant>' THEN '<offset> seconds' ... END`` for ``zone``."""
    thresholds, first_offset = _sqlite_steps(zone)
    # Text comparison is exact: the store writes naive UTC as 'YYYY-MM-DD HH:MM:SS.ffffff'.
    whens = " ".join(f"WHEN {column_sql} >= '{at}' THEN '{modifier}'" for at, modifier in thresholds)
    return f"(CASE {whens} ELSE '{first_offset:+d} seconds' END)"


def month_index(column: Any, *, kind: str, dialect: str, zone: str) -> ColumnElement[int]:
    """SQL: the local month index of ``column`` (a UTC timestamp, or a calendar date)."""
    local = _local(column, kind=kind, dialect=dialect, zone=zone)
    if dialect == "postgresql":
        year = cast(func.extract("year", local), Integer)
        month = cast(func.extract("month", local), Integer)
    else:
        # The local time is 'YYYY-MM-DD...' text: its year and month are read where they stand.
        # (strftime parsed the whole timestamp, twice: a third of the time of a grouped query
        # over a million records went to it.)
        year = cast(func.substr(local, 1, 4), Integer)
        month = cast(func.substr(local, 6, 2), Integer)
    return year * 12 + month - 1


def week_index(column: Any, *, kind: str, dialect: str, zone: str) -> ColumnElement[int]:
    """SQL: the local ISO week (Monday to Sunday) of ``column``, numbered from the epoch's week."""
    local = _local(column, kind=kind, dialect=dialect, zone=zone)
    if dialect == "postgresql":
        days: ColumnElement[int] = type_coerce(cast(local, Date) - literal(_EPOCH, Date), Integer)
    else:
        days = cast(func.julianday(func.substr(local, 1, 10)) - _EPOCH_JULIAN, Integer)  # its date
    # 1970-01-01 is a Thursday: shifting by 3 days puts every Monday at a multiple of 7.
    result: ColumnElement[int] = (days + 3) // 7
    return result


def period_index(
    column: Any, *, kind: str, dialect: str, zone: str, grain: Grain, fiscal_start_month: int
) -> ColumnElement[int]:
    """SQL: the index of ``grain``'s period containing ``column`` (see :func:`period_bounds`)."""
    if grain == "week":
        return week_index(column, kind=kind, dialect=dialect, zone=zone)
    index = month_index(column, kind=kind, dialect=dialect, zone=zone)
    return bucket(index, grain, fiscal_start_month)


def bucket(index: ColumnElement[int], grain: Grain, fiscal_start_month: int) -> ColumnElement[int]:
    """SQL: the month index of the first month of ``grain``'s period containing ``index``."""
    shift = fiscal_start_month - 1
    if grain == "month":
        return index
    size = 3 if grain == "quarter" else 12
    # Month indexes are positive: floor division is plain integer division on both databases.
    result: ColumnElement[int] = ((index - shift) // size) * size + shift
    return result


def month_start(index: int) -> date:
    return date(index // 12, index % 12 + 1, 1)


def period_bounds(index: int, grain: Grain) -> tuple[date, date]:
    """Start (inclusive) and end (exclusive) dates of the period with this index.

    A week's index counts weeks from the epoch; every other grain's is the month index of its
    first month.
    """
    if grain == "week":
        start = _EPOCH + timedelta(days=7 * index - 3)
        return start, start + timedelta(days=7)
    return month_start(index), month_start(index + STEP[grain])


def previous(index: int, grain: Grain) -> int:
    """The index of the period before the one at ``index``."""
    return index - STEP[grain]


def local_period_index(moment: datetime | date, zone: str, grain: Grain, fiscal_start_month: int) -> int:
    """Python twin of :func:`period_index`."""
    if isinstance(moment, datetime):
        moment = moment.astimezone(ZoneInfo(zone)).date()
    if grain == "week":
        return ((moment - _EPOCH).days + 3) // 7
    index = moment.year * 12 + moment.month - 1
    if grain == "month":
        return index
    shift, size = fiscal_start_month - 1, 3 if grain == "quarter" else 12
    return ((index - shift) // size) * size + shift


def elapsed_fraction(start: date, end: date, now: datetime, zone: str) -> float:
    """How much of the period [start, end) in the business timezone has passed at ``now`` (0..1)."""
    tz = ZoneInfo(zone)
    begin = datetime(start.year, start.month, start.day, tzinfo=tz)
    finish = datetime(end.year, end.month, end.day, tzinfo=tz)
    total = (finish - begin).total_seconds()
    return min(1.0, max(0.0, (now - begin).total_seconds() / total))
