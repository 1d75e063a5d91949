"""Prometheus metrics of the API process: its requests, and what the store says about syncs and
refreshes (read at scrape time, so every API replica reports the same store-wide numbers)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.db import session_scope
from crm_perf_sync.models import ChangeBatch, KpiRefreshRun, SyncRun

log = logging.getLogger(__name__)
#: Request latency buckets, seconds: resolution where the API's targets are (tens of ms).
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class StoreCollector(Collector):
    """Sync runs, records synced, last successful sync and KPI refreshes, from the database."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def collect(self) -> Iterator[Any]:
        runs = CounterMetricFamily(
            "crm_perf_sync_sync_runs",
            "Sync runs by connection and how they ended",
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
        try:
            with session_scope(self.session_factory) as session:
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
        except SQLAlchemyError as exc:
            log.warning("metrics: the store could not be read: %s", exc)
            return
        yield from (runs, records, last_success, refreshes, refresh_seconds, pending)


class ApiMetrics:
    """One registry per app (tests build many apps in one process)."""

    def __init__(self, session_factory: sessionmaker[Session] | None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "crm_perf_sync_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "crm_perf_sync_http_request_duration_seconds",
            "HTTP request latency by method and route",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        if session_factory is not None:
            self.registry.register(StoreCollector(session_factory))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
