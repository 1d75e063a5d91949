"""Closing a plan's period, as an admin asks for it (the API and the command line).

A close freezes what the period pays, so it is refused while the KPI values it is made of are
not up to date with the store: a sync that landed after the last refresh would otherwise be
paid in the next period as an adjustment, not in the period it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy.orm import Session

from crm_perf_sync.incentives import repository as repo
from crm_perf_sync.incentives.service import IncentiveService
from crm_perf_sync.kit.errors import Conflict


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
    close_id = service.close(session.connection(), plan.id, period.key, closed_by, now)
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
