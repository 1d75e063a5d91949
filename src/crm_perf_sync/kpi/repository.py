"""All SQL of the KPI domain outside the compiled aggregates: membership, values, names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.orm import Session

from crm_perf_sync.kpi.compiler import MEMBERSHIP, Membership
from crm_perf_sync.models import KpiValue, Owner, Team, TeamMember


def team_key(namespace: str, external_id: str) -> str:
    return f"{namespace}:{external_id}"


def load_membership(session: Session) -> Membership:
    """Every (team, rep) pair, a rep counting in their team and in each team above it."""
    teams = {
        row.id: row
        for row in session.execute(select(Team.id, Team.namespace, Team.external_id, Team.parent_id))
    }
    members = session.execute(
        select(TeamMember.team_id, Owner.connection_id, Owner.external_id)
        .join(Owner, Owner.id == TeamMember.owner_id)
        .where(Owner.is_deleted.is_(False))
    )
    pairs: set[tuple[str, str, str]] = set()
    for team_id, connection_id, owner_external_id in members:
        seen: set[int] = set()
        current: int | None = team_id
        while current is not None and current not in seen and current in teams:
            seen.add(current)
            team = teams[current]
            pairs.add((team_key(team.namespace, team.external_id), connection_id, owner_external_id))
            current = team.parent_id
    return Membership(tuple(sorted(pairs)))


def load_membership_table(conn: Connection, membership: Membership) -> None:
    """Put the refresh's (team, rep) pairs in a temporary table on ``conn``, indexed for the join."""
    conn.exec_driver_sql("DROP TABLE IF EXISTS kpi_membership")
    conn.exec_driver_sql(
        "CREATE TEMPORARY TABLE kpi_membership "
        "(team_key VARCHAR(600), m_connection_id VARCHAR(63), m_owner_external_id VARCHAR(255))"
    )
    conn.exec_driver_sql(
        "CREATE INDEX kpi_membership_owner ON kpi_membership (m_connection_id, m_owner_external_id)"
    )
    if membership.rows:
        conn.execute(
            insert(MEMBERSHIP),
            [{"team_key": t, "m_connection_id": c, "m_owner_external_id": o} for t, c, o in membership.rows],
        )


def replace_values(session: Session | Connection, kpi_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """Swap a KPI's values for ``rows`` (the caller's transaction makes the swap atomic)."""
    session.execute(delete(KpiValue).where(KpiValue.kpi_id == kpi_id))
    if rows:
        session.execute(insert(KpiValue), list(rows))


def scope_names(session: Session) -> dict[tuple[str, str], str]:
    """Display names of scopes: ``("owner", "<conn>:<id>")`` and ``("team", "<ns>:<id>")``."""
    names: dict[tuple[str, str], str] = {("company", "company"): "Company"}
    for row in session.execute(select(Owner.connection_id, Owner.external_id, Owner.name)):
        names[("owner", f"{row.connection_id}:{row.external_id}")] = row.name or row.external_id
    for row in session.execute(select(Team.namespace, Team.external_id, Team.name)):
        names[("team", team_key(row.namespace, row.external_id))] = row.name
    return names


def values(
    session: Session,
    kpi_id: str,
    *,
    grain: str | None = None,
    scope: str | None = None,
    period_key: str | None = None,
    scope_id: str | None = None,
) -> list[KpiValue]:
    stmt = select(KpiValue).where(KpiValue.kpi_id == kpi_id)
    if grain is not None:
        stmt = stmt.where(KpiValue.grain == grain)
    if scope is not None:
        stmt = stmt.where(KpiValue.scope == scope)
    if period_key is not None:
        stmt = stmt.where(KpiValue.period_key == period_key)
    if scope_id is not None:
        stmt = stmt.where(KpiValue.scope_id == scope_id)
    stmt = stmt.order_by(
        KpiValue.grain, KpiValue.period_key, KpiValue.scope, KpiValue.scope_id, KpiValue.currency
    )
    return list(session.scalars(stmt))
