"""What a rep reads: their statement for a period (the lines, what the next tier needs, what the
period would pay at the current pace) and the explanation of one line down to the records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from crm_perf_sync.incentives import payouts
from crm_perf_sync.incentives import repository as repo
from crm_perf_sync.incentives.payouts import ZERO
from crm_perf_sync.incentives.schemas import Commission, Plan
from crm_perf_sync.incentives.service import IncentiveService, PlanPeriod
from crm_perf_sync.kit.errors import NotFound
from crm_perf_sync.kpi import periods


@dataclass(slots=True)
class Progress:
    """Where a rep stands on a commission in a period: the tier reached, how much more base the
    next tier needs, and (while the period runs) what it would pay if the pace held."""

    component_id: str
    base: Decimal | None
    quota: Decimal | None
    attainment: Decimal | None
    tier: int | None
    next_tier: int | None = None
    next_tier_needs: Decimal | None = None  # more base to reach the next tier
    elapsed: float | None = None  # share of the period passed (while it runs)
    projected_base: Decimal | None = None
    projected_amount: Decimal | None = None


@dataclass(slots=True)
class Statement:
    plan: Plan
    owner_id: str
    period: PlanPeriod
    closed: bool
    lines: list[dict[str, Any]]
    total: Decimal
    progress: list[Progress] = field(default_factory=list)
    periods: list[str] = field(default_factory=list)  # every period the rep has lines in


def statement(
    service: IncentiveService,
    session: Session,
    plan_id: str,
    owner_id: str,
    period_key: str | None,
    now: datetime,
) -> Statement:
    """A rep's statement for one period of a plan (by default the latest they have lines in)."""
    plan = service.plan(plan_id)
    keys = repo.owner_periods(session, plan.id, owner_id)
    if not keys:
        raise NotFound(f"{owner_id} has no payouts in plan {plan_id!r}")
    period = service.period_of(plan, period_key or keys[-1])
    lines = repo.statement(session, plan.id, owner_id, period.key)
    closed = any(row.period_key == period.key for row in repo.closes(session, plan.id))
    total = sum((Decimal(str(line["amount"])) for line in lines), ZERO)
    found = Statement(plan, owner_id, period, closed, lines, total, periods=keys)
    elapsed = periods.elapsed_fraction(period.start, period.end, now, service.kpis.config.business.timezone)
    for line in lines:
        component = plan.component(line["component_id"])
        if line["kind"] != "payout" or not isinstance(component, Commission):
            continue
        found.progress.append(_progress(component, line, elapsed, closed))
    return found


def _progress(component: Commission, line: dict[str, Any], elapsed: float, closed: bool) -> Progress:
    base = None if line["base"] is None else Decimal(str(line["base"]))
    quota = None if line["quota"] is None else Decimal(str(line["quota"]))
    attainment = None if base is None or not quota else base / quota
    tier = None
    progress = Progress(component.id, base, quota, attainment, tier)
    if attainment is not None and quota is not None and base is not None and component.tiers:
        reached = payouts.tier_reached(component, attainment)
        progress.tier = reached + 1
        if reached + 1 < len(component.tiers):
            progress.next_tier = reached + 2
            progress.next_tier_needs = payouts.cents(component.tiers[reached + 1].from_ * quota - base)
    if not closed and 0 < elapsed < 1 and base is not None:
        progress.elapsed = elapsed
        progress.projected_base = payouts.cents(base / Decimal(repr(elapsed)))
        progress.projected_amount = payouts.commission(component, progress.projected_base, quota).amount
    return progress


@dataclass(slots=True)
class Standing:
    """One rep in a plan's period: what their lines add up to and where each commission stands."""

    owner_id: str
    currency: str
    total: Decimal
    lines: int
    capped: bool  # a line of theirs was cut by its cap
    commissions: list[Progress] = field(default_factory=list)


@dataclass(slots=True)
class Board:
    """Every rep paid in one period of a plan, the most first, and the plan's total."""

    plan: Plan
    period: PlanPeriod | None  # None: the plan has not started
    periods: list[PlanPeriod]  # from the plan's start to today's (or its end)
    close: Any | None  # the close (closed_by, closed_at) when the period is closed
    rows: list[Standing]
    totals: dict[str, Decimal]  # by currency


def board(
    service: IncentiveService, session: Session, plan_id: str, period_key: str | None, now: datetime
) -> Board:
    """A plan's period as a manager reads it (by default the latest period the plan has run)."""
    plan = service.plan(plan_id)
    plan_periods = service.periods(plan, service.today(now))
    if period_key is None:
        if not plan_periods:
            return Board(plan, None, [], None, [], {})
        period = plan_periods[-1]
    else:
        period = service.period_of(plan, period_key)
    close = next((row for row in repo.closes(session, plan.id) if row.period_key == period.key), None)
    elapsed = periods.elapsed_fraction(period.start, period.end, now, service.kpis.config.business.timezone)
    lines: dict[str, list[dict[str, Any]]] = {}
    for line in repo.period_lines(session, plan.id, period.key):
        lines.setdefault(line["owner_id"], []).append(line)
    rows: list[Standing] = []
    totals: dict[str, Decimal] = {}
    for found in repo.period_owners(session, plan.id, period.key):
        total = Decimal(str(found["total"]))
        theirs = lines.get(found["owner_id"], [])
        standing = Standing(
            found["owner_id"],
            found["currency"],
            total,
            found["lines"],
            any(line["capped"] and line["kind"] == "payout" for line in theirs),
        )
        for line in theirs:
            component = plan.component(line["component_id"])
            if line["kind"] == "payout" and isinstance(component, Commission):
                standing.commissions.append(_progress(component, line, elapsed, close is not None))
        rows.append(standing)
        totals[found["currency"]] = totals.get(found["currency"], ZERO) + total
    return Board(plan, period, plan_periods, close, rows, totals)


def explain_line(
    service: IncentiveService,
    session: Session,
    plan_id: str,
    owner_id: str,
    period_key: str,
    component_id: str,
) -> dict[str, Any]:
    """One payout line and the records behind it, each with the part of the payout it earned: for
    tiers, the records in the order they closed fill the tiers from the first (a record that
    crosses a tier's end is split across both)."""
    plan = service.plan(plan_id)
    period = service.period_of(plan, period_key)
    component = plan.component(component_id)
    if component is None:
        known = ", ".join(c.id for c in plan.components)
        raise NotFound(f"plan {plan_id!r} has no component {component_id!r} (components: {known})")
    lines = [
        line
        for line in repo.statement(session, plan.id, owner_id, period.key)
        if line["component_id"] == component_id
    ]
    if not lines:
        raise NotFound(f"no {component_id} line for {owner_id} in {plan_id} {period.key}")
    payout = next((line for line in lines if line["kind"] == "payout"), lines[0])
    records = service.records_detail(session, plan, component, period, owner_id)
    if isinstance(component, Commission) and payout["base"] is not None:
        _allocate(component, payout, records)
    return {
        "plan_id": plan.id,
        "owner_id": owner_id,
        "period_key": period.key,
        "lines": lines,
        "records": records,
    }


def _allocate(component: Commission, payout: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Each record's share of the commission before any cap (``earned``) and the rates it earned at."""
    quota = None if payout["quota"] is None else Decimal(str(payout["quota"]))
    bands = payout["detail"].get("bands") or []
    if component.rate is not None and not bands:
        for record in records:
            record["earned"] = str(Decimal(str(record["contribution"])) * component.rate)
            record["tiers"] = [{"rate": str(component.rate), "portion": str(record["contribution"])}]
        return
    if quota is None or not bands:
        return
    if component.tier_mode == "retroactive":
        rate = Decimal(bands[0]["rate"])
        for record in records:
            part = Decimal(str(record["contribution"]))
            record["earned"] = str(part * rate)
            record["tiers"] = [{"tier": bands[0]["tier"], "rate": str(rate), "portion": str(part)}]
        return
    filled = ZERO
    for record in records:
        part = Decimal(str(record["contribution"]))
        start, end = filled, filled + part
        filled = end
        record["tiers"] = []
        earned = ZERO
        for n, tier in enumerate(component.tiers):
            low = tier.from_ * quota
            high = None if tier.to is None else tier.to * quota
            inside = (end if high is None else min(end, high)) - max(start, low)
            if inside > 0:
                record["tiers"].append({"tier": n + 1, "rate": str(tier.rate), "portion": str(inside)})
                earned += inside * tier.rate
        record["earned"] = str(earned)
