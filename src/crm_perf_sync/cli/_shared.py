"""What every command shares: settings, opening the store, turning expected failures into a
one-line reason and an exit code, and the common options."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from crm_perf_sync.cli.render import (
    _styled,
    err,
)
from crm_perf_sync.kit.errors import AppError
from crm_perf_sync.kit.settings import Settings

log = logging.getLogger("crm_perf_sync.cli")

T = TypeVar("T")


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


Output = Annotated[str, typer.Option("--format", help="table, csv or json.")]


def _check_choice(name: str, value: str | None, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise _fail(f"{name} must be one of {', '.join(choices)}, got {value!r}", 2)
