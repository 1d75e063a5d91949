"""Explanations: how a KPI value was computed, down to the records it came from.

For one stored value (KPI, grain, period, scope, currency, breakdown) this returns the formula in
words, the filters of each side, the stored numerator, denominator and sample, and for each side
the contributing records (keyset-paginated by store id, with the CRM's own id and connection so a
link back into the CRM can be built). The records are selected with the same compiled predicates
as the aggregate, so their contributions add up to the stored numerator and denominator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Connection, and_, func, literal, or_, select, tuple_
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from crm_perf_sync.kit.errors import InvalidInput
from crm_perf_sync.kpi import periods
from crm_perf_sync.kpi import repository as repo
from crm_perf_sync.kpi.compiler import (
    TABLES,
    Calendar,
    Part,
    dimension_expr,
    part_for,
    period_expr,
)
from crm_perf_sync.kpi.compute import Computation
from crm_perf_sync.kpi.customers import explain_customers
from crm_perf_sync.kpi.formula import formula_inputs
from crm_perf_sync.kpi.measured import explain_entries
from crm_perf_sync.kpi.schemas import (
    REGION_DIMENSION,
    CountKpi,
    CustomerKpi,
    DerivedKpi,
    DurationKpi,
    Filter,
    FunnelKpi,
    Grain,
    Kpi,
    Measure,
    MeasureKpi,
    RatioKpi,
    SumKpi,
)
from crm_perf_sync.org.schemas import Membership

MAX_PAGE = 500

_RECORD_FIELDS = {
    "opportunities": (
        "name",
        "stage",
        "amount",
        "currency",
        "probability",
        "is_closed",
        "is_won",
        "created_at",
        "closed_at",
        "close_date",
    ),
    "leads": ("name", "company", "source", "status", "is_converted", "created_at", "converted_at"),
    "activities": (
        "type",
        "subtype",
        "subject",
        "occurred_at",
        "duration_seconds",
        "outcome",
        "is_completed",
        "account_external_id",
        "opportunity_external_id",
        "lead_external_id",
    ),
    "accounts": ("name", "industry", "segment", "parent_external_id", "created_at"),
}


@dataclass(frozen=True, slots=True)
class ValueRef:
    """Which stored value to explain."""

    kpi_id: str
    grain: Grain
    period_key: str
    scope: str
    scope_id: str
    currency: str = ""
    dimension: str = ""
    dimension_value: str = ""


@dataclass(slots=True)
class PartExplanation:
    role: str  # numerator, denominator, measure
    entity: str
    period_field: str
    filters: list[str]
    contributes: str
    records: list[dict[str, Any]] = field(default_factory=list)
    next_after: int | None = None


@dataclass(slots=True)
class Explanation:
    kpi_id: str
    name: str
    type: str
    unit: str
    direction: str
    formula: str
    value: dict[str, Any] | None
    parts: list[PartExplanation]
    inputs: list[dict[str, Any]] = field(default_factory=list)


def describe_filter(item: Filter) -> str:
    words = {
        "eq": "=",
        "ne": "≠",
        "in": "in",
        "not_in": "not in",
        "gt": ">",
        "gte": "≥",
        "lt": "<",
        "lte": "≤",
    }
    if item.op == "is_null":
        return f"{item.field} is empty"
    if item.op == "not_null":
        return f"{item.field} is set"
    return f"{item.field} {words[item.op]} {item.value!r}"


def measure_filters(measure: Measure) -> list[str]:
    return ["not deleted", *(describe_filter(f) for f in measure.filter)]


def formula_text(kpi: Kpi) -> str:
    """The computation in words, as a rep or an analyst would check it."""
    if isinstance(kpi, CountKpi):
        return f"number of {kpi.measure.entity} matching the filters, placed by {kpi.measure.period}"
    if isinstance(kpi, SumKpi):
        term = kpi.measure.sum if kpi.measure.weight is None else f"{kpi.measure.sum} * {kpi.measure.weight}"
        return f"sum of {term} over {kpi.measure.entity} matching the filters, per currency"
    if isinstance(kpi, RatioKpi):
        scale = f" * {kpi.scale:g}" if kpi.scale != 1 else ""
        return (
            "sum over the numerator's records / sum over the denominator's records"
            f"{scale} (a ratio of sums over the period and scope)"
        )
    if isinstance(kpi, DurationKpi):
        stat = {"mean": "mean", "median": "median", "p90": "90th percentile (nearest rank)"}[kpi.stat]
        return f"{stat} of days from {kpi.start} to {kpi.end} over the matching records"
    if isinstance(kpi, FunnelKpi):
        return (
            "deals that reached a stage / deals that reached the stage before it; a deal reached every "
            "open or won stage up to the furthest one it was ever in"
        )
    if isinstance(kpi, MeasureKpi):
        stat = {"mean": "mean", "sum": "sum", "last": "the latest period's value (mean if several)"}[kpi.stat]
        return (
            f"{stat} of the {kpi.measure_id} entries inside the period (same or finer grain) for the "
            "scope: a rep's own, a team's own and its reps', everyone's for the company"
        )
    if isinstance(kpi, CustomerKpi):
        return {
            "new": "accounts whose first won deal (the earliest by "
            f"{kpi.measure.period}; ties all count) falls in the period",
            "repeat_revenue_share": "won revenue of deals whose account won a deal strictly earlier / "
            "won revenue of all won deals with an account, per currency",
            "retention": "accounts with a won deal in the previous period that won one again in this "
            "period / accounts with a won deal in the previous period",
        }[kpi.stat]
    return f"{kpi.formula} (each input for the same period, scope and currency)"


def _period_index(grain: Grain, period_key: str, fiscal_start_month: int) -> int:
    return periods.local_period_index(date.fromisoformat(period_key), "UTC", grain, fiscal_start_month)


def check_ref(ref: ValueRef, fiscal_start_month: int, role: str | None = None) -> None:
    """Raise :class:`InvalidInput` naming what is wrong with a value reference."""
    if ref.grain == "all":
        if ref.period_key != "all":
            raise InvalidInput(f"the all-time grain has one period, 'all' (got {ref.period_key!r})")
    else:
        try:
            start = date.fromisoformat(ref.period_key)
        except ValueError:
            raise InvalidInput(
                f"period {ref.period_key!r} is not a date: give the first day of the {ref.grain}, "
                "e.g. 2024-01-01"
            ) from None
        first, _ = periods.period_bounds(
            _period_index(ref.grain, ref.period_key, fiscal_start_month), ref.grain
        )
        if first != start:
            raise InvalidInput(
                f"{start} does not start a {ref.grain}: the {ref.grain} containing it starts {first}"
            )
    if (ref.scope == "company") != (ref.scope_id == "company"):
        raise InvalidInput("the scope id is 'company' exactly for the company scope")
    if role is not None and role not in ("numerator", "denominator", "measure"):
        raise InvalidInput(f"part must be numerator, denominator or measure, got {role!r}")


def _scope_condition(part: Part, ref: ValueRef, membership: Membership) -> ColumnElement[bool] | None:
    table = TABLES[part.measure.entity]
    if ref.scope == "company":
        return None
    if ref.scope == "owner":
        connection_id, _, owner_id = ref.scope_id.partition(":")
        return and_(table.c.connection_id == connection_id, table.c.owner_external_id == owner_id)
    reps = [(c, o) for team, c, o in membership.rows if team == ref.scope_id]
    if not reps:
        return literal(False)
    return tuple_(table.c.connection_id, table.c.owner_external_id).in_(reps)


def _dimension_condition(part: Part, ref: ValueRef, membership: Membership) -> ColumnElement[bool] | None:
    if not ref.dimension:
        return None
    table = TABLES[part.measure.entity]
    rep = tuple_(table.c.connection_id, table.c.owner_external_id)
    if ref.dimension == REGION_DIMENSION:
        reps = [(c, o) for region, c, o in membership.regions if region == ref.dimension_value]
        if ref.dimension_value == "":
            # No region: reps outside every region, and records without an owner.
            everyone = [(c, o) for _, c, o in membership.regions]
            return or_(table.c.owner_external_id.is_(None), rep.not_in(everyone)) if everyone else None
        return rep.in_(reps) if reps else literal(False)
    expr = dimension_expr(part.measure.entity, ref.dimension)
    return expr == ref.dimension_value


def record_conditions(
    part: Part, ref: ValueRef, calendar: Calendar, membership: Membership
) -> list[ColumnElement[bool]]:
    """The WHERE conditions selecting the records behind one side of a value."""
    measure = part.measure
    table = TABLES[measure.entity]
    where = list(part.where)
    if ref.grain != "all":
        where.append(table.c[measure.period].is_not(None))
        index = _period_index(ref.grain, ref.period_key, calendar.fiscal_start_month)
        where.append(period_expr(measure, calendar, ref.grain) == index)
    scope = _scope_condition(part, ref, membership)
    if scope is not None:
        where.append(scope)
    if part.by_currency and "currency" in table.c:
        where.append(func.coalesce(table.c.currency, "") == ref.currency)
    if ref.dimension:
        condition = _dimension_condition(part, ref, membership)
        if condition is not None:
            where.append(condition)
    return where


def records_query(
    part: Part,
    ref: ValueRef,
    calendar: Calendar,
    membership: Membership,
    *,
    after: int | None,
    limit: int,
) -> Any:
    """The records behind one side of a value, in store id order."""
    measure = part.measure
    table = TABLES[measure.entity]
    where = record_conditions(part, ref, calendar, membership)
    if after is not None:
        where.append(table.c.id > after)
    contribution: ColumnElement[Any] = literal(1) if part.value is None else part.value
    columns = [
        table.c.id,
        table.c.connection_id,
        table.c.external_id,
        table.c.owner_external_id,
        *(table.c[name] for name in dict.fromkeys([*_RECORD_FIELDS[measure.entity], measure.period])),
        contribution.label("contribution"),
    ]
    return select(*columns).where(*where).order_by(table.c.id).limit(limit)


def explain(
    conn: Connection | Session,
    kpi: Kpi,
    ref: ValueRef,
    calendar: Calendar,
    membership: Membership,
    *,
    role: str | None = None,
    after: int | None = None,
    limit: int = 50,
) -> Explanation:
    """Explain one stored value; ``role`` limits the records to one side (numerator, ...)."""
    check_ref(ref, calendar.fiscal_start_month, role)
    limit = max(1, min(limit, MAX_PAGE))
    stored = repo.stored_value(
        conn,
        ref.kpi_id,
        ref.grain,
        ref.period_key,
        ref.scope,
        ref.scope_id,
        ref.currency,
        ref.dimension,
        ref.dimension_value,
    )
    value = None
    if stored is not None:
        value = {
            k: stored._mapping[k]
            for k in (
                "value",
                "numerator",
                "denominator",
                "sample_count",
                "low_sample",
                "target",
                "attainment",
                "gap",
                "definition_hash",
                "computed_at",
                "period_start",
                "period_end",
            )
        }
    result = Explanation(kpi.id, kpi.name, kpi.type, kpi.unit, kpi.direction, formula_text(kpi), value, [])
    if isinstance(kpi, DerivedKpi):
        result.inputs = derived_inputs(conn, kpi, ref)
        return result
    if isinstance(kpi, CustomerKpi):
        result.parts = _customer_parts(conn, kpi, ref, calendar, membership, role, after, limit)
        return result
    if isinstance(kpi, MeasureKpi):
        connection = conn.connection() if isinstance(conn, Session) else conn
        run = Computation(connection, calendar, membership, [ref.grain], {})
        period = (
            None
            if ref.grain == "all"
            else _period_index(ref.grain, ref.period_key, calendar.fiscal_start_month)
        )
        rows = explain_entries(connection, kpi, ref.grain, period, ref.scope, ref.scope_id, run)
        start = after or 0
        explained = PartExplanation(
            "measure", "measures", "period_start", [f"measure = {kpi.measure_id!r}"], "value"
        )
        explained.records = [{"id": n, **row} for n, row in enumerate(rows[start : start + limit], start + 1)]
        if start + limit < len(rows):
            explained.next_after = start + limit
        result.parts = [explained]
        return result
    sides: list[tuple[str, Measure, Part, str]] = []
    if isinstance(kpi, RatioKpi):
        by_currency = kpi.numerator.is_money
        for side, measure in (("numerator", kpi.numerator), ("denominator", kpi.denominator)):
            part = part_for(measure, calendar, by_currency=by_currency)
            sides.append((side, measure, part, measure.sum or "1 per record"))
    elif isinstance(kpi, DurationKpi):
        part = part_for(kpi.measure, calendar, by_currency=False, kpi=kpi)
        sides.append(("measure", kpi.measure, part, f"days from {kpi.start} to {kpi.end}"))
    elif isinstance(kpi, CountKpi | FunnelKpi):
        part = part_for(kpi.measure, calendar, by_currency=False)
        sides.append(("measure", kpi.measure, part, "1 per record"))
    else:
        part = part_for(kpi.measure, calendar, by_currency=kpi.measure.is_money)
        term = kpi.measure.sum if kpi.measure.weight is None else f"{kpi.measure.sum} * {kpi.measure.weight}"
        sides.append(("measure", kpi.measure, part, str(term)))
    for side, measure, part, contributes in sides:
        explained = PartExplanation(
            side, measure.entity, measure.period, measure_filters(measure), contributes
        )
        if isinstance(kpi, FunnelKpi):
            explained.filters.append("the deal's stage is in a pipeline's stage order (stage funnel)")
        if role is None or role == side:
            ref_for_records = ref
            if isinstance(kpi, FunnelKpi) and ref.dimension == "stage":
                # A stage row's records: every deal of the period and scope in the funnel.
                ref_for_records = ValueRef(
                    ref.kpi_id, ref.grain, ref.period_key, ref.scope, ref.scope_id, ref.currency
                )
            stmt = records_query(part, ref_for_records, calendar, membership, after=after, limit=limit + 1)
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
            if len(rows) > limit:
                rows = rows[:limit]
                explained.next_after = int(rows[-1]["id"])
            for row in rows:
                if row.get("amount") is not None:
                    row["amount"] = float(row["amount"])
            explained.records = rows
        result.parts.append(explained)
    return result


def _customer_parts(
    conn: Connection | Session,
    kpi: CustomerKpi,
    ref: ValueRef,
    calendar: Calendar,
    membership: Membership,
    role: str | None,
    after: int | None,
    limit: int,
) -> list[PartExplanation]:
    """The accounts or deals behind a customer KPI's value; ``after`` pages by position."""
    connection = conn.connection() if isinstance(conn, Session) else conn
    run = Computation(connection, calendar, membership, [ref.grain], {})
    period = (
        None if ref.grain == "all" else _period_index(ref.grain, ref.period_key, calendar.fiscal_start_month)
    )
    parts = []
    start = after or 0
    for side in explain_customers(run, kpi, ref.grain, period, ref.scope, ref.scope_id, ref.currency):
        explained = PartExplanation(
            side.role, side.entity, kpi.measure.period, measure_filters(kpi.measure), side.contributes
        )
        explained.filters.append("account_external_id is set")
        if role is None or role == side.role:
            rows = side.records[start : start + limit]
            for position, row in enumerate(rows, start + 1):
                row["id"] = position
            explained.records = rows
            if start + limit < len(side.records):
                explained.next_after = start + limit
        parts.append(explained)
    return parts


def derived_inputs(conn: Connection | Session, kpi: DerivedKpi, ref: ValueRef) -> list[dict[str, Any]]:
    """The stored values (and targets) a derived value was computed from, each explainable itself."""
    values, targets = formula_inputs(kpi.formula)
    out: list[dict[str, Any]] = []
    for name in sorted(values | targets):
        rows = repo.total_in_currency(
            conn, name, ref.grain, ref.period_key, ref.scope, ref.scope_id, ref.currency
        )
        found = sorted(rows, key=lambda row: row["currency"] != ref.currency)  # its own currency first
        row = found[0] if found else None
        out.append(
            {
                "kpi_id": name,
                "used_as": sorted(
                    ([name] if name in values else []) + ([f"target.{name}"] if name in targets else [])
                ),
                "currency": None if row is None else row["currency"],
                "value": None if row is None else row["value"],
                "target": None if row is None else row["target"],
                "sample_count": None if row is None else row["sample_count"],
            }
        )
    return out
