"""Closing an incentive period: the close and the events it causes, in the caller's transaction.

A close freezes what the period pays, so an admin's close (the API and the command line,
:func:`close_when_current`) is refused while the KPI values it is made of are not up to date
with the store: a sync that landed after the last refresh would otherwise be paid in the next
period as an adjustment, not in the period it belongs to.

Every close goes through :func:`close_period` (or
:meth:`crm_perf_sync.jobs.refresh.RefreshJob.close_incentive_period`, which opens the transaction
under the refresh lease): the frozen lines and their ``incentive.period_closed`` event commit
together, with the ``tier_reached`` and ``adjusted`` events of the lines the close brought up to
date first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from crm_perf_sync.incentives import events
from crm_perf_sync.incentives import repository as repo
from crm_perf_sync.incentives.service import IncentiveService, PlanOutcome
from crm_perf_sync.kit.errors import Conflict


@dataclass(frozen=True, slots=True)
class ClosedPeriod:
    close_id: int
    #: The webhook-id of the ``incentive.period_closed`` event.
    event: str
    #: The webhook-ids of the other events of the lines brought up to date by the close.
    other_events: list[str] = field(default_factory=list)


def close_period(
    conn: Connection,
    incentives: IncentiveService,
    plan_id: str,
    period_key: str,
    closed_by: str,
    now: datetime,
) -> ClosedPeriod:
    """Close a plan's period (see :meth:`IncentiveService.close`) and write its events."""
    plan = incentives.plan(plan_id)
    only = {plan.id: plan}
    seen = events.before(conn, only, {plan.id: None})
    close_id = incentives.close(conn, plan.id, period_key, closed_by, now)
    others = events.announce(conn, only, seen, {plan.id: PlanOutcome()}, now)
    closed = events.period_closed(conn, plan, period_key, now)
    return ClosedPeriod(close_id, closed, others)


@dataclass(frozen=True, slots=True)
class Closed:
    close_id: int
    plan_id: str
    period_key: str
    period_start: date
    period_end: date  # the day after the last
    closed_at: datetime
    closed_by: str
    lines: int
    amount: float


def close_when_current(
    service: IncentiveService, session: Session, plan_id: str, period_key: str, closed_by: str, now: datetime
) -> Closed:
    """Close ``period_key`` of ``plan_id`` in the session's transaction (the caller commits).

    Raises :class:`NotFound` for an unknown plan, :class:`Conflict` when the KPIs are not up to
    date, and the service's conflicts (already closed, an earlier period open, not ended yet).
    """
    plan = service.plan(plan_id)
    period = service.period_of(plan, period_key)
    reason = service.kpis.refresh_reason(session)
    if reason is not None:
        raise Conflict(
            f"the KPIs are not up to date ({reason}): refresh them (`crm-perf-sync refresh`, or wait "
            f"for the worker's next refresh), then close {plan.id} {period.key}"
        )
    close_id = close_period(session.connection(), service, plan.id, period.key, closed_by, now).close_id
    totals = repo.totals(session, plan.id, period.key)
    return Closed(
        close_id,
        plan.id,
        period.key,
        period.start,
        period.end,
        now,
        closed_by,
        totals["lines"],
        float(totals["amount"]),
    )
