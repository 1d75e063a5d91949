"""Prometheus metrics of the API process: its requests, what the store says (read at scrape time,
so every API replica reports the same store-wide numbers) and, in the all-in-one ``serve`` role,
what its worker did."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit.metrics import ProcessCollector
from crm_perf_sync.ops.metrics import StoreCollector

#: Request latency buckets, seconds: resolution where the API's targets are (tens of ms).
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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
        self.registry.register(ProcessCollector())

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
