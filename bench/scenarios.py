"""The benchmark scenarios. Each takes (size, databases, workdir) and yields :class:`Result` rows.

``upsert``: the sync engine's store rate (see :mod:`bench.upsert`); ``ingest-dlt``: against dlt's.
``kpi-full``: a full KPI refresh against hand-written SQL (see :mod:`bench.kpi_full`);
``kpi-duckdb``: against DuckDB computing the same values (see :mod:`bench.kpi_duckdb`).
``kpi-incremental``: the refresh after a sync that changed 1% of records, against a full one.
``payouts``: a year of monthly payouts for 500 reps, full against the KPI refresh and
incremental after the 1% change against full (see :mod:`bench.payouts`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from bench.api_scorecard import api_scorecard
from bench.dashboard import dashboard
from bench.freshness import freshness
from bench.harness import Result
from bench.ingest_dlt import ingest_dlt
from bench.kpi_duckdb import kpi_duckdb
from bench.kpi_full import kpi_full
from bench.kpi_incremental import kpi_incremental
from bench.payouts import payouts
from bench.sync_hubspot import sync_hubspot
from bench.sync_rest import sync_rest
from bench.sync_salesforce import sync_salesforce
from bench.sync_salesforce_latency import sync_salesforce_latency
from bench.upsert import upsert
from bench.webhooks import webhooks

SCENARIOS: dict[str, Callable[[str, list[str], Path], Iterator[Result]]] = {
    "api-scorecard": api_scorecard,
    "dashboard": dashboard,
    "freshness": freshness,
    "ingest-dlt": ingest_dlt,
    "kpi-duckdb": kpi_duckdb,
    "kpi-full": kpi_full,
    "kpi-incremental": kpi_incremental,
    "payouts": payouts,
    "sync-hubspot": sync_hubspot,
    "sync-rest": sync_rest,
    "sync-salesforce": sync_salesforce,
    "sync-salesforce-latency": sync_salesforce_latency,
    "upsert": upsert,
    "webhooks": webhooks,
}
