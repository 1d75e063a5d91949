"""Cycle times: how long a duration KPI's records took, as a histogram with mean, median and p90.

The records are exactly those a stored duration value counts (the explanation's conditions:
:func:`crm_perf_sync.kpi.explain.record_conditions` over the KPI's own part), so for the sales
cycle the deals are the won deals of the period and scope, and the mean and median equal the stored
``sales_cycle_days_mean`` and ``sales_cycle_days_median`` of the same cell. Everything is aggregated
in the database: a histogram reads one row per bucket, the median and p90 the one to three ranked
values they need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, case, func, select
from sqlalchemy.orm import Session

from crm_perf_sync.kpi.compiler import Calendar, exact_sum, part_for
from crm_perf_sync.kpi.explain import ValueRef, check_ref, record_conditions
from crm_perf_sync.kpi.schemas import DurationKpi
from crm_perf_sync.org.schemas import Membership

#: The histogram's buckets in days, ``(first, last)``; the last has no upper bound. A bucket holds
#: the records with days above the previous bucket's last and at most its own (7.5 days: 8-14).
BUCKETS: tuple[tuple[int, int | None], ...] = (
    (0, 7),
    (8, 14),
    (15, 30),
    (31, 60),
    (61, 90),
    (91, 180),
    (181, 365),
    (366, None),
)


@dataclass(frozen=True, slots=True)
class CycleTimes:
    """The distribution of one cell's durations: a count per :data:`BUCKETS` entry and statistics."""

    counts: tuple[int, ...]
    records: int
    mean: float | None
    median: float | None
    p90: float | None


def ranks(records: int) -> tuple[tuple[int, ...], int]:
    """The 1-based ranks of the median (the middle one or two) and of the nearest-rank p90."""
    return tuple(sorted({(records + 1) // 2, (records + 2) // 2})), (records * 9 + 9) // 10


def cycle_times(
    conn: Connection | Session,
    kpi: DurationKpi,
    ref: ValueRef,
    calendar: Calendar,
    membership: Membership,
) -> CycleTimes:
    """The durations behind ``kpi``'s value for ``ref`` (its grain, period and scope)."""
    check_ref(ref, calendar.fiscal_start_month)
    part = part_for(kpi.measure, calendar, by_currency=False, kpi=kpi)
    assert part.value is not None
    where = record_conditions(part, ref, calendar, membership)
    durations = select(part.value.label("days")).where(*where).subquery("durations")
    days = durations.c.days

    records, total = conn.execute(select(func.count(), exact_sum(days)).select_from(durations)).one()
    if not records:
        return CycleTimes(tuple(0 for _ in BUCKETS), 0, None, None, None)

    bucket: Any = case(
        *((days <= last, n) for n, (_, last) in enumerate(BUCKETS) if last is not None),
        else_=len(BUCKETS) - 1,
    )
    bucketed = select(bucket.label("bucket")).select_from(durations).subquery("bucketed")
    counts = [0] * len(BUCKETS)
    for n, count in conn.execute(select(bucketed.c.bucket, func.count()).group_by(bucketed.c.bucket)):
        counts[int(n)] = int(count)

    middle, p90_rank = ranks(records)
    ranked = select(days.label("days"), func.row_number().over(order_by=days).label("rank")).subquery(
        "ranked"
    )
    picked = {
        int(rank): float(value)
        for rank, value in conn.execute(
            select(ranked.c.rank, ranked.c.days).where(ranked.c.rank.in_([*middle, p90_rank]))
        )
    }
    median = sum(picked[r] for r in middle) / len(middle)
    return CycleTimes(tuple(counts), int(records), float(total) / records, median, picked[p90_rank])
