"""The KPI refresh job: one transaction, under the cluster-wide refresh lease, then the alerts.

The job opens one connection (one snapshot of the store on PostgreSQL), lets the KPI service
bring values, targets and scores up to date, evaluates the alert rules in a savepoint of the same
transaction (their events go to the webhook outbox with the values that raised them), records
the refresh run and commits once: readers never see half a refresh, and an alert is never
announced for values that were rolled back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.alerts import service as alerts
from crm_perf_sync.alerts.service import Evaluation
from crm_perf_sync.config import LoadedConfig
from crm_perf_sync.incentives import events as incentive_events
from crm_perf_sync.incentives.service import IncentiveService, PlanOutcome
from crm_perf_sync.jobs.incentives import ClosedPeriod, close_period
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.doorbell import OUTBOX
from crm_perf_sync.kit.errors import Conflict
from crm_perf_sync.kit.metrics import REFRESH_DURATION
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.kpi import repository as kpi_repo
from crm_perf_sync.kpi.schemas import GRAINS, Grain
from crm_perf_sync.kpi.service import KpiService, RefreshOutcome
from crm_perf_sync.leases import new_holder_id, released_after, try_acquire
from crm_perf_sync.org import repository as org_repo

log = logging.getLogger(__name__)

#: The database lease that makes one refresh run at a time across worker replicas.
REFRESH_LEASE = "kpi-refresh"


@dataclass(slots=True)
class Refreshed(RefreshOutcome):
    """A refresh's outcome and the alert evaluation that ended it."""

    alerts: Evaluation | None = None
    #: The incentive plans whose payouts were recomputed, and how many lines each wrote.
    incentives: dict[str, PlanOutcome] = field(default_factory=dict)
    #: The webhook-ids of the incentive events the recomputed payouts caused.
    incentive_events: list[str] = field(default_factory=list)

    def summary_tail(self) -> str:
        events = len(self.alerts.events) if self.alerts is not None else 0
        text = f", {events} alert event{'' if events == 1 else 's'}" if events else ""
        lines = sum(plan.lines + plan.adjustments for plan in self.incentives.values())
        if self.incentives:
            text += f", {lines} payout line{'' if lines == 1 else 's'} of {len(self.incentives)} plan"
            text += "" if len(self.incentives) == 1 else "s"
        return text + f" in {self.seconds:.1f}s"


class RefreshJob:
    """Refreshes the KPIs of one store and configuration. One instance per command or job."""

    def __init__(self, session_factory: sessionmaker[Session], config: LoadedConfig) -> None:
        self.session_factory = session_factory
        self.config = config
        self.service = KpiService(config.kpi_config())
        self.incentives = IncentiveService(self.service, config.app.incentives.plans)

    @property
    def engine(self) -> Engine:
        bind = self.session_factory.kw["bind"]
        assert isinstance(bind, Engine)
        return bind

    def refresh(
        self,
        kpi_ids: Iterable[str] | None = None,
        grains: Iterable[Grain] = GRAINS,
        *,
        full: bool = False,
        wait_for_first_loads: bool = False,
    ) -> Refreshed:
        """Bring every KPI, target and scorecard up to date, then evaluate the alerts; one commit.

        See :meth:`KpiService.refresh` for what is recomputed and what is updated by changes.
        A failed refresh is rolled back and recorded as a failed run.
        """
        started = time.monotonic()
        started_at = utc_now()
        outcome = Refreshed()
        now = utc_now()
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # One snapshot for the change log and the data it describes.
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            try:
                self.service.refresh(
                    conn,
                    outcome,
                    kpi_ids,
                    grains,
                    now=now,
                    full=full,
                    wait_for_first_loads=wait_for_first_loads,
                )
                if outcome.waiting_for:
                    conn.rollback()
                    outcome.seconds = time.monotonic() - started
                    return outcome
                incentives_started = time.monotonic()
                changed = bool(outcome.recomputed or outcome.scorecards) or any(outcome.rows.values())
                incentives = self.incentives.in_store(conn)
                plans = incentives.plans
                # The teams the KPIs were computed with, for the plans, their payouts and events.
                membership = outcome.membership or (org_repo.load_membership(conn) if plans else None)
                work = incentives.pending(
                    conn, now, changed=changed, full=full, kpis=outcome, membership=membership
                )
                # The tiers and adjustments as stored, before the payouts are recomputed.
                seen = incentive_events.before(conn, plans, work)
                outcome.incentives = incentives.refresh(conn, now, work, membership)
                if work:
                    outcome.incentive_events = incentive_events.announce(
                        conn, plans, seen, outcome.incentives, now, membership
                    )
                outcome.timings["incentives"] = time.monotonic() - incentives_started
                self._evaluate_alerts(conn, now, outcome)
                kind = "full" if full or set(outcome.recomputed) == set(self.service.kpis) else "changes"
                REFRESH_DURATION.labels(kind).observe(time.monotonic() - started)
                kpi_repo.record_refresh_run(
                    conn,
                    started_at=started_at,
                    finished_at=utc_now(),
                    duration_seconds=time.monotonic() - started,
                    kind=kind,
                    status="succeeded",
                    values_written=sum(outcome.rows.values()),
                    recomputed=outcome.recomputed,
                    updated=outcome.updated,
                )
                conn.commit()
                if (outcome.alerts is not None and outcome.alerts.events) or outcome.incentive_events:
                    OUTBOX.wake()  # this process's delivery loop (others were rung by the commit)
            except BaseException as exc:
                conn.rollback()
                if isinstance(exc, Exception):
                    self._record_failure(conn, started, started_at, full, exc)
                raise
            finally:
                kpi_repo.drop_temporary_tables(conn)
                conn.commit()
        outcome.seconds = time.monotonic() - started
        return outcome

    def _record_failure(
        self, conn: Connection, started: float, started_at: datetime, full: bool, exc: Exception
    ) -> None:
        try:
            kpi_repo.record_refresh_run(
                conn,
                started_at=started_at,
                finished_at=utc_now(),
                duration_seconds=time.monotonic() - started,
                kind="full" if full else "changes",
                status="failed",
                values_written=0,
                recomputed=[],
                updated=[],
                error=f"{type(exc).__name__}: {exc}"[:4000],
            )
            conn.commit()
        except Exception:  # the database itself may be what failed
            conn.rollback()
            log.warning("could not record the failed KPI refresh", exc_info=True)

    def _evaluate_alerts(self, conn: Connection, now: datetime, outcome: Refreshed) -> None:
        """Alert rules and score publications, in the refresh's transaction (a savepoint: a
        failing evaluation is logged and retried at the next one, it does not undo the refresh)."""
        # Even with no rule left: the alerts of removed rules are resolved by an evaluation.
        started = time.monotonic()
        try:
            with conn.begin_nested():
                outcome.alerts = alerts.evaluate(
                    conn, self.config.app.alerts.rules, self.service.config, now, self.incentives.plans
                )
        except Exception:
            log.exception("evaluating the alert rules failed; the next evaluation tries again")
        outcome.timings["alerts"] = time.monotonic() - started

    def evaluate_alerts(self) -> Evaluation:
        """Evaluate the alert rules on their own (no refresh), in one transaction.

        For periods that roll over with no new data (a new month begins). Run it under the
        refresh lease (:meth:`evaluate_alerts_exclusive`) so it never interleaves with a refresh.
        """
        with self.engine.begin() as conn:
            return alerts.evaluate(
                conn, self.config.app.alerts.rules, self.service.config, utc_now(), self.incentives.plans
            )

    def evaluate_alerts_exclusive(self, *, ttl: timedelta, holder: str | None = None) -> Evaluation | None:
        """:meth:`evaluate_alerts` under the refresh lease; ``None`` if a refresh holds it (that
        refresh evaluates them)."""
        holder = holder or new_holder_id()
        with session_scope(self.session_factory) as session:
            if try_acquire(session, REFRESH_LEASE, holder, ttl) is not None:
                return None
        with released_after(self.session_factory, REFRESH_LEASE, holder):
            return self.evaluate_alerts()

    def close_incentive_period(
        self, plan_id: str, period_key: str, closed_by: str, *, ttl: timedelta, holder: str | None = None
    ) -> ClosedPeriod:
        """Close a plan's period and write its events in one transaction, under the refresh lease
        (a refresh recomputing the plan meanwhile would write lines the close does not see)."""
        holder = holder or new_holder_id()
        with session_scope(self.session_factory) as session:
            held = try_acquire(session, REFRESH_LEASE, holder, ttl)
        if held is not None:
            raise Conflict(f"the KPI refresh lease is held by {held.holder}; try again later")
        with released_after(self.session_factory, REFRESH_LEASE, holder), self.engine.begin() as conn:
            return close_period(
                conn, self.incentives.in_store(conn), plan_id, period_key, closed_by, utc_now()
            )

    def refresh_exclusive(
        self,
        *,
        ttl: timedelta,
        wait: timedelta,
        should_stop: Callable[[], bool] = lambda: False,
        holder: str | None = None,
        kpi_ids: Iterable[str] | None = None,
        full: bool = False,
        wait_for_first_loads: bool = False,
    ) -> Refreshed | None:
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
        with released_after(self.session_factory, REFRESH_LEASE, holder):
            return self.refresh(kpi_ids, full=full, wait_for_first_loads=wait_for_first_loads)
