"""All SQL of the sync engine. Functions take the caller's session and only execute/flush."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection as SAConnection
from sqlalchemy import (
    DateTime,
    String,
    Table,
    bindparam,
    column,
    delete,
    func,
    insert,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from crm_perf_sync.connector_sdk import Entity
from crm_perf_sync.kit.bulk import bulk_insert, bulk_upsert, dialect_insert
from crm_perf_sync.kit.paging import Page, expect, keyset_page
from crm_perf_sync.models import (
    PRIOR_TABLES,
    Account,
    Activity,
    ChangeBatch,
    Connection,
    Lead,
    Lease,
    Opportunity,
    Owner,
    PipelineStage,
    StageChange,
    SyncCheckpoint,
    SyncRecordError,
    SyncRun,
    Team,
)
from crm_perf_sync.org.repository import team_owners
from crm_perf_sync.sync.rows import Row
from crm_perf_sync.sync.schemas import ConnectionConfig


@dataclass(frozen=True, slots=True)
class EntityTable:
    table: Table
    scope_column: str  # the column that partitions the table by connection
    has_history_columns: bool  # first_synced_at
    deletable: bool


_ENTITY_TABLES: Mapping[Entity, EntityTable] = {
    "teams": EntityTable(Team.__table__, "namespace", False, False),  # type: ignore[arg-type]
    "owners": EntityTable(Owner.__table__, "connection_id", True, True),  # type: ignore[arg-type]
    "accounts": EntityTable(Account.__table__, "connection_id", True, True),  # type: ignore[arg-type]
    "leads": EntityTable(Lead.__table__, "connection_id", True, True),  # type: ignore[arg-type]
    "opportunities": EntityTable(Opportunity.__table__, "connection_id", True, True),  # type: ignore[arg-type]
    "activities": EntityTable(Activity.__table__, "connection_id", True, True),  # type: ignore[arg-type]
    "stage_changes": EntityTable(StageChange.__table__, "connection_id", False, False),  # type: ignore[arg-type]
    "pipeline_stages": EntityTable(PipelineStage.__table__, "connection_id", False, True),  # type: ignore[arg-type]
}


def entity_table(entity: Entity) -> EntityTable:
    return _ENTITY_TABLES[entity]


@dataclass(frozen=True, slots=True)
class StoredState:
    content_hash: str
    stage: str | None
    is_deleted: bool
    remote_updated_at: datetime | None


def existing_state(
    session: Session, entity: Entity, connection_id: str, external_ids: Sequence[str]
) -> dict[str, StoredState]:
    """Content hash (and stage, for opportunities) of the stored rows among ``external_ids``."""
    stmt, params = existing_state_query(session.get_bind().dialect.name, entity, connection_id, external_ids)
    found: dict[str, StoredState] = {}
    has = set(stmt.selected_columns.keys())
    for row in session.execute(stmt, params):
        found[row.external_id] = StoredState(
            row.content_hash,
            row.stage if "stage" in has else None,
            bool(row.is_deleted) if "is_deleted" in has else False,
            row.remote_updated_at if "remote_updated_at" in has else None,
        )
    return found


def existing_state_query(
    dialect: str, entity: Entity, connection_id: str, external_ids: Sequence[str]
) -> tuple[Select[Any], dict[str, Any]]:
    """The statement :func:`existing_state` runs, and its parameters."""
    spec = _ENTITY_TABLES[entity]
    t = spec.table
    columns = [t.c.external_id, t.c.content_hash]
    if entity == "opportunities":
        columns.append(t.c.stage)
    columns += [t.c[name] for name in ("is_deleted", "remote_updated_at") if name in t.c]
    # One bound parameter for the whole key list, so the statement compiles once. On PostgreSQL an
    # array, unnested, with a LATERAL lookup of one row per key: a probe of the unique index each,
    # whatever the table's size. (A plain join, or ``= ANY``, lets the planner hash the connection's
    # whole table instead once it holds some tens of thousands of rows: a full scan per batch, 15x
    # slower at 200k rows and growing with the table.) On SQLite a JSON array in an IN list (SQLite
    # probes the index for each value; a join could put the big table on the outside).
    scope = t.c[spec.scope_column] == bindparam("scope")
    if dialect == "postgresql":
        keys = (
            func.unnest(bindparam("keys", type_=ARRAY(String)))
            .table_valued("value")
            .render_derived(name="keys")
        )
        # LIMIT 1 (the key is unique) keeps the subquery from being flattened into a join.
        probe = select(*columns).where(scope, t.c.external_id == keys.c.value).limit(1).lateral("stored")
        return select(*probe.c).select_from(keys).join(probe, true()), {
            "keys": list(external_ids),
            "scope": connection_id,
        }
    listed: Select[Any] = select(column("value")).select_from(func.json_each(bindparam("keys")))
    return select(*columns).where(scope, t.c.external_id.in_(listed)), {
        "keys": orjson.dumps(list(external_ids)).decode(),
        "scope": connection_id,
    }


def _constants(entity: Entity, connection_id: str, now: datetime) -> dict[str, Any]:
    """The columns every row of a sync batch shares: its connection and when it was synced."""
    if entity == "stage_changes":
        return {"connection_id": connection_id, "recorded_at": now}
    spec = _ENTITY_TABLES[entity]
    extra: dict[str, Any] = {spec.scope_column: connection_id, "synced_at": now}
    if spec.scope_column != "connection_id":
        extra["connection_id"] = connection_id
    if spec.has_history_columns:
        extra["first_synced_at"] = now
    return extra


def insert_rows(
    session: Session, entity: Entity, connection_id: str, rows: Sequence[Row], now: datetime
) -> None:
    """Insert rows that :func:`existing_state` found absent, under the connection's sync lease (no
    other writer adds its keys meanwhile): straight in, with no conflict handling to pay for."""
    if rows:
        spec = _ENTITY_TABLES[entity]
        bulk_insert(session.connection(), spec.table, rows, constants=_constants(entity, connection_id, now))


def upsert_rows(
    session: Session, entity: Entity, connection_id: str, rows: Sequence[Row], now: datetime
) -> None:
    """Insert new rows and overwrite changed ones, keyed by (connection, external id)."""
    if not rows:
        return
    spec = _ENTITY_TABLES[entity]
    extra = _constants(entity, connection_id, now)
    if entity == "stage_changes":
        # History is append-only: a re-read of the same step changes nothing.
        bulk_upsert(
            session, spec.table, rows, constants=extra, conflict=("connection_id", "external_id"), update=None
        )
        return
    keep = {spec.scope_column, "external_id", "first_synced_at", "id", "connection_id"}
    update_cols = [name for name in (*rows[0], *extra) if name not in keep]
    bulk_upsert(
        session,
        spec.table,
        rows,
        constants=extra,
        conflict=(spec.scope_column, "external_id"),
        update=update_cols,
    )


def refresh_statistics(session: Session, entity: Entity) -> None:
    """Let PostgreSQL's planner see a table that a bulk load has grown (no-op elsewhere).

    Autovacuum analyzes too late during a large first sync: with statistics that still describe an
    empty table, the planner answers key lookups by scanning every row of the connection.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f'ANALYZE "{_ENTITY_TABLES[entity].table.name}"'))


def mark_deleted(
    session: Session, entity: Entity, connection_id: str, tombstones: Mapping[str, datetime], now: datetime
) -> int:
    """Soft-delete the rows named in ``tombstones`` (external id → deleted at). Returns how many."""
    spec = _ENTITY_TABLES[entity]
    if not spec.deletable or not tombstones:
        return 0
    t = spec.table
    # Clearing the hash makes a record that comes back (even unchanged) count as changed.
    cleared = {"is_deleted": True, "synced_at": now, "content_hash": ""}
    live = (t.c[spec.scope_column] == connection_id, t.c.is_deleted.is_(False))
    if session.get_bind().dialect.name == "postgresql":
        # One statement from two arrays: an UPDATE per record (a confirmed mass deletion is
        # thousands) costs a round of binding and planning each.
        gone = (
            func.unnest(
                bindparam("keys", list(tombstones), type_=ARRAY(String)),
                bindparam("at", list(tombstones.values()), type_=ARRAY(DateTime(timezone=True))),
            )
            .table_valued("external_id", "deleted_at")
            .render_derived(name="gone")
        )
        stmt = update(t).where(*live, t.c.external_id == gone.c.external_id)
        result = session.connection().execute(stmt.values(cleared | {"deleted_at": gone.c.deleted_at}))
        return int(result.rowcount)
    each = update(t).where(*live, t.c.external_id == bindparam("b_external_id"))
    params = [{"b_external_id": key, "b_deleted_at": at} for key, at in tombstones.items()]
    result = session.connection().execute(
        each.values(cleared | {"deleted_at": bindparam("b_deleted_at")}), params
    )
    return int(result.rowcount)


def count_live(session: Session, entity: Entity, connection_id: str) -> int:
    """How many stored, not-deleted records of the entity the connection has."""
    spec = _ENTITY_TABLES[entity]
    t = spec.table
    stmt = select(func.count()).select_from(t).where(t.c[spec.scope_column] == connection_id)
    if spec.deletable:
        stmt = stmt.where(t.c.is_deleted.is_(False))
    return int(session.execute(stmt).scalar_one())


def live_external_ids(session: Session, entity: Entity, connection_id: str) -> Iterable[str]:
    """Every stored, not-deleted external id of the entity for the connection (streamed)."""
    spec = _ENTITY_TABLES[entity]
    t = spec.table
    stmt = select(t.c.external_id).where(t.c[spec.scope_column] == connection_id)
    if spec.deletable:
        stmt = stmt.where(t.c.is_deleted.is_(False))
    return session.execute(stmt.execution_options(yield_per=10_000)).scalars()


# --- checkpoints, runs, errors -------------------------------------------------------------------


def load_checkpoints(session: Session, connection_id: str) -> dict[str, dict[str, Any]]:
    stmt = select(SyncCheckpoint.stream, SyncCheckpoint.state).where(
        SyncCheckpoint.connection_id == connection_id
    )
    return {row.stream: row.state for row in session.execute(stmt)}


def save_checkpoint(
    session: Session, connection_id: str, stream: str, state: Mapping[str, Any], run_id: int, now: datetime
) -> None:
    stmt = dialect_insert(session, SyncCheckpoint.__table__)
    stmt = stmt.on_conflict_do_update(
        index_elements=["connection_id", "stream"],
        set_={
            "state": stmt.excluded.state,
            "run_id": stmt.excluded.run_id,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    session.execute(
        stmt,
        {
            "connection_id": connection_id,
            "stream": stream,
            "state": dict(state),
            "run_id": run_id,
            "updated_at": now,
        },
    )


def delete_checkpoint(session: Session, connection_id: str, stream: str) -> None:
    session.execute(
        delete(SyncCheckpoint).where(
            SyncCheckpoint.connection_id == connection_id, SyncCheckpoint.stream == stream
        )
    )


def create_run(
    session: Session,
    connection_id: str,
    trigger: str,
    full_refresh: bool,
    holder: str,
    now: datetime,
    allow_mass_delete: bool = False,
) -> int:
    run = SyncRun(
        connection_id=connection_id,
        trigger=trigger,
        full_refresh=full_refresh,
        allow_mass_delete=allow_mass_delete,
        status="running",
        holder=holder,
        started_at=now,
        streams={},
    )
    session.add(run)
    session.flush()
    return run.id


def queue_run(
    session: Session, connection_id: str, full_refresh: bool, now: datetime, allow_mass_delete: bool = False
) -> int:
    """A run asked for (through the API) that a worker will pick up; ``started_at`` is when."""
    run = SyncRun(
        connection_id=connection_id,
        trigger="api",
        full_refresh=full_refresh,
        allow_mass_delete=allow_mass_delete,
        status="queued",
        holder="",
        started_at=now,
        streams={},
    )
    session.add(run)
    session.flush()
    return run.id


@dataclass(frozen=True, slots=True)
class QueuedRun:
    run_id: int
    connection_id: str
    full_refresh: bool
    allow_mass_delete: bool


def queued_runs(session: Session) -> list[QueuedRun]:
    """Every queued run, oldest first."""
    rows = session.execute(
        select(SyncRun.id, SyncRun.connection_id, SyncRun.full_refresh, SyncRun.allow_mass_delete)
        .where(SyncRun.status == "queued")
        .order_by(SyncRun.id)
    )
    return [QueuedRun(row.id, row.connection_id, row.full_refresh, row.allow_mass_delete) for row in rows]


def confirm_mass_delete(session: Session, run_id: int) -> None:
    """Let a queued run delete more than the mass-deletion limit."""
    session.execute(
        update(SyncRun).where(SyncRun.id == run_id, SyncRun.status == "queued").values(allow_mass_delete=True)
    )


def adopt_queued_run(session: Session, run_id: int, holder: str, now: datetime) -> bool:
    """Claim a queued run for this sync (one conditional UPDATE: one claimant wins)."""
    result = session.execute(
        update(SyncRun)
        .where(SyncRun.id == run_id, SyncRun.status == "queued")
        .values(status="running", holder=holder, started_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def fail_queued_run(session: Session, run_id: int, error: str, now: datetime) -> None:
    session.execute(
        update(SyncRun)
        .where(SyncRun.id == run_id, SyncRun.status == "queued")
        .values(status="failed", error_kind="config", error=error, finished_at=now, duration_seconds=0.0)
    )


def update_run(session: Session, run_id: int, **values: Any) -> None:
    session.execute(update(SyncRun).where(SyncRun.id == run_id).values(**values))


def abandon_running(session: Session, connection_id: str, except_run: int | None, now: datetime) -> int:
    """Close runs left ``running`` by a process that died; their committed batches stay."""
    stmt = (
        update(SyncRun)
        .where(SyncRun.connection_id == connection_id, SyncRun.status == "running")
        .values(
            status="abandoned",
            finished_at=now,
            error_kind="abandoned",
            error="the process running this sync stopped before it finished; the next run resumed from "
            "its last checkpoint",
        )
    )
    if except_run is not None:
        stmt = stmt.where(SyncRun.id != except_run)
    return int(session.execute(stmt).rowcount)  # type: ignore[attr-defined]


def record_errors(session: Session, rows: Sequence[Row]) -> None:
    if rows:
        session.execute(insert(SyncRecordError), list(rows))


def run_reports(session: Session, run_id: int, limit: int) -> list[tuple[str, str, str]]:
    """The first ``limit`` bad records and warnings of a run: (level, stream, message), in order."""
    stmt = (
        select(SyncRecordError.level, SyncRecordError.stream, SyncRecordError.message)
        .where(SyncRecordError.run_id == run_id)
        .order_by(SyncRecordError.id)
        .limit(limit)
    )
    return [(level, stream, message) for level, stream, message in session.execute(stmt)]


def incomplete_load(session: Session | SAConnection, now: datetime) -> str | None:
    """Why the store holds part of a CRM right now, or ``None`` when every load it has is whole.

    Before any sync has finished, or while a connection is on its first load (a live claim and
    no finished sync), KPIs and alerts would count half a CRM (or none of it, against targets).
    """
    done = select(SyncRun.connection_id).where(SyncRun.status == "succeeded").distinct()
    finished = set(session.scalars(done))
    if not finished:
        return "the first sync to finish"
    held = select(Lease.name).where(
        Lease.name.like("sync:%"), Lease.holder.is_not(None), Lease.expires_at > now
    )
    loading = sorted({name.removeprefix("sync:") for name in session.scalars(held)} - finished)
    if loading:
        return f"the first load of {', '.join(loading)} to finish"
    return None


# --- configuration mirrored into the store --------------------------------------------------------


def sync_connections(session: Session, connections: Sequence[ConnectionConfig], now: datetime) -> None:
    """Mirror the configured connections (never their settings, which may hold secrets)."""
    for conn in connections:
        schedule = None
        if conn.schedule is not None:
            schedule = (
                f"cron {conn.schedule.cron}"
                if conn.schedule.cron
                else f"every {int(conn.schedule.interval.total_seconds())}s"  # type: ignore[union-attr]
            )
        stmt = dialect_insert(session, Connection.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "kind": stmt.excluded.kind,
                "name": stmt.excluded.name,
                "enabled": stmt.excluded.enabled,
                "schedule": stmt.excluded.schedule,
                "updated_at": stmt.excluded.updated_at,
            },
        )
        session.execute(
            stmt,
            {
                "id": conn.id,
                "kind": conn.kind,
                "name": conn.name or conn.id,
                "enabled": conn.enabled,
                "schedule": schedule,
                "created_at": now,
                "updated_at": now,
            },
        )


# --- the change log (see models.changes) ----------------------------------------------------------


def record_prior_versions(
    session: Session, entity: Entity, connection_id: str, external_ids: Sequence[str]
) -> None:
    """Copy the stored versions of these rows into the change log before they are overwritten."""
    prior = PRIOR_TABLES.get(entity)
    if prior is None or not external_ids:
        return
    t = _ENTITY_TABLES[entity].table
    names = [c.name for c in prior.columns if c.name not in ("change_id", "record_id")]
    chosen = select(t.c.id, *(t.c[name] for name in names)).where(
        t.c.connection_id == connection_id, t.c.external_id.in_(list(external_ids))
    )
    session.execute(insert(prior).from_select(["record_id", *names], chosen))


#: Entities whose changes the KPIs read record by record (owners and teams change the context instead).
LOGGED_ENTITIES = frozenset(
    {"accounts", "leads", "opportunities", "activities", "stage_changes", "pipeline_stages"}
)


def record_change_batch(session: Session, entity: Entity, connection_id: str, now: datetime) -> None:
    """Log that this transaction wrote ``entity`` rows of the connection stamped ``synced_at=now``
    (``recorded_at`` for stage history)."""
    if entity in LOGGED_ENTITIES:
        session.execute(insert(ChangeBatch).values(entity=entity, connection_id=connection_id, synced_at=now))


# --- reads of the CRM records and the runs (the API pages) ------------------------------------------


def owner_scope(connection_id: ColumnElement[Any], owner: ColumnElement[Any]) -> ColumnElement[Any]:
    return connection_id + ":" + owner


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
    #: Further columns that must equal a value (``("industry", "Retail")``), for the entities
    #: whose filters are plain equalities.
    equal: tuple[tuple[str, Any], ...] = ()
    #: A time column and the half-open range ``[from, to)`` it must fall in (either end optional).
    within: tuple[str, datetime | None, datetime | None] | None = None


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
    for name, value in where.equal:
        if value is not None:
            conditions.append(c[name] == value)
    if where.within is not None:
        name, start, end = where.within
        if start is not None:
            conditions.append(c[name] >= start)
        if end is not None:
            conditions.append(c[name] < end)
    return conditions


def _with_owner_id(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    owner = data.pop("owner_external_id", None)
    data["owner_id"] = f"{data['connection_id']}:{owner}" if owner is not None else None
    return data


_OPPORTUNITY_COLUMNS = (
    "id", "connection_id", "external_id", "owner_external_id", "name", "amount", "currency", "stage",
    "probability", "pipeline", "type", "lead_source", "account_external_id", "product", "created_at",
    "close_date", "closed_at", "is_closed", "is_won", "is_deleted", "remote_updated_at", "synced_at",
)  # fmt: skip


_LEAD_COLUMNS = (
    "id", "connection_id", "external_id", "owner_external_id", "name", "company", "account_external_id",
    "source", "status", "created_at", "is_converted", "converted_at", "converted_opportunity_external_id",
    "is_deleted", "remote_updated_at", "synced_at",
)  # fmt: skip


def opportunities_page(session: Session, where: RecordFilter, after: Any, limit: int) -> Page:
    t = Opportunity.__table__
    conditions = _record_where(session, t, where)
    for field, value in (
        (t.c.stage, where.stage),
        (t.c.is_closed, where.is_closed),
        (t.c.is_won, where.is_won),
    ):
        if value is not None:
            conditions.append(field == value)
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
    for field, value in (
        (t.c.status, where.stage),
        (t.c.is_converted, where.is_converted),
        (t.c.source, where.source),
    ):
        if value is not None:
            conditions.append(field == value)
    stmt = select(*(t.c[name] for name in _LEAD_COLUMNS)).where(*conditions)
    rows, next_key = keyset_page(session, stmt, t.c.id, after, limit)
    return [_with_owner_id(row) for row in rows], next_key


_ACCOUNT_COLUMNS = (
    "id", "connection_id", "external_id", "owner_external_id", "name", "industry", "segment",
    "parent_external_id", "created_at", "is_deleted", "remote_updated_at", "synced_at",
)  # fmt: skip

_ACTIVITY_COLUMNS = (
    "id", "connection_id", "external_id", "type", "subtype", "owner_external_id", "subject",
    "occurred_at", "duration_seconds", "outcome", "is_completed", "account_external_id",
    "opportunity_external_id", "lead_external_id", "is_deleted", "remote_updated_at", "synced_at",
)  # fmt: skip


def accounts_page(session: Session, where: RecordFilter, after: Any, limit: int) -> Page:
    t = Account.__table__
    stmt = select(*(t.c[name] for name in _ACCOUNT_COLUMNS)).where(*_record_where(session, t, where))
    rows, next_key = keyset_page(session, stmt, t.c.id, after, limit)
    return [_with_owner_id(row) for row in rows], next_key


def activities_page(session: Session, where: RecordFilter, after: Any, limit: int) -> Page:
    t = Activity.__table__
    stmt = select(*(t.c[name] for name in _ACTIVITY_COLUMNS)).where(*_record_where(session, t, where))
    rows, next_key = keyset_page(session, stmt, t.c.id, after, limit)
    return [_with_owner_id(row) for row in rows], next_key


def latest_activities(session: Session, owner: str, limit: int) -> list[dict[str, Any]]:
    """A rep's (``connection:owner id``) latest activities, newest first, with their accounts' names."""
    connection_id, _, owner_id = owner.partition(":")
    t, a = Activity.__table__, Account.__table__
    stmt = (
        select(*(t.c[name] for name in _ACTIVITY_COLUMNS), a.c.name.label("account_name"))
        .outerjoin(
            a,
            (a.c.connection_id == t.c.connection_id) & (a.c.external_id == t.c.account_external_id),
        )
        .where(
            t.c.connection_id == connection_id, t.c.owner_external_id == owner_id, t.c.is_deleted.is_(False)
        )
        .order_by(t.c.occurred_at.desc(), t.c.id.desc())
        .limit(limit)
    )
    return [_with_owner_id(row) for row in session.execute(stmt)]


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
