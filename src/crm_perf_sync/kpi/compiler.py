"""KPI definitions → SQLAlchemy Core aggregates, one grouped query per measure and breakdown.

Every query aggregates in the database and returns the finest groups (week, month, rep, currency):
the sum of the measured value and the number of records, which :mod:`.rollup` adds up into every
grain and scope. Nothing here loops over records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any, Literal

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    cast,
    column,
    func,
    literal,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy import table as table_clause
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from crm_perf_sync.kpi import periods
from crm_perf_sync.kpi.schemas import (
    FIELDS,
    REGION_DIMENSION,
    DurationKpi,
    Filter,
    FunnelKpi,
    Grain,
    Measure,
    dimension_column,
)
from crm_perf_sync.models import (
    Account,
    Activity,
    KpiSample,
    Lead,
    Opportunity,
    PipelineStage,
    StageChange,
)

Scope = Literal["company", "team", "owner"]
SCOPES: tuple[Scope, ...] = ("company", "team", "owner")

TABLES: dict[str, Table] = {
    "opportunities": Opportunity.__table__,  # type: ignore[dict-item]
    "leads": Lead.__table__,  # type: ignore[dict-item]
    "activities": Activity.__table__,  # type: ignore[dict-item]
    "accounts": Account.__table__,  # type: ignore[dict-item]
}


@dataclass(frozen=True, slots=True)
class Calendar:
    dialect: str
    timezone: str
    fiscal_start_month: int


def field_expr(table: Table, name: str) -> ColumnElement[Any]:
    if name.startswith("custom."):
        key = name.removeprefix("custom.")
        text_value: ColumnElement[Any] = table.c.custom[key].as_string()
        return text_value
    return table.c[name]


def _condition(table: Table, item: Filter) -> ColumnElement[bool]:
    target = field_expr(table, item.field)
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
    table: Table
    #: Only the change log's records: ``new`` versions written by pending batches, or the
    #: ``old`` versions they replaced that the stored values counted (``table`` is the prior copy).
    changes: Literal["new", "old"] | None = None


def part_for(
    measure: Measure,
    calendar: Calendar,
    *,
    by_currency: bool,
    kpi: DurationKpi | None = None,
    table: Table | None = None,
    changes: Literal["new", "old"] | None = None,
) -> Part:
    table = TABLES[measure.entity] if table is None else table
    where: list[ColumnElement[bool]] = [table.c.is_deleted.is_(False)]
    where += [_condition(table, item) for item in measure.filter]
    value: ColumnElement[Any] | None = None
    if kpi is not None:
        start, end = table.c[kpi.start], table.c[kpi.end]
        where += [start.is_not(None), end.is_not(None), end >= start]
        value = days_between(start, end, calendar.dialect)
    elif measure.sum is not None:
        value = field_expr(table, measure.sum)
        where.append(value.is_not(None))
        if measure.weight is not None:
            weight = field_expr(table, measure.weight)
            where.append(weight.is_not(None))
            value = value * weight
    return Part(measure, value, tuple(where), by_currency, table, changes)


#: The (team, rep) pairs of a refresh, loaded into a temporary table on the refresh's connection
#: so the team queries join an indexed table instead of re-reading a parameter per row.
MEMBERSHIP = table_clause(
    "kpi_membership",
    column("team_key", String),
    column("m_connection_id", String),
    column("m_owner_external_id", String),
)
#: Each rep's region (one per rep), for the ``region`` breakdown; temporary like the membership.
OWNER_REGION = table_clause(
    "kpi_owner_region",
    column("region_key", String),
    column("r_connection_id", String),
    column("r_owner_external_id", String),
)


def period_expr(
    measure: Measure, calendar: Calendar, grain: Grain, table: Table | None = None
) -> ColumnElement[int]:
    """SQL: the index of the ``grain`` period a record of ``measure`` falls in."""
    table = TABLES[measure.entity] if table is None else table
    return periods.period_index(
        table.c[measure.period],
        kind=FIELDS[measure.entity][measure.period],
        dialect=calendar.dialect,
        zone=calendar.timezone,
        grain=grain,
        fiscal_start_month=calendar.fiscal_start_month,
    )


def dimension_expr(entity: str, name: str, table: Table | None = None) -> ColumnElement[Any]:
    """SQL: a record's value of breakdown dimension ``name`` ('' when it has none)."""
    table = TABLES[entity] if table is None else table
    column_name = dimension_column(entity, name)
    assert column_name is not None, (entity, name)
    if column_name == REGION_DIMENSION:
        return func.coalesce(OWNER_REGION.c.region_key, "")
    return func.coalesce(cast(field_expr(table, column_name), String), "")


#: The change log's pending batches of one entity, loaded for an incremental refresh.
PENDING = table_clause(
    "kpi_pending",
    column("p_entity", String),
    column("p_connection_id", String),
    column("p_synced_at", String),
)


def region_join(table: Table) -> tuple[Any, ColumnElement[bool]]:
    return OWNER_REGION, and_(
        OWNER_REGION.c.r_connection_id == table.c.connection_id,
        OWNER_REGION.c.r_owner_external_id == table.c.owner_external_id,
    )


def exact_sum(value: ColumnElement[Any]) -> ColumnElement[Any]:
    """SUM read back as a plain number: through the Money type it would be rounded to cents per
    group, and a sum of amount x probability (fractions of a cent) would drift as groups add up."""
    total: ColumnElement[Any] = type_coerce(func.sum(value), Float)
    return total


def _keyed(
    part: Part, calendar: Calendar, dimension: str | None
) -> tuple[list[ColumnElement[Any]], Any, list[ColumnElement[bool]]]:
    """The finest group keys of a part's records, the FROM clause and the WHERE conditions."""
    table = part.table
    week = period_expr(part.measure, calendar, "week", table)
    month = period_expr(part.measure, calendar, "month", table)
    currency: ColumnElement[Any] = (
        func.coalesce(table.c.currency, "")
        if part.by_currency and "currency" in table.c
        else literal("", String)
    )
    source: Any = table
    where = list(part.where)
    if part.changes is not None:
        pending = and_(
            PENDING.c.p_entity == part.measure.entity,
            PENDING.c.p_connection_id == table.c.connection_id,
            PENDING.c.p_synced_at == table.c.synced_at,
        )
        if part.changes == "new":
            source = source.join(PENDING, pending)
        else:
            # A prior version stamped by a pending batch was written after the values were
            # computed (and replaced again since): it was never counted.
            source = source.outerjoin(PENDING, pending)
            where.append(PENDING.c.p_connection_id.is_(None))
    if dimension is None:
        dim: ColumnElement[Any] = literal("", String)
    else:
        if dimension == REGION_DIMENSION:
            source = source.outerjoin(*region_join(table))
        dim = dimension_expr(part.measure.entity, dimension, table)
    keys: list[ColumnElement[Any]] = [
        week.label("week"),
        month.label("month"),
        table.c.connection_id.label("connection_id"),
        table.c.owner_external_id.label("owner"),
        currency.label("currency"),
        dim.label("dim"),
    ]
    return keys, source, where


def grouped_query(part: Part, calendar: Calendar, dimension: str | None = None) -> Select[Any]:
    """One pass over a part's records: ``(week, month, connection_id, owner, currency, dim, total,
    records)`` per group, the finest grain every other one rolls up from.

    ``week`` and ``month`` are period indexes of the record's period field (null when it is not
    set: the record then counts in ``all`` only). Quarters and years are unions of months, teams
    and the company unions of reps (and of records without an owner, for the company), so the
    caller adds these groups up instead of scanning the table once per grain and scope.
    """
    keys, source, where = _keyed(part, calendar, dimension)
    total: ColumnElement[Any] = func.count() if part.value is None else exact_sum(part.value)
    return (
        select(*keys, total.label("total"), func.count().label("records"))
        .select_from(source)
        .where(*where)
        .group_by(*(key.element for key in keys))
    )


def funnel_steps(kpi: FunnelKpi) -> Any:
    """The funnel's steps: every pipeline's open and won stages (lost stages are not steps)."""
    steps = PipelineStage.__table__
    where = [steps.c.is_deleted.is_(False), or_(steps.c.is_closed.is_(False), steps.c.is_won.is_(True))]
    if kpi.pipeline is not None:
        where.append(steps.c.pipeline == kpi.pipeline)
    return (
        select(steps.c.connection_id, steps.c.pipeline, steps.c.stage, steps.c.sort_order)
        .where(*where)
        .subquery("funnel_steps")
    )


def funnel_steps_query(kpi: FunnelKpi) -> Select[Any]:
    """``(connection_id, pipeline, stage, sort_order)`` of every step, in order."""
    steps = funnel_steps(kpi)
    return select(steps).order_by(steps.c.connection_id, steps.c.pipeline, steps.c.sort_order)


def _mirror(source: Table, name: str) -> Table:
    """A temporary table with ``source``'s columns (not part of the schema: no metadata shared)."""
    return Table(name, MetaData(), *(Column(c.name, c.type) for c in source.columns))


#: The touched deals of an incremental funnel update (every deal with a new version, an old
#: version or new stage history in the change log): their rows and their whole stage history,
#: copied once per refresh, so its funnel queries read these few rows instead of the tables.
FUNNEL_OPPORTUNITY = _mirror(Opportunity.__table__, "kpi_funnel_opportunity")  # type: ignore[arg-type]
FUNNEL_HISTORY = _mirror(StageChange.__table__, "kpi_funnel_history")  # type: ignore[arg-type]

#: Which deals and which history a funnel query counts:
#: ``all``: every deal, every stage change (a whole recompute);
#: ``changed``: the touched deals as they are now, with their whole history;
#: ``prior``: those deals' old versions from the change log that the stored values counted, with
#: the history the stored values saw (none of the pending batches' stage changes);
#: ``unchanged``: those deals whose row no pending batch rewrote (only their history is new), as
#: the stored values saw them.
#: ``changed`` minus ``prior`` and ``unchanged`` is what the change log did to the funnel.
FunnelDeals = Literal["all", "changed", "prior", "unchanged"]


def _written_by_pending(connection_id: ColumnElement[Any], stamp: ColumnElement[Any]) -> ColumnElement[bool]:
    """SQL: a row stamped ``stamp`` was written by one of the pending batches of its connection."""
    return (
        select(literal(1))
        .select_from(PENDING)
        .where(PENDING.c.p_connection_id == connection_id, PENDING.c.p_synced_at == stamp)
        .exists()
    )


def funnel_grouped_query(
    kpi: FunnelKpi, part: Part, calendar: Calendar, deals: FunnelDeals = "all"
) -> Select[Any]:
    """Deals per furthest step: ``(week, month, connection_id, owner, pipeline, max_order, total)``.

    A deal's furthest step is the furthest open or won stage it was ever in (its current stage or
    any stage of its history); it has reached every step up to it, so skipped stages count as
    passed. The caller spreads each group over the steps it reached (see :func:`funnel_steps_query`),
    which keeps this one row per group instead of one per deal and step. ``part.table`` is the
    opportunity table for ``all``, its prior copy for ``prior`` and :data:`FUNNEL_OPPORTUNITY`
    otherwise; see :data:`FunnelDeals`.
    """
    opp = part.table
    # A prior copy's own key: one deal may have several (only one of them counted).
    deal_key = opp.c.change_id if "change_id" in opp.c else opp.c.id
    steps = funnel_steps(kpi)
    deal_where = list(part.where)
    history: Table = StageChange.__table__ if deals == "all" else FUNNEL_HISTORY  # type: ignore[assignment]
    history_where: list[ColumnElement[bool]] = []
    source: Any = opp
    history_source: Any = history
    if deals in ("prior", "unchanged"):
        # A version stamped by a pending batch was written after the stored values were computed.
        deal_where.append(~_written_by_pending(opp.c.connection_id, opp.c.synced_at))
        history_where.append(~_written_by_pending(history.c.connection_id, history.c.recorded_at))
    current = (
        select(deal_key.label("deal_id"), steps.c.pipeline, steps.c.sort_order)
        .select_from(
            source.join(
                steps,
                and_(
                    steps.c.connection_id == opp.c.connection_id,
                    steps.c.stage == opp.c.stage,
                    steps.c.pipeline == func.coalesce(opp.c.pipeline, steps.c.pipeline),
                ),
            )
        )
        .where(*deal_where)
    )
    # The history's furthest step per deal and pipeline first: one row per deal to join, not one
    # per stage change.
    history_furthest = (
        select(
            history.c.connection_id,
            history.c.opportunity_external_id,
            steps.c.pipeline,
            func.max(steps.c.sort_order).label("sort_order"),
        )
        .select_from(
            history_source.join(
                steps,
                and_(steps.c.connection_id == history.c.connection_id, steps.c.stage == history.c.to_stage),
            )
        )
        .where(*history_where)
        .group_by(history.c.connection_id, history.c.opportunity_external_id, steps.c.pipeline)
        .subquery("history_furthest")
    )
    from_history = (
        select(deal_key.label("deal_id"), history_furthest.c.pipeline, history_furthest.c.sort_order)
        .select_from(
            history_furthest.join(
                opp,
                and_(
                    opp.c.connection_id == history_furthest.c.connection_id,
                    opp.c.external_id == history_furthest.c.opportunity_external_id,
                ),
            )
        )
        .where(
            *deal_where,
            history_furthest.c.pipeline == func.coalesce(opp.c.pipeline, history_furthest.c.pipeline),
        )
    )
    visited = union_all(current, from_history).subquery("visited")
    furthest = (
        select(visited.c.deal_id, visited.c.pipeline, func.max(visited.c.sort_order).label("max_order"))
        .group_by(visited.c.deal_id, visited.c.pipeline)
        .subquery("furthest")
    )
    keys = [
        period_expr(part.measure, calendar, "week", opp).label("week"),
        period_expr(part.measure, calendar, "month", opp).label("month"),
        opp.c.connection_id.label("connection_id"),
        opp.c.owner_external_id.label("owner"),
        furthest.c.pipeline.label("pipeline"),
        furthest.c.max_order.label("max_order"),
    ]
    return (
        select(*keys, func.count().label("total"))
        .select_from(opp.join(furthest, furthest.c.deal_id == deal_key))
        .where(*part.where)
        .group_by(*(key.element for key in keys))
    )


#: The ranked values of median and percentile KPIs (see :class:`KpiSample`).
SAMPLE: Table = KpiSample.__table__  # type: ignore[assignment]


def sample_query(part: Part, calendar: Calendar, kpi_id: str, dimension: str | None = None) -> Select[Any]:
    """Every record of ``part`` with its value, as :data:`SAMPLE` rows of ``kpi_id`` (to fill it).

    With ``part.changes``: only the new versions the pending batches wrote, or the old versions
    the stored values counted.
    """
    assert part.value is not None
    keys, source, where = _keyed(part, calendar, dimension)
    week, month, connection_id, owner, currency, dim = keys
    table = part.table
    return (
        select(
            literal(kpi_id, String).label("kpi_id"),
            literal(dimension or "", String).label("dimension"),
            connection_id,
            table.c.external_id.label("external_id"),
            week,
            month,
            owner.label("owner_external_id"),
            currency,
            dim.label("dimension_value"),
            part.value.label("value"),
        )
        .select_from(source)
        .where(*where)
    )


SAMPLE_COLUMNS = (
    "kpi_id",
    "dimension",
    "connection_id",
    "external_id",
    "week",
    "month",
    "owner_external_id",
    "currency",
    "dimension_value",
    "value",
)


def sample_period(grain: Grain, fiscal_start_month: int) -> ColumnElement[Any]:
    """SQL: the ``grain`` period index of a :data:`SAMPLE` row (-1 for ``all``)."""
    if grain == "all":
        return literal(-1, Integer)
    if grain == "week":
        week: ColumnElement[Any] = SAMPLE.c.week
        return week
    return periods.bucket(SAMPLE.c.month, grain, fiscal_start_month)


def _sample_cells(
    calendar: Calendar,
    kpi_id: str,
    dimension: str | None,
    grain: Grain,
    scope: Scope,
    only_periods: Sequence[int] | None = None,
) -> tuple[list[ColumnElement[Any]], Any, list[ColumnElement[bool]]]:
    """The cell keys ``(period, scope_id, currency, dim)`` of a KPI's samples at one grain and
    scope, the FROM clause and the WHERE conditions."""
    sample = SAMPLE
    period = sample_period(grain, calendar.fiscal_start_month)
    where: list[ColumnElement[bool]] = [sample.c.kpi_id == kpi_id, sample.c.dimension == (dimension or "")]
    if grain != "all" and only_periods is not None:
        # The months first: they are indexed. (No `month IS NOT NULL` beside them, which SQLite
        # would take as the range `month > NULL` of the index: every month of the KPI.)
        where += [sample.c.month.in_(_months_of(grain, only_periods)), period.in_(list(only_periods))]
    elif grain != "all":
        where.append(sample.c.month.is_not(None))  # no period date: counted in "all" only
    source: Any = sample
    if scope == "company":
        scope_id: ColumnElement[Any] = literal("company", String)
    elif scope == "owner":
        scope_id = sample.c.connection_id + ":" + sample.c.owner_external_id
        where.append(sample.c.owner_external_id.is_not(None))
    else:
        source = sample.join(
            MEMBERSHIP,
            and_(
                MEMBERSHIP.c.m_connection_id == sample.c.connection_id,
                MEMBERSHIP.c.m_owner_external_id == sample.c.owner_external_id,
            ),
        )
        scope_id = MEMBERSHIP.c.team_key
    keys: list[ColumnElement[Any]] = [
        period.label("period"),
        scope_id.label("scope_id"),
        sample.c.currency.label("currency"),
        sample.c.dimension_value.label("dim"),
    ]
    return keys, source, where


def _months_of(grain: Grain, indexes: Sequence[int]) -> list[int]:
    """The month indexes the periods with these indexes cover (a week may span two months)."""
    months: set[int] = set()
    for index in indexes:
        if grain == "week":
            start, end = periods.period_bounds(index, "week")
            for day in (start, end - timedelta(days=1)):
                months.add(day.year * 12 + day.month - 1)
        else:
            months.update(range(index, index + periods.STEP[grain]))
    return sorted(months)


def _ranks(stat: Literal["median", "p90"], n: ColumnElement[Any]) -> list[ColumnElement[Any]]:
    """The 1-based ranks a statistic of ``n`` values reads: the middle one or two for the median,
    the nearest rank ceil(0.9 n) for p90."""
    if stat == "median":
        return [(n + 1) // 2, (n + 2) // 2]
    return [(n * 9 + 9) // 10]


def percentile_query(
    calendar: Calendar,
    kpi_id: str,
    dimension: str | None,
    grain: Grain,
    scope: Scope,
    stat: Literal["median", "p90"],
    only_periods: Sequence[int] | None = None,
) -> Select[Any]:
    """``(period, scope_id, currency, dim, value, total, records)``: the median or nearest-rank
    p90 per group of a KPI's :data:`SAMPLE` rows, with the values' sum and count
    (``only_periods``: of these periods of ``grain`` only).

    PostgreSQL has ordered-set aggregates: ``percentile_cont(0.5)`` is the median (the mean of
    the middle two of an even count) and ``percentile_disc(0.9)`` the nearest-rank p90 (the
    ceil(0.9 n)-th value). SQLite has none: window functions rank each group's values and pick
    the same ones.
    """
    sample = SAMPLE
    keys, source, where = _sample_cells(calendar, kpi_id, dimension, grain, scope, only_periods)
    if calendar.dialect == "postgresql":
        ordered = func.percentile_cont(0.5) if stat == "median" else func.percentile_disc(0.9)
        statistic: ColumnElement[Any] = type_coerce(ordered.within_group(sample.c.value), Float)
        return (
            select(
                *keys,
                statistic.label("value"),
                exact_sum(sample.c.value).label("total"),
                func.count().label("records"),
            )
            .select_from(source)
            .where(*where)
            .group_by(*(key.element for key in keys))
        )
    values = select(*keys, sample.c.value.label("v")).select_from(source).where(*where).subquery("vals")
    partition = [values.c.period, values.c.scope_id, values.c.currency, values.c.dim]
    ranked = select(
        *partition,
        values.c.v,
        func.row_number().over(partition_by=partition, order_by=values.c.v).label("rn"),
        func.count().over(partition_by=partition).label("n"),
        func.sum(values.c.v).over(partition_by=partition).label("s"),
    ).subquery("ranked")
    rk = [ranked.c.period, ranked.c.scope_id, ranked.c.currency, ranked.c.dim]
    return (
        select(
            *rk,
            func.avg(ranked.c.v).label("value"),
            func.max(ranked.c.s).label("total"),
            func.max(ranked.c.n).label("records"),
        )
        .where(ranked.c.rn.in_(_ranks(stat, ranked.c.n)))
        .group_by(*rk)
    )


@dataclass(frozen=True, slots=True)
class SampleCell:
    """One value of a median or percentile KPI: the :data:`SAMPLE` rows it ranks are the KPI's
    in one breakdown, period (``None``: all time) and scope."""

    kpi_id: str
    dimension: str
    grain: Grain
    period: int | None
    scope: Scope
    scope_id: str
    currency: str
    dim_value: str


#: A query of one cell's samples with the cell in bound parameters (:func:`_cell_params`).
CellQuery = tuple[Select[Any], dict[str, Any]]


def cell_rank_state_query(cell: SampleCell, stat: Literal["median", "p90"]) -> CellQuery:
    """One cell's values at the ranks its statistic reads: rows ``(rn, v, below, equal, n,
    total)``, where ``below`` counts the cell's values less than ``v`` and ``equal`` those equal
    to it; reading only the cell's samples (a rep's first value ranks that rep alone)."""
    months = _cell_months(cell)
    return _rank_state_statement(_CellShape.of(cell, months), stat), _cell_params(cell, months)


def neighbour_query(cell: SampleCell, pivot: float, above: bool, limit: int) -> CellQuery:
    """The ``limit`` values of one cell nearest above (or below) ``pivot``, nearest first.

    A period's are read month by month, each an index seek from ``pivot`` on (kpi, breakdown,
    month, value), and merged: one scan of the values of all months would read every value
    past ``pivot`` of the months' other cells and sort them.
    """
    months = _cell_months(cell)
    params = {**_cell_params(cell, months), "pivot": pivot, "limit": limit}
    return _neighbour_statement(_CellShape.of(cell, months), above), params


def equal_count_query(cell: SampleCell, value: float) -> CellQuery:
    """How many values of one cell equal ``value``."""
    months = _cell_months(cell)
    return _equal_count_statement(_CellShape.of(cell, months)), {**_cell_params(cell, months), "value": value}


@dataclass(frozen=True, slots=True)
class _CellShape:
    """What a cell's query looks like, whatever the cell: its statements are built once per shape
    (an incremental refresh asks a few queries of each of hundreds of cells; building each anew
    cost more than running it)."""

    scope: Scope
    week: bool
    #: How many months the cell's period spans (``None``: all time).
    months: int | None

    @staticmethod
    def of(cell: SampleCell, months: Sequence[int]) -> _CellShape:
        period = cell.period is not None
        return _CellShape(cell.scope, period and cell.grain == "week", len(months) if period else None)

    def where(self, month_names: Sequence[str] | None = None) -> list[ColumnElement[bool]]:
        """SQL: a KPI's samples in one cell of this shape (``month_names``: of these of its month
        parameters only)."""
        sample = SAMPLE
        where: list[ColumnElement[bool]] = [
            sample.c.kpi_id == bindparam("kpi_id"),
            sample.c.dimension == bindparam("dimension"),
            sample.c.currency == bindparam("currency"),
            sample.c.dimension_value == bindparam("dim_value"),
        ]
        if self.months is not None:
            # The months first: with the value, they are indexed.
            names = month_names if month_names is not None else _month_names(self.months)
            where.append(sample.c.month.in_([bindparam(name) for name in names]))
            if self.week:
                where.append(sample.c.week == bindparam("week"))
        if self.scope == "owner":
            where += [
                sample.c.connection_id == bindparam("connection_id"),
                sample.c.owner_external_id == bindparam("owner"),
            ]
        elif self.scope == "team":
            member = (
                select(literal(1))
                .select_from(MEMBERSHIP)
                .where(
                    MEMBERSHIP.c.team_key == bindparam("team"),
                    MEMBERSHIP.c.m_connection_id == sample.c.connection_id,
                    MEMBERSHIP.c.m_owner_external_id == sample.c.owner_external_id,
                )
                .exists()
            )
            where.append(member)
        return where


def _month_names(count: int) -> list[str]:
    return [f"month_{n}" for n in range(count)]


def _cell_params(cell: SampleCell, months: Sequence[int]) -> dict[str, Any]:
    """The bound parameters of a cell's query (see :meth:`_CellShape.where`)."""
    params: dict[str, Any] = {
        "kpi_id": cell.kpi_id,
        "dimension": cell.dimension,
        "currency": cell.currency,
        "dim_value": cell.dim_value,
    }
    if cell.period is not None:
        params.update(zip(_month_names(len(months)), months, strict=True))
        if cell.grain == "week":
            params["week"] = cell.period
    if cell.scope == "owner":
        connection_id, _, owner = cell.scope_id.partition(":")
        params.update(connection_id=connection_id, owner=owner)
    elif cell.scope == "team":
        params["team"] = cell.scope_id
    return params


def _cell_months(cell: SampleCell) -> list[int]:
    """The month indexes a period cell's samples have (none for all time)."""
    return [] if cell.period is None else _months_of(cell.grain, [cell.period])


@cache
def _rank_state_statement(shape: _CellShape, stat: Literal["median", "p90"]) -> Select[Any]:
    values = select(SAMPLE.c.value.label("v")).where(*shape.where()).subquery("vals")
    ranked = select(
        values.c.v,
        func.row_number().over(order_by=values.c.v).label("rn"),
        (func.rank().over(order_by=values.c.v) - 1).label("below"),
        func.count().over(partition_by=values.c.v).label("equal"),
        func.count().over().label("n"),
        func.sum(values.c.v).over().label("total"),
    ).subquery("ranked")
    return select(ranked).where(ranked.c.rn.in_(_ranks(stat, ranked.c.n)))


@cache
def _neighbour_statement(shape: _CellShape, above: bool) -> Select[Any]:
    sample = SAMPLE
    limit = bindparam("limit", type_=Integer)

    def nearest(month_names: Sequence[str] | None) -> Select[Any]:
        beyond = sample.c.value > bindparam("pivot") if above else sample.c.value < bindparam("pivot")
        order = sample.c.value if above else sample.c.value.desc()
        return select(sample.c.value).where(*shape.where(month_names), beyond).order_by(order).limit(limit)

    if shape.months is None or shape.months == 1:
        return nearest(None)
    parts = [nearest([name]).subquery() for name in _month_names(shape.months)]
    merged = union_all(*(select(part.c.value) for part in parts)).subquery("nearest")
    order = merged.c.value if above else merged.c.value.desc()
    return select(merged.c.value).order_by(order).limit(limit)


@cache
def _equal_count_statement(shape: _CellShape) -> Select[Any]:
    equal = SAMPLE.c.value == bindparam("value")
    return select(func.count()).select_from(SAMPLE).where(*shape.where(), equal)
