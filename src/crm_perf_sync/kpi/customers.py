"""Customer KPIs: new customers, repeat revenue share and retention (see :class:`CustomerKpi`).

They read one thing, the won deals that name an account, each with its account's first won date
(a window over the account's deals, in the database). The database reduces them to what each
statistic needs: the distinct (week, month, rep, account) of the first deals (new customers) or
of all of them (retention), or sums per (week, month, rep, currency) (repeat revenue, which then
rolls up like any ratio). Explanations read the deals themselves (:func:`won_deals`).

Every value adds up over accounts, which is what lets an incremental refresh read only the
accounts the change log touched (:mod:`.customer_changes`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Float, Select, and_, case, func, literal, select, type_coerce
from sqlalchemy.sql.elements import ColumnElement

from crm_perf_sync.kpi import periods
from crm_perf_sync.kpi.compiler import Calendar, Part, Scope, part_for, period_expr
from crm_perf_sync.kpi.compute import Computation
from crm_perf_sync.kpi.rollup import Key, Rollup
from crm_perf_sync.kpi.schemas import CustomerKpi, Grain
from crm_perf_sync.kpi.values import Computed

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
    return read_won_deals(conn, won_deals_query(part_for(kpi.measure, calendar, by_currency=True), calendar))


def read_won_deals(conn: Connection, stmt: Select[Any]) -> list[WonDeal]:
    """The rows of :func:`won_deals_query` (narrowed or joined as the caller needs) as deals."""
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


def first_won(deals: Iterable[WonDeal]) -> dict[Account, Any]:
    """Each account's earliest won-deal date."""
    first: dict[Account, Any] = {}
    for deal in deals:
        key = (deal.connection_id, deal.account)
        if key not in first or deal.ordered_by < first[key]:
            first[key] = deal.ordered_by
    return first


def scopes_of(rollup: Rollup, deal: WonDeal) -> list[tuple[Scope, str]]:
    """The scopes a deal counts in: the company, its rep, and every team the rep counts in."""
    found: list[tuple[Scope, str]] = [("company", "company")]
    if deal.owner is not None:
        found.append(("owner", f"{deal.connection_id}:{deal.owner}"))
        found += [("team", team) for team in rollup.teams_of(deal.connection_id, deal.owner)]
    return found


def period_of(rollup: Rollup, grain: Grain, deal: WonDeal) -> int | None:
    return None if grain == "all" else rollup.period(grain, deal.week, deal.month)


def _with_first(part: Part, calendar: Calendar) -> Any:
    """The won deals with an account and a period date, each with its account's first date."""
    table = part.table
    period: ColumnElement[Any] = table.c[part.measure.period]
    # The account before the connection: in the order of the deals' (connection, account) index,
    # SQLite would read every won deal through that index to spare itself the sort, a random
    # read per deal (measured at a million deals: twice the time of a scan and a sort).
    first = func.min(period).over(partition_by=[table.c.account_external_id, table.c.connection_id])
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
    out = empty_values(run)
    if kpi.stat == "new":
        count_new(rollup, run.grains, _accounts(run.conn, won, first_only=True), out)
    elif kpi.stat == "repeat_revenue_share":
        _repeat_share(run.conn, rollup, won, out)
    else:
        retention_values(rollup, run.grains, _accounts(run.conn, won, first_only=False), out)
    return {cell: values for cell, values in out.items() if values}


def empty_values(run: Computation) -> dict[tuple[Grain, Scope], dict[Key, Computed]]:
    scopes: tuple[Scope, ...] = ("company", "owner", "team") if run.membership.rows else ("company", "owner")
    return {(grain, scope): {} for grain in run.grains for scope in scopes}


def count_new(
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
            period = period_of(rollup, grain, deal)
            for scope, scope_id in scopes_of(rollup, deal):
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
    share_values(rollup, [tuple(r) for r in conn.execute(stmt)], out)


#: (week, month, connection, owner, currency, repeat revenue, all revenue, deals)
RevenueRow = tuple[int | None, int | None, str, str | None, str, float, float, int]


def share_values(
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


def revenue_rows(deals: list[WonDeal], first: dict[Account, Any]) -> list[RevenueRow]:
    """What :func:`_repeat_share` reads from the database, from deals in memory (``first``: their
    accounts' first won dates)."""
    sums: dict[tuple[int | None, int | None, str, str | None, str], tuple[float, float, int]] = {}
    for deal in deals:
        if deal.amount is None:
            continue
        key = (deal.week, deal.month, deal.connection_id, deal.owner, deal.currency)
        repeat, total, count = sums.get(key, (0.0, 0.0, 0))
        again = deal.ordered_by > first[(deal.connection_id, deal.account)]
        sums[key] = (repeat + (deal.amount if again else 0.0), total + deal.amount, count + 1)
    return [(*key, repeat, total, count) for key, (repeat, total, count) in sums.items()]


def retention_values(
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
            period = period_of(rollup, grain, deal)
            if period is None:
                continue
            if cutoff is None:
                last = period if last is None else max(last, period)
            for scope, scope_id in scopes_of(rollup, deal):
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
        return index is None or (deal.month is not None and period_of(rollup, grain, deal) == index)

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
