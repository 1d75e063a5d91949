"""What the push tests read back from the store: the company's won deals and the sync runs."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.models import KpiValue, SyncRun


def won_deals(factory: sessionmaker[Session]) -> float:
    """The company's won deals of all time, as stored (the API caches a value for a second)."""
    with session_scope(factory) as session:
        (value,) = session.execute(
            select(KpiValue.value).where(
                KpiValue.kpi_id == "won_deals",
                KpiValue.grain == "all",
                KpiValue.scope == "company",
                KpiValue.dimension == "",
            )
        ).one()
    assert value is not None
    return float(value)


def sync_runs(factory: sessionmaker[Session]) -> list[tuple[str, str]]:
    """Every sync run's trigger and status, in order."""
    with session_scope(factory) as session:
        rows = session.execute(select(SyncRun.trigger, SyncRun.status).order_by(SyncRun.id)).all()
    return [(row.trigger, row.status) for row in rows]
