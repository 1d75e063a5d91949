"""KPI refresh: compute every definition at every grain and scope, materialise atomically."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import LoadedConfig
from crm_perf_sync.db import session_scope
from crm_perf_sync.errors import Conflict, NotFound
from crm_perf_sync.kpi import periods
from crm_perf_sync.kpi import repository as repo
from crm_perf_sync.kpi.compiler import (
    SCOPES,
    Calendar,
    Membership,
    Part,
    Scope,
    aggregate_query,
    part_for,
    percentile_query,
)
from crm_perf_sync.kpi.schemas import GRAINS, CountKpi, DurationKpi, Grain, Kpi, RatioKpi, SumKpi
from crm_perf_sync.leases import new_holder_id, release, try_acquire
from crm_perf_sync.timeutil import utc_now

#: The database lease that makes one refresh run at a time across worker replicas.
REFRESH_LEASE = "kpi-refresh"

Key = tuple[int | None, str, str]  # (period month index or None for "all", scope id, currency)


@dataclass(slots=True)
class Totals:
    total: float = 0.0
    records: int = 0


@dataclass(slots=True)
class RefreshOutcome:
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        total = sum(self.rows.values())
        return f"refreshed {len(self.rows)} KPIs, {total:,} values in {self.seconds:.1f}s"


class KpiService:
    """Computes and stores KPI values. One instance per command or job."""

    def __init__(self, session_factory: sessionmaker[Session], config: LoadedConfig) -> None:
        self.session_factory = session_factory
        self.config = config
        self.kpis: Mapping[str, Kpi] = config.kpis

    def kpi(self, kpi_id: str) -> Kpi:
        found = self.kpis.get(kpi_id)
        if found is None:
            raise NotFound(f"no KPI {kpi_id!r} (defined: {', '.join(sorted(self.kpis)) or 'none'})")
        return found

    def _calendar(self, session: Session) -> Calendar:
        business = self.config.app.business
        return Calendar(session.get_bind().dialect.name, business.timezone, business.fiscal_year_start_month)

    def refresh(
        self, kpi_ids: Iterable[str] | None = None, grains: Iterable[Grain] = GRAINS
    ) -> RefreshOutcome:
        """Recompute the given KPIs (all by default); each KPI's values are swapped in one transaction."""
        started = time.monotonic()
        targets = [self.kpi(k) for k in kpi_ids] if kpi_ids is not None else list(self.kpis.values())
        grain_list = list(grains)
        outcome = RefreshOutcome(0.0)
        with session_scope(self.session_factory) as session:
            calendar = self._calendar(session)
            membership = repo.load_membership(session)
        engine = self.session_factory.kw["bind"]
        # One connection for the whole refresh: the membership table is temporary to it. Each KPI
        # is swapped in its own transaction, so readers never see a KPI half old, half new.
        with engine.connect() as conn:
            repo.load_membership_table(conn, membership)
            conn.commit()
            for kpi in targets:
                try:
                    rows = self.compute(conn, kpi, calendar, membership, grain_list)
                    repo.replace_values(conn, kpi.id, rows)
                    conn.commit()
                except BaseException:
                    conn.rollback()
                    raise
                outcome.rows[kpi.id] = len(rows)
            conn.exec_driver_sql("DROP TABLE IF EXISTS kpi_membership")
            conn.commit()
        outcome.seconds = time.monotonic() - started
        return outcome

    def refresh_exclusive(
        self,
        *,
        ttl: timedelta,
        wait: timedelta,
        should_stop: Callable[[], bool] = lambda: False,
        holder: str | None = None,
    ) -> RefreshOutcome | None:
        """Refresh under the cluster-wide refresh lease, waiting up to ``wait`` for another one.

        A refresh already running elsewhere may have started before this process's data landed,
        so this one waits for it and then runs, rather than skipping. ``None`` when stopped
        while waiting.
        """
        holder = holder or new_holder_id()
        deadline = time.monotonic() + wait.total_seconds()
        while True:
            with session_scope(self.session_factory) as session:
                held = try_acquire(session, REFRESH_LEASE, holder, ttl)
            if held is None:
                break
            if should_stop():
                return None
            if time.monotonic() >= deadline:
                raise Conflict(f"the KPI refresh lease is held by {held.holder}; try again later")
            time.sleep(0.5)
        try:
            return self.refresh()
        finally:
            with session_scope(self.session_factory) as session:
                release(session, REFRESH_LEASE, holder)

    # -- computation ------------------------------------------------------------------------------

    def compute(
        self, session: Connection, kpi: Kpi, calendar: Calendar, membership: Membership, grains: list[Grain]
    ) -> list[dict[str, Any]]:
        computed_at = utc_now()
        digest = kpi.definition_hash()
        out: list[dict[str, Any]] = []
        for grain in grains:
            for scope in SCOPES:
                if scope == "team" and not membership.rows:
                    continue
                for key, (value, numerator, denominator, sample) in self._values(
                    session, kpi, calendar, membership, grain, scope
                ).items():
                    period_index, scope_id, currency = key
                    if period_index is None:
                        period_key, start, end = "all", None, None
                    else:
                        start, end = periods.period_bounds(period_index, grain)
                        period_key = start.isoformat()
                    out.append(
                        {
                            "kpi_id": kpi.id,
                            "definition_hash": digest,
                            "grain": grain,
                            "period_key": period_key,
                            "period_start": start,
                            "period_end": end,
                            "scope": scope,
                            "scope_id": scope_id,
                            "currency": currency,
                            "value": value,
                            "numerator": numerator,
                            "denominator": denominator,
                            "sample_count": sample,
                            "low_sample": sample < kpi.min_sample,
                            "computed_at": computed_at,
                        }
                    )
        return out

    def _totals(
        self,
        session: Connection,
        part: Part,
        calendar: Calendar,
        membership: Membership,
        grain: Grain,
        scope: Scope,
    ) -> dict[Key, Totals]:
        stmt = aggregate_query(part, calendar, grain, scope, membership)
        result: dict[Key, Totals] = {}
        for row in session.execute(stmt):
            key = (None if row.period == -1 else int(row.period), str(row.scope_id), str(row.currency))
            result[key] = Totals(float(row.total or 0), int(row.records))
        return result

    def _values(
        self,
        session: Connection,
        kpi: Kpi,
        calendar: Calendar,
        membership: Membership,
        grain: Grain,
        scope: Scope,
    ) -> dict[Key, tuple[float | None, float, float | None, int]]:
        values: dict[Key, tuple[float | None, float, float | None, int]] = {}
        if isinstance(kpi, CountKpi | SumKpi):
            part = part_for(kpi.measure, calendar, by_currency=kpi.measure.is_money)
            for key, t in self._totals(session, part, calendar, membership, grain, scope).items():
                values[key] = (t.total, t.total, None, t.records)
        elif isinstance(kpi, RatioKpi):
            by_currency = kpi.numerator.is_money
            num = self._totals(
                session,
                part_for(kpi.numerator, calendar, by_currency=by_currency),
                calendar,
                membership,
                grain,
                scope,
            )
            den = self._totals(
                session,
                part_for(kpi.denominator, calendar, by_currency=by_currency),
                calendar,
                membership,
                grain,
                scope,
            )
            for key in num.keys() | den.keys():
                n, d = num.get(key, Totals()), den.get(key, Totals())
                value = n.total / d.total * kpi.scale if d.total else None
                values[key] = (value, n.total, d.total, d.records)
        elif isinstance(kpi, DurationKpi):
            part = part_for(kpi.measure, calendar, by_currency=False, kpi=kpi)
            totals = self._totals(session, part, calendar, membership, grain, scope)
            stats: dict[Key, float] = {}
            if kpi.stat != "mean":
                stmt = percentile_query(part, calendar, grain, scope, membership, kpi.stat)
                for row in session.execute(stmt):
                    key = (
                        None if row.period == -1 else int(row.period),
                        str(row.scope_id),
                        str(row.currency),
                    )
                    stats[key] = float(row.value)
            for key, t in totals.items():
                value = (t.total / t.records if t.records else None) if kpi.stat == "mean" else stats.get(key)
                values[key] = (value, t.total, float(t.records), t.records)
        return values
