"""The one place that knows what time it is and how timestamps are normalised.

Every datetime inside the service is timezone-aware UTC. Naive values only ever come from
outside (a CSV export, SQLite) and are converted at that edge.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo


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
