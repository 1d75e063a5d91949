"""All SQL of targets: the definitions set through the API and the decomposed targets in force.

The decomposition itself (years into quarters and months, teams into reps) is
:mod:`crm_perf_sync.kpi.targets`; the checks on a definition are :mod:`crm_perf_sync.kpi.targets_service`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.orm import Session

from crm_perf_sync.kit.paging import Page, keyset_page
from crm_perf_sync.kpi.schemas import TargetConfig
from crm_perf_sync.kpi.values import TargetCell, TargetCellKey
from crm_perf_sync.models import KpiTarget, TargetDefinition


def replace_targets(session: Session | Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Swap the decomposed targets (the caller's transaction makes it atomic)."""
    session.execute(delete(KpiTarget))
    if rows:
        session.execute(insert(KpiTarget), list(rows))
    return len(rows)


def api_target_versions(conn: Connection) -> list[tuple[int, str]]:
    """(id, last update) of every target set through the API: what the refresh's context hashes."""
    rows = conn.execute(
        select(TargetDefinition.id, TargetDefinition.updated_at).order_by(TargetDefinition.id)
    )
    return [(row.id, row.updated_at.isoformat()) for row in rows]


def api_targets(conn: Connection, kpis: Mapping[str, Any]) -> list[TargetConfig]:
    """The targets set through the API whose KPI is still defined (validated when they were set)."""
    out: list[TargetConfig] = []
    for row in conn.execute(
        select(TargetDefinition.kpi_id, TargetDefinition.definition).order_by(TargetDefinition.id)
    ):
        if row.kpi_id in kpis:
            out.append(TargetConfig.model_validate(row.definition))
    return out


def load_targets(session: Session | Connection) -> dict[TargetCellKey, TargetCell]:
    found: dict[TargetCellKey, TargetCell] = {}
    for t in session.execute(select(KpiTarget.__table__)):
        key = (t.kpi_id, t.grain, t.period_key, t.scope, t.scope_id, t.currency)
        found[key] = TargetCell(t.value, t.period_start, t.period_end)
    return found


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
    for field, value in (
        (t.c.kpi_id, where.kpi_id),
        (t.c.grain, where.grain),
        (t.c.period_key, where.period_key),
        (t.c.scope, where.scope),
        (t.c.scope_id, where.scope_id),
    ):
        if value is not None:
            stmt = stmt.where(field == value)
    rows, next_key = keyset_page(session, stmt, t.c.id, after, limit)
    return [dict(r._mapping) for r in rows], next_key


# --- definitions set through the API --------------------------------------------------------------


def target_definitions(session: Session) -> list[TargetDefinition]:
    return list(session.scalars(select(TargetDefinition).order_by(TargetDefinition.id)))


def target_definition(session: Session, target_id: int) -> TargetDefinition | None:
    return session.get(TargetDefinition, target_id)


def add_target_definition(
    session: Session, kpi_id: str, definition: dict[str, Any], now: datetime
) -> TargetDefinition:
    row = TargetDefinition(kpi_id=kpi_id, definition=definition, created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    return row


def update_target_definition(
    session: Session, row: TargetDefinition, kpi_id: str, definition: dict[str, Any], now: datetime
) -> None:
    row.kpi_id = kpi_id
    row.definition = definition
    row.updated_at = now
    session.flush()


def delete_target_definition(session: Session, row: TargetDefinition) -> None:
    session.delete(row)
    session.flush()


def targeted(session: Session) -> list[tuple[str, str]]:
    """Every (KPI id, year period key) that has a target in force, for choosing what to show."""
    t = KpiTarget.__table__
    stmt = select(t.c.kpi_id, t.c.period_start).distinct()
    return [(kpi_id, start.isoformat()) for kpi_id, start in session.execute(stmt)]
