"""All SQL of the organisation: owners, teams, memberships and the names of scopes.

A team's scope id is ``<namespace>:<external id>`` (:func:`team_key`), an owner's
``<connection id>:<external id>``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, literal, or_, select, update
from sqlalchemy.orm import Session

from crm_perf_sync.kit.bulk import dialect_insert
from crm_perf_sync.kit.canonical import content_hash
from crm_perf_sync.kit.paging import Page, expect
from crm_perf_sync.models import CONFIG_NAMESPACE, Owner, Team, TeamMember
from crm_perf_sync.org.schemas import ConfiguredTeams, Membership


def team_key(namespace: str, external_id: str) -> str:
    return f"{namespace}:{external_id}"


def load_membership(session: Session | Connection) -> Membership:
    """Every (team, rep) pair, a rep counting in their team and in each team above it.

    Also each rep's region: the first team at level ``region`` above them (one per rep).
    """
    teams = {
        row.id: row
        for row in session.execute(
            select(Team.id, Team.namespace, Team.external_id, Team.parent_id, Team.level)
        )
    }
    members = session.execute(
        select(TeamMember.team_id, Owner.connection_id, Owner.external_id)
        .join(Owner, Owner.id == TeamMember.owner_id)
        .where(Owner.is_deleted.is_(False))
    )
    pairs: set[tuple[str, str, str]] = set()
    regions: dict[tuple[str, str], str] = {}
    for team_id, connection_id, owner_external_id in members:
        seen: set[int] = set()
        current: int | None = team_id
        while current is not None and current not in seen and current in teams:
            seen.add(current)
            team = teams[current]
            key = team_key(team.namespace, team.external_id)
            pairs.add((key, connection_id, owner_external_id))
            if team.level == "region":
                rep = (connection_id, owner_external_id)
                regions[rep] = min(key, regions.get(rep, key))
            current = team.parent_id
    return Membership(
        tuple(sorted(pairs)), tuple(sorted((region, c, o) for (c, o), region in regions.items()))
    )


def scope_names(session: Session | Connection) -> dict[tuple[str, str], str]:
    """Display names of scopes: ``("owner", "<conn>:<id>")`` and ``("team", "<ns>:<id>")``."""
    names: dict[tuple[str, str], str] = {("company", "company"): "Company"}
    for row in session.execute(select(Owner.connection_id, Owner.external_id, Owner.name)):
        names[("owner", f"{row.connection_id}:{row.external_id}")] = row.name or row.external_id
    for row in session.execute(select(Team.namespace, Team.external_id, Team.name)):
        names[("team", team_key(row.namespace, row.external_id))] = row.name
    return names


def direct_teams(session: Session | Connection) -> dict[str, str]:
    """Each rep's own team (the lowest one they are a member of), keyed by owner scope id."""
    out: dict[str, str] = {}
    rows = session.execute(
        select(Owner.connection_id, Owner.external_id, Team.namespace, Team.external_id)
        .join(TeamMember, TeamMember.owner_id == Owner.id)
        .join(Team, Team.id == TeamMember.team_id)
        .order_by(Team.namespace, Team.external_id)
    )
    for connection_id, owner_id, namespace, external_id in rows:
        out.setdefault(f"{connection_id}:{owner_id}", team_key(namespace, external_id))
    return out


def active_owner_scopes(session: Session | Connection) -> set[str]:
    rows = session.execute(
        select(Owner.connection_id, Owner.external_id).where(
            Owner.is_deleted.is_(False), Owner.active.is_(True)
        )
    )
    return {f"{c}:{o}" for c, o in rows}


def team_owners(session: Session, team_id: str) -> list[str]:
    """The owner scope ids that count in a team (its own reps and those of teams below it)."""
    return sorted({f"{c}:{o}" for team, c, o in load_membership(session).rows if team == team_id})


def owners_page(session: Session, after: Any, limit: int, connection_id: str | None = None) -> Page:
    stmt = select(Owner).where(Owner.is_deleted.is_(False))
    if connection_id is not None:
        stmt = stmt.where(Owner.connection_id == connection_id)
    if expect(after, int) is not None:
        stmt = stmt.where(Owner.id > after)
    owners = list(session.scalars(stmt.order_by(Owner.id).limit(limit + 1)))
    more = len(owners) > limit
    owners = owners[:limit]
    teams: dict[int, list[str]] = defaultdict(list)
    if owners:
        memberships = session.execute(
            select(TeamMember.owner_id, Team.namespace, Team.external_id)
            .join(Team, Team.id == TeamMember.team_id)
            .where(TeamMember.owner_id.in_([o.id for o in owners]))
            .order_by(Team.namespace, Team.external_id)
        )
        for owner_id, namespace, external_id in memberships:
            key = team_key(namespace, external_id)
            if key not in teams[owner_id]:
                teams[owner_id].append(key)
    rows = [
        {
            "id": f"{o.connection_id}:{o.external_id}",
            "connection_id": o.connection_id,
            "external_id": o.external_id,
            "name": o.name,
            "email": o.email,
            "active": o.active,
            "teams": teams.get(o.id, []),
            "_key": o.id,
        }
        for o in owners
    ]
    return [{k: v for k, v in r.items() if k != "_key"} for r in rows], (rows[-1]["_key"] if more else None)


def teams(session: Session) -> list[dict[str, Any]]:
    """Every team with its parent and how many reps count in it (its own and below)."""
    found = list(
        session.execute(
            select(Team.id, Team.namespace, Team.external_id, Team.name, Team.level, Team.parent_id)
        )
    )
    keys = {row.id: team_key(row.namespace, row.external_id) for row in found}
    counts: dict[str, int] = defaultdict(int)
    for team, _, _ in load_membership(session).rows:
        counts[team] += 1
    out = [
        {
            "id": keys[row.id],
            "namespace": row.namespace,
            "external_id": row.external_id,
            "name": row.name,
            "level": row.level,
            "parent_id": keys.get(row.parent_id) if row.parent_id is not None else None,
            "members": counts.get(keys[row.id], 0),
        }
        for row in found
    ]
    return sorted(out, key=lambda row: str(row["id"]))


def known_scope(session: Session, scope: str, scope_id: str) -> bool:
    """Whether a scope id names the company, a stored team or a stored owner."""
    if scope == "company":
        return scope_id == "company"
    return (scope, scope_id) in scope_names(session)


def teams_at_level(conn: Session | Connection, level: str) -> set[str]:
    rows = conn.execute(select(Team.namespace, Team.external_id).where(Team.level == level))
    return {team_key(namespace, external_id) for namespace, external_id in rows}


def link_team_parents(session: Session, namespace: str) -> None:
    parent = Team.__table__.alias("parent")
    parent_id = (
        select(parent.c.id)
        .where(parent.c.namespace == Team.namespace, parent.c.external_id == Team.parent_external_id)
        .scalar_subquery()
    )
    session.execute(
        update(Team)
        .where(Team.namespace == namespace)
        .values(parent_id=parent_id)
        .execution_options(synchronize_session=False)
    )


def sync_crm_memberships(session: Session, connection_id: str) -> None:
    """Rebuild the CRM-sourced memberships of a connection's reps from ``owner.team_external_id``."""
    owner_ids = select(Owner.id).where(Owner.connection_id == connection_id).scalar_subquery()
    session.execute(delete(TeamMember).where(TeamMember.source == "crm", TeamMember.owner_id.in_(owner_ids)))
    pairs = (
        select(Team.id, Owner.id, literal("crm"))
        .join(Owner, and_(Owner.connection_id == Team.namespace, Owner.team_external_id == Team.external_id))
        .where(Owner.connection_id == connection_id, Owner.is_deleted.is_(False))
    )
    session.execute(insert(TeamMember).from_select(["team_id", "owner_id", "source"], pairs))


def sync_config_teams(session: Session, app: ConfiguredTeams, now: datetime) -> None:
    """Mirror the configured team hierarchy and its members into the store."""
    wanted = {team.id for team, _ in app.all_teams()}
    for team, parent in app.all_teams():
        row = {
            "external_id": team.id,
            "name": team.name,
            "level": team.level,
            "parent_external_id": parent and parent.id,
        }
        stmt = dialect_insert(session, Team.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=["namespace", "external_id"],
            set_={
                k: stmt.excluded[k]
                for k in ("name", "level", "parent_external_id", "content_hash", "synced_at")
            },
        )
        session.execute(
            stmt,
            {
                **row,
                "namespace": CONFIG_NAMESPACE,
                "connection_id": None,
                "content_hash": content_hash(row),
                "synced_at": now,
            },
        )
    session.execute(
        delete(Team).where(Team.namespace == CONFIG_NAMESPACE, Team.external_id.not_in(wanted or {""}))
    )
    link_team_parents(session, CONFIG_NAMESPACE)

    config_team_ids = select(Team.id).where(Team.namespace == CONFIG_NAMESPACE).scalar_subquery()
    session.execute(
        delete(TeamMember).where(TeamMember.source == "config", TeamMember.team_id.in_(config_team_ids))
    )
    team_ids = {
        row.external_id: row.id
        for row in session.execute(
            select(Team.external_id, Team.id).where(Team.namespace == CONFIG_NAMESPACE)
        )
    }
    for team, _ in app.all_teams():
        for member in team.members:
            conditions = []
            if member.email is not None:
                conditions.append(Owner.email == member.email.strip().lower())
            if member.external_id is not None:
                conditions.append(
                    and_(Owner.connection_id == member.connection, Owner.external_id == member.external_id)
                )
            if member.name is not None:
                name_match = func.lower(Owner.name) == member.name.strip().lower()
                conditions.append(
                    and_(name_match, Owner.connection_id == member.connection)
                    if member.connection
                    else name_match
                )
            owners = select(Owner.id).where(or_(*conditions), Owner.is_deleted.is_(False))
            for owner_id in session.scalars(owners):
                stmt = dialect_insert(session, TeamMember.__table__).on_conflict_do_nothing()
                session.execute(
                    stmt, {"team_id": team_ids[team.id], "owner_id": owner_id, "source": "config"}
                )
