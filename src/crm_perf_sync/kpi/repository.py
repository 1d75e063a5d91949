"""All SQL of the KPI domain outside the compiled aggregates: membership, values, names."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Connection,
    Select,
    String,
    Table,
    and_,
    any_,
    bindparam,
    column,
    delete,
    func,
    insert,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy import table as table_clause
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from crm_perf_sync.kit.bulk import bulk_insert
from crm_perf_sync.kit.paging import expect
from crm_perf_sync.kpi import compiler
from crm_perf_sync.kpi.compiler import MEMBERSHIP, OWNER_REGION
from crm_perf_sync.models import (
    PRIOR_TABLES,
    ChangeBatch,
    KpiRefreshRun,
    KpiRefreshState,
    KpiValue,
)
from crm_perf_sync.org.repository import team_owners
from crm_perf_sync.org.schemas import Membership

KPI_VALUE: Table = KpiValue.__table__  # type: ignore[assignment]

#: Every lead and opportunity the pending change log touched (temporary, see :func:`load_pending`).
CHANGED = table_clause(
    "kpi_changed",
    column("c_entity", String),
    column("c_connection_id", String),
    column("c_external_id", String),
)

#: The accounts whose deals the customer KPIs read again (temporary, see :func:`load_touched_accounts`).
TOUCHED_ACCOUNTS = table_clause(
    "kpi_touched_account",
    column("t_connection_id", String),
    column("t_account", String),
)

#: The refresh-state row a refresh writes first (not a KPI id: ids start with a letter).
REFRESH_MARK = "*refresh"


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
    conn.exec_driver_sql("DROP TABLE IF EXISTS kpi_owner_region")
    conn.exec_driver_sql(
        "CREATE TEMPORARY TABLE kpi_owner_region "
        "(region_key VARCHAR(600), r_connection_id VARCHAR(63), r_owner_external_id VARCHAR(255), "
        "PRIMARY KEY (r_connection_id, r_owner_external_id))"
    )
    if membership.regions:
        conn.execute(
            insert(OWNER_REGION),
            [
                {"region_key": r, "r_connection_id": c, "r_owner_external_id": o}
                for r, c, o in membership.regions
            ],
        )


def sort_in_memory(conn: Connection) -> None:
    """Let this transaction sort in memory on PostgreSQL (no-op on SQLite).

    Grouping and ranking a million records then sorts in memory rather than in spill files;
    ``SET LOCAL`` ends with the transaction.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")


def replace_values(conn: Connection, kpi_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """Swap a KPI's values for ``rows`` (the caller's transaction makes the swap atomic)."""
    conn.execute(delete(KpiValue).where(KpiValue.kpi_id == kpi_id))
    bulk_insert(conn, KPI_VALUE, rows)


def analyze_values(conn: Connection) -> None:
    """Gather PostgreSQL's statistics of the values once KPIs were recomputed whole (in the
    refresh's transaction, which they count). Autovacuum does so a minute or more later: until
    then the first incremental refreshes would be planned for a table of a few rows, and look up
    a turn's cells through the wrong index (a second instead of milliseconds)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ANALYZE kpi_value")


def values(
    session: Session,
    kpi_id: str,
    *,
    grain: str | None = None,
    scope: str | None = None,
    period_key: str | None = None,
    scope_id: str | None = None,
    dimension: str | None = "",
) -> list[KpiValue]:
    """Stored values; ``dimension`` '' (the default) gives the totals, ``None`` every breakdown."""
    stmt = select(KpiValue).where(KpiValue.kpi_id == kpi_id)
    if dimension is not None:
        stmt = stmt.where(KpiValue.dimension == dimension)
    if grain is not None:
        stmt = stmt.where(KpiValue.grain == grain)
    if scope is not None:
        stmt = stmt.where(KpiValue.scope == scope)
    if period_key is not None:
        stmt = stmt.where(KpiValue.period_key == period_key)
    if scope_id is not None:
        stmt = stmt.where(KpiValue.scope_id == scope_id)
    stmt = stmt.order_by(
        KpiValue.grain,
        KpiValue.period_key,
        KpiValue.scope,
        KpiValue.scope_id,
        KpiValue.currency,
        KpiValue.dimension,
        KpiValue.dimension_value,
    )
    return list(session.scalars(stmt))


def mark_refresh_started(conn: Connection, now: datetime) -> None:
    """The refresh's first statement, a write (SQLite: the transaction takes the write lock)."""
    conn.execute(delete(KpiRefreshState).where(KpiRefreshState.kpi_id == REFRESH_MARK))
    conn.execute(
        insert(KpiRefreshState).values(
            kpi_id=REFRESH_MARK, definition_hash="", context_hash="", refreshed_at=now
        )
    )


def refresh_states(conn: Connection) -> dict[str, tuple[str, str]]:
    rows = conn.execute(
        select(KpiRefreshState.kpi_id, KpiRefreshState.definition_hash, KpiRefreshState.context_hash)
    )
    return {row.kpi_id: (row.definition_hash, row.context_hash) for row in rows}


def record_refresh(
    conn: Connection, kpi_id: str, definition_hash: str, context_hash: str, now: datetime, *, changed: bool
) -> None:
    """What a KPI's values now reflect; ``changed``: the refresh wrote or removed some of them
    (the version readers cache against moves then, and when the KPI had none). One upsert: a
    push's refresh records this for every KPI it brought up to date."""
    upsert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    new = upsert(KpiRefreshState).values(
        kpi_id=kpi_id,
        definition_hash=definition_hash,
        context_hash=context_hash,
        refreshed_at=now,
        values_changed_at=now,
    )
    moved = new.excluded.values_changed_at
    kept = moved if changed else func.coalesce(KpiRefreshState.values_changed_at, moved)
    conn.execute(
        new.on_conflict_do_update(
            index_elements=[KpiRefreshState.kpi_id],
            set_={
                "definition_hash": new.excluded.definition_hash,
                "context_hash": new.excluded.context_hash,
                "refreshed_at": new.excluded.refreshed_at,
                "values_changed_at": kept,
            },
        )
    )


def record_refresh_run(conn: Connection, **values: Any) -> None:
    conn.execute(insert(KpiRefreshRun).values(**values))


def values_version(session: Session | Connection, kpi_id: str) -> datetime | None:
    """When the KPI's values last changed (``None``: never computed)."""
    stmt = select(KpiRefreshState.values_changed_at).where(KpiRefreshState.kpi_id == kpi_id)
    return session.execute(stmt).scalar_one_or_none()


def results_version(session: Session | Connection) -> datetime | None:
    """When any KPI's values last changed (``None``: none computed yet)."""
    stmt = select(func.max(KpiRefreshState.values_changed_at)).where(KpiRefreshState.kpi_id != REFRESH_MARK)
    found: datetime | None = session.execute(stmt).scalar_one()
    return found


@dataclass(frozen=True, slots=True)
class PendingLog:
    """The change log rows a refresh read (and deletes once its values include them)."""

    batch_ids: tuple[int, ...]
    prior_ids: dict[str, tuple[int, ...]]
    entities: frozenset[str] = frozenset()

    @property
    def batches(self) -> int:
        return len(self.batch_ids)


def load_pending(conn: Connection) -> PendingLog:
    """The change log as of this transaction's snapshot; its batches go into ``kpi_pending``."""
    conn.exec_driver_sql("DROP TABLE IF EXISTS kpi_pending")
    conn.exec_driver_sql(
        "CREATE TEMPORARY TABLE kpi_pending AS "
        "SELECT DISTINCT entity AS p_entity, connection_id AS p_connection_id, synced_at AS p_synced_at "
        "FROM store_change_batch"
    )
    conn.exec_driver_sql("CREATE INDEX kpi_pending_key ON kpi_pending (p_connection_id, p_synced_at)")
    # Every record the log touched: written by a pending batch, or with an old version logged.
    conn.exec_driver_sql("DROP TABLE IF EXISTS kpi_changed")
    conn.exec_driver_sql(
        "CREATE TEMPORARY TABLE kpi_changed AS "
        + " UNION ".join(
            f"SELECT '{entity}' AS c_entity, t.connection_id AS c_connection_id, "
            "t.external_id AS c_external_id "
            f"FROM {table} t JOIN kpi_pending p ON p.p_entity = '{entity}' "
            "AND p.p_connection_id = t.connection_id AND p.p_synced_at = t.synced_at "
            f"UNION SELECT '{entity}', connection_id, external_id FROM {prior.name}"
            for entity, table, prior in (
                ("opportunities", "opportunity", PRIOR_TABLES["opportunities"]),
                ("leads", "lead", PRIOR_TABLES["leads"]),
                ("activities", "activity", PRIOR_TABLES["activities"]),
                ("accounts", "account", PRIOR_TABLES["accounts"]),
            )
        )
    )
    conn.exec_driver_sql(
        "CREATE INDEX kpi_changed_key ON kpi_changed (c_entity, c_connection_id, c_external_id)"
    )
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ANALYZE kpi_changed")
    batch_ids = tuple(conn.execute(select(ChangeBatch.id)).scalars())
    entities = frozenset(conn.execute(select(ChangeBatch.entity).distinct()).scalars())
    prior_ids = {
        entity: tuple(conn.execute(select(table.c.change_id)).scalars())
        for entity, table in PRIOR_TABLES.items()
    }
    return PendingLog(batch_ids, prior_ids, entities)


def load_funnel_deals(conn: Connection) -> int:
    """Put the deals the change log touched into ``kpi_funnel_deals`` (after :func:`load_pending`),
    with copies of their rows and history (:data:`compiler.FUNNEL_OPPORTUNITY`, ``FUNNEL_HISTORY``).

    A deal is touched when a pending batch wrote its row, when the log holds an old version of
    it, or when a pending batch recorded stage history for it. Returns how many there are.
    """
    conn.exec_driver_sql("DROP TABLE IF EXISTS kpi_funnel_deals")
    conn.exec_driver_sql(
        "CREATE TEMPORARY TABLE kpi_funnel_deals "
        "(d_connection_id VARCHAR(63), d_external_id VARCHAR(255), "
        "PRIMARY KEY (d_connection_id, d_external_id))"
    )
    conn.exec_driver_sql(
        "INSERT INTO kpi_funnel_deals (d_connection_id, d_external_id) "
        "SELECT c_connection_id, c_external_id FROM kpi_changed WHERE c_entity = 'opportunities' "
        "UNION SELECT h.connection_id, h.opportunity_external_id FROM stage_change h "
        "JOIN (SELECT DISTINCT p_connection_id, p_synced_at FROM kpi_pending) p "
        "ON p.p_connection_id = h.connection_id AND p.p_synced_at = h.recorded_at"
    )
    found: int = conn.exec_driver_sql("SELECT count(*) FROM kpi_funnel_deals").scalar_one()
    # Their rows and history, copied: a few thousand rows the funnel queries then read whole.
    for mirror, source, key in (
        ("kpi_funnel_opportunity", "opportunity", "external_id"),
        ("kpi_funnel_history", "stage_change", "opportunity_external_id"),
    ):
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {mirror}")
        if conn.dialect.name == "postgresql":
            # One index probe per touched deal. A plain join lets the planner hash the whole
            # table instead (it overestimates the rows per deal); OFFSET 0 keeps the lateral
            # subquery from being flattened into such a join.
            select_rows = (
                f"SELECT t.* FROM kpi_funnel_deals d CROSS JOIN LATERAL (SELECT * FROM {source} x "
                f"WHERE x.connection_id = d.d_connection_id AND x.{key} = d.d_external_id OFFSET 0) t"
            )
        else:
            # The same probes: SQLite has no statistics on the temporary table and would scan the
            # history (millions of rows) for each of its few deals; a CROSS JOIN keeps the
            # touched deals the outer loop.
            select_rows = (
                f"SELECT t.* FROM kpi_funnel_deals d CROSS JOIN {source} t "
                f"ON t.connection_id = d.d_connection_id AND t.{key} = d.d_external_id"
            )
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {mirror} AS {select_rows}")
        conn.exec_driver_sql(f"CREATE INDEX {mirror}_key ON {mirror} (connection_id, {key})")
    return found


#: A sample as a full refresh ranks it: ``(week, month, connection_id, owner_external_id,
#: currency, dimension_value, value)``.
SampleRow = tuple[int | None, int | None, str, str | None, str, str, float]


def replace_sample(
    conn: Connection, kpi_id: str, dimension: str | None, stmt: Select[Any]
) -> list[SampleRow]:
    """Make a KPI's samples of one breakdown the rows of ``stmt`` (see :func:`sample_query`);
    returns them as :data:`SampleRow`.

    Only the differences are written: deleting and inserting every sample (some hundred thousand
    rows through five indexes at a million deals) cost a median's full refresh more than
    computing them, while a full refresh mostly finds them as they were.
    """
    sample = compiler.SAMPLE
    wanted: dict[tuple[str, str], SampleRow] = {
        (r.connection_id, r.external_id): (
            r.week, r.month, r.connection_id, r.owner_external_id, r.currency, r.dimension_value,
            float(r.value),
        )
        for r in conn.execute(stmt)
    }  # fmt: skip
    stored = select(
        sample.c.id,
        sample.c.week,
        sample.c.month,
        sample.c.connection_id,
        sample.c.owner_external_id,
        sample.c.currency,
        sample.c.dimension_value,
        sample.c.value,
        sample.c.external_id,
    ).where(sample.c.kpi_id == kpi_id, sample.c.dimension == (dimension or ""))
    stale: list[int] = []
    kept: set[tuple[str, str]] = set()
    for r in conn.execute(stored):
        key = (r.connection_id, r.external_id)
        if wanted.get(key) == tuple(r[1:8]):
            kept.add(key)
        else:
            stale.append(r.id)
    if stale:
        conn.execute(delete(sample).where(ids_in(conn, sample.c.id, stale)))
    added = [
        {
            "connection_id": connection_id,
            "external_id": external_id,
            "week": week,
            "month": month,
            "owner_external_id": owner,
            "currency": currency,
            "dimension_value": dim,
            "value": value,
        }
        for (_, external_id), (week, month, connection_id, owner, currency, dim, value) in wanted.items()
        if (connection_id, external_id) not in kept
    ]
    bulk_insert(conn, sample, added, constants={"kpi_id": kpi_id, "dimension": dimension or ""})
    if conn.dialect.name == "postgresql" and (stale or added):
        conn.exec_driver_sql("ANALYZE kpi_sample")
    return list(wanted.values())


def update_sample(
    conn: Connection, kpi_id: str, dimension: str | None, entity: str, new_rows: Select[Any]
) -> None:
    """Bring a KPI's samples up to date with the change log (after :func:`load_pending`).

    Every record the log touched loses its sample; those of its new versions that still count
    (``new_rows``) get theirs back.
    """
    sample = compiler.SAMPLE
    # The touched records' keys, each looked up in the samples' unique index (a correlated
    # EXISTS would test every sample of the KPI against the log instead).
    touched = select(CHANGED.c.c_connection_id, CHANGED.c.c_external_id).where(CHANGED.c.c_entity == entity)
    conn.execute(
        delete(sample).where(
            sample.c.kpi_id == kpi_id,
            sample.c.dimension == (dimension or ""),
            tuple_(sample.c.connection_id, sample.c.external_id).in_(touched),
        )
    )
    conn.execute(insert(sample).from_select(list(compiler.SAMPLE_COLUMNS), new_rows))


def pending_batches(session: Session | Connection) -> int:
    """How many sync batches wait in the change log for a refresh."""
    found: int = session.execute(select(func.count()).select_from(ChangeBatch)).scalar_one()
    return found


def consume_pending(conn: Connection, pending: PendingLog) -> None:
    """Delete exactly the log rows a refresh applied (later ones wait for the next refresh)."""
    if pending.batch_ids:
        conn.execute(delete(ChangeBatch).where(ids_in(conn, ChangeBatch.id, pending.batch_ids)))
    for entity, ids in pending.prior_ids.items():
        table = PRIOR_TABLES[entity]
        if ids:
            conn.execute(delete(table).where(ids_in(conn, table.c.change_id, ids)))


def load_touched_accounts(conn: Connection, accounts: Iterable[tuple[str, str]]) -> None:
    """Put (connection, account external id) pairs into ``kpi_touched_account`` on ``conn``: their
    deals are then read through the deals' account index, one probe per account."""
    conn.exec_driver_sql("DROP TABLE IF EXISTS kpi_touched_account")
    conn.exec_driver_sql(
        "CREATE TEMPORARY TABLE kpi_touched_account "
        "(t_connection_id VARCHAR(63), t_account VARCHAR(255), PRIMARY KEY (t_connection_id, t_account))"
    )
    rows = [{"t_connection_id": c, "t_account": a} for c, a in sorted(set(accounts))]
    if rows:
        conn.execute(insert(TOUCHED_ACCOUNTS), rows)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ANALYZE kpi_touched_account")


def drop_temporary_tables(conn: Connection) -> None:
    for name in (
        "kpi_membership",
        "kpi_touched_account",
        "kpi_owner_region",
        "kpi_pending",
        "kpi_changed",
        "kpi_funnel_deals",
        "kpi_funnel_opportunity",
        "kpi_funnel_history",
    ):
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


@dataclass(frozen=True, slots=True)
class StoredCell:
    id: int
    numerator: float
    denominator: float | None
    sample_count: int
    #: A median or percentile's rank state (pivot, values below, values equal).
    rank: tuple[float, int, int] | None = None


#: (grain, scope, period key, scope id, currency, breakdown value) of a stored value
CellKey = tuple[str, str, str, str, str, str]
#: Cells of a KPI's values by period: (grain, period key) → the (scope, scope id) of the cells
#: meant, or ``None`` for every cell of the period.
Cells = Mapping[tuple[str, str], set[tuple[str, str]] | None]


#: A select of any columns.
AnySelect = Select[*tuple[Any, ...]]


def _whole_periods(cells: Cells) -> list[ColumnElement[bool]]:
    """Conditions that between them select the whole periods of ``cells`` (those whose scopes are
    not named): a grain's together, 500 at a time."""
    whole: dict[str, list[str]] = defaultdict(list)
    for (grain, key), scopes in sorted(cells.items()):
        if scopes is None:
            whole[grain].append(key)
    return [
        and_(KpiValue.grain == grain, KpiValue.period_key.in_(keys[start : start + 500]))
        for grain, keys in sorted(whole.items())
        for start in range(0, len(keys), 500)
    ]


def _in_named_cells(conn: Connection, stmt: AnySelect, cells: Cells) -> AnySelect | None:
    """``stmt`` (a select from ``kpi_value``, narrowed to one KPI and breakdown) narrowed to the
    cells of ``cells`` named by their scopes, looked up through the unique index; ``None`` when
    none are named.

    The cells are bound as one parameter, so the statement is the same however many there are: a
    push's turn names hundreds of cells, in as many periods as the won deals were created in, and a
    statement per shape of cells read them one slow statement after another. On SQLite they are a
    JSON array in an IN list; on PostgreSQL arrays, unnested, with a LATERAL lookup per cell: its
    planner, with statistics gathered while the table was small, would read all of the KPI's
    values and hash or test each against the cells (a second instead of milliseconds).
    """
    named = sorted(
        (grain, key, scope, scope_id)
        for (grain, key), scopes in cells.items()
        if scopes
        for scope, scope_id in scopes
    )
    if not named:
        return None
    if conn.dialect.name != "postgresql":
        listed = func.json_each(bindparam(None, orjson.dumps(named).decode())).table_valued("value")
        cell_columns = (func.json_extract(listed.c.value, f"$[{i}]") for i in range(4))
        in_cells = tuple_(KpiValue.grain, KpiValue.period_key, KpiValue.scope, KpiValue.scope_id).in_(
            select(*cell_columns)
        )
        return stmt.where(in_cells)
    arrays = [bindparam(None, [row[i] for row in named], type_=ARRAY(String)) for i in range(4)]
    cell = func.unnest(*arrays).table_valued("grain", "period_key", "scope", "scope_id").render_derived()
    probe = stmt.where(
        KpiValue.grain == cell.c.grain,
        KpiValue.period_key == cell.c.period_key,
        KpiValue.scope == cell.c.scope,
        KpiValue.scope_id == cell.c.scope_id,
    )
    # OFFSET 0 keeps the subquery from being flattened into a join (which the planner may hash).
    found = probe.offset(0).lateral("found")
    return select(*found.c).select_from(cell).join(found, true())


def _cell_statements(conn: Connection, stmt: AnySelect, cells: Cells) -> list[AnySelect]:
    """``stmt`` (a select from ``kpi_value``, narrowed to one KPI and breakdown) as statements
    that between them select exactly ``cells``: their whole periods (:func:`_whole_periods`) and
    the cells named by their scopes (:func:`_in_named_cells`)."""
    statements = [stmt.where(condition) for condition in _whole_periods(cells)]
    named = _in_named_cells(conn, stmt, cells)
    return statements if named is None else [*statements, named]


_STORED_CELL = select(
    KpiValue.id,
    KpiValue.grain,
    KpiValue.scope,
    KpiValue.period_key,
    KpiValue.scope_id,
    KpiValue.currency,
    KpiValue.dimension_value,
    KpiValue.numerator,
    KpiValue.denominator,
    KpiValue.sample_count,
    KpiValue.rank_pivot,
    KpiValue.rank_below,
    KpiValue.rank_equal,
)


def stored_cells(
    conn: Connection, kpi_id: str, dimension: str, periods: Iterable[tuple[str, str]] | Cells
) -> dict[CellKey, StoredCell]:
    """A KPI's stored values of one breakdown in these ``(grain, period key)`` periods (of every
    scope), or in these cells (:data:`Cells`): read through the unique index, grain by grain,
    not among all of the KPI's values."""
    cells: Cells = periods if isinstance(periods, Mapping) else dict.fromkeys(periods)
    mine = _STORED_CELL.where(KpiValue.kpi_id == kpi_id, KpiValue.dimension == dimension)
    statements = _cell_statements(conn, mine, cells)
    out: dict[CellKey, StoredCell] = {}
    for statement in statements:
        # Unpacked as plain tuples: a push's refresh reads thousands of these.
        for value_id, grain_, scope, key, scope_id, currency, dim_value, *numbers in conn.execute(statement):
            numerator, denominator, count, pivot, below, equal = numbers
            rank = None if pivot is None else (float(pivot), int(below), int(equal))
            cell = (grain_, scope, key, scope_id, currency, dim_value)
            out[cell] = StoredCell(value_id, numerator, denominator, count, rank)
    return out


def ids_in(conn: Connection, id_column: Any, ids: Sequence[int]) -> ColumnElement[bool]:
    """SQL: ``id_column`` is one of ``ids``, as one bound parameter (compiled once, however many):
    an array on PostgreSQL, a JSON array on SQLite."""
    if conn.dialect.name == "postgresql":
        listed: ColumnElement[bool] = id_column == any_(bindparam(None, list(ids), type_=ARRAY(BigInteger)))
        return listed
    listed_json: Any = bindparam(None, orjson.dumps(list(ids)).decode())
    values: Select[Any] = select(column("value")).select_from(func.json_each(listed_json))
    found: ColumnElement[bool] = id_column.in_(values)
    return found


def replace_cells(conn: Connection, ids: Sequence[int], rows: Sequence[dict[str, Any]]) -> None:
    """Delete the values with these ids and insert ``rows``."""
    if ids:
        conn.execute(delete(KpiValue).where(ids_in(conn, KpiValue.id, ids)))
    bulk_insert(conn, KPI_VALUE, rows)


def delete_periods(conn: Connection, kpi_id: str, grain: str, dimension: str, period_keys: set[str]) -> None:
    """Delete a KPI's values (every scope) in these periods of one grain and breakdown."""
    keys = sorted(period_keys)
    for start in range(0, len(keys), 500):
        conn.execute(
            delete(KpiValue).where(
                KpiValue.kpi_id == kpi_id,
                KpiValue.grain == grain,
                KpiValue.dimension == dimension,
                KpiValue.period_key.in_(keys[start : start + 500]),
            )
        )


def total_values(
    conn: Connection, kpi_id: str, grains: Sequence[str], only: Cells | None = None
) -> Sequence[Any]:
    """A KPI's stored totals (no breakdowns) at these grains; ``only``: in these cells."""
    stmt = select(KPI_VALUE).where(
        KpiValue.kpi_id == kpi_id, KpiValue.dimension == "", KpiValue.grain.in_(list(grains))
    )
    if only is None:
        return list(conn.execute(stmt))
    cells = {period: scopes for period, scopes in only.items() if period[0] in grains}
    out: list[Any] = []
    for statement in _cell_statements(conn, stmt, cells):
        out += conn.execute(statement)
    return out


def delete_cells(conn: Connection, kpi_id: str, cells: Cells) -> None:
    """Delete a KPI's totals (no breakdowns) in these cells."""
    for condition in _whole_periods(cells):
        conn.execute(delete(KpiValue).where(KpiValue.kpi_id == kpi_id, KpiValue.dimension == "", condition))
    mine = select(KpiValue.id).where(KpiValue.kpi_id == kpi_id, KpiValue.dimension == "")
    named = _in_named_cells(conn, mine, cells)
    ids = [] if named is None else list(conn.scalars(named))
    if ids:
        conn.execute(delete(KpiValue).where(ids_in(conn, KpiValue.id, ids)))


def stored_value(
    conn: Connection | Session,
    kpi_id: str,
    grain: str,
    period_key: str,
    scope: str,
    scope_id: str,
    currency: str,
    dimension: str,
    dimension_value: str,
) -> Any:
    """One stored value row (``None`` if there is none)."""
    return conn.execute(
        select(KPI_VALUE).where(
            KpiValue.kpi_id == kpi_id,
            KpiValue.grain == grain,
            KpiValue.period_key == period_key,
            KpiValue.scope == scope,
            KpiValue.scope_id == scope_id,
            KpiValue.currency == currency,
            KpiValue.dimension == dimension,
            KpiValue.dimension_value == dimension_value,
        )
    ).first()


def total_in_currency(
    conn: Connection | Session,
    kpi_id: str,
    grain: str,
    period_key: str,
    scope: str,
    scope_id: str,
    currency: str,
) -> list[Any]:
    """A KPI's total (no breakdown) for one cell, in ``currency`` and without one, as mappings."""
    return list(
        conn.execute(
            select(KPI_VALUE).where(
                KPI_VALUE.c.kpi_id == kpi_id,
                KPI_VALUE.c.grain == grain,
                KPI_VALUE.c.period_key == period_key,
                KPI_VALUE.c.scope == scope,
                KPI_VALUE.c.scope_id == scope_id,
                KPI_VALUE.c.dimension == "",
                KPI_VALUE.c.currency.in_([currency, ""]),
            )
        ).mappings()
    )


# --- reads of values, targets and scores (the API pages) -------------------------------------------


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


def company_period_keys(session: Session, kpi_ids: Sequence[str], grain: str) -> list[str]:
    """The periods of ``grain`` that have a company value of one of these KPIs, newest first.

    Read from the index on (kpi_id, grain, scope, period_start) alone (a period's key is its
    first day): with a breakdown in the condition, SQLite walks every team's and rep's value.
    """
    stmt = (
        select(KpiValue.period_start)
        .where(KpiValue.kpi_id.in_(kpi_ids), KpiValue.grain == grain, KpiValue.scope == "company")
        .distinct()
        .order_by(KpiValue.period_start.desc())
    )
    return [start.isoformat() for start in session.scalars(stmt) if start is not None]


def values_in_periods(
    session: Session, kpi_id: str, grain: str, period_keys: Sequence[str]
) -> list[KpiValue]:
    """A KPI's totals (no breakdown) of ``grain`` in these periods, every scope."""
    stmt = select(KpiValue).where(
        KpiValue.kpi_id == kpi_id,
        KpiValue.grain == grain,
        KpiValue.period_key.in_(period_keys),
        KpiValue.dimension == "",
    )
    return list(session.scalars(stmt))


def scope_values(
    session: Session,
    kpi_ids: Sequence[str],
    grain: str,
    scope: str,
    scope_id: str,
    period_keys: Sequence[str],
) -> list[KpiValue]:
    """The totals of several KPIs for one scope in these periods of ``grain`` (one query)."""
    stmt = select(KpiValue).where(
        KpiValue.kpi_id.in_(kpi_ids),
        KpiValue.grain == grain,
        KpiValue.scope == scope,
        KpiValue.scope_id == scope_id,
        KpiValue.period_key.in_(period_keys),
        KpiValue.dimension == "",
    )
    return list(session.scalars(stmt))
