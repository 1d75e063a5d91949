"""KPI definitions → SQLAlchemy Core aggregates, one query per measure, grain and scope.

Every query aggregates in the database and returns one row per (period, scope, currency) group:
the sum of the measured value and the number of records. Nothing here loops over records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    Float,
    Integer,
    String,
    Table,
    and_,
    cast,
    column,
    func,
    literal,
    select,
)
from sqlalchemy import table as table_clause
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from crm_perf_sync.kpi import periods
from crm_perf_sync.kpi.schemas import FIELDS, DurationKpi, Filter, Grain, Measure
from crm_perf_sync.models import Lead, Opportunity

Scope = Literal["company", "team", "owner"]
SCOPES: tuple[Scope, ...] = ("company", "team", "owner")

TABLES: dict[str, Table] = {
    "opportunities": Opportunity.__table__,  # type: ignore[dict-item]
    "leads": Lead.__table__,  # type: ignore[dict-item]
}


@dataclass(frozen=True, slots=True)
class Calendar:
    dialect: str
    timezone: str
    fiscal_start_month: int


@dataclass(frozen=True, slots=True)
class Membership:
    """Which reps count in which team, every level of the hierarchy included."""

    rows: tuple[tuple[str, str, str], ...]  # (team scope id, connection id, owner external id)


def field_expr(table: Table, name: str, dialect: str) -> ColumnElement[Any]:
    if name.startswith("custom."):
        key = name.removeprefix("custom.")
        if dialect == "postgresql":
            text_value: ColumnElement[Any] = table.c.custom[key].astext
            return text_value
        return func.json_extract(table.c.custom, f"$.{key}")
    return table.c[name]


def _condition(table: Table, item: Filter, dialect: str) -> ColumnElement[bool]:
    target = field_expr(table, item.field, dialect)
    value = item.value
    match item.op:
        case "eq":
            return target == value  # type: ignore[no-any-return]
        case "ne":
            return target != value  # type: ignore[no-any-return]
        case "in":
            return target.in_(value)
        case "not_in":
            return target.not_in(value)
        case "gt":
            return target > value  # type: ignore[no-any-return]
        case "gte":
            return target >= value  # type: ignore[no-any-return]
        case "lt":
            return target < value  # type: ignore[no-any-return]
        case "lte":
            return target <= value  # type: ignore[no-any-return]
        case "is_null":
            return target.is_(None)
        case _:
            return target.is_not(None)


def days_between(start: ColumnElement[Any], end: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        days: ColumnElement[Any] = cast(func.extract("epoch", end - start), Float) / 86400.0
        return days
    return func.julianday(end) - func.julianday(start)


@dataclass(frozen=True, slots=True)
class Part:
    """One side of a KPI: which records, what value each contributes, how it is grouped."""

    measure: Measure
    value: ColumnElement[Any] | None  # None: count records
    where: tuple[ColumnElement[bool], ...]
    by_currency: bool


def part_for(
    measure: Measure, calendar: Calendar, *, by_currency: bool, kpi: DurationKpi | None = None
) -> Part:
    table = TABLES[measure.entity]
    where: list[ColumnElement[bool]] = [table.c.is_deleted.is_(False)]
    where += [_condition(table, item, calendar.dialect) for item in measure.filter]
    value: ColumnElement[Any] | None = None
    if kpi is not None:
        start, end = table.c[kpi.start], table.c[kpi.end]
        where += [start.is_not(None), end.is_not(None), end >= start]
        value = days_between(start, end, calendar.dialect)
    elif measure.sum is not None:
        value = field_expr(table, measure.sum, calendar.dialect)
        where.append(value.is_not(None))
        if measure.weight is not None:
            weight = field_expr(table, measure.weight, calendar.dialect)
            where.append(weight.is_not(None))
            value = value * weight
    return Part(measure, value, tuple(where), by_currency)


#: The (team, rep) pairs of a refresh, loaded into a temporary table on the refresh's connection
#: so the team queries join an indexed table instead of re-reading a parameter per row.
MEMBERSHIP = table_clause(
    "kpi_membership",
    column("team_key", String),
    column("m_connection_id", String),
    column("m_owner_external_id", String),
)


def aggregate_query(
    part: Part, calendar: Calendar, grain: Grain, scope: Scope, membership: Membership | None
) -> Select[Any]:
    """``(period_index, scope_id, currency, total, records)`` per group, for one part."""
    table = TABLES[part.measure.entity]
    kind = FIELDS[part.measure.entity][part.measure.period]
    where = list(part.where)
    if grain == "all":
        period: ColumnElement[Any] = literal(-1, Integer)
    else:
        period_column = table.c[part.measure.period]
        where.append(period_column.is_not(None))
        index = periods.month_index(
            period_column, kind=kind, dialect=calendar.dialect, zone=calendar.timezone
        )
        period = periods.bucket(index, grain, calendar.fiscal_start_month)
    currency: ColumnElement[Any] = (
        func.coalesce(table.c.currency, "")
        if part.by_currency and "currency" in table.c
        else literal("", String)
    )
    total: ColumnElement[Any] = func.count() if part.value is None else func.sum(part.value)
    source: Any = table
    if scope == "company":
        scope_id: ColumnElement[Any] = literal("company", String)
    elif scope == "owner":
        scope_id = table.c.connection_id + ":" + table.c.owner_external_id
        where.append(table.c.owner_external_id.is_not(None))
    else:
        assert membership is not None
        members = MEMBERSHIP
        source = table.join(
            members,
            and_(
                members.c.m_connection_id == table.c.connection_id,
                members.c.m_owner_external_id == table.c.owner_external_id,
            ),
        )
        scope_id = members.c.team_key
    stmt = (
        select(
            period.label("period"),
            scope_id.label("scope_id"),
            currency.label("currency"),
            total.label("total"),
            func.count().label("records"),
        )
        .select_from(source)
        .where(*where)
        .group_by(period, scope_id, currency)
    )
    return stmt


def percentile_query(
    part: Part,
    calendar: Calendar,
    grain: Grain,
    scope: Scope,
    membership: Membership | None,
    stat: Literal["median", "p90"],
) -> Select[Any]:
    """``(period_index, scope_id, currency, value)``: the median or nearest-rank p90 per group.

    Window functions rank each group's values; the same SQL runs on SQLite and PostgreSQL.
    """
    assert part.value is not None
    base = aggregate_query(part, calendar, grain, scope, membership)
    # Re-use the grouping expressions of the aggregate, ungrouped, to rank values within groups.
    grouped = base.with_only_columns(*base.selected_columns[:3], part.value.label("v")).group_by(None)
    ranked_source = grouped.subquery("vals")
    keys = [ranked_source.c.period, ranked_source.c.scope_id, ranked_source.c.currency]
    ranked = select(
        *keys,
        ranked_source.c.v,
        func.row_number().over(partition_by=keys, order_by=ranked_source.c.v).label("rn"),
        func.count().over(partition_by=keys).label("n"),
    ).subquery("ranked")
    rk = [ranked.c.period, ranked.c.scope_id, ranked.c.currency]
    if stat == "median":
        pick: ColumnElement[bool] = ranked.c.rn.in_([(ranked.c.n + 1) // 2, (ranked.c.n + 2) // 2])
    else:
        # Nearest rank: the ceil(0.9 n)-th value.
        pick = ranked.c.rn == (ranked.c.n * 9 + 9) // 10
    return select(*rk, func.avg(ranked.c.v).label("value")).where(pick).group_by(*rk)
