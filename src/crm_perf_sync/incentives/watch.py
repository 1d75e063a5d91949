"""What an alert rule watches of an incentive: per rep, a component's payout so far, and for a
commission its attainment of quota, its pace (attainment ÷ the share of the period passed) and
the payout that pace would reach by the period's end, in the plan's period holding ``now``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Connection

from crm_perf_sync.incentives import payouts
from crm_perf_sync.incentives import repository as repo
from crm_perf_sync.incentives.schemas import Commission, Plan
from crm_perf_sync.kpi import periods


@dataclass(frozen=True, slots=True)
class Watched:
    """One rep's line of a component in the current period, and what it says at ``now``."""

    owner_id: str
    amount: Decimal
    base: Decimal | None
    quota: Decimal | None
    attainment: Decimal | None
    pace: Decimal | None
    projected_payout: Decimal | None

    def measure(self, name: str) -> Decimal | None:
        return self.amount if name == "value" else getattr(self, name)


def current_period(plan: Plan, now: datetime, zone: str, fiscal_start_month: int) -> tuple[str, date, date]:
    """The key and bounds (end exclusive) of the plan's period holding ``now``."""
    index = periods.local_period_index(now, zone, plan.period, fiscal_start_month)
    start, end = periods.period_bounds(index, plan.period)
    return start.isoformat(), start, end


def watch(
    conn: Connection, plan: Plan, component_id: str, period: tuple[str, date, date], now: datetime, zone: str
) -> list[Watched]:
    """Every rep with a line of the component in ``period`` (none outside the plan's dates)."""
    key, start, end = period
    component = plan.component(component_id)
    elapsed = Decimal(repr(periods.elapsed_fraction(start, end, now, zone)))
    found: list[Watched] = []
    for row in repo.component_lines(conn, plan.id, key, component_id):
        amount = Decimal(str(row.amount))
        base = None if row.base is None else Decimal(str(row.base))
        quota = None if row.quota is None else Decimal(str(row.quota))
        attainment = None if base is None or not quota else base / quota
        pace = None if attainment is None or elapsed <= 0 else attainment / elapsed
        projected = None
        if isinstance(component, Commission) and base is not None and elapsed > 0:
            # As the statement projects it: the base at the current pace, paid by the plan's rules.
            at_pace = payouts.cents(base / elapsed)
            projected = amount if elapsed >= 1 else payouts.commission(component, at_pace, quota).amount
        found.append(Watched(row.owner_id, amount, base, quota, attainment, pace, projected))
    return found
