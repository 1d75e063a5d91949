"""The worker process around the scheduler: one worker per SQLite store, a metrics port, and a
shutdown that stops taking work, lets the current batch finish and releases every claim.

On SIGTERM (or Ctrl-C) the scheduler takes no new job, a running sync stops after its current
committed batch (the run ends ``interrupted`` with its checkpoint, and resumes on the next run),
a KPI refresh stops between KPIs and rolls back, and the webhook round in flight is recorded.
Whatever is still busy when the grace period ends is abandoned: this process's claims are
released so another replica takes the work at once, and the process exits.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apscheduler.schedulers.base import BaseScheduler

from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.errors import ConfigurationError
from crm_perf_sync.leases import process_prefix, release_held_like
from crm_perf_sync.runtime import Runtime
from crm_perf_sync.webhooks import repository as webhooks_repo

log = logging.getLogger(__name__)


@contextmanager
def sole_sqlite_worker(runtime: Runtime) -> Iterator[None]:
    """Hold the SQLite store's worker lock for the block; refuse if another process holds it.

    SQLite has one writer at a time, so the all-in-one process (or a single ``worker``) is the
    supported shape; several workers would only queue behind each other's write lock. The lock
    is an OS file lock beside the database: it goes away with its process, however that ends.
    """
    database = runtime.engine.url.database
    if not runtime.is_sqlite or not database or database == ":memory:":
        yield
        return
    lock_path = Path(f"{database}.worker-lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise ConfigurationError(
                f"a worker is already running against the SQLite store {database} ({other}): "
                "SQLite supports one worker process (`serve`, or a single `worker`). Stop that "
                "one first, or move the store to PostgreSQL to run several workers."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def release_claims(runtime: Runtime, prefix: str | None = None) -> tuple[int, int]:
    """Release every lease and webhook-delivery claim held by this process (by its holder
    prefix). Returns (leases, deliveries) released."""
    prefix = prefix or process_prefix()
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    with session_scope(runtime.session_factory) as session:
        leases = release_held_like(session, pattern)
        deliveries = webhooks_repo.release_claims_like(session, pattern)
    return leases, deliveries


def serve_metrics(runtime: Runtime) -> Any:
    """Serve this worker's metrics on the configured port (``None`` when it is 0)."""
    from prometheus_client import start_http_server

    from crm_perf_sync.ops.metrics import worker_registry

    port = runtime.settings.worker_metrics_port
    if not port:
        return None
    server, _thread = start_http_server(
        port, addr=runtime.settings.host, registry=worker_registry(runtime.session_factory)
    )
    log.info("worker metrics on http://%s:%d/metrics", runtime.settings.host, port)
    return server


@dataclass
class Shutdown:
    """Stops a worker's scheduler and delivery thread within a grace period."""

    runtime: Runtime
    scheduler: BaseScheduler
    stop: threading.Event
    threads: list[threading.Thread] = field(default_factory=list)

    def __call__(self, grace: float) -> bool:
        """Stop; ``True`` if everything finished within ``grace`` seconds."""
        self.stop.set()
        deadline = time.monotonic() + grace
        stopper = threading.Thread(target=self._stop_scheduler, name="scheduler-shutdown", daemon=True)
        stopper.start()
        for thread in (stopper, *self.threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = [t.name for t in (stopper, *self.threads) if t.is_alive()]
        try:
            leases, deliveries = release_claims(self.runtime)
        except Exception:
            log.exception("could not release this process's claims; they expire on their own")
            leases = deliveries = 0
        if busy:
            log.error(
                "still busy after the %gs grace period (%s): released %d lease(s) and %d webhook "
                "claim(s) for the other replicas, exiting",
                grace,
                ", ".join(busy),
                leases,
                deliveries,
            )
            return False
        if leases or deliveries:
            log.warning("released %d lease(s) and %d webhook claim(s) left behind", leases, deliveries)
        log.info("stopped cleanly")
        return True

    def _stop_scheduler(self) -> None:
        try:
            self.scheduler.shutdown(wait=True)
        except Exception:  # not running (never started, or stopped already)
            log.debug("scheduler shutdown", exc_info=True)
