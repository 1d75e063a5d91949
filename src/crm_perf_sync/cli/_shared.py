"""What every command shares: settings, opening the store, turning expected failures into a
one-line reason and an exit code, and the common options."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

import typer
from pydantic import ValidationError

from crm_perf_sync.cli.render import (
    err,
    styled,
)
from crm_perf_sync.kit.errors import AppError, ConfigurationError
from crm_perf_sync.kit.settings import Settings

# The store, the configuration and the domains are imported by the commands that use them, so
# that `--help`, `version` and `config check` start without loading them all.
if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from crm_perf_sync.runtime import Runtime, Store

log = logging.getLogger("crm_perf_sync.cli")

T = TypeVar("T")


def _fail(message: str, code: int = 1) -> typer.Exit:
    if _logs_are_json():
        # Where the logs are JSON (containers), the reason the process stops is one of them.
        log.error(message)
    else:
        err.print(styled(("error:", "bold red"), " ", message), soft_wrap=True)
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
    """Run ``action``, turning the application's errors (:mod:`crm_perf_sync.kit.errors`, whose
    text is a sentence for the user) into a one-line reason and an exit code. Anything else is a
    bug and keeps its traceback."""
    try:
        return action()
    except ConfigurationError as exc:
        raise _fail(str(exc), 2) from None
    except AppError as exc:
        raise _fail(str(exc)) from None


ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Configuration file (default: $CRM_PERF_SYNC_CONFIG).")
]


@contextmanager
def opened_runtime(config: Path | None, *, auto_migrate: bool | None = None) -> Iterator[Runtime]:
    """The runtime of the settings and ``config``, its schema checked (migrated when
    ``auto_migrate``; by default only the embedded SQLite store is), closed on the way out."""
    from crm_perf_sync.runtime import build_runtime

    settings = _settings(config)
    runtime = _guard(lambda: build_runtime(settings))
    try:
        migrate = runtime.is_sqlite if auto_migrate is None else auto_migrate
        _guard(lambda: runtime.ensure_schema(auto_migrate=migrate))
        yield runtime
    finally:
        runtime.close()


@contextmanager
def opened_store(config: Path | None) -> Iterator[Store]:
    """The store of the settings, its schema checked (migrated on SQLite). These commands need
    no configuration; given ``config``, it is loaded and checked as every other command does."""
    from crm_perf_sync.runtime import build_runtime, open_store

    settings = _settings(config)
    store: Store = _guard(lambda: open_store(settings) if config is None else build_runtime(settings))
    try:
        _guard(lambda: store.ensure_schema(auto_migrate=store.is_sqlite))
        yield store
    finally:
        store.close()


@contextmanager
def unit_of_work(config: Path | None) -> Iterator[tuple[Store, Session]]:
    """One session on the store, committed when the block ends without an error."""
    from crm_perf_sync.kit.db import session_scope

    with opened_store(config) as store, session_scope(store.session_factory) as session:
        yield store, session


def _in_store(config: Path | None, action: Callable[[Session], T]) -> T:
    """Run ``action(session)`` in one unit of work on the store."""
    with unit_of_work(config) as (_, session):
        return _guard(lambda: action(session))


# Choices typer checks (a bad one is a usage error, exit 2, naming the option and the value) and
# `--help` lists. Those of the domains are spelled out here where their own Literal lives in a
# module too heavy to load for `--help`; mypy checks them where the value is handed over.
ScopeKind = Literal["company", "team", "owner"]
Output = Annotated[Literal["table", "csv", "json"], typer.Option("--format", help="table, csv or json.")]
TableOrJson = Annotated[Literal["table", "json"], typer.Option("--format", help="table or json.")]
