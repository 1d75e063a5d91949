"""The ``crm-perf-sync`` command line.

Every command exits non-zero with a one-line reason on failure (configuration problems list one
line per issue); a traceback means a bug.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from crm_perf_sync import __version__
from crm_perf_sync.errors import AppError
from crm_perf_sync.settings import Settings

app = typer.Typer(
    name="crm-perf-sync",
    help="Sales performance KPIs from your CRM: sync, compute, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
connectors_app = typer.Typer(help="Inspect the installed connectors.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(connectors_app, name="connectors")

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)
log = logging.getLogger("crm_perf_sync.cli")

T = TypeVar("T")


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    return typer.Exit(code)


def _settings(config: Path | None = None) -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"CRM_PERF_SYNC_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise _fail(f"invalid environment: {problems}", 2) from None
    if config is not None:
        settings = settings.model_copy(update={"config": config})
    from crm_perf_sync.logging_setup import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    return settings


def _guard(action: Callable[[], T]) -> T:
    """Run ``action``, turning expected failures into a one-line error and an exit code."""
    from crm_perf_sync.errors import ConfigurationError

    try:
        return action()
    except ConfigurationError as exc:
        raise _fail(str(exc), 2) from None
    except AppError as exc:
        raise _fail(str(exc)) from None
    except ValueError as exc:
        raise _fail(str(exc)) from None


ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Configuration file (default: $CRM_PERF_SYNC_CONFIG).")
]


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


@app.command()
def migrate(
    revision: Annotated[str, typer.Option("--to", help="Target revision (default: head).")] = "head",
    downgrade: Annotated[bool, typer.Option(help="Downgrade to --to instead of upgrading.")] = False,
) -> None:
    """Create or upgrade the database schema."""
    from crm_perf_sync import migrate as migrations
    from crm_perf_sync.db import check_database, create_db_engine
    from crm_perf_sync.settings import redact_url

    settings = _settings()

    def run() -> None:
        engine = create_db_engine(settings.database_url_value())
        try:
            check_database(engine)
            if downgrade:
                migrations.downgrade(engine, revision)
            else:
                migrations.upgrade(engine, revision)
            current = migrations.current_revision(engine)
        finally:
            engine.dispose()
        out.print(f"database {redact_url(settings.database_url_value())} at revision {current or 'base'}")

    _guard(run)


@config_app.command("check")
def config_check(path: Annotated[Path | None, typer.Argument(help="File to check.")] = None) -> None:
    """Validate a configuration file and report every problem with file, line and key."""
    from crm_perf_sync.connectors.registry import ConnectorRegistry
    from crm_perf_sync.runtime import load_checked_config

    settings = _settings(path)

    def run() -> None:
        loaded = load_checked_config(settings, ConnectorRegistry.discover())
        app_config = loaded.app
        out.print(
            f"{loaded.path}: OK ({len(app_config.connections)} connections, "
            f"{len(app_config.all_teams())} teams, business timezone {app_config.business.timezone})"
        )

    _guard(run)


@connectors_app.command("list")
def connectors_list() -> None:
    """List the installed connectors (and any that failed to load)."""
    from crm_perf_sync.connectors.registry import ConnectorRegistry

    _settings()
    registry = ConnectorRegistry.discover()
    table = Table("kind", "package", "description")
    for kind in registry.kinds():
        connector = registry.connectors[kind]
        table.add_row(kind, registry.distributions.get(kind, "?"), connector.description)
    out.print(table)
    for broken in registry.broken:
        err.print(f"[yellow]skipped[/] {broken.kind} ({broken.target}): {broken.error}", markup=True)


@app.command()
def sync(
    connection: Annotated[
        str | None, typer.Argument(help="Connection id (default: every enabled one).")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Ignore checkpoints and re-read everything.")] = False,
    config: ConfigOption = None,
) -> None:
    """Sync one connection (or all enabled ones) now, and print a summary."""
    from crm_perf_sync.runtime import build_runtime

    settings = _settings(config)
    runtime = _guard(lambda: build_runtime(settings))
    try:
        _guard(lambda: runtime.ensure_schema(auto_migrate=runtime.is_sqlite))
        service = runtime.sync_service()
        _guard(service.apply_config)
        ids = [connection] if connection else [c.id for c in runtime.config.app.connections if c.enabled]
        if not ids:
            raise _fail(f"no enabled connections in {runtime.config.path}")
        stop = _install_stop_handler()
        failed = 0
        for connection_id in ids:
            outcome = _guard(lambda cid=connection_id: _sync_with_progress(service, cid, full, stop))  # type: ignore[misc]
            style = "green" if outcome.status == "succeeded" else "red"
            out.print(f"[{style}]{outcome.summary()}[/]", markup=True, soft_wrap=True)
            failed += outcome.status != "succeeded"
        if failed:
            raise typer.Exit(1)
    finally:
        runtime.close()


def _install_stop_handler() -> threading.Event:
    """SIGTERM (and a first Ctrl-C) stop after the current batch; the run stays resumable."""
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        err.print(f"{signal.Signals(signum).name}: stopping after the current batch (again to abort)")

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def _sync_with_progress(service: Any, connection_id: str, full: bool, stop: threading.Event) -> Any:
    if not err.is_terminal:
        return service.sync(connection_id, full_refresh=full, should_stop=stop.is_set)
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True
    ) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(stream: str, stats: Any) -> None:
            if stream not in tasks:
                tasks[stream] = progress.add_task("", total=None)
            progress.update(
                tasks[stream],
                description=f"{connection_id}/{stream}: {stats.read:,} read, {stats.inserted:,} new, "
                f"{stats.updated:,} changed, {stats.skipped:,} skipped",
            )

        return service.sync(
            connection_id, full_refresh=full, on_progress=on_progress, should_stop=stop.is_set
        )


@app.command()
def refresh(
    kpi: Annotated[list[str] | None, typer.Option("--kpi", help="Only these KPI ids.")] = None,
    config: ConfigOption = None,
) -> None:
    """Recompute the KPIs from the store and materialise them for every grain and scope."""
    from crm_perf_sync.kpi.service import KpiService
    from crm_perf_sync.runtime import build_runtime

    settings = _settings(config)
    runtime = _guard(lambda: build_runtime(settings))
    try:
        _guard(lambda: runtime.ensure_schema(auto_migrate=runtime.is_sqlite))
        service = KpiService(runtime.session_factory, runtime.config)
        outcome = _guard(lambda: service.refresh(kpi if kpi else None))
        out.print(outcome.summary())
    finally:
        runtime.close()


VALUE_COLUMNS = (
    "kpi_id",
    "grain",
    "period_key",
    "period_start",
    "period_end",
    "scope",
    "scope_id",
    "scope_name",
    "currency",
    "value",
    "numerator",
    "denominator",
    "sample_count",
    "low_sample",
    "computed_at",
)


@app.command()
def values(
    kpi_id: Annotated[str, typer.Argument(help="A KPI id, e.g. win_rate.")],
    grain: Annotated[str | None, typer.Option(help="month, quarter, year or all.")] = None,
    scope: Annotated[str | None, typer.Option(help="company, team or owner.")] = None,
    period: Annotated[str | None, typer.Option(help="A period key: its start date, e.g. 2017-01-01.")] = None,
    output: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    config: ConfigOption = None,
) -> None:
    """Print a KPI's materialised values (run `refresh` first)."""
    import csv
    import json

    from crm_perf_sync.db import session_scope
    from crm_perf_sync.kpi import repository as kpi_repo
    from crm_perf_sync.kpi.schemas import GRAINS
    from crm_perf_sync.runtime import build_runtime

    if grain is not None and grain not in GRAINS:
        raise _fail(f"--grain must be one of {', '.join(GRAINS)}, got {grain!r}", 2)
    if scope is not None and scope not in ("company", "team", "owner"):
        raise _fail(f"--scope must be company, team or owner, got {scope!r}", 2)
    if output not in ("table", "csv", "json"):
        raise _fail(f"--format must be table, csv or json, got {output!r}", 2)
    settings = _settings(config)
    runtime = _guard(lambda: build_runtime(settings))
    try:
        _guard(lambda: runtime.ensure_schema(auto_migrate=runtime.is_sqlite))
        if kpi_id not in runtime.config.kpis:
            raise _fail(f"no KPI {kpi_id!r} (defined: {', '.join(sorted(runtime.config.kpis))})")
        with session_scope(runtime.session_factory) as session:
            names = kpi_repo.scope_names(session)
            found = kpi_repo.values(session, kpi_id, grain=grain, scope=scope, period_key=period)
            rows = [
                {
                    column: (
                        names.get((v.scope, v.scope_id), v.scope_id)
                        if column == "scope_name"
                        else getattr(v, column)
                    )
                    for column in VALUE_COLUMNS
                }
                for v in found
            ]
    finally:
        runtime.close()
    if output == "json":
        sys.stdout.write(json.dumps(rows, default=str, indent=1) + "\n")
    elif output == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=VALUE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: ("" if v is None else v.isoformat() if hasattr(v, "isoformat") else v)
                    for k, v in row.items()
                }
            )
    else:
        table = Table(
            "grain", "period", "scope", "name", "currency", "value", "numerator", "denominator", "n"
        )
        for row in rows:
            value = row["value"]
            table.add_row(
                row["grain"],
                row["period_key"],
                row["scope"],
                str(row["scope_name"]),
                row["currency"],
                "-" if value is None else f"{value:,.4g}" + (" *" if row["low_sample"] else ""),
                f"{row['numerator']:,.2f}",
                "" if row["denominator"] is None else f"{row['denominator']:,.2f}",
                str(row["sample_count"]),
            )
        out.print(table)
        if not rows:
            err.print(f"no values for {kpi_id}: run `crm-perf-sync refresh` after a sync")


def _serve_api(runtime: Any, settings: Settings) -> None:
    import uvicorn

    from crm_perf_sync.api.app import create_app

    uvicorn.run(
        create_app(runtime.engine),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        log_config=None,
    )


@app.command()
def serve(config: ConfigOption = None) -> None:
    """API and worker in one process (the embedded default)."""
    from crm_perf_sync.runtime import build_runtime
    from crm_perf_sync.worker.scheduler import build_scheduler

    settings = _settings(config)
    runtime = _guard(lambda: build_runtime(settings))
    stop = threading.Event()
    try:
        _guard(lambda: runtime.ensure_schema(auto_migrate=True))
        _guard(runtime.sync_service().apply_config)
        scheduler = build_scheduler(runtime, stop)
        scheduler.start()
        log.info(
            "serving on http://%s:%d with %d scheduled job(s)",
            settings.host,
            settings.port,
            len(scheduler.get_jobs()),
        )
        try:
            _serve_api(runtime, settings)
        finally:
            stop.set()
            scheduler.shutdown(wait=True)
    finally:
        runtime.close()


@app.command()
def api(config: ConfigOption = None) -> None:
    """The HTTP API alone (stateless; run as many as you like)."""
    from crm_perf_sync.runtime import build_runtime

    settings = _settings(config)
    runtime = _guard(lambda: build_runtime(settings))
    try:
        _guard(lambda: runtime.ensure_schema(auto_migrate=False))
        _serve_api(runtime, settings)
    finally:
        runtime.close()


@app.command()
def worker(config: ConfigOption = None) -> None:
    """The scheduler alone: syncs connections on their schedules."""
    from apscheduler.schedulers.blocking import BlockingScheduler

    from crm_perf_sync.runtime import build_runtime
    from crm_perf_sync.worker.scheduler import build_scheduler

    settings = _settings(config)
    runtime = _guard(lambda: build_runtime(settings))
    stop = threading.Event()
    try:
        _guard(lambda: runtime.ensure_schema(auto_migrate=runtime.is_sqlite))
        _guard(runtime.sync_service().apply_config)
        scheduler = build_scheduler(runtime, stop, BlockingScheduler(timezone="UTC"))

        def shutdown(signum: int, _frame: FrameType | None) -> None:
            log.info("%s: finishing the current batch and stopping", signal.Signals(signum).name)
            stop.set()
            threading.Thread(target=scheduler.shutdown, kwargs={"wait": True}, daemon=True).start()

        signal.signal(signal.SIGTERM, shutdown)
        signal.signal(signal.SIGINT, shutdown)
        log.info("worker started with %d scheduled job(s)", len(scheduler.get_jobs()))
        scheduler.start()
    finally:
        runtime.close()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
