"""APScheduler 3 setup: one job per enabled, scheduled connection.

Jobs coalesce missed runs and never overlap (``max_instances=1``); across processes a sync is
claimed through the database lease, so two workers never sync one connection at once. The
scheduler runs in the ``worker`` and ``serve`` roles only, never inside a web server's workers.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from crm_perf_sync.config import ConnectionConfig
from crm_perf_sync.errors import AppError
from crm_perf_sync.kpi.service import KpiService
from crm_perf_sync.runtime import Runtime
from crm_perf_sync.sync.service import SyncAlreadyRunning
from crm_perf_sync.timeutil import utc_now

log = logging.getLogger(__name__)


def _trigger(conn: ConnectionConfig, timezone: str) -> Any:
    assert conn.schedule is not None
    jitter = int(conn.schedule.jitter.total_seconds()) or None
    if conn.schedule.cron is not None:
        return CronTrigger.from_crontab(conn.schedule.cron, timezone=timezone)
    interval = conn.schedule.interval or timedelta(hours=1)
    return IntervalTrigger(seconds=int(interval.total_seconds()), jitter=jitter, timezone="UTC")


def run_scheduled_sync(runtime: Runtime, connection_id: str, stop: threading.Event) -> None:
    """The job body: one sync, every failure logged and recorded, nothing raised to APScheduler."""
    try:
        outcome = runtime.sync_service().sync(connection_id, trigger="schedule", should_stop=stop.is_set)
    except SyncAlreadyRunning as exc:
        log.info("scheduled sync skipped: %s", exc)
        return
    except AppError as exc:
        log.error("scheduled sync of %s could not start: %s", connection_id, exc)
        return
    except Exception:
        log.exception("scheduled sync of %s crashed", connection_id)
        return
    level = logging.INFO if outcome.status == "succeeded" else logging.WARNING
    log.log(
        level,
        "scheduled sync %s",
        outcome.summary(),
        extra={"connection": connection_id, "run_id": outcome.run_id},
    )
    changed = sum(outcome.total(name) for name in ("inserted", "updated", "deleted"))
    if changed:
        refresh_kpis(runtime, stop, reason=f"sync of {connection_id} changed {changed:,} records")


def refresh_kpis(runtime: Runtime, stop: threading.Event, *, reason: str) -> None:
    """Recompute the KPIs after new data landed; failures are logged, the next sync retries."""
    # A full refresh of a large store takes minutes: the lease outlives it.
    ttl = timedelta(seconds=max(runtime.settings.lease_ttl_seconds, 900))
    try:
        refreshed = KpiService(runtime.session_factory, runtime.config).refresh_exclusive(
            ttl=ttl, wait=ttl, should_stop=stop.is_set
        )
    except AppError as exc:
        log.error("KPI refresh (%s) failed: %s", reason, exc)
        return
    except Exception:
        log.exception("KPI refresh (%s) crashed", reason)
        return
    if refreshed is not None:
        log.info("KPI refresh (%s): %s", reason, refreshed.summary())


def build_scheduler(
    runtime: Runtime, stop: threading.Event, scheduler: BaseScheduler | None = None
) -> BaseScheduler:
    """A scheduler with one sync job per enabled, scheduled connection (not started)."""
    scheduler = scheduler or BackgroundScheduler(timezone="UTC")
    business_tz = runtime.config.app.business.timezone
    for conn in runtime.config.app.connections:
        if not conn.enabled or conn.schedule is None:
            continue
        # APScheduler reads an explicit next_run_time=None as "paused": only pass it to run at once.
        first_run: dict[str, Any] = {"next_run_time": utc_now()} if runtime.settings.run_on_start else {}
        scheduler.add_job(
            run_scheduled_sync,
            trigger=_trigger(conn, business_tz),
            args=(runtime, conn.id, stop),
            id=f"sync:{conn.id}",
            name=f"sync {conn.id}",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=300,
            replace_existing=True,
            **first_run,
        )
    return scheduler
