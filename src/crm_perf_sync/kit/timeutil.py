"""The one place that knows what time it is and how timestamps are normalised.

Every datetime inside the service is timezone-aware UTC. Naive values only ever come from
outside (a CSV export, SQLite) and are converted at that edge.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo


def utc_now() -> datetime:
    """The current instant, aware, in UTC."""
    return datetime.now(UTC)


def ensure_utc(value: datetime, *, assume: tzinfo = UTC) -> datetime:
    """Return ``value`` as an aware UTC datetime.

    A naive ``value`` is interpreted in ``assume`` (UTC unless the source says otherwise, e.g. a
    CSV export written in the business timezone).
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=assume)
    return value.astimezone(UTC)


def first_day(text: str) -> date:
    """The first day of a period written short: a year (``2026``), a month (``2026-04``) or a day
    (``2026-04-17``). Raises ``ValueError`` for anything else."""
    text = text.strip()
    if len(text) == 4 and text.isdigit():
        return date(int(text), 1, 1)
    if len(text) == 7:
        return date.fromisoformat(text + "-01")
    return date.fromisoformat(text)
