"""Store-wide Prometheus metrics: read from the database at scrape time, so every replica reports
the same numbers — sync runs and records, last successful sync and lag, KPI refreshes, alert
transitions and firing alerts, webhook deliveries by status. (This process's own metrics are
:data:`crm_perf_sync.kit.metrics.PROCESS`.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.metrics import ProcessCollector
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.ops import repository as repo

log = logging.getLogger(__name__)


class StoreCollector(Collector):
    """What the store says: read at scrape time, the same on every replica."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def collect(self) -> Iterator[Any]:
        runs = CounterMetricFamily(
            "crm_perf_sync_sync_runs",
            "Sync runs by connection and how they ended (abandoned: its worker died and the run "
            "was taken over)",
            labels=["connection", "status"],
        )
        records = CounterMetricFamily(
            "crm_perf_sync_records_synced",
            "Records synced, by connection and what the sync did with them",
            labels=["connection", "action"],
        )
        last_success = GaugeMetricFamily(
            "crm_perf_sync_last_successful_sync_timestamp_seconds",
            "When each connection last synced successfully (Unix time)",
            labels=["connection"],
        )
        lag = GaugeMetricFamily(
            "crm_perf_sync_sync_lag_seconds",
            "Seconds since each connection last synced successfully",
            labels=["connection"],
        )
        refresh_seconds = GaugeMetricFamily(
            "crm_perf_sync_kpi_refresh_last_duration_seconds",
            "How long the last successful KPI refresh took, by kind (full or changes)",
            labels=["kind"],
        )
        refreshes = CounterMetricFamily(
            "crm_perf_sync_kpi_refreshes",
            "KPI refreshes by kind and how they ended",
            labels=["kind", "status"],
        )
        pending = GaugeMetricFamily(
            "crm_perf_sync_kpi_pending_batches", "Sync batches waiting in the change log for a KPI refresh"
        )
        transitions = CounterMetricFamily(
            "crm_perf_sync_alert_transitions",
            "Alert state transitions, by rule and the state entered",
            labels=["rule", "state"],
        )
        firing = GaugeMetricFamily(
            "crm_perf_sync_alerts_firing", "Scopes each alert rule is firing for", labels=["rule"]
        )
        deliveries = GaugeMetricFamily(
            "crm_perf_sync_webhook_deliveries",
            "Webhook deliveries by status (pending: due or waiting for a retry)",
            labels=["status"],
        )
        oldest_pending = GaugeMetricFamily(
            "crm_perf_sync_webhook_oldest_pending_age_seconds",
            "Age of the oldest webhook delivery not yet delivered (0 when none waits)",
        )
        try:
            with session_scope(self.session_factory) as session:
                now = utc_now()
                for connection, status, count in repo.runs_by_status(session):
                    runs.add_metric([connection, status], count)
                for connection, inserted, updated, deleted, skipped in repo.record_totals(session):
                    for action, value in (
                        ("inserted", inserted),
                        ("updated", updated),
                        ("deleted", deleted),
                        ("skipped", skipped),
                    ):
                        records.add_metric([connection, action], float(value or 0))
                for connection, finished in repo.last_successes(session).items():
                    last_success.add_metric([connection], finished.timestamp())
                    lag.add_metric([connection], max(0.0, (now - finished).total_seconds()))
                for kind, status, count in repo.refreshes_by_status(session):
                    refreshes.add_metric([kind, status], count)
                for kind in ("full", "changes"):
                    seconds = repo.last_refresh_seconds(session, kind)
                    if seconds is not None:
                        refresh_seconds.add_metric([kind], seconds)
                pending.add_metric([], repo.pending_change_batches(session))
                for rule, state, count in repo.transitions_by_state(session):
                    transitions.add_metric([rule, state], count)
                for rule, count in repo.firing_by_rule(session):
                    firing.add_metric([rule], count)
                for status, count in repo.deliveries_by_status(session):
                    deliveries.add_metric([status], count)
                _, oldest = repo.pending_deliveries(session)
                oldest_pending.add_metric([], max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
        except SQLAlchemyError as exc:
            log.warning("metrics: the store could not be read: %s", exc)
            return
        yield from (
            runs,
            records,
            last_success,
            lag,
            refreshes,
            refresh_seconds,
            pending,
            transitions,
            firing,
            deliveries,
            oldest_pending,
        )


def worker_registry(session_factory: sessionmaker[Session]) -> CollectorRegistry:
    """What the worker's metrics port serves: the store's numbers and this process's."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StoreCollector(session_factory))
    registry.register(ProcessCollector())
    return registry
