"""All SQL the API reads with: one page of a collection in key order (see
:mod:`crm_perf_sync.kit.paging`), rows as plain dicts with the API's field names, and the few lookups.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from crm_perf_sync.kit.paging import Page, expect, keyset_page
from crm_perf_sync.models import (
    Connection,
    KpiTarget,
    KpiValue,
    Lead,
    Opportunity,
    ScorecardValue,
    SyncRun,
)
from crm_perf_sync.org.repository import scope_names, team_owners


def owner_scope(connection_id: ColumnElement[Any], owner: ColumnElement[Any]) -> ColumnElement[Any]:
    return connection_id + ":" + owner


# --- KPI values, targets, scores ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ValueFilter:
    grain: str | None = None
    period_key: str | None = None
    period_from: date | None = None
    period_to: date | None = None
    scope: str | None = None
    scope_id: str | None = None
    team: str | None = None
    owner: str | None = None
    dimension: str = ""
    currency: str | None = None


def _ends_by(last_day: date) -> ColumnElement[bool]:
    """Periods whose last day is ``last_day`` or earlier (``period_end`` is the day after it)."""
    if last_day == date.max:  # every period ends by then, and the day after is not a date
        return KpiValue.period_end.is_not(None)
    return KpiValue.period_end <= last_day + timedelta(days=1)


def values_page(
    session: Session, kpi_id: str, where: ValueFilter, after: Any, limit: int
) -> tuple[list[KpiValue], Any]:
    stmt = select(KpiValue).where(KpiValue.kpi_id == kpi_id, KpiValue.dimension == where.dimension)
    if where.grain is not None:
        stmt = stmt.where(KpiValue.grain == where.grain)
    if where.period_key is not None:
        stmt = stmt.where(KpiValue.period_key == where.period_key)
    if where.period_from is not None:
        stmt = stmt.where(KpiValue.period_start >= where.period_from)
    if where.period_to is not None:
        stmt = stmt.where(_ends_by(where.period_to))
    if where.scope is not None:
        stmt = stmt.where(KpiValue.scope == where.scope)
    if where.scope_id is not None:
        stmt = stmt.where(KpiValue.scope_id == where.scope_id)
    if where.currency is not None:
        stmt = stmt.where(KpiValue.currency == where.currency)
    if where.owner is not None:
        stmt = stmt.where(KpiValue.scope == "owner", KpiValue.scope_id == where.owner)
    if where.team is not None:
        members = team_owners(session, where.team)
        stmt = stmt.where(
            or_(
                and_(KpiValue.scope == "team", KpiValue.scope_id == where.team),
                and_(KpiValue.scope == "owner", KpiValue.scope_id.in_(members)),
            )
        )
    if expect(after, int) is not None:
        stmt = stmt.where(KpiValue.id > after)
    found = list(session.scalars(stmt.order_by(KpiValue.id).limit(limit + 1)))
    more = len(found) > limit
    found = found[:limit]
    return found, (found[-1].id if more else None)


@dataclass(frozen=True, slots=True)
class TargetFilter:
    kpi_id: str | None = None
    grain: str | None = None
    period_key: str | None = None
    scope: str | None = None
    scope_id: str | None = None


def targets_page(session: Session, where: TargetFilter, after: Any, limit: int) -> Page:
    t = KpiTarget.__table__
    stmt = select(t)
    for column, value in (
        (t.c.kpi_id, where.kpi_id),
        (t.c.grain, where.grain),
        (t.c.period_key, where.period_key),
        (t.c.scope, where.scope),
        (t.c.scope_id, where.scope_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    rows, next_key = keyset_page(session, stmt, t.c.id, after, limit)
    return [dict(r._mapping) for r in rows], next_key


def scores_page(
    session: Session,
    scorecard_id: str,
    *,
    grain: str | None,
    period_key: str | None,
    scope_id: str | None,
    team: str | None,
    after: Any,
    limit: int,
) -> tuple[list[ScorecardValue], Any]:
    """Scores best first within each period (unranked reps last), keyed by their row id."""
    stmt = select(ScorecardValue).where(ScorecardValue.scorecard_id == scorecard_id)
    if grain is not None:
        stmt = stmt.where(ScorecardValue.grain == grain)
    if period_key is not None:
        stmt = stmt.where(ScorecardValue.period_key == period_key)
    if scope_id is not None:
        stmt = stmt.where(ScorecardValue.scope_id == scope_id)
    if team is not None:
        stmt = stmt.where(ScorecardValue.scope_id.in_(team_owners(session, team)))
    # The rank order, made a total order (and a keyset) by appending the row id.
    rank = func.coalesce(ScorecardValue.rank, 1_000_000_000)
    order = (ScorecardValue.grain, ScorecardValue.period_key, rank, ScorecardValue.id)
    if after is not None:
        shape = [str, str, int, int]
        if not (isinstance(after, list) and len(after) == 4 and all(map(isinstance, after, shape))):
            expect(after, tuple)  # not a position this query writes: a 400
        g, p, r, i = after
        stmt = stmt.where(
            or_(
                ScorecardValue.grain > g,
                and_(ScorecardValue.grain == g, ScorecardValue.period_key > p),
                and_(ScorecardValue.grain == g, ScorecardValue.period_key == p, rank > r),
                and_(
                    ScorecardValue.grain == g,
                    ScorecardValue.period_key == p,
                    rank == r,
                    ScorecardValue.id > i,
                ),
            )
        )
    found = list(session.scalars(stmt.order_by(*order).limit(limit + 1)))
    more = len(found) > limit
    found = found[:limit]
    if not more:
        return found, None
    last = found[-1]
    return found, [
        last.grain,
        last.period_key,
        last.rank if last.rank is not None else 1_000_000_000,
        last.id,
    ]


def latest_period(session: Session, scorecard_id: str, grain: str) -> str | None:
    stmt = select(func.max(ScorecardValue.period_key)).where(
        ScorecardValue.scorecard_id == scorecard_id, ScorecardValue.grain == grain
    )
    found: str | None = session.execute(stmt).scalar_one_or_none()
    return found


# --- the CRM records ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordFilter:
    connection_id: str | None = None
    owner: str | None = None
    team: str | None = None
    stage: str | None = None
    is_closed: bool | None = None
    is_won: bool | None = None
    is_converted: bool | None = None
    source: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    closed_from: datetime | None = None
    closed_to: datetime | None = None
    updated_since: datetime | None = None
    include_deleted: bool = False


def _record_where(session: Session, table: Any, where: RecordFilter) -> list[ColumnElement[bool]]:
    c = table.c
    conditions: list[ColumnElement[bool]] = []
    if not where.include_deleted:
        conditions.append(c.is_deleted.is_(False))
    if where.connection_id is not None:
        conditions.append(c.connection_id == where.connection_id)
    if where.owner is not None:
        connection_id, _, owner = where.owner.partition(":")
        conditions += [c.connection_id == connection_id, c.owner_external_id == owner]
    if where.team is not None:
        members = team_owners(session, where.team)
        conditions.append(owner_scope(c.connection_id, c.owner_external_id).in_(members))
    if where.created_from is not None:
        conditions.append(c.created_at >= where.created_from)
    if where.created_to is not None:
        conditions.append(c.created_at < where.created_to)
    if where.updated_since is not None:
        conditions.append(c.synced_at >= where.updated_since)
    return conditions


def _with_owner_id(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    owner = data.pop("owner_external_id", None)
    data["owner_id"] = f"{data['connection_id']}:{owner}" if owner is not None else None
    return data


_OPPORTUNITY_COLUMNS = (
    "id", "connection_id", "external_id", "owner_external_id", "name", "amount", "currency", "stage",
    "probability", "pipeline", "type", "lead_source", "created_at", "close_date", "closed_at",
    "is_closed", "is_won", "is_deleted", "remote_updated_at", "synced_at",
)  # fmt: skip
_LEAD_COLUMNS = (
    "id", "connection_id", "external_id", "owner_external_id", "name", "company", "source", "status",
    "created_at", "is_converted", "converted_at", "converted_opportunity_external_id", "is_deleted",
    "remote_updated_at", "synced_at",
)  # fmt: skip


def opportunities_page(session: Session, where: RecordFilter, after: Any, limit: int) -> Page:
    t = Opportunity.__table__
    conditions = _record_where(session, t, where)
    for column, value in (
        (t.c.stage, where.stage),
        (t.c.is_closed, where.is_closed),
        (t.c.is_won, where.is_won),
    ):
        if value is not None:
            conditions.append(column == value)
    if where.closed_from is not None:
        conditions.append(t.c.closed_at >= where.closed_from)
    if where.closed_to is not None:
        conditions.append(t.c.closed_at < where.closed_to)
    stmt = select(*(t.c[name] for name in _OPPORTUNITY_COLUMNS)).where(*conditions)
    rows, next_key = keyset_page(session, stmt, t.c.id, after, limit)
    out = []
    for row in rows:
        data = _with_owner_id(row)
        if data["amount"] is not None:
            data["amount"] = float(data["amount"])
        out.append(data)
    return out, next_key


def leads_page(session: Session, where: RecordFilter, after: Any, limit: int) -> Page:
    t = Lead.__table__
    conditions = _record_where(session, t, where)
    for column, value in (
        (t.c.status, where.stage),
        (t.c.is_converted, where.is_converted),
        (t.c.source, where.source),
    ):
        if value is not None:
            conditions.append(column == value)
    stmt = select(*(t.c[name] for name in _LEAD_COLUMNS)).where(*conditions)
    rows, next_key = keyset_page(session, stmt, t.c.id, after, limit)
    return [_with_owner_id(row) for row in rows], next_key


# --- operations -----------------------------------------------------------------------------------


def connections(session: Session) -> list[dict[str, Any]]:
    """Every configured connection with its last run and its last successful one."""
    last = (
        select(SyncRun.connection_id, func.max(SyncRun.id).label("last_id"))
        .where(SyncRun.status != "queued")
        .group_by(SyncRun.connection_id)
        .subquery()
    )
    success = (
        select(SyncRun.connection_id, func.max(SyncRun.finished_at).label("at"))
        .where(SyncRun.status == "succeeded")
        .group_by(SyncRun.connection_id)
        .subquery()
    )
    stmt = (
        select(Connection, SyncRun.id, SyncRun.status, SyncRun.finished_at, success.c.at)
        .outerjoin(last, last.c.connection_id == Connection.id)
        .outerjoin(SyncRun, SyncRun.id == last.c.last_id)
        .outerjoin(success, success.c.connection_id == Connection.id)
        .order_by(Connection.id)
    )
    return [
        {
            "id": conn.id,
            "kind": conn.kind,
            "enabled": conn.enabled,
            "schedule": conn.schedule,
            "last_run_id": run_id,
            "last_status": status,
            "last_finished_at": finished,
            "last_success_at": succeeded,
        }
        for conn, run_id, status, finished, succeeded in session.execute(stmt)
    ]


def connection(session: Session, connection_id: str) -> Connection | None:
    return session.get(Connection, connection_id)


_RUN_COLUMNS = (
    "id", "connection_id", "trigger", "full_refresh", "allow_mass_delete", "status", "started_at",
    "finished_at", "duration_seconds", "records_read", "inserted", "updated", "unchanged", "deleted",
    "skipped", "warnings", "error_kind", "error",
)  # fmt: skip


def sync_runs_page(
    session: Session, after: Any, limit: int, connection_id: str | None = None, status: str | None = None
) -> Page:
    """Runs newest first (keyed by descending id)."""
    t = SyncRun.__table__
    stmt = select(*(t.c[name] for name in _RUN_COLUMNS))
    if connection_id is not None:
        stmt = stmt.where(t.c.connection_id == connection_id)
    if status is not None:
        stmt = stmt.where(t.c.status == status)
    if expect(after, int) is not None:
        stmt = stmt.where(t.c.id < after)
    rows = list(session.execute(stmt.order_by(t.c.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return [dict(r._mapping) for r in rows], (rows[-1].id if more else None)


def sync_run(session: Session, run_id: int) -> dict[str, Any] | None:
    t = SyncRun.__table__
    row = session.execute(select(*(t.c[name] for name in _RUN_COLUMNS)).where(t.c.id == run_id)).first()
    return None if row is None else dict(row._mapping)


def queued_run(session: Session, connection_id: str) -> int | None:
    stmt = select(SyncRun.id).where(SyncRun.connection_id == connection_id, SyncRun.status == "queued")
    found: int | None = session.execute(stmt.order_by(SyncRun.id).limit(1)).scalar_one_or_none()
    return found


def names(session: Session) -> dict[tuple[str, str], str]:
    return scope_names(session)
