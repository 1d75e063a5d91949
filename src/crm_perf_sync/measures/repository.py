"""All SQL of measures: the entries in force, the history of their changes, and the rows a KPI
built on a measure reads.

The checks on what is entered are :mod:`crm_perf_sync.measures.service`; the caller owns the
transaction (these functions flush, never commit).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, and_, func, insert, or_, select
from sqlalchemy.orm import Session

from crm_perf_sync.kit.paging import Page, expect
from crm_perf_sync.models import MeasureChange, MeasureEntry
from crm_perf_sync.org.repository import team_owners


class EntryKey(NamedTuple):
    """What names one entry: a measure, a scope, a grain and a period (its key, the first day)."""

    measure_id: str
    scope: str
    scope_id: str
    grain: str
    period_key: str


def key_of(row: MeasureEntry) -> EntryKey:
    return EntryKey(row.measure_id, row.scope, row.scope_id, row.grain, row.period_key)


def _is(key: EntryKey) -> ColumnElement[bool]:
    return and_(
        MeasureEntry.measure_id == key.measure_id,
        MeasureEntry.scope == key.scope,
        MeasureEntry.scope_id == key.scope_id,
        MeasureEntry.grain == key.grain,
        MeasureEntry.period_key == key.period_key,
    )


def entry(session: Session, key: EntryKey) -> MeasureEntry | None:
    return session.scalars(select(MeasureEntry).where(_is(key))).one_or_none()


def entries_among(
    session: Session, measure_ids: Collection[str], period_keys: Collection[str]
) -> dict[EntryKey, MeasureEntry]:
    """The entries of these measures in these periods (a superset of those an upload names, read
    in one query), by key."""
    if not measure_ids or not period_keys:
        return {}
    rows = session.scalars(
        select(MeasureEntry).where(
            MeasureEntry.measure_id.in_(sorted(measure_ids)), MeasureEntry.period_key.in_(sorted(period_keys))
        )
    )
    return {key_of(row): row for row in rows}


def config_entries(session: Session) -> dict[EntryKey, MeasureEntry]:
    """The entries the configuration declared, by key."""
    rows = session.scalars(select(MeasureEntry).where(MeasureEntry.source == "config"))
    return {key_of(row): row for row in rows}


def insert_entries(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """New entries, in one statement (executed once per row set, not once per row)."""
    if rows:
        session.execute(insert(MeasureEntry), list(rows))


def record_changes(session: Session, changes: Sequence[dict[str, Any]]) -> None:
    """History rows, in one statement."""
    if changes:
        session.execute(insert(MeasureChange), list(changes))


def changed_at(session: Session) -> datetime | None:
    """When any entry last changed: the version readers of the entries cache against."""
    return session.scalar(select(func.max(MeasureChange.changed_at)))


@dataclass(frozen=True, slots=True)
class EntryFilter:
    """Which entries (or which entries' changes) to list; ``None`` leaves a field open."""

    measure_id: str | None = None
    scope: str | None = None
    scope_id: str | None = None
    owner: str | None = None
    team: str | None = None
    grain: str | None = None
    period_key: str | None = None
    period_from: date | None = None
    period_to: date | None = None
    source: str | None = None


def _conditions(session: Session, table: Any, where: EntryFilter) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = []
    for column, value in (
        (table.measure_id, where.measure_id),
        (table.scope, where.scope),
        (table.scope_id, where.scope_id),
        (table.grain, where.grain),
        (table.period_key, where.period_key),
        (table.source, where.source),
    ):
        if value is not None:
            found.append(column == value)
    if where.owner is not None:
        found.append(and_(table.scope == "owner", table.scope_id == where.owner))
    if where.team is not None:
        members = team_owners(session, where.team)
        found.append(
            or_(
                and_(table.scope == "team", table.scope_id == where.team),
                and_(table.scope == "owner", table.scope_id.in_(members)),
            )
        )
    return found


def entries_page(session: Session, where: EntryFilter, after: Any, limit: int) -> Page:
    """Entries in the order they were first entered."""
    stmt = select(MeasureEntry).where(*_conditions(session, MeasureEntry, where))
    if where.period_from is not None:
        stmt = stmt.where(MeasureEntry.period_start >= where.period_from)
    if where.period_to is not None and where.period_to != date.max:
        # Periods whose last day is ``period_to`` or earlier (``period_end`` is the day after it).
        stmt = stmt.where(MeasureEntry.period_end <= where.period_to + timedelta(days=1))
    if expect(after, int) is not None:
        stmt = stmt.where(MeasureEntry.id > after)
    rows = list(session.scalars(stmt.order_by(MeasureEntry.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return [entry_row(row) for row in rows], (rows[-1].id if more else None)


def entry_row(row: MeasureEntry) -> dict[str, Any]:
    return {
        "id": row.id,
        "measure_id": row.measure_id,
        "scope": row.scope,
        "scope_id": row.scope_id,
        "grain": row.grain,
        "period_key": row.period_key,
        "period_start": row.period_start,
        "period_end": row.period_end,
        "value": row.value,
        "source": row.source,
        "entered_by": row.entered_by,
        "entered_at": row.entered_at,
    }


def history_page(session: Session, where: EntryFilter, after: Any, limit: int) -> Page:
    """Changes, newest first (``period_from`` and ``period_to`` do not apply)."""
    stmt = select(MeasureChange).where(*_conditions(session, MeasureChange, where))
    if expect(after, int) is not None:
        stmt = stmt.where(MeasureChange.id < after)
    rows = list(session.scalars(stmt.order_by(MeasureChange.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    out = [
        {
            "id": row.id,
            "measure_id": row.measure_id,
            "scope": row.scope,
            "scope_id": row.scope_id,
            "grain": row.grain,
            "period_key": row.period_key,
            "action": row.action,
            "old_value": row.old_value,
            "new_value": row.new_value,
            "source": row.source,
            "changed_by": row.changed_by,
            "changed_at": row.changed_at,
        }
        for row in rows
    ]
    return out, (rows[-1].id if more else None)


class MeasureValue(NamedTuple):
    """One entry as a KPI reads it."""

    scope: str
    scope_id: str
    period_key: str
    period_start: date
    period_end: date
    value: Decimal


def measure_values(session: Session, measure_id: str, grain: str) -> list[MeasureValue]:
    """Every entry of ``measure_id`` at ``grain``, in period order: what a KPI on a measure reads."""
    rows = session.execute(
        select(
            MeasureEntry.scope,
            MeasureEntry.scope_id,
            MeasureEntry.period_key,
            MeasureEntry.period_start,
            MeasureEntry.period_end,
            MeasureEntry.value,
        )
        .where(MeasureEntry.measure_id == measure_id, MeasureEntry.grain == grain)
        .order_by(MeasureEntry.period_start, MeasureEntry.scope, MeasureEntry.scope_id)
    )
    return [MeasureValue(*row) for row in rows]
