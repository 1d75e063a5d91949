"""A SQLite store another process keeps write-locked: a clear error that says so, never a traceback
from the driver (SQLite takes one writer at a time; a long KPI refresh or a stopped process holds it)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from crm_perf_sync.kit.db import create_db_engine
from crm_perf_sync.kit.errors import AppError, StoreBusy
from tests.cli_inprocess import invoke


@contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Another connection holds the store's write lock until the block ends."""
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.fixture
def sqlite_store(tmp_path: Path, sqlite_template: Path) -> Path:
    path = tmp_path / "store.db"
    path.write_bytes(sqlite_template.read_bytes())
    return path


def short_wait(engine: Engine) -> None:
    """Wait 50 ms for the lock instead of the store's 30 s, so the test need not sit it out."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _impatient(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=50")


def test_a_write_to_a_locked_sqlite_store_raises_store_busy_naming_the_store(sqlite_store: Path) -> None:
    engine = create_db_engine(f"sqlite:///{sqlite_store}")
    short_wait(engine)
    try:
        with write_locked(sqlite_store), pytest.raises(StoreBusy) as raised, engine.begin() as conn:
            conn.execute(text("INSERT INTO lease (name) VALUES ('t')"))
        assert isinstance(raised.value, AppError)
        assert raised.value.status == 503
        message = str(raised.value)
        assert str(sqlite_store) in message
        assert "locked by another process" in message
        assert "PostgreSQL" in message  # where several writers at once are needed
        # Nothing was written, and the store works again once the lock is gone.
        with engine.begin() as conn:
            assert conn.execute(text("SELECT count(*) FROM lease WHERE name = 't'")).scalar_one() == 0
            conn.execute(text("INSERT INTO lease (name) VALUES ('t')"))
    finally:
        engine.dispose()


def test_the_cli_says_the_store_is_busy_instead_of_printing_a_traceback(
    sqlite_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "demo.yaml"
    config.write_text(
        "connections:\n  - id: demo\n    kind: demo\n"
        '    settings: {opportunities: 50, as_of: "2025-10-01T00:00:00Z"}\n'
    )
    # The store's own 30 s wait, shortened for the test on the engine the command builds.
    import crm_perf_sync.runtime as runtime

    def impatient(url: str, **kwargs: int) -> Engine:
        engine = create_db_engine(url, **kwargs)
        short_wait(engine)
        return engine

    monkeypatch.setattr(runtime, "create_db_engine", impatient)
    env = {"CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{sqlite_store}", "CRM_PERF_SYNC_CONFIG": str(config)}
    with write_locked(sqlite_store):
        result = invoke("sync", env=env)
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    assert f"the SQLite store {sqlite_store} is locked by another process" in " ".join(result.stderr.split())
