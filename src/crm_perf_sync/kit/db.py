"""Engines and session scopes. The caller owns the transaction: a job or a request opens one
:func:`session_scope`, and everything below it only ever ``flush()``-es."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit.errors import DatabaseUnavailable, StoreBusy
from crm_perf_sync.kit.settings import redact_url

#: How long a SQLite statement waits for another process's write lock before giving up.
BUSY_TIMEOUT_SECONDS = 30


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def create_db_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine for ``url`` with the per-dialect settings the store relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            parsed,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            connect_args={"timeout": BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        event.listen(engine, "handle_error", _sqlite_on_error)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(
            parsed,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            pool_size=pool_size,
            pool_pre_ping=True,
            # No server-side prepared statements: a generic plan chosen while a table was small
            # (a sequential scan) would be kept after it grew to millions of rows.
            connect_args={"prepare_threshold": None},
        )
    raise DatabaseUnavailable(
        f"unsupported database {redact_url(url)}: use sqlite:///... or postgresql://..."
    )


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling defers BEGIN in ways that break savepoints and
    # transactional DDL; SQLAlchemy emits BEGIN itself instead (see _sqlite_on_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
    cursor.close()


def _sqlite_on_error(context: ExceptionContext) -> None:
    # SQLite takes one writer at a time. A writer that holds the lock past busy_timeout (a long
    # KPI refresh, a stopped process) is an expected state of the store, not a crash: say so, by
    # the application's own error, instead of the driver's traceback.
    original = context.original_exception
    if isinstance(original, sqlite3.OperationalError) and "database is locked" in str(original):
        store = context.engine.url.database if context.engine is not None else "?"
        raise StoreBusy(
            f"the SQLite store {store} is locked by another process (SQLite lets one process write "
            f"at a time, and the lock was held past {BUSY_TIMEOUT_SECONDS} s); try again when that "
            "process is done, or move the store to PostgreSQL to run several at once"
        ) from original


#: Execution option: begin this SQLite transaction with the write lock (``BEGIN IMMEDIATE``).
WRITE_LOCK = "crm_perf_sync_write_lock"


def _sqlite_on_begin(conn: Any) -> None:
    # A deferred BEGIN: in WAL mode readers never wait for the writer. Write units start with a
    # write (the lease renewal), so they take the lock first and wait for it (busy_timeout). A
    # unit that must read before it writes asks for the lock up front (WRITE_LOCK): a deferred
    # transaction that read and then writes fails at once, without waiting, if another writer
    # committed in between.
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_LOCK) else "BEGIN")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, autoflush=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def check_database(engine: Engine) -> None:
    """Raise :class:`DatabaseUnavailable` with a readable reason if the store cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        raise DatabaseUnavailable(
            f"database {redact_url(str(engine.url))} is unreachable: {reason}"
        ) from None
