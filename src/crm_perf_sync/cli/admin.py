"""Administration: the version, migrations, the configuration, the installed connectors and
REST API keys."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from crm_perf_sync import __version__
from crm_perf_sync.cli._shared import ConfigOption, TableOrJson, _fail, _guard, _in_store, _settings
from crm_perf_sync.cli.render import (
    emit,
    err,
    out,
    styled,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

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
    from crm_perf_sync.kit.settings import redact_url
    from crm_perf_sync.runtime import open_store

    settings = _settings()
    if not migrations.is_known_revision(revision):
        raise _fail(
            f"no revision {revision!r} in this version's migrations (its newest is "
            f"{migrations.head_revision()}: `--to head`)",
            2,
        )

    def run() -> None:
        store = open_store(settings)  # its schema is what this changes: no check first
        try:
            if downgrade:
                migrations.downgrade(store.engine, revision)
            else:
                migrations.upgrade(store.engine, revision)
            current = migrations.current_revision(store.engine)
        finally:
            store.close()
        out.print(f"database {redact_url(settings.database_url_value())} at revision {current or 'base'}")

    _guard(run)


@apikey_app.command("create")
def apikey_create(
    scope: Annotated[
        Literal["read", "editor", "admin"],
        typer.Option(
            help="read (reads everything), editor (also enters measures) or admin (writes everything)."
        ),
    ] = "read",
    name: Annotated[str, typer.Option(help="Who or what uses the key, e.g. 'Power BI finance'.")] = "api key",
    config: ConfigOption = None,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from crm_perf_sync.apikeys import service as keys

    def create(session: Session) -> tuple[int, str, str]:
        row, key = keys.create(session, name, scope)
        return row.id, row.prefix, key

    key_id, prefix, key = _in_store(config, create)
    err.print(f"created API key {key_id} ({scope}, {name!r}, {prefix}…); it is shown once, store it now:")
    out.print(key)


@apikey_app.command("list")
def apikey_list(
    output: TableOrJson = "table",
    config: ConfigOption = None,
) -> None:
    """List the keys (their prefixes, never the keys)."""
    from crm_perf_sync.apikeys import service as keys

    rows = _in_store(
        config,
        lambda session: [
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
        ],
    )
    if emit(rows, tuple(rows[0]) if rows else (), output):
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
def apikey_revoke(
    key_id: Annotated[int, typer.Argument(help="The key's id (see `apikey list`).")],
    config: ConfigOption = None,
) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    from crm_perf_sync.apikeys import service as keys

    prefix = _in_store(config, lambda session: keys.revoke(session, key_id).prefix)
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
                (len(loaded.measures), "measure"),
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
        for preset, about in connector.presets().items():
            table.add_row(f"  {kind}: {preset}", "", about)
    out.print(table)
    for broken in registry.broken:
        err.print(styled(("skipped", "yellow"), f" {broken.kind} ({broken.target}): {broken.error}"))
