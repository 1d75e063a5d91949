"""All SQL of incentives: the numbers a plan reads (reps' KPI values, targets, scores), the
statement lines it writes, the periods closed and the records behind closed payouts.

The caller owns the transaction (these functions never commit).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    column,
    delete,
    func,
    insert,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from crm_perf_sync.kit.canonical import json_default
from crm_perf_sync.kit.paging import Page, keyset_page
from crm_perf_sync.models import (
    IncentiveClosedRecord,
    IncentiveLine,
    IncentivePeriodClose,
    IncentivePlanDefinition,
    IncentivePlanState,
    KpiValue,
    ScorecardValue,
)

LINE: Table = IncentiveLine.__table__  # type: ignore[assignment]
CLOSE: Table = IncentivePeriodClose.__table__  # type: ignore[assignment]
STATE: Table = IncentivePlanState.__table__  # type: ignore[assignment]
CLOSED_RECORD: Table = IncentiveClosedRecord.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class OwnerValue:
    value: float
    records: int


def owner_values(
    conn: Connection | Session,
    kpi_id: str,
    grain: str,
    period_keys: Collection[str],
    currency: str,
    dimension: tuple[str, str] = ("", ""),
) -> dict[tuple[str, str], OwnerValue]:
    """Each rep's stored value of a KPI by (period key, owner scope id)."""
    if not period_keys:
        return {}
    rows = conn.execute(
        select(KpiValue.period_key, KpiValue.scope_id, KpiValue.value, KpiValue.sample_count).where(
            KpiValue.kpi_id == kpi_id,
            KpiValue.grain == grain,
            KpiValue.scope == "owner",
            KpiValue.period_key.in_(sorted(period_keys)),
            KpiValue.currency == currency,
            KpiValue.dimension == dimension[0],
            KpiValue.dimension_value == dimension[1],
        )
    )
    return {(key, scope): OwnerValue(value or 0.0, count) for key, scope, value, count in rows.all()}


def owner_scores(
    conn: Connection | Session, scorecard_id: str, grain: str, period_keys: Collection[str]
) -> dict[tuple[str, str], tuple[float | None, str | None]]:
    """Each rep's (score, grade) on a scorecard by (period key, owner scope id)."""
    if not period_keys:
        return {}
    rows = conn.execute(
        select(
            ScorecardValue.period_key, ScorecardValue.scope_id, ScorecardValue.score, ScorecardValue.grade
        ).where(
            ScorecardValue.scorecard_id == scorecard_id,
            ScorecardValue.grain == grain,
            ScorecardValue.period_key.in_(sorted(period_keys)),
        )
    )
    return {(key, scope): (score, grade) for key, scope, score, grade in rows.all()}


def closes(conn: Connection | Session, plan_id: str | None = None) -> list[Any]:
    """The closed periods (of one plan), oldest first."""
    stmt = select(CLOSE)
    if plan_id is not None:
        stmt = stmt.where(CLOSE.c.plan_id == plan_id)
    return list(conn.execute(stmt.order_by(CLOSE.c.plan_id, CLOSE.c.period_key)))


def frozen_lines(conn: Connection | Session, plan_id: str) -> list[Any]:
    return list(conn.execute(select(LINE).where(LINE.c.plan_id == plan_id, LINE.c.frozen.is_(True))))


def lines_of_kind(
    conn: Connection | Session,
    plan_id: str,
    kind: str,
    *,
    component_ids: Collection[str] | None = None,
    also_periods: Collection[str] = (),
    period_keys: Collection[str] | None = None,
    for_periods: Collection[str] | None = None,
    with_detail: bool = False,
) -> list[Any]:
    """A plan's lines of one ``kind`` (of some components) in its open periods, and in
    ``also_periods`` frozen or not (periods closed since the caller last read them); only those
    of ``period_keys``, and only those for ``for_periods``, when given."""
    where: ColumnElement[bool] = LINE.c.frozen.is_(False)
    if also_periods:
        where = or_(where, LINE.c.period_key.in_(sorted(also_periods)))
    stmt = select(*(c for c in LINE.c if with_detail or c.name != "detail")).where(
        LINE.c.plan_id == plan_id, LINE.c.kind == kind, where
    )
    if period_keys is not None:
        stmt = stmt.where(LINE.c.period_key.in_(sorted(period_keys)))
    if for_periods is not None:
        stmt = stmt.where(LINE.c.for_period_key.in_(sorted(for_periods)))
    if component_ids is not None:
        stmt = stmt.where(LINE.c.component_id.in_(sorted(component_ids)))
    return list(conn.execute(stmt))


def period_lines(conn: Connection | Session, plan_id: str, period_key: str) -> list[dict[str, Any]]:
    """Every line paid in one period of a plan, by rep, component, kind and corrected period."""
    rows = conn.execute(
        select(LINE)
        .where(LINE.c.plan_id == plan_id, LINE.c.period_key == period_key)
        .order_by(LINE.c.owner_id, LINE.c.component_id, LINE.c.kind.desc(), LINE.c.for_period_key)
    )
    return [dict(r._mapping) for r in rows]


def component_lines(
    conn: Connection | Session, plan_id: str, period_key: str, component_id: str
) -> list[Any]:
    """The payout lines of one component of a plan in one period, one per rep."""
    return list(
        conn.execute(
            select(LINE).where(
                LINE.c.plan_id == plan_id,
                LINE.c.period_key == period_key,
                LINE.c.component_id == component_id,
                LINE.c.kind == "payout",
            )
        )
    )


def replace_open_lines(conn: Connection, plan_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """Swap a plan's lines of open periods for ``rows``; frozen lines stay as they are."""
    conn.execute(delete(LINE).where(LINE.c.plan_id == plan_id, LINE.c.frozen.is_(False)))
    if rows:
        conn.execute(insert(LINE), list(rows))


#: A stored line's id and what it was computed from: base, quota (both as floats: they are read
#: by the thousand to be compared, never to be computed with), units, score and grade.
StoredInputs = tuple[int, Any, Any, Any, Any, Any]


def open_inputs(
    conn: Connection, plan_id: str, period_keys: Collection[str]
) -> dict[tuple[str, str, str], StoredInputs]:
    """What the payout lines of some open periods of a plan were computed from (their id, base,
    quota, units, score and grade), by (period key, owner, component)."""
    if not period_keys:
        return {}
    rows = conn.execute(
        select(
            LINE.c.period_key,
            LINE.c.owner_id,
            LINE.c.component_id,
            LINE.c.id,
            type_coerce(LINE.c.base, Float),
            type_coerce(LINE.c.quota, Float),
            LINE.c.units,
            LINE.c.score,
            LINE.c.grade,
        ).where(
            LINE.c.plan_id == plan_id,
            LINE.c.kind == "payout",
            LINE.c.frozen.is_(False),
            LINE.c.period_key.in_(sorted(period_keys)),
        )
    )
    return {(r[0], r[1], r[2]): (r[3], r[4], r[5], r[6], r[7], r[8]) for r in rows.all()}


#: What a line's rewrite changes: its numbers, their explanation and when they were computed (its
#: key, its period's dates, its component's type and the plan's currency stay as they are).
LINE_NUMBERS = (
    "amount",
    "base",
    "quota",
    "attainment",
    "rate",
    "units",
    "score",
    "grade",
    "capped",
    "note",
    "detail",
    "computed_at",
)


def replace_lines(
    conn: Connection,
    plan_id: str,
    rewritten: Sequence[tuple[int, dict[str, Any]]],
    adjusted_periods: Collection[str],
    rows: Sequence[dict[str, Any]],
) -> None:
    """Write some of a plan's open lines: each ``(id, row)`` of ``rewritten`` over the stored
    line of that id (same key, same id: only its numbers change), the adjustments for the closed
    ``adjusted_periods`` anew wherever they are paid, and ``rows`` as new lines."""
    if rewritten and conn.dialect.name == "postgresql":
        _rewrite_in_place(conn, rewritten)
    elif rewritten:
        conn.execute(
            update(LINE).where(LINE.c.id == bindparam("line_id")),
            [{"line_id": line_id, **_numbers(row)} for line_id, row in rewritten],
        )
    if adjusted_periods:
        conn.execute(
            delete(LINE).where(
                LINE.c.plan_id == plan_id,
                LINE.c.frozen.is_(False),
                LINE.c.kind == "adjustment",
                LINE.c.for_period_key.in_(sorted(adjusted_periods)),
            )
        )
    if rows:
        conn.execute(insert(LINE), list(rows))


def _numbers(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in LINE_NUMBERS}


def _rewrite_in_place(conn: Connection, rewritten: Sequence[tuple[int, dict[str, Any]]]) -> None:
    """PostgreSQL: one UPDATE of the lines from a single JSON parameter holding their new numbers
    (``UPDATE ... FROM jsonb_to_recordset(:lines)``), parsed by the server into typed columns.

    Measured on 1,325 lines: an UPDATE per line, even pipelined, costs a round of parsing and
    planning each (150 ms); one from a VALUES list spends as long compiling its 17k parameters;
    deleting the lines and inserting them again under their ids took 90-120 ms and touched every
    index; one UPDATE from arrays (``unnest``) spent most of its time in the driver, quoting each
    explanation's JSON inside a text array. Amounts travel as their decimal text, exactly."""
    names = ("id", *LINE_NUMBERS)
    lines = [{"id": line_id} | {name: row[name] for name in LINE_NUMBERS} for line_id, row in rewritten]
    document = orjson.dumps(lines, default=json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    new = (
        func.jsonb_to_recordset(cast(bindparam("lines", document, type_=Text), JSONB))
        .table_valued(*(column(name, LINE.c[name].type) for name in names))
        .render_derived(name="new", with_types=True)
    )
    conn.execute(
        update(LINE).where(LINE.c.id == new.c.id).values({name: new.c[name] for name in LINE_NUMBERS})
    )


#: The state of a plan removed: kept so that the lines' version moves when its open lines go.
REMOVED = ""


def drop_plans_except(conn: Connection, plan_ids: Collection[str], now: datetime) -> int:
    """Remove the open lines of plans no longer in force (frozen lines stay: they were paid), and
    mark their state removed, as of ``now``. Returns how many lines went."""
    kept = sorted(plan_ids)
    others = conn.execute(
        select(STATE.c.plan_id).where(STATE.c.plan_id.not_in(kept), STATE.c.state_hash != REMOVED)
    ).first()
    if others is None:
        return 0  # a plan's open lines are written with its state: no other plan has any
    gone = conn.execute(delete(LINE).where(LINE.c.plan_id.not_in(kept), LINE.c.frozen.is_(False))).rowcount
    conn.execute(
        update(STATE)
        .where(STATE.c.plan_id.not_in(kept), STATE.c.state_hash != REMOVED)
        .values(state_hash=REMOVED, refreshed_at=now)
    )
    return int(gone or 0)


def has_lines(session: Session, plan_id: str) -> bool:
    return session.execute(select(LINE.c.id).where(LINE.c.plan_id == plan_id).limit(1)).first() is not None


def plan_states(conn: Connection) -> dict[str, str]:
    """The state each plan in force was last computed with."""
    return {r.plan_id: r.state_hash for r in conn.execute(select(STATE).where(STATE.c.state_hash != REMOVED))}


def record_plan_state(conn: Connection, plan_id: str, state_hash: str, now: datetime) -> None:
    done = conn.execute(
        update(STATE).where(STATE.c.plan_id == plan_id).values(state_hash=state_hash, refreshed_at=now)
    ).rowcount
    if not done:
        conn.execute(insert(STATE).values(plan_id=plan_id, state_hash=state_hash, refreshed_at=now))


def close_period(
    conn: Connection,
    plan_id: str,
    period: tuple[str, Any, Any],
    closed_by: str,
    now: datetime,
    records: Sequence[dict[str, Any]],
) -> int:
    """Record the close of a plan's period, freeze its lines (and the adjustments paid in it) and
    keep the records behind them; returns the close's id."""
    key, start, end = period
    close_id = conn.execute(
        insert(CLOSE)
        .values(
            plan_id=plan_id,
            period_key=key,
            period_start=start,
            period_end=end,
            closed_at=now,
            closed_by=closed_by,
        )
        .returning(CLOSE.c.id)
    ).scalar_one()
    conn.execute(update(LINE).where(LINE.c.plan_id == plan_id, LINE.c.period_key == key).values(frozen=True))
    if records:
        conn.execute(insert(CLOSED_RECORD), [{**r, "close_id": close_id} for r in records])
    return int(close_id)


def closed_records(
    conn: Connection | Session, plan_id: str
) -> dict[tuple[str, str, str], dict[tuple[str, str], float]]:
    """The records behind each closed payout: (period key, owner, component) -> {(connection,
    external id): contribution}."""
    r, c = CLOSED_RECORD, CLOSE
    rows = conn.execute(
        select(
            c.c.period_key,
            r.c.owner_id,
            r.c.component_id,
            r.c.connection_id,
            r.c.external_id,
            r.c.contribution,
        )
        .join(c, c.c.id == r.c.close_id)
        .where(c.c.plan_id == plan_id)
    )
    out: dict[tuple[str, str, str], dict[tuple[str, str], float]] = {}
    for row in rows:
        out.setdefault((row.period_key, row.owner_id, row.component_id), {})[
            (row.connection_id, row.external_id)
        ] = row.contribution
    return out


@dataclass(frozen=True, slots=True)
class LineFilter:
    plan_id: str | None = None
    owner_id: str | None = None
    period_key: str | None = None
    component_id: str | None = None
    kind: str | None = None
    #: Only these reps (a team's members); ``None``: anyone.
    owners: Collection[str] | None = None


def lines_page(session: Session, where: LineFilter, after: Any, limit: int) -> Page:
    """Statement lines in the order they were written, keyset-paged by id."""
    stmt = select(LINE)
    for name in ("plan_id", "owner_id", "period_key", "component_id", "kind"):
        value = getattr(where, name)
        if value is not None:
            stmt = stmt.where(LINE.c[name] == value)
    if where.owners is not None:
        stmt = stmt.where(LINE.c.owner_id.in_(sorted(where.owners)))
    rows, next_after = keyset_page(session, stmt, LINE.c.id, after, limit)
    return [dict(r._mapping) for r in rows], next_after


def statement(session: Session, plan_id: str, owner_id: str, period_key: str) -> list[dict[str, Any]]:
    """A rep's lines paid in one period of a plan (payouts first, then adjustments)."""
    rows = session.execute(
        select(LINE)
        .where(LINE.c.plan_id == plan_id, LINE.c.owner_id == owner_id, LINE.c.period_key == period_key)
        .order_by(LINE.c.kind.desc(), LINE.c.component_id, LINE.c.for_period_key)
    )
    return [dict(r._mapping) for r in rows]


def lines_version(session: Session) -> datetime | None:
    """When the statement lines last changed: the latest line written, plan recomputed or period
    closed (a close freezes lines without rewriting them)."""
    latest = [
        session.execute(select(func.max(column))).scalar()
        for column in (LINE.c.computed_at, STATE.c.refreshed_at, CLOSE.c.closed_at)
    ]
    found = [moment for moment in latest if moment is not None]
    return max(found) if found else None


def owner_plans(session: Session, owner_id: str) -> list[str]:
    """The plans a rep has statement lines in."""
    rows = session.execute(
        select(LINE.c.plan_id)
        .where(LINE.c.owner_id == owner_id)
        .group_by(LINE.c.plan_id)
        .order_by(LINE.c.plan_id)
    )
    return [r.plan_id for r in rows]


def owner_periods(session: Session, plan_id: str, owner_id: str) -> list[str]:
    rows = session.execute(
        select(LINE.c.period_key)
        .where(LINE.c.plan_id == plan_id, LINE.c.owner_id == owner_id)
        .group_by(LINE.c.period_key)
        .order_by(LINE.c.period_key)
    )
    return [r.period_key for r in rows]


def totals(session: Session, plan_id: str, period_key: str) -> dict[str, Any]:
    row = session.execute(
        select(func.count(), func.coalesce(func.sum(LINE.c.amount), 0)).where(
            and_(LINE.c.plan_id == plan_id, LINE.c.period_key == period_key)
        )
    ).one()
    return {"lines": row[0], "amount": row[1]}


def period_owners(session: Session, plan_id: str, period_key: str) -> list[dict[str, Any]]:
    """Every rep with lines paid in one period of a plan: what their lines add up to (payouts
    and adjustments), per currency, the most first."""
    total = func.sum(LINE.c.amount).label("total")
    rows = session.execute(
        select(LINE.c.owner_id, LINE.c.currency, total, func.count().label("lines"))
        .where(LINE.c.plan_id == plan_id, LINE.c.period_key == period_key)
        .group_by(LINE.c.owner_id, LINE.c.currency)
        .order_by(total.desc(), LINE.c.owner_id)
    )
    return [dict(r._mapping) for r in rows]


def owner_statements(session: Session, owner_id: str) -> list[tuple[str, str]]:
    """The (plan, period key) pairs a rep has lines in, oldest period first."""
    rows = session.execute(
        select(LINE.c.plan_id, LINE.c.period_key)
        .where(LINE.c.owner_id == owner_id)
        .group_by(LINE.c.plan_id, LINE.c.period_key)
        .order_by(LINE.c.plan_id, LINE.c.period_key)
    )
    return [(r.plan_id, r.period_key) for r in rows]


def plan_definitions(conn: Connection | Session) -> list[Any]:
    """The plans set through the API (every column), by id."""
    table = IncentivePlanDefinition.__table__
    return list(conn.execute(select(table).order_by(table.c.plan_id)))


def plan_definition(session: Session, plan_id: str) -> IncentivePlanDefinition | None:
    return session.get(IncentivePlanDefinition, plan_id)


def add_plan_definition(
    session: Session, plan_id: str, definition: dict[str, Any], by: str, now: datetime
) -> IncentivePlanDefinition:
    row = IncentivePlanDefinition(
        plan_id=plan_id, definition=definition, created_at=now, updated_at=now, updated_by=by
    )
    session.add(row)
    session.flush()
    return row


def update_plan_definition(
    session: Session, row: IncentivePlanDefinition, definition: dict[str, Any], by: str, now: datetime
) -> None:
    row.definition = definition
    row.updated_at = now
    row.updated_by = by
    session.flush()


def delete_plan_definition(session: Session, row: IncentivePlanDefinition) -> None:
    session.delete(row)
    session.flush()
