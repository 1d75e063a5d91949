"""All SQL of scorecards: the owner values a card scores, the stored scores and their pages.

The scoring itself is :mod:`crm_perf_sync.kpi.scoring` and :mod:`crm_perf_sync.kpi.scorecards`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select
from sqlalchemy.orm import Session

from crm_perf_sync.kit.bulk import bulk_insert
from crm_perf_sync.kit.paging import expect
from crm_perf_sync.kpi.scorecards import Observed
from crm_perf_sync.models import KpiValue, ScorecardState, ScorecardValue
from crm_perf_sync.org.repository import team_owners


def scores(
    session: Session,
    scorecard_id: str,
    *,
    grain: str | None = None,
    period_key: str | None = None,
    scope_id: str | None = None,
) -> list[ScorecardValue]:
    """Stored scores, per period best first (unscored reps last)."""
    stmt = select(ScorecardValue).where(ScorecardValue.scorecard_id == scorecard_id)
    if grain is not None:
        stmt = stmt.where(ScorecardValue.grain == grain)
    if period_key is not None:
        stmt = stmt.where(ScorecardValue.period_key == period_key)
    if scope_id is not None:
        stmt = stmt.where(ScorecardValue.scope_id == scope_id)
    stmt = stmt.order_by(
        ScorecardValue.grain,
        ScorecardValue.period_key,
        ScorecardValue.rank.is_(None),
        ScorecardValue.rank,
        ScorecardValue.scope_id,
    )
    return list(session.scalars(stmt))


def mark_scores_changed(conn: Connection, scorecard_id: str, now: datetime) -> None:
    conn.execute(delete(ScorecardState).where(ScorecardState.scorecard_id == scorecard_id))
    conn.execute(insert(ScorecardState).values(scorecard_id=scorecard_id, changed_at=now))


def scores_version(session: Session | Connection, scorecard_id: str) -> datetime | None:
    stmt = select(ScorecardState.changed_at).where(ScorecardState.scorecard_id == scorecard_id)
    return session.execute(stmt).scalar_one_or_none()


def owner_values(
    session: Session | Connection, kpi_ids: Sequence[str], grain: str, period_keys: set[str] | None = None
) -> tuple[dict[str, dict[str, dict[str, list[Observed]]]], dict[str, tuple[date, date]]]:
    """``{period_key: {owner scope id: {kpi id: [values per currency]}}}`` and period bounds
    (``period_keys``: of these periods only)."""
    observed: dict[str, dict[str, dict[str, list[Observed]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    bounds: dict[str, tuple[date, date]] = {}
    rows = session.execute(
        select(
            KpiValue.kpi_id,
            KpiValue.period_key,
            KpiValue.period_start,
            KpiValue.period_end,
            KpiValue.scope_id,
            KpiValue.currency,
            KpiValue.value,
            KpiValue.target,
            KpiValue.sample_count,
        ).where(
            KpiValue.kpi_id.in_(kpi_ids),
            KpiValue.grain == grain,
            KpiValue.scope == "owner",
            KpiValue.dimension == "",
            *([] if period_keys is None else [KpiValue.period_key.in_(sorted(period_keys))]),
        )
    )
    for row in rows:
        assert row.period_start is not None
        assert row.period_end is not None
        bounds[row.period_key] = (row.period_start, row.period_end)
        observed[row.period_key][row.scope_id][row.kpi_id].append(
            Observed(row.value, row.target, row.sample_count, row.currency)
        )
    return observed, bounds


def replace_scores(
    conn: Connection,
    scorecard_id: str,
    rows: Sequence[dict[str, Any]],
    only: set[tuple[str, str]] | None = None,
) -> None:
    """Swap a scorecard's scores (``only``: those of these (grain, period key)) for ``rows``."""
    if only is None:
        conn.execute(delete(ScorecardValue).where(ScorecardValue.scorecard_id == scorecard_id))
    else:
        by_grain: dict[str, list[str]] = defaultdict(list)
        for grain, key in only:
            by_grain[grain].append(key)
        for grain, keys in by_grain.items():
            conn.execute(
                delete(ScorecardValue).where(
                    ScorecardValue.scorecard_id == scorecard_id,
                    ScorecardValue.grain == grain,
                    ScorecardValue.period_key.in_(sorted(keys)),
                )
            )
    bulk_insert(conn, ScorecardValue.__table__, rows)  # type: ignore[arg-type]


def score_hashes(conn: Connection, scorecard_id: str) -> set[str]:
    """The definition hashes a scorecard's stored scores were computed with."""
    stmt = (
        select(ScorecardValue.definition_hash).where(ScorecardValue.scorecard_id == scorecard_id).distinct()
    )
    return set(conn.execute(stmt).scalars())


def scores_page(
    session: Session,
    scorecard_id: str,
    *,
    grain: str | None,
    period_key: str | None,
    scope_id: str | None,
    team: str | None,
    after: Any,
    limit: int,
) -> tuple[list[ScorecardValue], Any]:
    """Scores best first within each period (unranked reps last), keyed by their row id."""
    stmt = select(ScorecardValue).where(ScorecardValue.scorecard_id == scorecard_id)
    if grain is not None:
        stmt = stmt.where(ScorecardValue.grain == grain)
    if period_key is not None:
        stmt = stmt.where(ScorecardValue.period_key == period_key)
    if scope_id is not None:
        stmt = stmt.where(ScorecardValue.scope_id == scope_id)
    if team is not None:
        stmt = stmt.where(ScorecardValue.scope_id.in_(team_owners(session, team)))
    # The rank order, made a total order (and a keyset) by appending the row id.
    rank = func.coalesce(ScorecardValue.rank, 1_000_000_000)
    order = (ScorecardValue.grain, ScorecardValue.period_key, rank, ScorecardValue.id)
    if after is not None:
        shape = [str, str, int, int]
        if not (isinstance(after, list) and len(after) == 4 and all(map(isinstance, after, shape))):
            expect(after, tuple)  # not a position this query writes: a 400
        g, p, r, i = after
        stmt = stmt.where(
            or_(
                ScorecardValue.grain > g,
                and_(ScorecardValue.grain == g, ScorecardValue.period_key > p),
                and_(ScorecardValue.grain == g, ScorecardValue.period_key == p, rank > r),
                and_(
                    ScorecardValue.grain == g,
                    ScorecardValue.period_key == p,
                    rank == r,
                    ScorecardValue.id > i,
                ),
            )
        )
    found = list(session.scalars(stmt.order_by(*order).limit(limit + 1)))
    more = len(found) > limit
    found = found[:limit]
    if not more:
        return found, None
    last = found[-1]
    return found, [
        last.grain,
        last.period_key,
        last.rank if last.rank is not None else 1_000_000_000,
        last.id,
    ]


def latest_period(session: Session, scorecard_id: str, grain: str) -> str | None:
    stmt = select(func.max(ScorecardValue.period_key)).where(
        ScorecardValue.scorecard_id == scorecard_id, ScorecardValue.grain == grain
    )
    found: str | None = session.execute(stmt).scalar_one_or_none()
    return found


def period_keys(session: Session, scorecard_id: str, grain: str) -> list[str]:
    """The periods of ``grain`` a scorecard has scores for, newest first."""
    stmt = (
        select(ScorecardValue.period_key)
        .where(ScorecardValue.scorecard_id == scorecard_id, ScorecardValue.grain == grain)
        .distinct()
        .order_by(ScorecardValue.period_key.desc())
    )
    return list(session.scalars(stmt))
