"""Incentive events for the webhook outbox, written in the transaction of what caused them.

- ``incentive.tier_reached``: a rep's tiered commission in an open period stands in a higher tier
  than the lines stored before the recomputation said (a tier counts from the threshold: below
  it there is none). Only a line that existed before can cross: a plan's first computation, a
  new period or a rep new to a plan announces nothing, so a new deployment sends no flood.
- ``incentive.adjusted``: an adjustment line appeared, changed its amount or went (``change``
  ``new``, ``changed`` or ``withdrawn``), with the records that changed in the closed period.
- ``incentive.period_closed``: a closed period's frozen lines and their totals, once per close;
  what a payroll or HR system takes in.

Whoever recomputes plans reads :func:`before` first and calls :func:`announce` after, in the
same transaction; a close calls :func:`period_closed` once the lines are frozen.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from crm_perf_sync.incentives import payouts
from crm_perf_sync.incentives import repository as repo
from crm_perf_sync.incentives.payouts import ZERO
from crm_perf_sync.incentives.schemas import Commission, Plan
from crm_perf_sync.incentives.service import PlanOutcome
from crm_perf_sync.kpi import periods
from crm_perf_sync.org import repository as org_repo
from crm_perf_sync.org.schemas import Membership
from crm_perf_sync.webhooks.service import emit

LineKey = tuple[str, str, str, str]  # plan, period key, owner, component
AdjustmentKey = tuple[str, str, str, str, str]  # plan, period paid in, owner, component, period corrected


@dataclass(slots=True)
class Before:
    """What the stored lines said before plans were recomputed."""

    #: Each tiered commission line of an open period: the tier it stood in (``None``: none yet).
    tiers: dict[LineKey, int | None] = field(default_factory=dict)
    #: Each adjustment line of an open period: its amount.
    adjustments: dict[AdjustmentKey, Decimal] = field(default_factory=dict)
    #: Each plan's closed periods.
    closed: dict[str, set[str]] = field(default_factory=dict)
    #: Each plan's periods read (``None``: every open one).
    periods: dict[str, Collection[str] | None] = field(default_factory=dict)


def tiered(plan: Plan) -> dict[str, Commission]:
    return {c.id: c for c in plan.components if isinstance(c, Commission) and c.tiers}


def before(conn: Connection, plans: Mapping[str, Plan], work: Mapping[str, Collection[str] | None]) -> Before:
    """Read the open lines' tiers and adjustments of the plans in ``work``, before they are
    recomputed: of each plan, the periods it names (``None``: every open period)."""
    seen = Before()
    for plan_id, keys in work.items():
        plan = plans[plan_id]
        seen.closed[plan.id] = {row.period_key for row in repo.closes(conn, plan.id)}
        seen.periods[plan.id] = keys
        components = tiered(plan)
        if components and keys is None:  # (a plan recomputed by periods says which lines crossed)
            for row in repo.lines_of_kind(conn, plan.id, "payout", component_ids=components):
                component = components[row.component_id]
                key = (plan.id, row.period_key, row.owner_id, row.component_id)
                seen.tiers[key] = payouts.tier_of(component, _decimal(row.base), _decimal(row.quota))
        corrected = _corrected(seen, plan.id)
        if corrected is None or corrected:
            for row in repo.lines_of_kind(conn, plan.id, "adjustment", for_periods=corrected):
                seen.adjustments[_adjustment_key(row)] = Decimal(str(row.amount))
    return seen


def announce(
    conn: Connection,
    plans: Mapping[str, Plan],
    seen: Before,
    recomputed: Mapping[str, PlanOutcome],
    now: datetime,
    membership: Membership | None = None,
) -> list[str]:
    """The ``tier_reached`` and ``adjusted`` events of the plans ``recomputed`` since ``seen`` was
    read; their webhook-ids. ``membership``: the teams as read by the caller (else read here)."""
    reps = Reps(conn, membership)
    events: list[str] = []
    for plan_id in sorted(recomputed):
        plan = plans[plan_id]
        if plan.id not in seen.closed:
            continue  # not read before: its first computation
        # Periods closed since (a close brings the lines up to date, then freezes them).
        just_closed = {row.period_key for row in repo.closes(conn, plan.id)} - seen.closed[plan.id]
        if seen.periods.get(plan.id) is None:
            crossed = _crossed(conn, plan, seen, just_closed)
        else:
            crossed = sorted(recomputed[plan_id].crossed, key=lambda c: _line_order(c[0]))
        events += [_tier_reached(conn, plan, row, was, reps, now) for row, was in crossed]
        events += _adjustments(conn, plan, seen, just_closed, reps, now)
    return events


def _corrected(seen: Before, plan_id: str) -> set[str] | None:
    """The closed periods whose adjustments a recomputation of some periods can change (``None``:
    a whole plan's, any)."""
    keys = seen.periods.get(plan_id)
    return None if keys is None else set(keys) & seen.closed[plan_id]


def _line_order(row: Mapping[str, Any]) -> tuple[str, str, str]:
    return (row["period_key"], row["owner_id"], row["component_id"])


def _crossed(
    conn: Connection, plan: Plan, seen: Before, just_closed: set[str]
) -> list[tuple[Mapping[str, Any], int | None]]:
    """A whole plan's tiered commission lines that stand in a higher tier than before, with the
    tier each stood in."""
    components = tiered(plan)
    if not components:
        return []
    rows = repo.lines_of_kind(conn, plan.id, "payout", component_ids=components, also_periods=just_closed)
    out: list[tuple[Mapping[str, Any], int | None]] = []
    for row in sorted((r._mapping for r in rows), key=_line_order):
        key = (plan.id, row["period_key"], row["owner_id"], row["component_id"])
        if key not in seen.tiers:
            continue  # a line new to the store: nothing to cross from
        was = seen.tiers[key]
        tier = payouts.tier_of(components[row["component_id"]], _decimal(row["base"]), _decimal(row["quota"]))
        if tier is not None and (was is None or tier > was):
            out.append((row, was))
    return out


def _tier_reached(
    conn: Connection, plan: Plan, row: Mapping[str, Any], was: int | None, reps: Reps, now: datetime
) -> str:
    component = tiered(plan)[row["component_id"]]
    tier = payouts.tier_of(component, _decimal(row["base"]), _decimal(row["quota"]))
    assert tier is not None  # a line that crossed stands in a tier
    data = {
        "plan": _plan(plan),
        **_period(row["period_key"], row["period_start"], row["period_end"]),
        "rep": reps.card(row["owner_id"]),
        "component": {"id": component.id, "name": component.name or component.id},
        "tier": {"from": was, "to": tier},
        "tier_mode": component.tier_mode,
        "rate": str(component.tiers[tier - 1].rate),
        "currency": row["currency"],
        "base": _money(row["base"]),
        "quota": _money(row["quota"]),
        "attainment": None if row["attainment"] is None else round(float(row["attainment"]), 6),
        "amount": _money(row["amount"]),
        "capped": bool(row["capped"]),
    }
    return emit(conn, "incentive.tier_reached", data, now=now)


def _adjustments(
    conn: Connection, plan: Plan, seen: Before, just_closed: set[str], reps: Reps, now: datetime
) -> list[str]:
    corrected = _corrected(seen, plan.id)
    if corrected is not None and not corrected:
        return []  # no closed period recomputed: no adjustment changed
    rows = repo.lines_of_kind(
        conn, plan.id, "adjustment", also_periods=just_closed, for_periods=corrected, with_detail=True
    )
    after = {_adjustment_key(row): row for row in rows}
    earlier = {key: amount for key, amount in seen.adjustments.items() if key[0] == plan.id}
    events: list[str] = []
    for key in sorted(earlier.keys() | after.keys()):
        was, row = earlier.get(key), after.get(key)
        amount = None if row is None else Decimal(str(row.amount))
        if amount == was:
            continue
        _, period_key, owner_id, component_id, for_period_key = key
        component = plan.component(component_id)
        detail = {} if row is None else row.detail or {}
        start, end = (row.period_start, row.period_end) if row is not None else _bounds(plan, period_key)
        data = {
            "plan": _plan(plan),
            **_period(period_key, start, end),
            "for_period_key": for_period_key,
            "rep": reps.card(owner_id),
            "component": {
                "id": component_id,
                "name": component_id if component is None else component.name or component_id,
                "type": None if component is None else component.type,
            },
            "change": "withdrawn" if row is None else "new" if was is None else "changed",
            "currency": plan.currency,
            "amount": _money(ZERO if amount is None else amount),
            "previous_amount": _money(was),
            "paid": detail.get("paid"),
            "now": detail.get("now"),
            "note": None if row is None else row.note,
            "records": detail.get("changes", []),
        }
        events.append(emit(conn, "incentive.adjusted", data, now=now))
    return events


def period_closed(conn: Connection, plan: Plan, period_key: str, now: datetime) -> str:
    """``incentive.period_closed`` for a period just closed: every frozen line and the totals."""
    close = next(row for row in repo.closes(conn, plan.id) if row.period_key == period_key)
    names = org_repo.scope_names(conn)
    lines: list[dict[str, Any]] = []
    by_rep: dict[str, Decimal] = {}
    by_component: dict[str, Decimal] = {}
    by_kind: dict[str, Decimal] = {}
    total = ZERO
    for row in repo.period_lines(conn, plan.id, period_key):
        amount = Decimal(str(row["amount"]))
        lines.append(
            {
                "rep": {
                    "id": row["owner_id"],
                    "name": names.get(("owner", row["owner_id"]), row["owner_id"]),
                },
                "component_id": row["component_id"],
                "component_type": row["component_type"],
                "kind": row["kind"],
                "for_period_key": row["for_period_key"],
                "amount": _money(amount),
                "base": _money(row["base"]),
                "quota": _money(row["quota"]),
                "units": row["units"],
                "capped": bool(row["capped"]),
                "note": row["note"],
            }
        )
        total += amount
        for totals, key in (
            (by_rep, row["owner_id"]),
            (by_component, row["component_id"]),
            (by_kind, row["kind"]),
        ):
            totals[key] = totals.get(key, ZERO) + amount
    data = {
        "plan": _plan(plan),
        **_period(period_key, close.period_start, close.period_end),
        "closed_at": close.closed_at.isoformat().replace("+00:00", "Z"),
        "closed_by": close.closed_by,
        "currency": plan.currency,
        "lines": lines,
        "totals": {
            "lines": len(lines),
            "reps": len(by_rep),
            "amount": _money(total),
            "by_kind": {key: _money(value) for key, value in sorted(by_kind.items())},
            "by_component": {key: _money(value) for key, value in sorted(by_component.items())},
            "by_rep": {key: _money(value) for key, value in sorted(by_rep.items())},
        },
    }
    return emit(conn, "incentive.period_closed", data, now=now)


class Reps:
    """Reps' names and teams, read once and only if an event needs them: an event names the rep's
    own team and every team above it, so a consumer can route it to the rep's manager."""

    def __init__(self, conn: Connection, membership: Membership | None = None) -> None:
        self.conn = conn
        self.membership = membership
        self._loaded: tuple[dict[tuple[str, str], str], dict[str, list[str]]] | None = None

    def card(self, owner_id: str) -> dict[str, Any]:
        names, teams = self._load()
        mine = teams.get(owner_id, [])
        described = [{"id": team, "name": names.get(("team", team), team)} for team in mine]
        return {
            "id": owner_id,
            "name": names.get(("owner", owner_id), owner_id),
            "team": described[0] if described else None,
            "teams": described,
        }

    def _load(self) -> tuple[dict[tuple[str, str], str], dict[str, list[str]]]:
        if self._loaded is None:
            names = org_repo.scope_names(self.conn)
            direct = org_repo.direct_teams(self.conn)
            teams: dict[str, list[str]] = {}
            membership = self.membership or org_repo.load_membership(self.conn)
            for team, connection_id, external_id in membership.rows:
                teams.setdefault(f"{connection_id}:{external_id}", []).append(team)
            for owner, found in teams.items():
                own = direct.get(owner)
                # The rep's own team first, then the teams above it.
                found.sort(key=lambda team: (team != own, team))
            self._loaded = names, teams
        return self._loaded


def _adjustment_key(row: Any) -> AdjustmentKey:
    return (row.plan_id, row.period_key, row.owner_id, row.component_id, row.for_period_key)


def _plan(plan: Plan) -> dict[str, Any]:
    return {"id": plan.id, "name": plan.name, "period": plan.period}


def _period(key: str, start: date | None, end: date | None) -> dict[str, Any]:
    """A period's key and dates (``period_end`` is the day after its last, as in every event)."""
    return {
        "period_key": key,
        "period_start": None if start is None else start.isoformat(),
        "period_end": None if end is None else end.isoformat(),
    }


def _bounds(plan: Plan, key: str) -> tuple[date, date]:
    start = date.fromisoformat(key)
    return periods.period_bounds(start.year * 12 + start.month - 1, plan.period)


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _money(value: Any) -> str | None:
    return None if value is None else str(payouts.cents(Decimal(str(value))))
