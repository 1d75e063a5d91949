"""APScheduler 3 setup: one job per enabled, scheduled connection, and the worker's own jobs.

Jobs coalesce missed runs and never overlap (``max_instances=1``); across processes a sync is
claimed through the database lease, so two workers never sync one connection at once. Besides the
scheduled syncs, every worker carries out the syncs queued through the API (``queued-syncs``) and
refreshes the KPIs whenever they are not up to date (``kpi-refresh``: after a sync run elsewhere,
a target set through the API, a changed definition). Beside the scheduler, in threads of their
own, the webhook deliveries and the push inbox (:func:`start_inbox`: what the CRMs pushed,
fetched by targeted syncs). A connection whose CRM cannot push but is watched (``watch:<id>``,
:func:`run_watch`) is asked for its latest change every few seconds and synced at once when
there is a new one. All of it runs in the ``worker`` and ``serve`` roles only, never
inside a web server's workers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from crm_perf_sync.config import ConnectionConfig
from crm_perf_sync.connector_sdk import Connector, Watchable
from crm_perf_sync.incentives.service import IncentiveService
from crm_perf_sync.jobs.ingest import Backoff, InboxRun, observe_lag, process_inbox
from crm_perf_sync.jobs.refresh import RefreshJob
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.doorbell import INBOX, Listener
from crm_perf_sync.kit.errors import AppError
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.kpi.service import KpiService
from crm_perf_sync.leases import new_holder_id, try_acquire
from crm_perf_sync.runtime import Runtime
from crm_perf_sync.sync.errors import SyncAlreadyRunning

log = logging.getLogger(__name__)

#: How often a worker looks for syncs queued through the API.
QUEUE_POLL_SECONDS = 5
#: How often a worker checks that the KPIs are up to date (a refresh runs only when they are not).
REFRESH_CHECK_SECONDS = 60
#: How often a worker looks for changes pushed by the CRMs while none wait (a cheap query).
INBOX_POLL_SECONDS = 0.5
#: The longest a turn waits for pushes this process is storing (see ``Doorbell.settled``).
INBOX_SETTLE_SECONDS = 0.25
#: How long a pushed change is remembered once done (to drop the CRM's late retries of it), and
#: how often the inbox is purged of older ones.
INBOX_RETENTION = timedelta(days=7)
INBOX_PURGE_EVERY = timedelta(hours=1)


def _trigger(conn: ConnectionConfig, timezone: str) -> Any:
    assert conn.schedule is not None
    jitter = int(conn.schedule.jitter.total_seconds()) or None
    if conn.schedule.cron is not None:
        # CronTrigger.from_crontab takes no jitter: the same five fields, spelled out.
        minute, hour, day, month, day_of_week = conn.schedule.cron.split()
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=day_of_week,
            timezone=timezone,
            jitter=jitter,
        )
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


@dataclass
class Watch:
    """What this process knows of a watched connection (:class:`Watchable`): its connector (kept,
    so its session and what it learnt of the API budget last), the latest change it saw once
    synced (``synced``: a look has synced at all), and when it last asked."""

    connection_id: str
    connector: Watchable  # a Connector too (checked by watches())
    holder: str = field(default_factory=new_holder_id)
    seen: datetime | None = None
    synced: bool = False
    asked: float | None = None

    def close(self) -> None:
        if isinstance(self.connector, Connector):
            self.connector.close()


def run_watch(
    runtime: Runtime, watch: Watch, stop: threading.Event, *, clock: Callable[[], float] = time.monotonic
) -> bool:
    """One look at a watched connection: its CRM's latest change, and at once its sync when that
    is newer than the last one seen (the first look syncs too: nothing was seen before it).
    Returns whether it synced. Across replicas one process looks (the ``watch:<id>`` lease, held
    for three intervals); a look waits longer than the job's interval when the connector says the
    API budget wants it."""
    interval = watch.connector.watch_interval()
    if interval is None or stop.is_set():
        return False
    if watch.asked is not None and clock() - watch.asked < interval.total_seconds() * 0.95:
        return False
    with session_scope(runtime.session_factory) as session:
        held = try_acquire(session, f"watch:{watch.connection_id}", watch.holder, interval * 3)
    if held is not None:
        return False  # another replica looks
    watch.asked = clock()
    try:
        latest = watch.connector.latest_change()
    except Exception as exc:  # a connector fails in its own ways; the schedule still reads everything
        log.warning("watching %s: could not ask for the latest change: %s", watch.connection_id, exc)
        return False
    if watch.synced and (latest is None or (watch.seen is not None and latest <= watch.seen)):
        return False
    log.info(
        "watching %s: a change at %s (last seen %s): syncing",
        watch.connection_id,
        latest.isoformat() if latest else "none",
        watch.seen.isoformat() if watch.seen else "none",
    )
    try:
        service = runtime.sync_service()
        connector = service.build_connector(watch.connection_id)
        if isinstance(connector, Watchable) and latest is not None:
            connector.follow(latest)
        outcome = service.sync(
            watch.connection_id, trigger="watch", should_stop=stop.is_set, connector=connector
        )
    except SyncAlreadyRunning as exc:
        log.info("watching %s: %s; the change is read by that sync", watch.connection_id, exc)
        watch.seen, watch.synced = latest, True
        return False
    except AppError as exc:
        log.error("watching %s: the sync could not start: %s", watch.connection_id, exc)
        return False
    if outcome.status == "succeeded":
        # Seen only once stored: after a failed sync the next look syncs again.
        watch.seen, watch.synced = latest, True
    changed = sum(outcome.total(name) for name in ("inserted", "updated", "deleted"))
    if changed:
        refresh_kpis(runtime, stop, reason=f"a watched change of {watch.connection_id}: {changed:,} records")
    return True


def watches(runtime: Runtime) -> list[Watch]:
    """The enabled connections whose connector is watched (:class:`Watchable` with an interval)."""
    found = []
    for conn in runtime.config.app.connections:
        if not conn.enabled:
            continue
        try:
            connector = runtime.sync_service().build_connector(conn.id)
        except AppError as exc:
            log.error("connection %s cannot be watched: %s", conn.id, exc)
            continue
        if isinstance(connector, Watchable) and connector.watch_interval() is not None:
            found.append(Watch(conn.id, connector))
        else:
            connector.close()
    return found


def run_queued_syncs(runtime: Runtime, stop: threading.Event) -> None:
    """Carry out the syncs queued through the API (one claimant per run, across replicas)."""
    from crm_perf_sync.kit.db import session_scope
    from crm_perf_sync.sync import repository as sync_repo

    with session_scope(runtime.session_factory) as session:
        queued = sync_repo.queued_runs(session)
    changed_total = 0
    for queued_run in queued:
        run_id, connection_id = queued_run.run_id, queued_run.connection_id
        if stop.is_set():
            return
        try:
            outcome = runtime.sync_service().sync(
                connection_id,
                trigger="api",
                full_refresh=queued_run.full_refresh,
                should_stop=stop.is_set,
                queued_run=run_id,
                allow_mass_delete=queued_run.allow_mass_delete,
            )
        except SyncAlreadyRunning as exc:
            log.info("queued sync %d waits: %s", run_id, exc)
            continue
        except AppError as exc:
            log.error("queued sync %d of %s cannot run: %s", run_id, connection_id, exc)
            with session_scope(runtime.session_factory) as session:
                sync_repo.fail_queued_run(session, run_id, str(exc), utc_now())
            continue
        except Exception:
            log.exception("queued sync %d of %s crashed", run_id, connection_id)
            continue
        log.info("queued sync %s", outcome.summary(), extra={"connection": connection_id, "run_id": run_id})
        changed_total += sum(outcome.total(name) for name in ("inserted", "updated", "deleted"))
    if changed_total:
        refresh_kpis(runtime, stop, reason=f"queued syncs changed {changed_total:,} records")


def run_inbox(runtime: Runtime, stop: threading.Event, backoff: Backoff | None = None) -> bool:
    """Fetch what the CRMs pushed (a targeted sync per connection with changes waiting), then
    refresh the KPIs, alerts, payouts and webhooks they touch; whether any change was fetched.
    With ``backoff``, a connection whose last fetch failed waits its turn (see :class:`Backoff`)."""
    from crm_perf_sync.ingest import repository as ingest_repo
    from crm_perf_sync.kit.db import session_scope

    try:
        with session_scope(runtime.session_factory) as session:
            connections = ingest_repo.waiting_connections(session)
    except Exception:
        log.exception("reading the push inbox failed")
        return False
    runs: list[InboxRun] = []
    for connection_id in connections:
        conn = runtime.config.app.connection(connection_id)
        if stop.is_set() or conn is None or not conn.enabled:
            continue  # (a connection no longer configured keeps its inbox as it is)
        if backoff is not None and not backoff.due(connection_id):
            continue
        try:
            run = process_inbox(
                runtime.sync_service(), runtime.session_factory, connection_id, should_stop=stop.is_set
            )
        except AppError as exc:
            log.error("pushed changes of %s cannot be fetched: %s", connection_id, exc)
            continue
        except Exception:
            log.exception("fetching the pushed changes of %s crashed", connection_id)
            continue
        if run is not None:
            log.log(
                logging.INFO if run.outcome.status == "succeeded" else logging.WARNING,
                "%d pushed changes of %s: %s",
                run.changes,
                connection_id,
                run.outcome.summary(),
                extra={"connection": connection_id, "run_id": run.outcome.run_id},
            )
            runs.append(run)
            if backoff is not None and run.outcome.status in ("succeeded", "failed"):
                backoff.record(connection_id, run.outcome.status == "succeeded")
    changed = sum(run.changed for run in runs)
    if changed:
        refresh_kpis(runtime, stop, reason=f"pushes changed {changed:,} records")
    observe_lag(runs, utc_now())
    return any(run.outcome.status == "succeeded" for run in runs)


def refresh_if_needed(runtime: Runtime, stop: threading.Event) -> None:
    """Refresh the KPIs when they are not up to date with the store, the targets and the config."""
    from crm_perf_sync.kit.db import session_scope

    try:
        with session_scope(runtime.session_factory) as session:
            kpis = KpiService(runtime.config.kpi_config())
            reason = kpis.refresh_reason(session)
            if reason is None:
                plans = IncentiveService(kpis, runtime.config.app.incentives.plans).in_store(session)
                reason = plans.stale_reason(session, utc_now())
    except Exception:
        log.exception("checking whether the KPIs are up to date failed")
        return
    if reason is not None:
        refresh_kpis(runtime, stop, reason=reason)  # which evaluates the alerts too
        return
    # Nothing new, but a period may have begun since the last evaluation.
    try:
        RefreshJob(runtime.session_factory, runtime.config).evaluate_alerts_exclusive(
            ttl=runtime.settings.refresh_lease_ttl
        )
    except Exception:
        log.exception("evaluating the alert rules failed")


def start_inbox(runtime: Runtime, stop: threading.Event) -> threading.Thread:
    """The push inbox loop (:func:`run_inbox`), in a thread of its own until ``stop`` is set: a
    turn at once when the ingest endpoint rings (:data:`~crm_perf_sync.kit.doorbell.INBOX`), every
    :data:`INBOX_POLL_SECONDS` while nothing rings, at once after a turn that fetched something.
    (Not a scheduler job: a turn may outlast many intervals, a refresh included.)"""

    def run() -> None:
        purged_at = utc_now() - INBOX_PURGE_EVERY
        backoff = Backoff()
        with INBOX.listener(runtime.engine) as listener:
            loop(purged_at, backoff, listener)

    def loop(purged_at: datetime, backoff: Backoff, listener: Listener) -> None:
        while not stop.is_set():
            # The pushes stored meanwhile by this process's API (serve) go in this turn, not the next.
            INBOX.settled(INBOX_SETTLE_SECONDS)
            try:
                busy = run_inbox(runtime, stop, backoff)
                if utc_now() - purged_at >= INBOX_PURGE_EVERY:
                    purged_at = utc_now()
                    purge_inbox(runtime, purged_at - INBOX_RETENTION)
            except Exception:  # run_inbox logs what it can; the loop must outlive anything
                log.exception("a turn of the push inbox crashed")
                busy = False
            if not busy and not stop.is_set():
                listener.wait(INBOX_POLL_SECONDS)

    thread = threading.Thread(target=run, name="push-inbox", daemon=True)
    thread.start()
    return thread


def purge_inbox(runtime: Runtime, before: datetime) -> int:
    """Forget the pushed changes done before ``before``; returns how many."""
    from crm_perf_sync.ingest import repository as ingest_repo
    from crm_perf_sync.kit.db import session_scope

    with session_scope(runtime.session_factory) as session:
        purged = ingest_repo.purge_done(session, before)
    if purged:
        log.info("push inbox: forgot %d changes done before %s", purged, before.isoformat())
    return purged


def start_delivery(runtime: Runtime, stop: threading.Event, holder: str) -> threading.Thread:
    """The webhook delivery loop, in a thread of its own until ``stop`` is set."""

    def run() -> None:
        deliverer = runtime.deliverer(holder)
        try:
            deliverer.run(stop)
        finally:
            deliverer.close()

    thread = threading.Thread(target=run, name="webhook-delivery", daemon=True)
    thread.start()
    return thread


def refresh_kpis(runtime: Runtime, stop: threading.Event, *, reason: str) -> None:
    """Recompute the KPIs after new data landed; failures are logged, the next sync retries.

    Not while a connection is on its first load: its half-synced records would make every number
    (and alert) about half a CRM. That load's own end triggers the refresh.
    """
    ttl = runtime.settings.refresh_lease_ttl
    try:
        refreshed = RefreshJob(runtime.session_factory, runtime.config).refresh_exclusive(
            ttl=ttl, wait=ttl, should_stop=stop.is_set, wait_for_first_loads=True
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
    """A scheduler with one sync job per enabled, scheduled connection and the worker's own jobs
    (not started)."""
    scheduler = scheduler or BackgroundScheduler(timezone="UTC")
    scheduler.add_job(
        run_queued_syncs,
        trigger=IntervalTrigger(seconds=QUEUE_POLL_SECONDS, timezone="UTC"),
        args=(runtime, stop),
        id="queued-syncs",
        name="queued syncs",
        coalesce=True,
        max_instances=1,
        replace_existing=True,
    )
    scheduler.add_job(
        refresh_if_needed,
        trigger=IntervalTrigger(seconds=REFRESH_CHECK_SECONDS, timezone="UTC"),
        args=(runtime, stop),
        id="kpi-refresh",
        name="KPI refresh when out of date",
        coalesce=True,
        max_instances=1,
        replace_existing=True,
        **({"next_run_time": utc_now()} if runtime.settings.run_on_start else {}),
    )
    for watch in watches(runtime):
        interval = watch.connector.watch_interval()
        assert interval is not None
        scheduler.add_job(
            run_watch,
            trigger=IntervalTrigger(seconds=max(1, int(interval.total_seconds())), timezone="UTC"),
            args=(runtime, watch, stop),
            id=f"watch:{watch.connection_id}",
            name=f"watch {watch.connection_id}",
            coalesce=True,
            max_instances=1,
            replace_existing=True,
        )
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
