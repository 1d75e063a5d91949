"""The long-running processes: serve (API and worker in one), api and worker; their signal
handling, the worker's metrics port and the way they exit."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from contextlib import ExitStack
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer

from crm_perf_sync.cli._shared import (
    ConfigOption,
    _guard,
    _settings,
    log,
    opened_runtime,
)
from crm_perf_sync.cli.render import (
    out,
)
from crm_perf_sync.kit.errors import ConfigurationError
from crm_perf_sync.kit.settings import Settings

if TYPE_CHECKING:
    from crm_perf_sync.runtime import Runtime

app = typer.Typer()


def _serve_api(runtime: Runtime, settings: Settings) -> None:
    import uvicorn

    from crm_perf_sync.api.app import create_app
    from crm_perf_sync.api.server import server_options

    uvicorn.run(
        create_app(runtime.engine, runtime.config, runtime.webhook_guard(), runtime.registry),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) or None,
        **server_options(),
    )


def _announce(runtime: Runtime, settings: Settings, *, new_store: bool) -> None:
    """Where the API is, in the log; and a read key to try it with at once, on the terminal only.

    The key is minted when ``serve`` has just created the SQLite store, its output is a terminal
    (someone is reading it, as on ``make run``) and ``CRM_PERF_SYNC_DEMO_KEY`` allows it: once,
    never again (the store keeps only its hash, so it cannot be shown again; a revoked one is not
    replaced), and never into the log or a container's output.
    """
    from crm_perf_sync.apikeys.service import demo_key
    from crm_perf_sync.kit.db import WRITE_LOCK, session_scope

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}"
    log.info("dashboard: %s/dashboard; API docs: %s/docs (OpenAPI: %s/openapi.json)", base, base, base)
    if not (new_store and runtime.is_sqlite and settings.demo_key and sys.stdout.isatty()):
        log.info("API keys: crm-perf-sync apikey create --scope read|editor|admin")
        return
    with session_scope(runtime.session_factory) as session:
        session.connection(execution_options={WRITE_LOCK: True})
        key = demo_key(session)
    # soft_wrap: a key or a URL must never be broken across lines (it is copied from here).
    out.print(f"read key for this new store, shown once (only its hash is kept): {key}", soft_wrap=True)
    out.print(f"dashboard: open {base}/dashboard and sign in with that key", soft_wrap=True)
    out.print(
        f'try: curl -H "Authorization: Bearer {key}" "{base}/api/v1/kpis/win_rate/values?grain=month"',
        soft_wrap=True,
    )


@app.command()
def serve(config: ConfigOption = None) -> None:
    """API and worker in one process (the embedded default)."""
    from crm_perf_sync.kit import migrate as migrations
    from crm_perf_sync.leases import new_holder_id
    from crm_perf_sync.runtime import build_runtime
    from crm_perf_sync.worker.process import Shutdown, sole_sqlite_worker
    from crm_perf_sync.worker.scheduler import build_scheduler, start_delivery, start_inbox

    settings = _settings(config)
    runtime = _guard(lambda: build_runtime(settings))
    stop = threading.Event()
    try:
        with ExitStack() as held:
            _guard(lambda: held.enter_context(sole_sqlite_worker(runtime)))
            new_store = _guard(lambda: migrations.current_revision(runtime.engine)) is None
            _guard(lambda: runtime.ensure_schema(auto_migrate=True))
            _guard(runtime.sync_service().apply_config)
            scheduler = build_scheduler(runtime, stop)
            _announce(runtime, settings, new_store=new_store)  # before the jobs start writing
            scheduler.start()
            delivery = start_delivery(runtime, stop, new_holder_id())
            inbox = start_inbox(runtime, stop)
            shutdown = Shutdown(runtime, scheduler, stop, [delivery, inbox])
            log.info(
                "serving on http://%s:%d with %d scheduled job(s)",
                settings.host,
                settings.port,
                len(scheduler.get_jobs()),
            )
            try:
                _serve_api(runtime, settings)  # until SIGTERM or Ctrl-C (uvicorn's handlers)
            finally:
                clean = shutdown(settings.shutdown_grace_seconds)
            if not clean:
                _exit_now(3)
    finally:
        runtime.close()


@app.command()
def api(config: ConfigOption = None) -> None:
    """The HTTP API alone (stateless; run as many as you like)."""
    with opened_runtime(config, auto_migrate=False) as runtime:
        _serve_api(runtime, runtime.settings)


@app.command()
def worker(config: ConfigOption = None) -> None:
    """Syncs, KPI refreshes, alert evaluation and webhook delivery (as many replicas as you like
    on PostgreSQL; one on SQLite), with its own /metrics port."""
    from apscheduler.schedulers.background import BackgroundScheduler

    from crm_perf_sync.leases import new_holder_id
    from crm_perf_sync.runtime import build_runtime
    from crm_perf_sync.worker.process import Shutdown, sole_sqlite_worker
    from crm_perf_sync.worker.scheduler import build_scheduler, start_delivery, start_inbox

    settings = _settings(config)
    runtime = _guard(lambda: build_runtime(settings))
    stop = threading.Event()
    signals: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signals.append(signal.Signals(signum).name)
        if len(signals) > 1:
            log.warning("%s again: stopping now", signals[-1])
            _exit_now(3)
        log.info(
            "%s: taking no new work, finishing the current batch (up to %gs)",
            signals[0],
            settings.shutdown_grace_seconds,
        )
        stop.set()

    try:
        with ExitStack() as held:
            _guard(lambda: held.enter_context(sole_sqlite_worker(runtime)))
            _guard(lambda: runtime.ensure_schema(auto_migrate=runtime.is_sqlite))
            _guard(runtime.sync_service().apply_config)
            metrics = _guard(lambda: _metrics_server(runtime))
            scheduler = build_scheduler(runtime, stop, BackgroundScheduler(timezone="UTC"))
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            scheduler.start()
            delivery = start_delivery(runtime, stop, new_holder_id())
            inbox = start_inbox(runtime, stop)
            log.info("worker started with %d scheduled job(s)", len(scheduler.get_jobs()))
            while not stop.wait(1.0):
                pass
            clean = Shutdown(runtime, scheduler, stop, [delivery, inbox])(settings.shutdown_grace_seconds)
            if metrics is not None:
                metrics.shutdown()
            if not clean:
                _exit_now(3)
    finally:
        runtime.close()


def _metrics_server(runtime: Runtime) -> Any:
    from crm_perf_sync.worker.process import serve_metrics

    try:
        return serve_metrics(runtime)
    except OSError as exc:
        port = runtime.settings.worker_metrics_port
        raise ConfigurationError(
            f"the worker's metrics port {port} cannot be opened ({exc.strerror}): set "
            "CRM_PERF_SYNC_WORKER_METRICS_PORT to a free port, or 0 for none"
        ) from None


def _exit_now(code: int) -> None:
    """Leave at once (threads still busy past the grace period are abandoned, claims released)."""
    logging.shutdown()
    os._exit(code)
