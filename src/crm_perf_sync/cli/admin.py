"""Administration: the version, migrations, the configuration, the installed connectors and
REST API keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from crm_perf_sync import __version__
from crm_perf_sync.cli._shared import (
    _check_choice,
    _guard,
    _settings,
    _store_session,
)
from crm_perf_sync.cli.render import (
    _emit,
    _styled,
    err,
    out,
)

app = typer.Typer()
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
connectors_app = typer.Typer(help="Inspect the installed connectors.", no_args_is_help=True)
apikey_app = typer.Typer(help="Create, list and revoke REST API keys.", no_args_is_help=True)


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
