"""Prometheus metrics of this process (:data:`PROCESS`): what the process itself did since it
started — records by stream, webhook attempts and their latency, claims taken over from a replica
that died, KPI refresh durations. The store-wide numbers every replica reports alike are read from
the database at scrape time (:mod:`crm_perf_sync.ops.metrics`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: This process's own metrics (one registry per process; forwarded into every exposition).
PROCESS = CollectorRegistry(auto_describe=True)

STREAM_RECORDS = Counter(
    "crm_perf_sync_stream_records",
    "Records this process synced, by connection, stream and what the sync did with them",
    ["connection", "stream", "action"],
    registry=PROCESS,
)
STREAM_RUNS = Counter(
    "crm_perf_sync_stream_runs",
    "Stream syncs this process ran, by connection, stream and how they ended",
    ["connection", "stream", "status"],
    registry=PROCESS,
)
CLAIM_TAKEOVERS = Counter(
    "crm_perf_sync_claim_takeovers",
    "Claims on a unit of work this process took over from a holder that died or let it expire",
    ["unit"],
    registry=PROCESS,
)
WEBHOOK_ATTEMPTS = Counter(
    "crm_perf_sync_webhook_attempts",
    "Webhook attempts this process made, by outcome (succeeded; failed: retried or given up; "
    "refused by the address guard)",
    ["outcome"],
    registry=PROCESS,
)
WEBHOOK_LATENCY = Histogram(
    "crm_perf_sync_webhook_attempt_duration_seconds",
    "How long a receiver took to answer a webhook attempt",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0),
    registry=PROCESS,
)
REFRESH_DURATION = Histogram(
    "crm_perf_sync_kpi_refresh_duration_seconds",
    "How long the KPI refreshes this process ran took, by kind (full or changes)",
    ["kind"],
    buckets=(0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0),
    registry=PROCESS,
)
INGEST_PUSHES = Counter(
    "crm_perf_sync_ingest_pushes",
    "Pushes this process received from the CRMs, by connection and outcome (accepted, refused)",
    ["connection", "outcome"],
    registry=PROCESS,
)
INGEST_CHANGES = Counter(
    "crm_perf_sync_ingest_changes",
    "Changes the accepted pushes announced, by connection and whether they were new to the inbox "
    "(new) or received before (duplicate)",
    ["connection", "outcome"],
    registry=PROCESS,
)
INGEST_LAG = Histogram(
    "crm_perf_sync_ingest_lag_seconds",
    "From a change in the CRM (as its push says; else its arrival) to the KPIs refreshed with it, "
    "by connection",
    ["connection"],
    buckets=(0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
    registry=PROCESS,
)


def unit_of(lease_name: str) -> str:
    """The kind of work a lease stands for (``sync:demo`` → ``sync``), a bounded label."""
    return lease_name.partition(":")[0]


class ProcessCollector(Collector):
    """Forwards :data:`PROCESS` into another registry (an app's, the worker's)."""

    def collect(self) -> Iterator[Any]:
        yield from PROCESS.collect()
