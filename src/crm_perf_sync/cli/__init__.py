"""The ``crm-perf-sync`` command line.

Every command exits non-zero with a one-line reason on failure (configuration problems list one
line per issue); a traceback means a bug. Exit codes: 0 done, 1 failed, 2 usage or configuration,
3 a worker stopped with work still busy; ``sync`` adds :data:`EXIT_REJECTED` and
:data:`EXIT_DEFERRED` (the README's CLI section is their documentation).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from crm_perf_sync import __version__
from crm_perf_sync.kit.errors import AppError, ConfigurationError
from crm_perf_sync.kit.settings import Settings

app = typer.Typer(
    name="crm-perf-sync",
    help="Sales performance KPIs from your CRM: sync, compute, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
connectors_app = typer.Typer(help="Inspect the installed connectors.", no_args_is_help=True)
apikey_app = typer.Typer(help="Create, list and revoke REST API keys.", no_args_is_help=True)
webhooks_app = typer.Typer(help="Webhook endpoints and deliveries.", no_args_is_help=True)
alerts_app = typer.Typer(help="Alert states and their history.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(connectors_app, name="connectors")
app.add_typer(apikey_app, name="apikey")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(alerts_app, name="alerts")

#: C0 and C1 control characters but newline and tab: ESC starts terminal commands (colours,
#: hyperlinks, cursor moves, window titles), which text from a CRM must never be able to send.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(text: str) -> str:
    """``text`` with each control character written out as its escape (ESC as ``\\x1b``)."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


class _Verbatim(Console):
    """A console that prints every string exactly as it is: never read as Rich markup or emoji
    codes (`[link=…]` would become a hyperlink, `https://[fd00::1]/` lose its address, a regex its
    brackets), and with its control characters shown rather than obeyed. Everything printed
    comes from the CRM, the configuration or the user; styled words are ``Text`` objects built
    with :func:`_styled`."""

    def __init__(self, **options: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **options)

    def render_str(self, text: str, **options: Any) -> Text:  # every str printed or in a table
        return super().render_str(_visible(text), **options)


def _styled(*parts: str | tuple[str, str]) -> Text:
    """Text from plain strings and (string, style) pairs, control characters shown."""
    return Text.assemble(*(_visible(p) if isinstance(p, str) else (_visible(p[0]), p[1]) for p in parts))


err = _Verbatim(stderr=True)
# Piped output (less, a file) gets room for wide tables; a terminal uses its own width.
out = _Verbatim(width=None if sys.stdout.isatty() else 160)
log = logging.getLogger("crm_perf_sync.cli")

T = TypeVar("T")

#: ``sync`` completed, but records were rejected (bad rows: counted as skipped, stored with the
#: run). sysexits' EX_DATAERR, clear of the codes the commands and the shell already use.
EXIT_REJECTED = 65
#: ``sync`` was deferred by the CRM's API budget and the next run resumes where it stopped: come
#: back later, nothing is broken. sysexits' EX_TEMPFAIL, which schedulers read as "retry later".
EXIT_DEFERRED = 75


def _fail(message: str, code: int = 1) -> typer.Exit:
    if _logs_are_json():
        # Where the logs are JSON (containers), the reason the process stops is one of them.
        log.error(message)
    else:
        err.print(_styled(("error:", "bold red"), " ", message), soft_wrap=True)
    return typer.Exit(code)


def _logs_are_json() -> bool:
    from crm_perf_sync.kit.logs import JsonFormatter

    return any(isinstance(handler.formatter, JsonFormatter) for handler in logging.getLogger().handlers)


def _settings(config: Path | None = None) -> Settings:
    from crm_perf_sync.kit.logs import configure_logging

    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"CRM_PERF_SYNC_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        if os.environ.get("CRM_PERF_SYNC_LOG_FORMAT") == "json":
            configure_logging("INFO", "json")  # the other settings are invalid, not this one
        raise _fail(f"invalid environment: {problems}", 2) from None
    if config is not None:
        settings = settings.model_copy(update={"config": config})
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _guard(action: Callable[[], T]) -> T:
    """Run ``action``, turning expected failures into a one-line error and an exit code."""
    from crm_perf_sync.kit.errors import ConfigurationError

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
    from crm_perf_sync.kit import migrate as migrations
    from crm_perf_sync.kit.db import check_database, create_db_engine
    from crm_perf_sync.kit.settings import redact_url

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


def _store_session() -> Any:
    """A session factory on the configured database (migrated first on SQLite), and its engine."""
    from crm_perf_sync.kit import migrate as migrations
    from crm_perf_sync.kit.db import check_database, create_db_engine, make_session_factory

    settings = _settings()
    engine = create_db_engine(settings.database_url_value())
    try:
        _guard(lambda: check_database(engine))
        if engine.dialect.name == "sqlite":
            migrations.upgrade(engine)
        elif not migrations.is_at_head(engine):
            raise _fail(
                "the database schema is not at the current version: run `crm-perf-sync migrate` first", 2
            )
    except BaseException:
        engine.dispose()
        raise
    return engine, make_session_factory(engine)


@apikey_app.command("create")
def apikey_create(
    scope: Annotated[str, typer.Option(help="read (reads everything) or admin (also writes).")] = "read",
    name: Annotated[str, typer.Option(help="Who or what uses the key, e.g. 'Power BI finance'.")] = "api key",
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from crm_perf_sync.apikeys import service as keys
    from crm_perf_sync.kit.db import session_scope

    _check_choice("--scope", scope, keys.SCOPES)
    engine, factory = _store_session()
    try:
        with session_scope(factory) as session:
            row, key = _guard(lambda: keys.create(session, name, scope))
            key_id, prefix = row.id, row.prefix
    finally:
        engine.dispose()
    err.print(f"created API key {key_id} ({scope}, {name!r}, {prefix}…); it is shown once, store it now:")
    out.print(key)


@apikey_app.command("list")
def apikey_list(output: Annotated[str, typer.Option("--format", help="table or json.")] = "table") -> None:
    """List the keys (their prefixes, never the keys)."""
    from crm_perf_sync.apikeys import service as keys
    from crm_perf_sync.kit.db import session_scope

    _check_choice("--format", output, ("table", "json"))
    engine, factory = _store_session()
    try:
        with session_scope(factory) as session:
            rows = [
                {
                    "id": k.id,
                    "name": k.name,
                    "scope": k.scope,
                    "prefix": k.prefix,
                    "created_at": k.created_at,
                    "last_used_at": k.last_used_at,
                    "revoked_at": k.revoked_at,
                }
                for k in keys.listed(session)
            ]
    finally:
        engine.dispose()
    if _emit(rows, tuple(rows[0]) if rows else (), output):
        return
    table = Table("id", "name", "scope", "key", "created", "last used", "revoked")
    for r in rows:
        table.add_row(
            str(r["id"]),
            str(r["name"]),
            str(r["scope"]),
            f"{r['prefix']}…",
            f"{r['created_at']:%Y-%m-%d %H:%M}",
            "" if r["last_used_at"] is None else f"{r['last_used_at']:%Y-%m-%d %H:%M}",
            "" if r["revoked_at"] is None else f"{r['revoked_at']:%Y-%m-%d %H:%M}",
        )
    out.print(table)


@apikey_app.command("revoke")
def apikey_revoke(key_id: Annotated[int, typer.Argument(help="The key's id (see `apikey list`).")]) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    from crm_perf_sync.apikeys import service as keys
    from crm_perf_sync.kit.db import session_scope

    engine, factory = _store_session()
    try:
        with session_scope(factory) as session:
            row = _guard(lambda: keys.revoke(session, key_id))
            prefix = row.prefix
    finally:
        engine.dispose()
    out.print(f"revoked API key {key_id} ({prefix}…)")


def _in_store(action: Callable[[Any], T]) -> T:
    """Run ``action(session)`` in one unit of work on the configured store."""
    from crm_perf_sync.kit.db import session_scope

    engine, factory = _store_session()
    try:
        with session_scope(factory) as session:
            return _guard(lambda: action(session))
    finally:
        engine.dispose()


def _guard_from_settings() -> Any:
    from crm_perf_sync.webhooks.security import Guard

    return Guard(allow=tuple(_settings().webhook_allow_hosts))


@webhooks_app.command("add")
def webhooks_add(
    url: Annotated[str, typer.Argument(help="https://… (plain http only for allow-listed hosts).")],
    event: Annotated[list[str] | None, typer.Option(help="An event type or pattern (repeatable).")] = None,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    rule: Annotated[list[str] | None, typer.Option(help="Only these alert rules (repeatable).")] = None,
    severity: Annotated[
        list[str] | None, typer.Option(help="Only alerts of these severities (repeatable).")
    ] = None,
    send_firing: Annotated[
        bool, typer.Option(help="Also send it the alerts firing now (at the next alert evaluation).")
    ] = False,
) -> None:
    """Add an endpoint; prints its signing secret once."""
    from crm_perf_sync.webhooks import service

    spec = service.EndpointSpec(
        url,
        description,
        tuple(event or ["*"]),
        tuple(rule) if rule else None,
        tuple(severity) if severity else None,
        True,
    )
    guard = _guard_from_settings()

    def add(session: Any) -> tuple[int, str]:
        row, secret = service.create_endpoint(session, spec, guard, send_firing=send_firing)
        return row.id, secret

    endpoint_id, secret = _in_store(add)
    err.print(f"added webhook endpoint {endpoint_id}; its signing secret is shown once, store it now:")
    out.print(secret)


@webhooks_app.command("list")
def webhooks_list() -> None:
    """The endpoints, their subscriptions and health."""
    from crm_perf_sync.webhooks import repository as repo

    rows = _in_store(lambda session: [dict(r._mapping) for r in repo.endpoints(session)])
    table = Table("id", "url", "events", "enabled", "failing since", "disabled because")
    for r in rows:
        table.add_row(
            str(r["id"]),
            str(r["url"]),
            ", ".join(r["event_types"]),
            "yes" if r["enabled"] else "no",
            "" if r["failing_since"] is None else f"{r['failing_since']:%Y-%m-%d %H:%M}",
            str(r["disabled_reason"] or ""),
        )
    out.print(table)


@webhooks_app.command("remove")
def webhooks_remove(endpoint_id: Annotated[int, typer.Argument(help="The endpoint's id.")]) -> None:
    """Remove an endpoint and its deliveries."""
    from crm_perf_sync.webhooks import service

    _in_store(lambda session: service.delete_endpoint(session, endpoint_id))
    out.print(f"removed webhook endpoint {endpoint_id}")


@webhooks_app.command("test")
def webhooks_test(endpoint_id: Annotated[int, typer.Argument(help="The endpoint's id.")]) -> None:
    """Queue a webhook.test event to one endpoint (a worker sends it)."""
    from crm_perf_sync.webhooks import service

    message_id = _in_store(lambda session: service.send_test(session, endpoint_id))
    out.print(f"queued webhook.test {message_id} to endpoint {endpoint_id}")


@webhooks_app.command("rotate")
def webhooks_rotate(endpoint_id: Annotated[int, typer.Argument(help="The endpoint's id.")]) -> None:
    """A new signing secret; the old one keeps signing alongside for 24 hours."""
    from crm_perf_sync.webhooks import service

    secret = _in_store(lambda session: service.rotate_secret(session, endpoint_id)[1])
    err.print(f"rotated the secret of endpoint {endpoint_id}; the previous one signs too for 24 hours:")
    out.print(secret)


@webhooks_app.command("replay")
def webhooks_replay(
    endpoint_id: Annotated[int, typer.Argument(help="The endpoint's id.")],
    since: Annotated[str | None, typer.Option(help="ISO date-time (UTC without a zone).")] = None,
    firing: Annotated[
        bool, typer.Option(help="The alerts firing now, whenever they fired (at the next alert evaluation).")
    ] = False,
) -> None:
    """Deliver again the events the endpoint subscribes to: since a time, or the alerts firing now."""
    from datetime import UTC, datetime

    from crm_perf_sync.webhooks import service

    if since is None and not firing:
        raise _fail("give --since, --firing or both", 2)
    moment = None
    if since is not None:
        try:
            moment = datetime.fromisoformat(since)
        except ValueError:
            raise _fail(f"--since {since!r} is not an ISO date-time", 2) from None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    def replay(session: Any) -> int:
        count = 0 if moment is None else service.replay(session, endpoint_id, moment)
        if firing:
            service.request_firing(session, endpoint_id)
        return count

    count = _in_store(replay)
    if moment is not None:
        out.print(f"queued {count} event(s) to endpoint {endpoint_id}")
    if firing:
        out.print(f"the alerts firing now go to endpoint {endpoint_id} at the next alert evaluation")


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    status: Annotated[str | None, typer.Option(help="pending, succeeded, failed or cancelled.")] = None,
    endpoint: Annotated[int | None, typer.Option(help="One endpoint's id.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
) -> None:
    """Recent deliveries: status, attempts, last answer."""
    from crm_perf_sync.webhooks import repository as repo

    _check_choice("--status", status, ("pending", "succeeded", "failed", "cancelled"))

    def page(session: Any) -> list[dict[str, Any]]:
        rows, _ = repo.deliveries_page(
            session, endpoint_id=endpoint, event_type=None, status=status, after=None, limit=limit
        )
        return [dict(r._mapping) for r in rows]

    table = Table("id", "endpoint", "event", "webhook-id", "status", "attempts", "last", "next attempt")
    for r in _in_store(page):
        table.add_row(
            str(r["id"]),
            str(r["endpoint_id"]),
            str(r["event_type"]),
            str(r["message_id"]),
            str(r["status"]),
            str(r["attempts"]),
            str(r["last_status_code"] or r["last_error"] or ""),
            ""
            if r["next_attempt_at"] is None or r["status"] != "pending"
            else f"{r['next_attempt_at']:%H:%M:%S}",
        )
    out.print(table)


@webhooks_app.command("retry")
def webhooks_retry(delivery_id: Annotated[int, typer.Argument(help="The delivery's id.")]) -> None:
    """Send a delivery again now."""
    from crm_perf_sync.webhooks import service

    _in_store(lambda session: service.retry_delivery(session, delivery_id))
    out.print(f"delivery {delivery_id} is due again now")


@alerts_app.command("status")
def alerts_status(
    state: Annotated[str | None, typer.Option(help="ok, pending, firing or resolved.")] = None,
    rule: Annotated[str | None, typer.Option(help="One rule's id.")] = None,
    output: Output = "table",
) -> None:
    """Where every alert rule stands, per scope."""
    from crm_perf_sync.alerts import repository as repo
    from crm_perf_sync.kpi.repository import scope_names

    _check_choice("--state", state, ("ok", "pending", "firing", "resolved"))
    _check_choice("--format", output, ("table", "csv", "json"))

    def read(session: Any) -> list[dict[str, Any]]:
        names = scope_names(session)
        rows = [dict(r._mapping) for r in repo.current_states(session, rule, state)]
        for row in rows:
            row["scope_name"] = names.get((row["scope"], row["scope_id"]), row["scope_id"])
        return rows

    rows = _in_store(read)
    if _emit(rows, ALERT_STATE_COLUMNS, output):
        return
    table = Table("rule", "scope", "name", "state", "since", "value", "threshold", "last outcome")
    for r in rows:
        table.add_row(
            str(r["rule_id"]),
            str(r["scope"]),
            str(r["scope_name"]),
            str(r["state"]),
            f"{r['since']:%Y-%m-%d %H:%M}",
            _number(r["value"]),
            _number(r["threshold"]),
            str(r["outcome"]),
        )
    out.print(table)
    if not rows:
        err.print("no alert states yet: rules are evaluated at every refresh (`crm-perf-sync refresh`)")


ALERT_STATE_COLUMNS = (
    "rule_id",
    "scope",
    "scope_id",
    "scope_name",
    "currency",
    "state",
    "since",
    "value",
    "threshold",
    "outcome",
    "period_key",
)


@alerts_app.command("history")
def alerts_history(
    rule: Annotated[str | None, typer.Option(help="One rule's id.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    output: Output = "table",
) -> None:
    """Every change of an alert state, newest first."""
    from crm_perf_sync.alerts import repository as repo

    _check_choice("--format", output, ("table", "csv", "json"))
    rows = _in_store(
        lambda session: [dict(r._mapping) for r in repo.transitions_page(session, rule, None, None, limit)[0]]
    )
    columns = tuple(rows[0]) if rows else ("at", "rule_id", "scope_id", "from_state", "to_state")
    if _emit(rows, columns, output):
        return
    table = Table("at", "rule", "scope id", "from", "to", "value", "threshold", "period", "reason")
    for r in rows:
        table.add_row(
            f"{r['at']:%Y-%m-%d %H:%M:%S}",
            str(r["rule_id"]),
            str(r["scope_id"]),
            str(r["from_state"]),
            str(r["to_state"]),
            _number(r["value"]),
            _number(r["threshold"]),
            str(r["period_key"] or ""),
            str(r["reason"] or ""),
        )
    out.print(table)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@config_app.command("check")
def config_check(path: Annotated[Path | None, typer.Argument(help="File to check.")] = None) -> None:
    """Validate a configuration file and report every problem with file, line and key."""
    from crm_perf_sync.plugins import ConnectorRegistry
    from crm_perf_sync.runtime import load_checked_config

    settings = _settings(path)

    def run() -> None:
        loaded = load_checked_config(settings, ConnectorRegistry.discover())
        app_config = loaded.app
        counts = ", ".join(
            _count(n, word)
            for n, word in (
                (len(app_config.connections), "connection"),
                (len(app_config.all_teams()), "team"),
                (len(loaded.kpis), "KPI"),
                (len(app_config.kpis.scorecards), "scorecard"),
                (len(app_config.alerts.rules), "alert rule"),
            )
        )
        out.print(f"{loaded.path}: OK ({counts}; business timezone {app_config.business.timezone})")

    _guard(run)


@connectors_app.command("list")
def connectors_list() -> None:
    """List the installed connectors (and any that failed to load)."""
    from crm_perf_sync.plugins import ConnectorRegistry

    _settings()
    registry = ConnectorRegistry.discover()
    table = Table("kind", "package", "description")
    for kind in registry.kinds():
        connector = registry.connectors[kind]
        table.add_row(kind, registry.distributions.get(kind, "?"), connector.description)
    out.print(table)
    for broken in registry.broken:
        err.print(_styled(("skipped", "yellow"), f" {broken.kind} ({broken.target}): {broken.error}"))


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
        outcomes = []
        for connection_id in ids:
            outcome = _guard(
                lambda cid=connection_id: _sync_with_progress(service, cid, full, stop, allow_mass_delete)  # type: ignore[misc]
            )
            code = _sync_exit_code([outcome])
            style = "green" if code == 0 else "red" if code == 1 else "yellow"
            out.print(_styled((outcome.summary(), style)), soft_wrap=True)
            _print_reports(service, outcome)
            outcomes.append(outcome)
        code = _sync_exit_code(outcomes)
        if code:
            raise typer.Exit(code)
    finally:
        runtime.close()


def _print_reports(service: Any, outcome: Any, shown: int = 10) -> None:
    """The run's first bad records and warnings, each with what is wrong and where."""
    reported = outcome.total("skipped") + outcome.total("warnings")
    if not reported:
        return
    for level, stream, message in _guard(lambda: service.reports(outcome.run_id, shown)):
        out.print(f"  {level}: {stream}: {message}", soft_wrap=True)
    if reported > shown:
        out.print(f"  ... and {reported - shown:,} more, stored with run {outcome.run_id}")


def _sync_exit_code(outcomes: list[Any]) -> int:
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
    service: Any, connection_id: str, full: bool, stop: threading.Event, allow_mass_delete: bool
) -> Any:
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
        tasks: dict[str, Any] = {}

        def on_progress(stream: str, stats: Any) -> None:
            if stream not in tasks:
                tasks[stream] = progress.add_task("", total=None)
            progress.update(
                tasks[stream],
                description=_visible(
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
    from crm_perf_sync.runtime import build_runtime

    settings = _settings(config)
    stop = _install_stop_handler()
    runtime = _guard(lambda: build_runtime(settings))
    try:
        _guard(lambda: runtime.ensure_schema(auto_migrate=runtime.is_sqlite))
        job = RefreshJob(runtime.session_factory, runtime.config)
        ttl = timedelta(seconds=max(settings.lease_ttl_seconds, 900))
        outcome = _guard(
            lambda: job.refresh_exclusive(
                ttl=ttl, wait=ttl, kpi_ids=kpi if kpi else None, full=full, should_stop=stop.is_set
            )
        )
        if outcome is not None:
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
    "dimension",
    "dimension_value",
    "value",
    "numerator",
    "denominator",
    "sample_count",
    "low_sample",
    "target",
    "attainment",
    "gap",
    "pace",
    "computed_at",
)

Output = Annotated[str, typer.Option("--format", help="table, csv or json.")]


def _check_choice(name: str, value: str | None, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise _fail(f"{name} must be one of {', '.join(choices)}, got {value!r}", 2)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return value.isoformat() if hasattr(value, "isoformat") else value


def _emit(rows: list[dict[str, Any]], columns: tuple[str, ...], output: str) -> bool:
    """Write rows as csv or json; ``False`` when the caller should draw a table instead."""
    import csv

    import orjson

    if output == "json":
        sys.stdout.write(
            orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
            + "\n"
        )
        return True
    if output == "csv":
        from crm_perf_sync.kit.csvout import cell

        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: cell(v) for k, v in row.items()})
        return True
    return False


def _number(value: float | None, low_sample: bool = False, percent: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value:.1%}" if percent else f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return text + (" *" if low_sample else "")


def _quantity(value: float | None) -> str:
    """A numerator or denominator: a count as the whole number it is, an amount to the cent."""
    if value is None:
        return ""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


@app.command()
def values(
    kpi_id: Annotated[str, typer.Argument(help="A KPI id, e.g. win_rate.")],
    grain: Annotated[str | None, typer.Option(help="week, month, quarter, year or all.")] = None,
    scope: Annotated[str | None, typer.Option(help="company, team or owner.")] = None,
    scope_id: Annotated[str | None, typer.Option("--scope-id", help="One team or owner.")] = None,
    period: Annotated[str | None, typer.Option(help="A period key: its start date, e.g. 2017-01-01.")] = None,
    by: Annotated[
        str | None, typer.Option("--by", help="A breakdown dimension, e.g. lead_source (stage for a funnel).")
    ] = None,
    output: Output = "table",
    config: ConfigOption = None,
) -> None:
    """Print a KPI's materialised values (run `refresh` first); `*` marks a value below min sample."""
    from crm_perf_sync.kit.db import session_scope
    from crm_perf_sync.kit.timeutil import utc_now
    from crm_perf_sync.kpi import repository as kpi_repo
    from crm_perf_sync.kpi.schemas import GRAINS
    from crm_perf_sync.kpi.values import pace, tidy
    from crm_perf_sync.runtime import build_runtime

    _check_choice("--grain", grain, GRAINS)
    _check_choice("--scope", scope, ("company", "team", "owner"))
    _check_choice("--format", output, ("table", "csv", "json"))
    settings = _settings(config)
    runtime = _guard(lambda: build_runtime(settings))
    try:
        _guard(lambda: runtime.ensure_schema(auto_migrate=runtime.is_sqlite))
        kpi = runtime.config.kpis.get(kpi_id)
        if kpi is None:
            raise _fail(f"no KPI {kpi_id!r} (defined: {', '.join(sorted(runtime.config.kpis))})")
        zone = runtime.config.app.business.timezone
        now = utc_now()
        with session_scope(runtime.session_factory) as session:
            names = kpi_repo.scope_names(session)
            found = kpi_repo.values(
                session,
                kpi_id,
                grain=grain,
                scope=scope,
                period_key=period,
                scope_id=scope_id,
                dimension=by or "",
            )
            rows = []
            for v in found:
                row = {column: getattr(v, column, None) for column in VALUE_COLUMNS}
                for column in ("value", "numerator", "denominator", "target", "attainment", "gap"):
                    row[column] = tidy(row[column])
                row["scope_name"] = names.get((v.scope, v.scope_id), v.scope_id)
                row["pace"] = tidy(pace(v.attainment, v.period_start, v.period_end, now, zone))
                rows.append(row)
    finally:
        runtime.close()
    if _emit(rows, VALUE_COLUMNS, output):
        return
    percent = kpi.unit == "percent"
    with_targets = any(row["target"] is not None for row in rows)
    headers = ["grain", "period", "scope", "name", "currency"]
    if by:
        headers.append(by)
    headers += ["value", "numerator", "denominator", "n"]
    if with_targets:
        headers += ["target", "attainment", "pace"]
    table = Table(*headers)
    for row in rows:
        cells = [row["grain"], row["period_key"], row["scope"], str(row["scope_name"]), row["currency"]]
        if by:
            cells.append(row["dimension_value"] or "(none)")
        cells += [
            _number(row["value"], bool(row["low_sample"]), percent),
            _quantity(row["numerator"]),
            _quantity(row["denominator"]),
            str(row["sample_count"]),
        ]
        if with_targets:
            cells += [
                _number(row["target"], percent=percent),
                _number(row["attainment"], percent=True),
                _number(row["pace"], percent=True),
            ]
        table.add_row(*cells)
    out.print(table)
    if not rows:
        err.print(f"no values for {kpi_id}: run `crm-perf-sync refresh` after a sync")


@app.command()
def explain(
    kpi_id: Annotated[str, typer.Argument(help="A KPI id, e.g. win_rate.")],
    grain: Annotated[str, typer.Option(help="week, month, quarter, year or all.")] = "all",
    period: Annotated[str, typer.Option(help="The period key (its start date), or all.")] = "all",
    scope: Annotated[str, typer.Option(help="company, team or owner.")] = "company",
    scope_id: Annotated[str, typer.Option("--scope-id", help="The team or owner id.")] = "company",
    currency: Annotated[str, typer.Option(help="The currency of an amount KPI's value.")] = "",
    by: Annotated[str, typer.Option("--by", help="The breakdown dimension of the value.")] = "",
    value_of: Annotated[str, typer.Option("--value", help="The breakdown value (with --by).")] = "",
    role: Annotated[
        str | None, typer.Option("--part", help="Only this side's records: numerator, denominator.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Records per page (at most 500).")] = 50,
    after: Annotated[int | None, typer.Option(help="The next page: the id printed as next.")] = None,
    output: Output = "table",
    config: ConfigOption = None,
) -> None:
    """Show how one KPI value was computed: formula, filters, and the records it came from."""
    from dataclasses import asdict

    from crm_perf_sync.kpi import repository as kpi_repo
    from crm_perf_sync.kpi.explain import ValueRef
    from crm_perf_sync.kpi.explain import explain as explain_value
    from crm_perf_sync.kpi.schemas import GRAINS
    from crm_perf_sync.kpi.service import KpiService
    from crm_perf_sync.runtime import build_runtime

    _check_choice("--grain", grain, GRAINS)
    _check_choice("--scope", scope, ("company", "team", "owner"))
    _check_choice("--format", output, ("table", "json"))
    if (scope == "company") != (scope_id == "company"):
        raise _fail("--scope-id names the team or owner (it is 'company' exactly for --scope company)", 2)
    settings = _settings(config)
    runtime = _guard(lambda: build_runtime(settings))
    try:
        _guard(lambda: runtime.ensure_schema(auto_migrate=runtime.is_sqlite))
        service = KpiService(runtime.config.kpi_config())
        kpi = _guard(lambda: service.kpi(kpi_id))
        ref = ValueRef(kpi_id, grain, period, scope, scope_id, currency, by, value_of)  # type: ignore[arg-type]
        with runtime.session_factory() as session:
            calendar = service.calendar(session)
            membership = kpi_repo.load_membership(session)
            result = _guard(
                lambda: explain_value(
                    session, kpi, ref, calendar, membership, role=role, after=after, limit=limit
                )
            )
    finally:
        runtime.close()
    if output == "json":
        _emit([asdict(result)], (), "json")
        return
    out.print(
        _styled(
            (result.name, "bold"),
            f" ({result.kpi_id}, {result.type}, {result.unit}, {result.direction} is better)",
        )
    )
    out.print(f"formula: {result.formula}")
    if result.value is None:
        err.print("no stored value for this period and scope (nothing counted, or not refreshed yet)")
    else:
        v = result.value
        out.print(
            f"value {_number(v['value'])} = numerator {v['numerator']:,.2f}"
            + ("" if v["denominator"] is None else f" / denominator {v['denominator']:,.2f}")
            + f"; sample {v['sample_count']}"
            + (" (below the minimum sample)" if v["low_sample"] else "")
            + (
                ""
                if v["target"] is None
                else f"; target {_number(v['target'])}, attainment {_number(v['attainment'], percent=True)}"
            )
        )
    for used in result.inputs:
        out.print(
            f"  {' and '.join(used['used_as'])} = {_number(used['value'])}"
            + ("" if used["target"] is None else f" (target {_number(used['target'])})")
            + ("  [not stored for this period and scope]" if used["currency"] is None else "")
            + f"  -> crm-perf-sync explain {used['kpi_id']} --grain {grain} --period {period}"
            + f" --scope {scope} --scope-id '{scope_id}'"
        )
    for part in result.parts:
        out.print(
            _styled(
                "\n",
                (part.role, "bold"),
                f": {part.entity} placed by {part.period_field}; each adds {part.contributes}",
            )
        )
        out.print("  where " + " and ".join(part.filters))
        if not part.records:
            continue
        wanted = [
            "external_id",
            "owner_external_id",
            part.period_field,
            "stage",
            "status",
            "amount",
            "currency",
        ]
        columns = [c for c in dict.fromkeys(wanted) if c in part.records[0]]
        table = Table(*columns, "adds")
        for record in part.records:
            table.add_row(*(str(_cell(record[c])) for c in columns), _number(record["contribution"]))
        out.print(table)
        if part.next_after is not None:
            out.print(f"  more: --after {part.next_after}")


SCORE_COLUMNS = (
    "scorecard_id",
    "grain",
    "period_key",
    "period_start",
    "period_end",
    "scope_id",
    "owner_name",
    "team_id",
    "team_name",
    "score",
    "grade",
    "rank",
    "team_rank",
    "dropped_components",
    "components",
    "computed_at",
)


@app.command()
def scores(
    scorecard_id: Annotated[str, typer.Argument(help="A scorecard id from the configuration.")],
    grain: Annotated[str | None, typer.Option(help="week, month, quarter or year.")] = None,
    period: Annotated[
        str | None,
        typer.Option(help="A period key (its start date) or all; default the latest (all with --owner)."),
    ] = None,
    owner: Annotated[str | None, typer.Option(help="One rep's scope id (connection:owner id).")] = None,
    output: Output = "table",
    config: ConfigOption = None,
) -> None:
    """Print a scorecard's ranked reps per period; with --owner, each component's breakdown."""
    from crm_perf_sync.kit.db import session_scope
    from crm_perf_sync.kpi import repository as kpi_repo
    from crm_perf_sync.kpi.service import KpiService
    from crm_perf_sync.runtime import build_runtime

    _check_choice("--format", output, ("table", "csv", "json"))
    _check_choice("--grain", grain, ("week", "month", "quarter", "year"))
    settings = _settings(config)
    runtime = _guard(lambda: build_runtime(settings))
    try:
        _guard(lambda: runtime.ensure_schema(auto_migrate=runtime.is_sqlite))
        card = _guard(lambda: KpiService(runtime.config.kpi_config()).scorecard(scorecard_id))
        with session_scope(runtime.session_factory) as session:
            names = kpi_repo.scope_names(session)
            rows = []
            key = None if period == "all" else period
            for s in kpi_repo.scores(session, card.id, grain=grain, period_key=key, scope_id=owner):
                row = {column: getattr(s, column, None) for column in SCORE_COLUMNS}
                row["owner_name"] = names.get(("owner", s.scope_id), s.scope_id)
                row["team_name"] = names.get(("team", s.team_id), s.team_id) if s.team_id else ""
                rows.append(row)
    finally:
        runtime.close()
    if period is None and owner is None:
        latest: dict[str, str] = {}
        for row in rows:
            grain_of, key_of = str(row["grain"]), str(row["period_key"])
            latest[grain_of] = max(latest.get(grain_of, ""), key_of)
        rows = [row for row in rows if row["period_key"] == latest[str(row["grain"])]]
    if output == "csv":
        for row in rows:
            row["components"] = json_text(row["components"])
    if _emit(rows, SCORE_COLUMNS, output):
        return
    table = Table("grain", "period", "rank", "rep", "team", "team rank", "score", "grade", "dropped")
    for row in rows:
        table.add_row(
            row["grain"],
            row["period_key"],
            str(row["rank"] or "-"),
            str(row["owner_name"]),
            str(row["team_name"] or ""),
            str(row["team_rank"] or "-"),
            _number(row["score"]),
            row["grade"] or "-",
            str(row["dropped_components"]),
        )
    out.print(table)
    if owner is not None:
        for row in rows:
            detail = Table(
                "component", "weight", "applied", "value", "target", "normalised", "dropped because"
            )
            for c in row["components"] or []:
                detail.add_row(
                    c["kpi_id"],
                    f"{c['weight']:.2f}",
                    f"{c['applied_weight']:.2f}",
                    _number(c["value"]),
                    _number(c["target"]),
                    _number(c["normalised"]),
                    c["dropped"] or "",
                )
            out.print(f"\n{row['period_key']} ({row['grain']}): score {_number(row['score'])}")
            out.print(detail)
            out.print(
                f"  each component's deals: crm-perf-sync explain KPI --grain {row['grain']} "
                f"--period {row['period_key']} --scope owner --scope-id '{row['scope_id']}'"
            )
    if not rows:
        err.print(f"no scores for {scorecard_id}: run `crm-perf-sync refresh` after a sync")


def json_text(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()


def _serve_api(runtime: Any, settings: Settings) -> None:
    import uvicorn

    from crm_perf_sync.api.app import create_app
    from crm_perf_sync.api.server import server_options

    uvicorn.run(
        create_app(runtime.engine, runtime.config, runtime.webhook_guard()),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) or None,
        **server_options(),
    )


def _announce(runtime: Any, settings: Settings, *, new_store: bool) -> None:
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
    log.info("API docs: %s/docs (OpenAPI: %s/openapi.json)", base, base)
    if not (new_store and runtime.is_sqlite and settings.demo_key and sys.stdout.isatty()):
        log.info("API keys: crm-perf-sync apikey create --scope read|admin")
        return
    with session_scope(runtime.session_factory) as session:
        session.connection(execution_options={WRITE_LOCK: True})
        key = demo_key(session)
    # soft_wrap: a key or a URL must never be broken across lines (it is copied from here).
    out.print(f"read key for this new store, shown once (only its hash is kept): {key}", soft_wrap=True)
    out.print(
        f'try: curl -H "Authorization: Bearer {key}" "{base}/api/v1/kpis/win_rate/values?grain=month"',
        soft_wrap=True,
    )


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


@app.command()
def status(output: Output = "table", config: ConfigOption = None) -> None:
    """How the deployment is doing: each connection's last run, lag and errors; the KPI refresh;
    webhook deliveries waiting; alerts firing."""
    from crm_perf_sync.alerts import repository as alerts_repo
    from crm_perf_sync.kit.db import session_scope
    from crm_perf_sync.kit.timeutil import utc_now
    from crm_perf_sync.kpi.repository import scope_names
    from crm_perf_sync.ops import status as ops
    from crm_perf_sync.runtime import build_runtime

    _check_choice("--format", output, ("table", "json"))
    settings = _settings(config)
    runtime = _guard(lambda: build_runtime(settings))
    try:
        _guard(lambda: runtime.ensure_schema(auto_migrate=False))
        with session_scope(runtime.session_factory) as session:
            now = utc_now()
            names = scope_names(session)
            firing = [dict(r._mapping) for r in alerts_repo.current_states(session, None, "firing")]
            for row in firing:
                row["scope_name"] = names.get((row["scope"], row["scope_id"]), row["scope_id"])
            report: dict[str, Any] = {
                "connections": ops.connection_status(session, runtime.config, now),
                "kpi_refresh": ops.refresh_status(session),
                "webhook_deliveries": ops.delivery_status(session, now),
                "firing_alerts": firing,
            }
    finally:
        runtime.close()
    if output == "json":
        sys.stdout.write(json_text(report) + "\n")
        return
    table = Table("connection", "kind", "last run", "ended", "last success", "lag", "failed 24h", "error")
    for c in report["connections"]:
        state = "syncing now" if c["syncing_now"] else (c["last_run_status"] or "never run")
        if c["last_run_skipped"] and not c["syncing_now"]:
            state += f", {c['last_run_skipped']:,} skipped"
        if not c["enabled"]:
            state += " (disabled)"
        ended = c["last_run_finished_at"]
        success = c["last_success_at"]
        table.add_row(
            c["connection_id"],
            c["kind"],
            state,
            f"{ended:%Y-%m-%d %H:%M}" if ended else "-",
            f"{success:%Y-%m-%d %H:%M}" if success else "-",
            _ago(c["lag_seconds"]),
            str(c["failed_runs_24h"]),
            (c["last_error"] or "")[:80],
        )
    out.print(table)
    r = report["kpi_refresh"]
    if r["last_refresh_at"] is None:
        out.print("KPI refresh: none yet")
    else:
        line = (
            f"KPI refresh: {r['last_refresh_status']} ({r['last_refresh_kind']}) at "
            f"{r['last_refresh_at']:%Y-%m-%d %H:%M} in {r['last_refresh_seconds']}s"
        )
        out.print(line + (f": {r['last_refresh_error']}" if r["last_refresh_error"] else ""), soft_wrap=True)
    d = report["webhook_deliveries"]
    out.print(
        f"Webhook deliveries: {d['pending']} pending ({d['retrying']} retrying, oldest "
        f"{_ago(d['oldest_pending_age_seconds'])}), {d['failed_24h']} failed in the last 24h"
    )
    if not firing:
        out.print("Alerts firing: none")
        return
    alerts = Table("rule", "scope", "name", "since", "value", "threshold", title="Alerts firing")
    for a in firing:
        alerts.add_row(
            str(a["rule_id"]),
            str(a["scope"]),
            str(a["scope_name"]),
            f"{a['since']:%Y-%m-%d %H:%M}",
            _number(a["value"]),
            _number(a["threshold"]),
        )
    out.print(alerts)


@app.command()
def doctor(config: ConfigOption = None) -> None:
    """Check the setup: configuration, database, migrations, each connection's credentials and
    each webhook endpoint. Exits 1 if anything is wrong."""
    from crm_perf_sync.ops.doctor import Doctor

    settings = _settings(config)
    report = Doctor(settings).run()
    for check in report.checks:
        mark = ("ok  ", "green") if check.ok else ("FAIL", "red")
        out.print(_styled(mark, f" {check.name}: {check.detail}"), soft_wrap=True)
        if not check.ok and check.hint:
            out.print(f"     → {check.hint}", soft_wrap=True)
    failed = sum(not c.ok for c in report.checks)
    if failed:
        err.print(f"{failed} problem{'s' if failed != 1 else ''} found")
        raise typer.Exit(1)
    err.print("everything checks out")


@app.command()
def serve(config: ConfigOption = None) -> None:
    """API and worker in one process (the embedded default)."""
    from crm_perf_sync.kit import migrate as migrations
    from crm_perf_sync.leases import new_holder_id
    from crm_perf_sync.runtime import build_runtime
    from crm_perf_sync.worker.process import Shutdown, sole_sqlite_worker
    from crm_perf_sync.worker.scheduler import build_scheduler, start_delivery

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
            shutdown = Shutdown(runtime, scheduler, stop, [delivery])
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
    """Syncs, KPI refreshes, alert evaluation and webhook delivery (as many replicas as you like
    on PostgreSQL; one on SQLite), with its own /metrics port."""
    from apscheduler.schedulers.background import BackgroundScheduler

    from crm_perf_sync.leases import new_holder_id
    from crm_perf_sync.runtime import build_runtime
    from crm_perf_sync.worker.process import Shutdown, sole_sqlite_worker
    from crm_perf_sync.worker.scheduler import build_scheduler, start_delivery

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
            log.info("worker started with %d scheduled job(s)", len(scheduler.get_jobs()))
            while not stop.wait(1.0):
                pass
            clean = Shutdown(runtime, scheduler, stop, [delivery])(settings.shutdown_grace_seconds)
            if metrics is not None:
                metrics.shutdown()
            if not clean:
                _exit_now(3)
    finally:
        runtime.close()


def _metrics_server(runtime: Any) -> Any:
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
