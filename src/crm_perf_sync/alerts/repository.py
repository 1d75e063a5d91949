"""All SQL of the alerts domain: the values a rule watches, its states and their history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, func, insert, select, update
from sqlalchemy.orm import Session

from crm_perf_sync.models import (
    AlertState,
    AlertTransition,
    KpiValue,
    ScorecardValue,
    ScorePublication,
)

Executor = Session | Connection
STATE: Table = AlertState.__table__  # type: ignore[assignment]
TRANSITION: Table = AlertTransition.__table__  # type: ignore[assignment]


def kpi_values(
    conn: Executor, kpi_id: str, grain: str, period_key: str, scope: str, currency: str
) -> list[Any]:
    """The totals (no breakdown) of one KPI, period and scope, in one currency ('' for none)."""
    stmt = select(
        KpiValue.scope_id,
        KpiValue.value,
        KpiValue.attainment,
        KpiValue.sample_count,
        KpiValue.period_start,
        KpiValue.period_end,
    ).where(
        KpiValue.kpi_id == kpi_id,
        KpiValue.grain == grain,
        KpiValue.period_key == period_key,
        KpiValue.scope == scope,
        KpiValue.dimension == "",
        KpiValue.currency == currency,
    )
    return list(conn.execute(stmt))


def scores(conn: Executor, scorecard_id: str, grain: str, period_key: str) -> list[Any]:
    stmt = select(
        ScorecardValue.scope_id,
        ScorecardValue.score,
        ScorecardValue.grade,
        ScorecardValue.rank,
        ScorecardValue.team_id,
        ScorecardValue.period_start,
        ScorecardValue.period_end,
    ).where(
        ScorecardValue.scorecard_id == scorecard_id,
        ScorecardValue.grain == grain,
        ScorecardValue.period_key == period_key,
    )
    return list(conn.execute(stmt.order_by(ScorecardValue.rank.is_(None), ScorecardValue.rank)))


def states(conn: Executor, rule_id: str) -> dict[tuple[str, str, str], Any]:
    rows = conn.execute(select(STATE).where(STATE.c.rule_id == rule_id))
    return {(row.scope, row.scope_id, row.currency): row for row in rows}


def save_state(conn: Executor, existing_id: int | None, **values: Any) -> int:
    """Insert or update a state; its id."""
    if existing_id is None:
        state_id: int = conn.execute(insert(STATE).values(**values).returning(STATE.c.id)).scalar_one()
        return state_id
    conn.execute(update(STATE).where(STATE.c.id == existing_id).values(**values))
    return existing_id


def states_of_other_rules(conn: Executor, keep: Sequence[str]) -> list[Any]:
    """The states of rules no longer configured."""
    stmt = select(STATE).where(STATE.c.rule_id.not_in(list(keep)))
    order = (STATE.c.rule_id, STATE.c.scope, STATE.c.scope_id, STATE.c.currency)
    return list(conn.execute(stmt.order_by(*order)))


def delete_state(conn: Executor, state_id: int) -> None:
    conn.execute(delete(STATE).where(STATE.c.id == state_id))


def set_message_id(conn: Executor, state_id: int, message_id: str) -> None:
    """The ``webhook-id`` of the ``alert.firing`` event that announced the state's breach."""
    conn.execute(update(STATE).where(STATE.c.id == state_id).values(message_id=message_id))


def record_transition(conn: Executor, **values: Any) -> None:
    conn.execute(insert(TRANSITION).values(**values))


def published(conn: Executor, scorecard_id: str, grain: str, period_key: str) -> bool:
    found = conn.execute(
        select(func.count())
        .select_from(ScorePublication)
        .where(
            ScorePublication.scorecard_id == scorecard_id,
            ScorePublication.grain == grain,
            ScorePublication.period_key == period_key,
        )
    ).scalar_one()
    return bool(found)


def mark_published(conn: Executor, scorecard_id: str, grain: str, period_key: str, now: datetime) -> None:
    conn.execute(
        insert(ScorePublication).values(
            scorecard_id=scorecard_id, grain=grain, period_key=period_key, published_at=now
        )
    )


def current_states(conn: Executor, rule_id: str | None, state: str | None) -> list[Any]:
    stmt = select(STATE)
    if rule_id is not None:
        stmt = stmt.where(STATE.c.rule_id == rule_id)
    if state is not None:
        stmt = stmt.where(STATE.c.state == state)
    return list(conn.execute(stmt.order_by(STATE.c.rule_id, STATE.c.scope, STATE.c.scope_id)))


def transitions_page(
    conn: Executor, rule_id: str | None, since: datetime | None, after: int | None, limit: int
) -> tuple[list[Any], int | None]:
    """Transitions newest first, keyed by descending id."""
    stmt = select(TRANSITION)
    if rule_id is not None:
        stmt = stmt.where(TRANSITION.c.rule_id == rule_id)
    if since is not None:
        stmt = stmt.where(TRANSITION.c.at >= since)
    if after is not None:
        stmt = stmt.where(TRANSITION.c.id < after)
    rows = list(conn.execute(stmt.order_by(TRANSITION.c.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more else None)
