"""Bringing the store up to date: syncing connections and refreshing the KPIs."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from crm_perf_sync.cli._shared import (
    ConfigOption,
    _fail,
    _guard,
    opened_runtime,
)
from crm_perf_sync.cli.render import (
    err,
    out,
    styled,
    visible,
)

if TYPE_CHECKING:
    from rich.progress import TaskID

    from crm_perf_sync.jobs.sync import SyncService
    from crm_perf_sync.sync.outcomes import StreamStats, SyncOutcome

app = typer.Typer()

#: ``sync`` completed, but records were rejected (bad rows: counted as skipped, stored with the
#: run). sysexits' EX_DATAERR, clear of the codes the commands and the shell already use.
EXIT_REJECTED = 65
#: ``sync`` was deferred by the CRM's API budget and the next run resumes where it stopped: come
#: back later, nothing is broken. sysexits' EX_TEMPFAIL, which schedulers read as "retry later".
EXIT_DEFERRED = 75


@app.command()
def sync(
    connection: Annotated[
        str | None, typer.Argument(help="Connection id (default: every enabled one).")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Ignore checkpoints and re-read everything.")] = False,
    allow_mass_delete: Annotated[
        bool,
        typer.Option(
            "--allow-mass-delete",
            help="Confirm, for this run, deletions above the limit of CRM_PERF_SYNC_MASS_DELETE_SHARE.",
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Sync one connection (or all enabled ones) now, and print a summary.

    Exit codes: 0 synced; 1 failed (a mass deletion held back included);
    75 deferred by the CRM's API budget (the next run resumes); 65 synced, records rejected.
    """
    with opened_runtime(config) as runtime:
        service = runtime.sync_service()
        _guard(service.apply_config)
        ids = [connection] if connection else [c.id for c in runtime.config.app.connections if c.enabled]
        if not ids:
            raise _fail(f"no enabled connections in {runtime.config.path}")
        stop = _install_stop_handler()
        outcomes = []
        for connection_id in ids:
            outcome = _guard(
                lambda cid=connection_id: _sync_with_progress(service, cid, full, stop, allow_mass_delete)  # type: ignore[misc]
            )
            code = _sync_exit_code([outcome])
            style = "green" if code == 0 else "red" if code == 1 else "yellow"
            out.print(styled((outcome.summary(), style)), soft_wrap=True)
            _print_reports(service, outcome)
            outcomes.append(outcome)
        code = _sync_exit_code(outcomes)
        if code:
            raise typer.Exit(code)


def _print_reports(service: SyncService, outcome: SyncOutcome, shown: int = 10) -> None:
    """The run's first bad records and warnings, each with what is wrong and where."""
    reported = outcome.total("skipped") + outcome.total("warnings")
    if not reported:
        return
    for level, stream, message in _guard(lambda: service.reports(outcome.run_id, shown)):
        out.print(f"  {level}: {stream}: {message}", soft_wrap=True)
    if reported > shown:
        out.print(f"  ... and {reported - shown:,} more, stored with run {outcome.run_id}")


def _sync_exit_code(outcomes: list[SyncOutcome]) -> int:
    """The most urgent of the runs' outcomes: failed, then deferred, then rejected records."""
    if any(o.status not in ("succeeded", "deferred") for o in outcomes):
        return 1
    if any(o.status == "deferred" for o in outcomes):
        return EXIT_DEFERRED
    if any(o.total("skipped") for o in outcomes):
        return EXIT_REJECTED
    return 0


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


def _sync_with_progress(
    service: SyncService, connection_id: str, full: bool, stop: threading.Event, allow_mass_delete: bool
) -> SyncOutcome:
    if not err.is_terminal:
        return service.sync(
            connection_id, full_refresh=full, should_stop=stop.is_set, allow_mass_delete=allow_mass_delete
        )
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def on_progress(stream: str, stats: StreamStats) -> None:
            if stream not in tasks:
                tasks[stream] = progress.add_task("", total=None)
            progress.update(
                tasks[stream],
                description=visible(
                    f"{connection_id}/{stream}: {stats.read:,} read, {stats.inserted:,} new, "
                    f"{stats.updated:,} changed, {stats.skipped:,} skipped"
                ),
            )

        return service.sync(
            connection_id,
            full_refresh=full,
            on_progress=on_progress,
            should_stop=stop.is_set,
            allow_mass_delete=allow_mass_delete,
        )


@app.command()
def refresh(
    kpi: Annotated[
        list[str] | None, typer.Option("--kpi", help="Recompute these KPI ids whole (others: by changes).")
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Recompute every KPI whole instead of applying the changes.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Bring the KPIs, targets and scorecards up to date with the store (by changes when possible)."""
    from crm_perf_sync.jobs.refresh import RefreshJob

    stop = _install_stop_handler()
    with opened_runtime(config) as runtime:
        job = RefreshJob(runtime.session_factory, runtime.config)
        ttl = runtime.settings.refresh_lease_ttl
        outcome = _guard(
            lambda: job.refresh_exclusive(
                ttl=ttl, wait=ttl, kpi_ids=kpi if kpi else None, full=full, should_stop=stop.is_set
            )
        )
        if outcome is not None:
            out.print(outcome.summary())
