"""Customer KPIs brought up to date by the change log (see :mod:`.customers` for what they count).

Every value adds up over accounts: an account is one of a cell's new customers or not, is kept
or not, and its deals' revenue is repeat revenue or not, whatever the other accounts do. So the
accounts whose deals the change log touched are read in their state before and after the
change, and the difference is added to the stored cells. Which deal is an account's first
depends on all of that account's deals, which is why the whole account is read again and not
only its changed deals. Retention has values up to the last period with any won deal: when a
change moves that period, values appear or go for every account. Deals that cannot move a value
(a retention value's other periods; the unchanged deals of an account whose first won date stayed,
for repeat revenue) are left out of the difference.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Select, and_, select, tuple_
from sqlalchemy.sql.elements import ColumnElement

from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.kpi import periods
from crm_perf_sync.kpi import repository as repo
from crm_perf_sync.kpi.compiler import PENDING, Calendar, Part, Scope, part_for
from crm_perf_sync.kpi.compute import Computation, Touched
from crm_perf_sync.kpi.customers import (
    Account,
    WonDeal,
    count_new,
    empty_values,
    first_won,
    period_of,
    read_won_deals,
    retention_values,
    revenue_rows,
    scopes_of,
    share_values,
    won_deals_query,
)
from crm_perf_sync.kpi.repository import CHANGED, TOUCHED_ACCOUNTS
from crm_perf_sync.kpi.rollup import Key, Rollup
from crm_perf_sync.kpi.schemas import FIELDS, CustomerKpi, Grain
from crm_perf_sync.kpi.values import Computed, apply_targets, period_key, value_row
from crm_perf_sync.models import PRIOR_TABLES

#: A value's parts: (numerator, denominator, records); the denominator is 0 for new customers.
Parts = tuple[float, float, int]


def apply_customer_changes(run: Computation, kpi: CustomerKpi, digest: str, touched: Touched) -> int | None:
    """Update a customer KPI's stored values by the change log (after ``load_pending``).

    Returns how many values changed, or ``None`` when the KPI must be recomputed whole (retention
    when there were no won deals before or none are left, so there is no last period to keep).
    ``touched`` collects the cells of every value changed.
    """
    touched_accounts = _touched_accounts(run, kpi)
    if touched_accounts is None:
        return 0
    part, old_versions, new_versions, before, after = touched_accounts
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
    old_cells, new_cells = _contributions(
        run, kpi, rollup, before, after, [*old_versions, *new_versions], cutoff
    )
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


#: The part read, the counted old and the current versions of the changed deals, and the won deals
#: of their accounts before the change and after it.
TouchedAccounts = tuple[Part, list[WonDeal], list[WonDeal], list[WonDeal], list[WonDeal]]


def _touched_accounts(run: Computation, kpi: CustomerKpi) -> TouchedAccounts | None:
    """The won deals of every account the change log touched, before the change and after it
    (read once per refresh for all customer KPIs on the same deals), with the counted old and
    the current versions of the changed deals; ``None`` when no account was touched."""
    key = ("customer accounts", kpi.measure.model_dump_json())
    if key in run.shared:
        found: TouchedAccounts | None = run.shared[key]
        return found
    conn, calendar = run.conn, run.calendar
    entity = kpi.measure.entity
    part = part_for(kpi.measure, calendar, by_currency=True)
    prior = part_for(kpi.measure, calendar, by_currency=True, table=PRIOR_TABLES[entity])
    old_versions = read_won_deals(conn, _counted(won_deals_query(prior, calendar), prior, entity))
    new_versions = read_won_deals(conn, _changed_only(won_deals_query(part, calendar), part, entity))
    accounts = {(d.connection_id, d.account) for d in (*old_versions, *new_versions)}
    found = None
    if accounts:
        after = _deals_of(conn, part, calendar, accounts)
        changed = _changed_ids(conn, entity)
        before = [d for d in after if (d.connection_id, d.external_id) not in changed] + old_versions
        found = (part, old_versions, new_versions, sorted(before, key=_order), sorted(after, key=_order))
    run.shared[key] = found
    return found


def _order(deal: WonDeal) -> tuple[str, str]:
    # Both states in one order: an account's unchanged deals sum to exactly the same floats.
    return deal.connection_id, deal.external_id


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
    """The current won deals of these accounts, looked up by account (a join would let SQLite,
    which has no statistics, read every deal and probe the few accounts instead)."""
    table = part.table
    repo.load_touched_accounts(conn, accounts)
    touched = select(TOUCHED_ACCOUNTS.c.t_connection_id, TOUCHED_ACCOUNTS.c.t_account)
    by_account = tuple_(table.c.connection_id, table.c.account_external_id).in_(touched)
    return read_won_deals(conn, won_deals_query(part, calendar).where(by_account))


Cells = dict[tuple[Grain, Scope], dict[Key, Computed]]


def _contributions(
    run: Computation,
    kpi: CustomerKpi,
    rollup: Rollup,
    before: list[WonDeal],
    after: list[WonDeal],
    changed: list[WonDeal],
    cutoff: dict[Grain, int] | None,
) -> tuple[Cells, Cells]:
    """The values the touched accounts alone have before the change and after it: their share of
    every stored value. Values that come out the same in both states cancel out, so the deals
    that cannot move a value are left out of both (see :func:`_repeat_share_moves` and
    :func:`_retention_moves`); ``changed`` are the changed deals' old and current versions."""
    old, new = empty_values(run), empty_values(run)
    if kpi.stat == "new":
        for deals, out in ((before, old), (after, new)):
            first = first_won(deals)
            firsts = [d for d in deals if d.ordered_by == first[(d.connection_id, d.account)]]
            count_new(rollup, run.grains, firsts, out)
    elif kpi.stat == "repeat_revenue_share":
        for deals, first, out in _repeat_share_moves(before, after, changed, old, new):
            share_values(rollup, revenue_rows(deals, first), out)
    else:
        for grain, window in _retention_moves(run, rollup, changed).items():
            for deals, out in ((before, old), (after, new)):
                inside = [deal for deal in deals if period_of(rollup, grain, deal) in window]
                retention_values(rollup, [grain], inside, out, cutoff)
    return old, new


def _repeat_share_moves(
    before: list[WonDeal], after: list[WonDeal], changed: list[WonDeal], old: Cells, new: Cells
) -> list[tuple[list[WonDeal], dict[Account, Any], Cells]]:
    """Per state, the deals whose repeat revenue can differ between the two, with the accounts'
    first won dates in that state: the changed deals, and every deal of an account whose first
    date moved (whether a deal is repeat revenue depends on it)."""
    first_before, first_after = first_won(before), first_won(after)
    moved = {a for a in first_before.keys() | first_after.keys() if first_before.get(a) != first_after.get(a)}
    ids = {(deal.connection_id, deal.external_id) for deal in changed}

    def may_move(deal: WonDeal) -> bool:
        return (deal.connection_id, deal.account) in moved or (deal.connection_id, deal.external_id) in ids

    return [
        ([d for d in before if may_move(d)], first_before, old),
        ([d for d in after if may_move(d)], first_after, new),
    ]


def _retention_moves(run: Computation, rollup: Rollup, changed: list[WonDeal]) -> dict[Grain, set[int]]:
    """Per grain, the periods whose deals a retention value that can move reads. A value compares
    a period's accounts with the period before's, so only the values of the changed deals'
    periods (old and current versions) and of the periods after them move; they read those
    periods and the ones before them."""
    near: dict[Grain, set[int]] = {}
    for grain in run.grains:
        if grain == "all":
            continue
        step = periods.STEP[grain]
        found = {period_of(rollup, grain, deal) for deal in changed}
        near[grain] = {period + k * step for period in found if period is not None for k in (-1, 0, 1)}
    return near


def _last_periods(
    run: Computation, part: Part, entity: str, old_versions: list[WonDeal]
) -> dict[Grain, tuple[int, int]] | None:
    """Per grain, the last period with a won deal before the change and after it.

    The won deals are read newest first, through the deals' index on the period date (the default
    library's customer KPIs count by ``close_date``) and no further than the first the change log
    did not touch: each touched deal is at most one row before it.
    """
    table = part.table
    period: ColumnElement[Any] = table.c[part.measure.period]
    changed = _changed_ids(run.conn, entity)
    newest = run.conn.execute(
        select(period, table.c.connection_id, table.c.external_id)
        .where(*part.where, table.c.account_external_id.is_not(None), period.is_not(None))
        .order_by(period.desc())
        .limit(len(changed) + 1)
    ).all()
    after = newest[0][0] if newest else None
    unchanged = next((r[0] for r in newest if (r[1], r[2]) not in changed), None)
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
    """Retention values that appear or go because the last period moved: computed whole, or removed.

    A new value's denominator is every account of the period before it, counted per scope by the
    database; its numerator only needs the accounts of the new period (a few days of deals when
    the clock moved into it) and those accounts' deals of the period before.
    """
    fresh: dict[tuple[Grain, Scope], dict[Key, Computed]] = {}
    gone: set[tuple[Grain, int]] = set()
    rollup = run.rollup()
    for grain, (old, new) in lasts.items():
        step = periods.STEP[grain]
        gone |= {(grain, period) for period in range(new + step, old + step, step)}
        for period in range(old + step, new + step, step):
            for (scope, scope_id), (kept, size) in _retained(run, part, rollup, grain, period).items():
                fresh.setdefault((grain, scope), {})[period, scope_id, "", ""] = (
                    kept / size,
                    float(kept),
                    float(size),
                    size,
                )
    return fresh, gone


def _retained(
    run: Computation, part: Part, rollup: Rollup, grain: Grain, period: int
) -> dict[tuple[Scope, str], tuple[int, int]]:
    """Per scope with accounts in the period before ``period``: how many of them won a deal again
    in ``period``, and how many there were."""
    before = period - periods.STEP[grain]
    now = [d for d in _within(run, part, grain, period) if period_of(rollup, grain, d) == period]
    buying: dict[tuple[Scope, str], set[Account]] = {}
    for deal in now:
        for scope in scopes_of(rollup, deal):
            buying.setdefault(scope, set()).add((deal.connection_id, deal.account))
    again: dict[tuple[Scope, str], set[Account]] = {}
    accounts = {(d.connection_id, d.account) for d in now}
    for deal in _deals_of(run.conn, part, run.calendar, accounts) if accounts else []:
        if period_of(rollup, grain, deal) != before:
            continue
        for scope in scopes_of(rollup, deal):
            if (deal.connection_id, deal.account) in buying.get(scope, ()):
                again.setdefault(scope, set()).add((deal.connection_id, deal.account))
    return {
        scope: (len(again.get(scope, ())), size)
        for scope, size in _accounts_per_scope(run, part, grain, before).items()
        if size > 0
    }


def _range(run: Computation, part: Part, grain: Grain, period: int) -> tuple[Any, Any]:
    """The first and the end (excluded) of a period as values of the period column: dates, or the
    instants the business day begins at for a timestamp."""
    start, end = periods.period_bounds(period, grain)
    if FIELDS[part.measure.entity][part.measure.period] == "date":
        return start, end
    zone = ZoneInfo(run.calendar.timezone)
    return (
        datetime.combine(start, time(), tzinfo=zone).astimezone(UTC),
        datetime.combine(end, time(), tzinfo=zone).astimezone(UTC),
    )


def _within(run: Computation, part: Part, grain: Grain, period: int) -> list[WonDeal]:
    column: ColumnElement[Any] = part.table.c[part.measure.period]
    low, high = _range(run, part, grain, period)
    return read_won_deals(run.conn, won_deals_query(part, run.calendar).where(column >= low, column < high))


def _accounts_per_scope(
    run: Computation, part: Part, grain: Grain, period: int
) -> dict[tuple[Scope, str], int]:
    """How many accounts won a deal in the period, in the company, per rep and per team (only the
    three columns of the period's won deals are read)."""
    table = part.table
    column: ColumnElement[Any] = table.c[part.measure.period]
    low, high = _range(run, part, grain, period)
    rows = run.conn.execute(
        select(table.c.connection_id, table.c.owner_external_id, table.c.account_external_id).where(
            *part.where, table.c.account_external_id.is_not(None), column >= low, column < high
        )
    )
    rollup = run.rollup()
    accounts: dict[tuple[Scope, str], set[Account]] = {}
    for connection_id, owner, account in rows:
        deal = WonDeal("", None, None, connection_id, owner, account, "", None, None)
        for scope in scopes_of(rollup, deal):
            accounts.setdefault(scope, set()).add((connection_id, account))
    return {scope: len(found) for scope, found in accounts.items()}


def _write(
    run: Computation,
    kpi: CustomerKpi,
    digest: str,
    deltas: dict[tuple[Grain, Scope, Key], Parts],
    fresh: dict[tuple[Grain, Scope], dict[Key, Computed]],
    gone: set[tuple[Grain, int]],
    touched: Touched,
) -> int:
    """Stored values plus ``deltas``, ``fresh`` values in place of any stored, ``gone`` periods
    removed; in one delete and one insert."""
    keys = {(grain, period_key(key[0], grain)) for grain, _, key in deltas}
    keys |= {(grain, period_key(key[0], grain)) for (grain, _), values in fresh.items() for key in values}
    keys |= {(grain, period_key(period, grain)) for grain, period in gone}
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
        touched.add_cell((grain, row["period_key"]), scope, key[1])
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
            touched.add_cell((cell_key[0], cell_key[2]), cell_key[1], cell_key[3])
    repo.replace_cells(run.conn, replaced, rows)
    return len(rows) + len(replaced)
