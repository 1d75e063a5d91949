"""Customer KPIs: new customers, repeat revenue share and retention (see :class:`CustomerKpi`).

They read one thing, the won deals that name an account, each with its account's first won date
(a window over the account's deals, in the database). The database reduces them to what each
statistic needs: the distinct (week, month, rep, account) of the first deals (new customers) or
of all of them (retention), or sums per (week, month, rep, currency) (repeat revenue, which then
rolls up like any ratio). Explanations read the deals themselves (:func:`won_deals`).

Every value adds up over accounts: an account is one of a cell's new customers or not, is kept
or not, and its deals' revenue is repeat revenue or not, whatever the other accounts do. So an
incremental refresh (:func:`apply_customer_changes`) reads only the accounts whose deals the
change log touched, in their state before and after, and adds the difference to the stored
cells. Which deal is an account's first depends on all of that account's deals, which is why the
whole account is read again and not only its changed deals.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, Float, Select, and_, case, func, literal, select, type_coerce
from sqlalchemy.sql.elements import ColumnElement

from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.kpi import periods
from crm_perf_sync.kpi import repository as repo
from crm_perf_sync.kpi.compiler import PENDING, Calendar, Part, Scope, part_for, period_expr
from crm_perf_sync.kpi.compute import Computation
from crm_perf_sync.kpi.repository import CHANGED
from crm_perf_sync.kpi.rollup import Key, Rollup
from crm_perf_sync.kpi.schemas import FIELDS, CustomerKpi, Grain
from crm_perf_sync.kpi.values import Computed, apply_targets, period_key, value_row
from crm_perf_sync.models import PRIOR_TABLES

Account = tuple[str, str]  # (connection id, account external id)


@dataclass(frozen=True, slots=True)
class WonDeal:
    external_id: str
    week: int | None
    month: int | None
    connection_id: str
    owner: str | None
    account: str
    currency: str
    amount: float | None
    ordered_by: Any  # the measure's period value: a date or a timestamp


def won_deals_query(part: Part, calendar: Calendar) -> Select[Any]:
    """One row per won deal with an account and a period date (see :class:`WonDeal`)."""
    table = part.table
    period: ColumnElement[Any] = table.c[part.measure.period]
    return select(
        table.c.external_id,
        period_expr(part.measure, calendar, "week", table).label("week"),
        period_expr(part.measure, calendar, "month", table).label("month"),
        table.c.connection_id,
        table.c.owner_external_id.label("owner"),
        table.c.account_external_id.label("account"),
        func.coalesce(table.c.currency, literal("")).label("currency"),
        table.c.amount,
        period.label("ordered_by"),
    ).where(and_(*part.where, table.c.account_external_id.is_not(None), period.is_not(None)))


def won_deals(conn: Connection, kpi: CustomerKpi, calendar: Calendar) -> list[WonDeal]:
    part = part_for(kpi.measure, calendar, by_currency=True)
    return [
        WonDeal(
            r.external_id,
            r.week,
            r.month,
            r.connection_id,
            r.owner,
            r.account,
            r.currency,
            None if r.amount is None else float(r.amount),
            r.ordered_by,
        )
        for r in conn.execute(won_deals_query(part, calendar))
    ]


def first_won(deals: Iterable[WonDeal]) -> dict[Account, Any]:
    """Each account's earliest won-deal date."""
    first: dict[Account, Any] = {}
    for deal in deals:
        key = (deal.connection_id, deal.account)
        if key not in first or deal.ordered_by < first[key]:
            first[key] = deal.ordered_by
    return first


def _scopes(rollup: Rollup, deal: WonDeal) -> list[tuple[Scope, str]]:
    """The scopes a deal counts in: the company, its rep, and every team the rep counts in."""
    found: list[tuple[Scope, str]] = [("company", "company")]
    if deal.owner is not None:
        found.append(("owner", f"{deal.connection_id}:{deal.owner}"))
        found += [("team", team) for team in rollup.teams_of(deal.connection_id, deal.owner)]
    return found


def _period(rollup: Rollup, grain: Grain, deal: WonDeal) -> int | None:
    return None if grain == "all" else rollup.period(grain, deal.week, deal.month)


def _with_first(part: Part, calendar: Calendar) -> Any:
    """The won deals with an account and a period date, each with its account's first date."""
    table = part.table
    period: ColumnElement[Any] = table.c[part.measure.period]
    first = func.min(period).over(partition_by=[table.c.connection_id, table.c.account_external_id])
    return (
        select(
            period_expr(part.measure, calendar, "week", table).label("week"),
            period_expr(part.measure, calendar, "month", table).label("month"),
            table.c.connection_id,
            table.c.owner_external_id.label("owner"),
            table.c.account_external_id.label("account"),
            func.coalesce(table.c.currency, literal("")).label("currency"),
            table.c.amount,
            period.label("ordered_by"),
            first.label("first_date"),
        )
        .where(and_(*part.where, table.c.account_external_id.is_not(None), period.is_not(None)))
        .subquery("won_deals")
    )


def _accounts(conn: Connection, won: Any, *, first_only: bool) -> list[WonDeal]:
    """The distinct (week, month, rep, account) of the won deals (or of the first ones only)."""
    stmt = select(won.c.week, won.c.month, won.c.connection_id, won.c.owner, won.c.account).distinct()
    if first_only:
        stmt = stmt.where(won.c.ordered_by == won.c.first_date)
    return [
        WonDeal("", r.week, r.month, r.connection_id, r.owner, r.account, "", None, None)
        for r in conn.execute(stmt)
    ]


def customer_values(run: Computation, kpi: CustomerKpi) -> dict[tuple[Grain, Scope], dict[Key, Computed]]:
    """Every value of a customer KPI, per grain and scope (no breakdowns)."""
    rollup = run.rollup()
    won = _with_first(part_for(kpi.measure, run.calendar, by_currency=True), run.calendar)
    out = _cells(run)
    if kpi.stat == "new":
        _new(rollup, run.grains, _accounts(run.conn, won, first_only=True), out)
    elif kpi.stat == "repeat_revenue_share":
        _repeat_share(run.conn, rollup, won, out)
    else:
        _retention(rollup, run.grains, _accounts(run.conn, won, first_only=False), out)
    return {cell: values for cell, values in out.items() if values}


def _cells(run: Computation) -> dict[tuple[Grain, Scope], dict[Key, Computed]]:
    scopes: tuple[Scope, ...] = ("company", "owner", "team") if run.membership.rows else ("company", "owner")
    return {(grain, scope): {} for grain in run.grains for scope in scopes}


def _new(
    rollup: Rollup,
    grains: list[Grain],
    firsts: list[WonDeal],
    out: dict[tuple[Grain, Scope], dict[Key, Computed]],
) -> None:
    """``firsts``: the accounts' first won deals (an account's are all in one period of any grain)."""
    counted: dict[tuple[Grain, Scope, int | None, str], set[Account]] = {}
    for deal in firsts:
        account = (deal.connection_id, deal.account)
        for grain in grains:
            if grain != "all" and deal.month is None:
                continue
            period = _period(rollup, grain, deal)
            for scope, scope_id in _scopes(rollup, deal):
                counted.setdefault((grain, scope, period, scope_id), set()).add(account)
    for (grain, scope, period, scope_id), accounts in counted.items():
        if (grain, scope) in out:
            size = len(accounts)
            out[grain, scope][period, scope_id, "", ""] = (float(size), float(size), None, size)


def _repeat_share(
    conn: Connection, rollup: Rollup, won: Any, out: dict[tuple[Grain, Scope], dict[Key, Computed]]
) -> None:
    """A ratio of sums per (week, month, rep, currency), rolled up like any ratio."""
    keys = [won.c.week, won.c.month, won.c.connection_id, won.c.owner, won.c.currency]
    amount: ColumnElement[Any] = type_coerce(won.c.amount, Float)
    repeat = case((won.c.ordered_by > won.c.first_date, amount), else_=literal(0.0))
    stmt = (
        select(
            *keys, func.sum(repeat).label("repeat"), func.sum(amount).label("total"), func.count().label("n")
        )
        .where(won.c.amount.is_not(None))
        .group_by(*keys)
    )
    _share(rollup, [tuple(r) for r in conn.execute(stmt)], out)


#: (week, month, connection, owner, currency, repeat revenue, all revenue, deals)
RevenueRow = tuple[int | None, int | None, str, str | None, str, float, float, int]


def _share(
    rollup: Rollup, rows: list[RevenueRow], out: dict[tuple[Grain, Scope], dict[Key, Computed]]
) -> None:
    numerator = rollup((w, m, c, o, currency, "", repeat, n) for w, m, c, o, currency, repeat, _, n in rows)
    denominator = rollup((w, m, c, o, currency, "", total, n) for w, m, c, o, currency, _, total, n in rows)
    for cell, totals in denominator.items():
        if cell not in out:
            continue
        repeated = numerator.get(cell, {})
        for key, total in totals.items():
            part = repeated[key].total if key in repeated else 0.0
            value = part / total.total if total.total else None
            out[cell][key] = (value, part, total.total, total.records)


def _revenue_rows(deals: list[WonDeal]) -> list[RevenueRow]:
    """What :func:`_repeat_share` reads from the database, from deals in memory."""
    first = first_won(deals)
    sums: dict[tuple[int | None, int | None, str, str | None, str], tuple[float, float, int]] = {}
    for deal in deals:
        if deal.amount is None:
            continue
        key = (deal.week, deal.month, deal.connection_id, deal.owner, deal.currency)
        repeat, total, count = sums.get(key, (0.0, 0.0, 0))
        again = deal.ordered_by > first[(deal.connection_id, deal.account)]
        sums[key] = (repeat + (deal.amount if again else 0.0), total + deal.amount, count + 1)
    return [(*key, repeat, total, count) for key, (repeat, total, count) in sums.items()]


def _retention(
    rollup: Rollup,
    grains: list[Grain],
    deals: list[WonDeal],
    out: dict[tuple[Grain, Scope], dict[Key, Computed]],
    cutoff: dict[Grain, int] | None = None,
) -> None:
    """``cutoff``: the last period with a value per grain (by default the last with a won deal)."""
    for grain in grains:
        if grain == "all":
            continue  # there is no period before all time
        buying: dict[tuple[Scope, str, int], set[Account]] = {}
        last: int | None = None if cutoff is None else cutoff.get(grain)
        for deal in deals:
            period = _period(rollup, grain, deal)
            if period is None:
                continue
            if cutoff is None:
                last = period if last is None else max(last, period)
            for scope, scope_id in _scopes(rollup, deal):
                buying.setdefault((scope, scope_id, period), set()).add((deal.connection_id, deal.account))
        if last is None:
            continue
        for (scope, scope_id, before), accounts in buying.items():
            period = before + periods.STEP[grain]
            if period > last or (grain, scope) not in out:
                continue
            kept = len(accounts & buying.get((scope, scope_id, period), set()))
            out[grain, scope][period, scope_id, "", ""] = (
                kept / len(accounts),
                float(kept),
                float(len(accounts)),
                len(accounts),
            )


# --- incremental refresh ------------------------------------------------------------------------

#: A value's parts: (numerator, denominator, records); the denominator is 0 for new customers.
Parts = tuple[float, float, int]


def apply_customer_changes(
    run: Computation, kpi: CustomerKpi, digest: str, touched: set[tuple[str, str]]
) -> int | None:
    """Update a customer KPI's stored values by the change log (after ``load_pending``).

    Returns how many values changed, or ``None`` when the KPI must be recomputed whole (retention
    when there were no won deals before or none are left, so there is no last period to keep).
    ``touched`` collects the (grain, period key) of every value changed.
    """
    touched_accounts = _touched_accounts(run, kpi)
    if touched_accounts is None:
        return 0
    part, old_versions, before, after = touched_accounts
    rollup = run.rollup()
    fresh: dict[tuple[Grain, Scope], dict[Key, Computed]] = {}
    gone: set[tuple[Grain, int]] = set()
    cutoff: dict[Grain, int] | None = None
    if kpi.stat == "retention":
        lasts = _last_periods(run, part, kpi.measure.entity, old_versions)
        if lasts is None:
            return None
        cutoff = {grain: min(old, new) for grain, (old, new) in lasts.items()}
        fresh, gone = _moved_last(run, part, lasts)
    old_cells = _contributions(run, kpi, rollup, before, cutoff)
    new_cells = _contributions(run, kpi, rollup, after, cutoff)
    deltas: dict[tuple[Grain, Scope, Key], Parts] = {}
    for cells, sign in ((new_cells, 1), (old_cells, -1)):
        for (grain, scope), values in cells.items():
            for key, (_, numerator, denominator, records) in values.items():
                num, den, count = deltas.get((grain, scope, key), (0.0, 0.0, 0))
                deltas[grain, scope, key] = (
                    num + sign * numerator,
                    den + sign * (denominator or 0.0),
                    count + sign * records,
                )
    deltas = {cell: parts for cell, parts in deltas.items() if parts != (0.0, 0.0, 0)}
    return _write(run, kpi, digest, deltas, fresh, gone, touched)


def _touched_accounts(
    run: Computation, kpi: CustomerKpi
) -> tuple[Part, list[WonDeal], list[WonDeal], list[WonDeal]] | None:
    """The won deals of every account the change log touched, before the change and after it
    (read once per refresh for all customer KPIs on the same deals), with the counted old
    versions of the changed deals; ``None`` when no account was touched."""
    key = ("customer accounts", kpi.measure.model_dump_json())
    if key in run.shared:
        found: tuple[Part, list[WonDeal], list[WonDeal], list[WonDeal]] | None = run.shared[key]
        return found
    conn, calendar = run.conn, run.calendar
    entity = kpi.measure.entity
    part = part_for(kpi.measure, calendar, by_currency=True)
    prior = part_for(kpi.measure, calendar, by_currency=True, table=PRIOR_TABLES[entity])
    old_versions = _read(conn, _counted(won_deals_query(prior, calendar), prior, entity))
    new_versions = _read(conn, _changed_only(won_deals_query(part, calendar), part, entity))
    accounts = {(d.connection_id, d.account) for d in (*old_versions, *new_versions)}
    found = None
    if accounts:
        after = _deals_of(conn, part, calendar, accounts)
        changed = _changed_ids(conn, entity)
        before = [d for d in after if (d.connection_id, d.external_id) not in changed] + old_versions
        found = (part, old_versions, sorted(before, key=_order), sorted(after, key=_order))
    run.shared[key] = found
    return found


def _order(deal: WonDeal) -> tuple[str, str]:
    # Both states in one order: an account's unchanged deals sum to exactly the same floats.
    return deal.connection_id, deal.external_id


def _read(conn: Connection, stmt: Select[Any]) -> list[WonDeal]:
    return [
        WonDeal(
            r.external_id,
            r.week,
            r.month,
            r.connection_id,
            r.owner,
            r.account,
            r.currency,
            None if r.amount is None else float(r.amount),
            r.ordered_by,
        )
        for r in conn.execute(stmt)
    ]


def _changed_only(stmt: Select[Any], part: Part, entity: str) -> Select[Any]:
    """The current versions of the records the change log touched."""
    table = part.table
    on = and_(
        CHANGED.c.c_entity == entity,
        CHANGED.c.c_connection_id == table.c.connection_id,
        CHANGED.c.c_external_id == table.c.external_id,
    )
    return stmt.select_from(table.join(CHANGED, on))


def _counted(stmt: Select[Any], prior: Part, entity: str) -> Select[Any]:
    """The old versions the stored values counted: a prior version stamped by a pending batch was
    written after they were computed (and replaced again since)."""
    table = prior.table
    on = and_(
        PENDING.c.p_entity == entity,
        PENDING.c.p_connection_id == table.c.connection_id,
        PENDING.c.p_synced_at == table.c.synced_at,
    )
    return stmt.select_from(table.outerjoin(PENDING, on)).where(PENDING.c.p_connection_id.is_(None))


def _changed_ids(conn: Connection, entity: str) -> set[tuple[str, str]]:
    rows = conn.execute(
        select(CHANGED.c.c_connection_id, CHANGED.c.c_external_id).where(CHANGED.c.c_entity == entity)
    )
    return {(r[0], r[1]) for r in rows}


def _deals_of(conn: Connection, part: Part, calendar: Calendar, accounts: set[Account]) -> list[WonDeal]:
    """The current won deals of these accounts (by the index on connection and account)."""
    table = part.table
    by_connection: dict[str, list[str]] = {}
    for connection_id, account in sorted(accounts):
        by_connection.setdefault(connection_id, []).append(account)
    found: list[WonDeal] = []
    for connection_id, names in by_connection.items():
        for start in range(0, len(names), 500):
            stmt = won_deals_query(part, calendar).where(
                table.c.connection_id == connection_id,
                table.c.account_external_id.in_(names[start : start + 500]),
            )
            found += _read(conn, stmt)
    return found


def _contributions(
    run: Computation, kpi: CustomerKpi, rollup: Rollup, deals: list[WonDeal], cutoff: dict[Grain, int] | None
) -> dict[tuple[Grain, Scope], dict[Key, Computed]]:
    """The values these deals' accounts alone would have: their share of every stored value."""
    out = _cells(run)
    if kpi.stat == "new":
        first = first_won(deals)
        firsts = [d for d in deals if d.ordered_by == first[(d.connection_id, d.account)]]
        _new(rollup, run.grains, firsts, out)
    elif kpi.stat == "repeat_revenue_share":
        _share(rollup, _revenue_rows(deals), out)
    else:
        _retention(rollup, run.grains, deals, out, cutoff)
    return out


def _last_periods(
    run: Computation, part: Part, entity: str, old_versions: list[WonDeal]
) -> dict[Grain, tuple[int, int]] | None:
    """Per grain, the last period with a won deal before the change and after it."""
    table = part.table
    period: ColumnElement[Any] = table.c[part.measure.period]
    on = and_(
        CHANGED.c.c_entity == entity,
        CHANGED.c.c_connection_id == table.c.connection_id,
        CHANGED.c.c_external_id == table.c.external_id,
    )
    unchanged_period = type_coerce(case((CHANGED.c.c_external_id.is_(None), period)), period.type)
    # One pass: the last date now, and the last among the deals the change log did not touch.
    after, unchanged = run.conn.execute(
        select(func.max(period), func.max(unchanged_period))
        .select_from(table.outerjoin(CHANGED, on))
        .where(*part.where, table.c.account_external_id.is_not(None))
    ).one()
    candidates = [d.ordered_by for d in old_versions]
    if unchanged is not None:
        candidates.append(unchanged)
    if after is None or not candidates:
        return None
    before = max(candidates)
    calendar = run.calendar
    return {
        grain: (
            periods.local_period_index(before, calendar.timezone, grain, calendar.fiscal_start_month),
            periods.local_period_index(after, calendar.timezone, grain, calendar.fiscal_start_month),
        )
        for grain in run.grains
        if grain != "all"
    }


def _moved_last(
    run: Computation, part: Part, lasts: dict[Grain, tuple[int, int]]
) -> tuple[dict[tuple[Grain, Scope], dict[Key, Computed]], set[tuple[Grain, int]]]:
    """Retention values that appear or go because the last period moved: computed whole (from the
    deals of the periods around them) or removed."""
    fresh: dict[tuple[Grain, Scope], dict[Key, Computed]] = {}
    gone: set[tuple[Grain, int]] = set()
    for grain, (old, new) in lasts.items():
        step = periods.STEP[grain]
        gone |= {(grain, period) for period in range(new + step, old + step, step)}
        if new <= old:
            continue
        rollup = run.rollup()
        since = _since(run, part, periods.period_bounds(old, grain)[0])
        deals = [d for d in since if (_period(rollup, grain, d) or old - 1) >= old]
        cells: dict[tuple[Grain, Scope], dict[Key, Computed]] = {
            cell: {} for cell in _cells(run) if cell[0] == grain
        }
        _retention(rollup, [grain], deals, cells, {grain: new})
        for cell, values in cells.items():
            fresh[cell] = {key: value for key, value in values.items() if key[0] is not None and key[0] > old}
    return fresh, gone


def _since(run: Computation, part: Part, start: date) -> list[WonDeal]:
    """The won deals from ``start`` (a day early: a timestamp's local date may be a day later)."""
    table = part.table
    period: ColumnElement[Any] = table.c[part.measure.period]
    bound: date | datetime = start - timedelta(days=1)
    if FIELDS[part.measure.entity][part.measure.period] != "date":
        bound = datetime.combine(bound, time(), tzinfo=UTC)
    return _read(run.conn, won_deals_query(part, run.calendar).where(period >= bound))


def _write(
    run: Computation,
    kpi: CustomerKpi,
    digest: str,
    deltas: dict[tuple[Grain, Scope, Key], Parts],
    fresh: dict[tuple[Grain, Scope], dict[Key, Computed]],
    gone: set[tuple[Grain, int]],
    touched: set[tuple[str, str]],
) -> int:
    """Stored values plus ``deltas``, ``fresh`` values in place of any stored, ``gone`` periods
    removed; in one delete and one insert."""
    keys = {period_key(key[0], grain) for grain, _, key in deltas}
    keys |= {period_key(key[0], grain) for (grain, _), values in fresh.items() for key in values}
    keys |= {period_key(period, grain) for grain, period in gone}
    if not keys:
        return 0
    stored = repo.stored_cells(run.conn, kpi.id, "", keys)
    computed_at = utc_now()
    replaced: list[int] = []
    rows: list[dict[str, Any]] = []

    def put(grain: Grain, scope: Scope, key: Key, result: Computed | None) -> None:
        row = value_row(kpi, grain, scope, "", key, (None, 0.0, None, 0))
        before = stored.pop((grain, scope, row["period_key"], key[1], key[2], key[3]), None)
        if before is not None:
            replaced.append(before.id)
        touched.add((grain, row["period_key"]))
        if result is None:
            return
        row = value_row(kpi, grain, scope, "", key, result)
        apply_targets(kpi, [row], run.targets, add_missing=False)
        row["definition_hash"] = digest
        row["computed_at"] = computed_at
        rows.append(row)

    for (grain, scope, key), (num, den, count) in deltas.items():
        before = stored.get((grain, scope, period_key(key[0], grain), key[1], key[2], key[3]))
        numerator = (before.numerator if before else 0.0) + num
        records = (before.sample_count if before else 0) + count
        if records <= 0:
            put(grain, scope, key, None)
        elif kpi.stat == "new":
            put(grain, scope, key, (numerator, numerator, None, records))
        else:
            denominator = (before.denominator or 0.0 if before else 0.0) + den
            value = numerator / denominator if denominator else None
            put(grain, scope, key, (value, numerator, denominator, records))
    for (grain, scope), values in fresh.items():
        for key, result in values.items():
            put(grain, scope, key, result)
    gone_keys = {(grain, period_key(period, grain)) for grain, period in gone}
    for cell_key, cell in stored.items():
        if (cell_key[0], cell_key[2]) in gone_keys:
            replaced.append(cell.id)
            touched.add((cell_key[0], cell_key[2]))
    repo.replace_cells(run.conn, replaced, rows)
    return len(rows) + len(replaced)


# --- explanations -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExplainedSide:
    role: str
    entity: str  # what the records are: accounts, or the deals themselves
    contributes: str
    records: list[dict[str, Any]]


def _in_scope(deal: WonDeal, scope: str, scope_id: str, rollup: Rollup) -> bool:
    if scope == "company":
        return True
    if deal.owner is None:
        return False
    if scope == "owner":
        return f"{deal.connection_id}:{deal.owner}" == scope_id
    return scope_id in rollup.teams_of(deal.connection_id, deal.owner)


def _deal_row(deal: WonDeal, first: dict[Account, Any]) -> dict[str, Any]:
    return {
        "connection_id": deal.connection_id,
        "external_id": deal.external_id,
        "owner_external_id": deal.owner,
        "contribution": deal.amount,
        "account_external_id": deal.account,
        "amount": deal.amount,
        "currency": deal.currency,
        "period_date": deal.ordered_by,
        "account_first_won": first[(deal.connection_id, deal.account)],
    }


def _account_rows(deals: Iterable[WonDeal], first: dict[Account, Any]) -> list[dict[str, Any]]:
    """One row per account: its first won date and the deals that put it in the set."""
    grouped: dict[Account, list[WonDeal]] = {}
    for deal in deals:
        grouped.setdefault((deal.connection_id, deal.account), []).append(deal)
    return [
        {
            "connection_id": account[0],
            "external_id": account[1],
            "account_external_id": account[1],
            "contribution": 1.0,
            "account_first_won": first[account],
            "deals": sorted(d.external_id for d in found),
            "owners": sorted({d.owner for d in found if d.owner is not None}),
        }
        for account, found in sorted(grouped.items())
    ]


def explain_customers(
    run: Computation,
    kpi: CustomerKpi,
    grain: Grain,
    period: int | None,
    scope: str,
    scope_id: str,
    currency: str,
) -> list[ExplainedSide]:
    """The accounts (or deals) behind one value of a customer KPI, per side, in a stable order."""
    rollup = run.rollup()
    deals = won_deals(run.conn, kpi, run.calendar)
    first = first_won(deals)
    mine = [d for d in deals if _in_scope(d, scope, scope_id, rollup)]

    def in_period(deal: WonDeal, index: int | None) -> bool:
        return index is None or (deal.month is not None and _period(rollup, grain, deal) == index)

    if kpi.stat == "new":
        firsts = [
            d for d in mine if in_period(d, period) and d.ordered_by == first[(d.connection_id, d.account)]
        ]
        return [
            ExplainedSide(
                "measure",
                "accounts",
                "1 per account whose first won deal is in the period",
                _account_rows(firsts, first),
            )
        ]
    if kpi.stat == "repeat_revenue_share":
        won = [d for d in mine if in_period(d, period) and d.amount is not None and d.currency == currency]
        repeat = [d for d in won if d.ordered_by > first[(d.connection_id, d.account)]]
        return [
            ExplainedSide(
                "numerator",
                "opportunities",
                "amount of a deal whose account won a deal before",
                [_deal_row(d, first) for d in repeat],
            ),
            ExplainedSide(
                "denominator",
                "opportunities",
                "amount of a won deal with an account",
                [_deal_row(d, first) for d in won],
            ),
        ]
    if period is None:
        return []
    before = period - periods.STEP[grain]
    previous = [d for d in mine if in_period(d, before)]
    now = {(d.connection_id, d.account) for d in mine if in_period(d, period)}
    kept = [d for d in previous if (d.connection_id, d.account) in now]
    return [
        ExplainedSide(
            "numerator",
            "accounts",
            "1 per account of the previous period that won a deal again",
            _account_rows(kept, first),
        ),
        ExplainedSide(
            "denominator",
            "accounts",
            "1 per account with a won deal in the previous period",
            _account_rows(previous, first),
        ),
    ]
