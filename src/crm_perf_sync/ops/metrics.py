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
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.metrics import ProcessCollector
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.models import (
    AlertState,
    AlertTransition,
    ChangeBatch,
    KpiRefreshRun,
    SyncRun,
    WebhookDelivery,
)

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
                for connection, status, count in session.execute(
                    select(SyncRun.connection_id, SyncRun.status, func.count()).group_by(
                        SyncRun.connection_id, SyncRun.status
                    )
                ):
                    runs.add_metric([connection, status], count)
                totals = session.execute(
                    select(
                        SyncRun.connection_id,
                        func.sum(SyncRun.inserted),
                        func.sum(SyncRun.updated),
                        func.sum(SyncRun.deleted),
                        func.sum(SyncRun.skipped),
                    ).group_by(SyncRun.connection_id)
                )
                for connection, inserted, updated, deleted, skipped in totals:
                    for action, value in (
                        ("inserted", inserted),
                        ("updated", updated),
                        ("deleted", deleted),
                        ("skipped", skipped),
                    ):
                        records.add_metric([connection, action], float(value or 0))
                for connection, finished in session.execute(
                    select(SyncRun.connection_id, func.max(SyncRun.finished_at))
                    .where(SyncRun.status == "succeeded")
                    .group_by(SyncRun.connection_id)
                ):
                    if finished is not None:
                        last_success.add_metric([connection], finished.timestamp())
                        lag.add_metric([connection], max(0.0, (now - finished).total_seconds()))
                for kind, status, count in session.execute(
                    select(KpiRefreshRun.kind, KpiRefreshRun.status, func.count()).group_by(
                        KpiRefreshRun.kind, KpiRefreshRun.status
                    )
                ):
                    refreshes.add_metric([kind, status], count)
                for kind in ("full", "changes"):
                    seconds = session.execute(
                        select(KpiRefreshRun.duration_seconds)
                        .where(KpiRefreshRun.kind == kind, KpiRefreshRun.status == "succeeded")
                        .order_by(KpiRefreshRun.id.desc())
                        .limit(1)
                    ).scalar_one_or_none()
                    if seconds is not None:
                        refresh_seconds.add_metric([kind], seconds)
                pending.add_metric(
                    [], session.execute(select(func.count()).select_from(ChangeBatch)).scalar_one()
                )
                for rule, state, count in session.execute(
                    select(AlertTransition.rule_id, AlertTransition.to_state, func.count()).group_by(
                        AlertTransition.rule_id, AlertTransition.to_state
                    )
                ):
                    transitions.add_metric([rule, state], count)
                for rule, count in session.execute(
                    select(AlertState.rule_id, func.count())
                    .where(AlertState.state == "firing")
                    .group_by(AlertState.rule_id)
                ):
                    firing.add_metric([rule], count)
                for status, count in session.execute(
                    select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
                ):
                    deliveries.add_metric([status], count)
                oldest = session.execute(
                    select(func.min(WebhookDelivery.created_at)).where(WebhookDelivery.status == "pending")
                ).scalar_one_or_none()
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
