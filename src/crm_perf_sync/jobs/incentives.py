"""Closing an incentive period: the close and the events it causes, in the caller's transaction.

The API and the CLI close periods through :func:`close_period` (or
:meth:`crm_perf_sync.jobs.refresh.RefreshJob.close_incentive_period`, which opens the transaction
under the refresh lease): the frozen lines and their ``incentive.period_closed`` event commit
together, with the ``tier_reached`` and ``adjusted`` events of the lines the close brought up to
date first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection

from crm_perf_sync.incentives import events
from crm_perf_sync.incentives.service import IncentiveService


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
    seen = events.before(conn, only)
    close_id = incentives.close(conn, plan.id, period_key, closed_by, now)
    others = events.announce(conn, only, seen, [plan.id], now)
    closed = events.period_closed(conn, plan, period_key, now)
    return ClosedPeriod(close_id, closed, others)
