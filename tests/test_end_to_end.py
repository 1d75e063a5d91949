"""The product as a user runs it: the CLI against the shipped example configurations, and a sync
killed with SIGKILL mid-way that, re-run, ends exactly where an uninterrupted sync ends."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, Table, func, select, text

from crm_perf_sync.kit.db import create_db_engine
from tests.conftest import DATA_DIR
from tests.processes import freeze_when

REPO = Path(__file__).resolve().parent.parent
# Columns that record when the store saw a row, not what the row is.
BOOKKEEPING = {"id", "synced_at", "first_synced_at", "recorded_at", "parent_id"}
DATA_TABLES = ["team", "owner", "pipeline_stage", "lead", "opportunity", "stage_change"]


def cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from crm_perf_sync.cli import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "250", "CRM_DATA_DIR": str(DATA_DIR), **env},
    )


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    process = cli(*args, env=env)
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every data row of the store, without bookkeeping columns, in a stable order."""
    metadata = MetaData()
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for name in DATA_TABLES:
            table = Table(name, metadata, autoload_with=conn)
            columns = [c for c in table.c if c.name not in BOOKKEEPING]
            rows = conn.execute(select(*columns)).all()
            out[name] = sorted((tuple(_plain(v) for v in row) for row in rows), key=repr)
    return out


def _plain(value: Any) -> Any:
    """One representation for both backends (the reference store may be the other one)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, Decimal):
        return float(value)
    return value


def count(engine: Engine, table: str, where: str = "") -> int:
    with engine.connect() as conn:
        t = Table(table, MetaData(), autoload_with=conn)
        stmt = select(func.count()).select_from(t)
        if where:
            column, value = where.split("=")
            stmt = stmt.where(t.c[column] == value)
        return int(conn.execute(stmt).scalar_one())


EXPECTED = {
    # config: {table: rows}, counted independently in tests/connectors/csv against the files.
    "maven": {"opportunity": 8_800, "owner": 35, "team": 9, "lead": 0},
    "zoho": {"opportunity": 3_632, "lead": 3_900, "owner": 11},
    "x_education": {"lead": 9_240, "opportunity": 0},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_example_config_imports_completely_and_a_second_run_changes_nothing(
    name: str, db_url: str
) -> None:
    env = {"CRM_PERF_SYNC_DATABASE_URL": db_url}
    config = f"config/examples/{name}.yaml"
    first = run_cli("sync", "--config", config, env=env)
    assert first.returncode == 0, first.stderr
    assert ": succeeded in" in first.stdout
    assert "skipped 0" in first.stdout
    engine = create_db_engine(db_url)
    try:
        for table, rows in EXPECTED[name].items():
            assert count(engine, table) == rows, table
        before = snapshot(engine)
        second = run_cli("sync", "--config", config, env=env)
        assert second.returncode == 0, second.stderr
        assert "inserted 0, updated 0" in second.stdout
        assert "deleted 0" in second.stdout
        assert snapshot(engine) == before
    finally:
        engine.dispose()


DEMO_CONFIG = """
connections:
  - id: demo
    kind: demo
    settings:
      seed: 7
      opportunities: 5000
      batch_size: 500
      as_of: "2025-10-01T00:00:00Z"
"""


def test_a_sync_killed_mid_way_resumes_to_the_same_state_as_an_uninterrupted_one(
    db_url: str, tmp_path: Path, sqlite_template: Path
) -> None:
    config = tmp_path / "demo.yaml"
    config.write_text(DEMO_CONFIG)
    env = {
        "CRM_PERF_SYNC_DATABASE_URL": db_url,
        "CRM_PERF_SYNC_CONFIG": str(config),
        "CRM_PERF_SYNC_SYNC_BATCH_SIZE": "500",
    }
    engine = create_db_engine(db_url)
    try:
        victim = cli("sync", env=env)
        # Frozen once the leads stream has committed a checkpoint, however fast or slow the
        # machine (looked at only while frozen): what the store holds at the kill is what it held then.
        freeze_when(
            [victim],
            lambda: count(engine, "sync_checkpoint", "stream=leads") and count(engine, "lead") > 2000,
            "a leads checkpoint",
        )
        at_kill = {table: count(engine, table) for table in ("lead", "opportunity", "stage_change")}
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
        assert victim.returncode == -signal.SIGKILL

        resumed = run_cli("sync", env=env)
        assert resumed.returncode == 0, resumed.stderr
        assert "demo: succeeded" in resumed.stdout
        with engine.connect() as conn:
            runs = Table("sync_run", MetaData(), autoload_with=conn)
            statuses = [row.status for row in conn.execute(select(runs.c.status).order_by(runs.c.id))]
        assert statuses == ["abandoned", "succeeded"]
        interrupted = snapshot(engine)
    finally:
        engine.dispose()

    reference_url = f"sqlite:///{tmp_path / 'reference.db'}"
    (tmp_path / "reference.db").write_bytes(sqlite_template.read_bytes())
    straight = run_cli("sync", env={**env, "CRM_PERF_SYNC_DATABASE_URL": reference_url})
    assert straight.returncode == 0, straight.stderr
    reference_engine = create_db_engine(reference_url)
    try:
        reference = snapshot(reference_engine)
    finally:
        reference_engine.dispose()

    for table in DATA_TABLES:
        assert len(interrupted[table]) == len(reference[table]), table
        assert interrupted[table] == reference[table], f"{table} differs after the resumed sync"
    # The kill really came mid-way: the store then held less than a whole sync writes.
    assert at_kill["lead"] > 0
    assert sum(at_kill.values()) < sum(len(reference[t]) for t in at_kill), at_kill
    assert len(reference["stage_change"]) > 0


def in_transaction(engine: Engine) -> bool:
    """Another connection to the store has a transaction open (SQLite: holds the write lock)."""
    if engine.dialect.name == "sqlite":
        probe = sqlite3.connect(str(engine.url.database), timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()
    with engine.connect() as conn:
        busy = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state <> 'idle'"
            )
        ).scalar_one()
    return bool(busy)


def freeze_between_transactions(process: subprocess.Popen[str], engine: Engine) -> None:
    """SIGSTOP ``process`` at a moment it holds no transaction open, so a frozen process blocks
    nobody: stop, look, and let it run on a moment if it was caught inside one."""
    freeze_when([process], lambda: not in_transaction(engine), "a moment outside a transaction", step=0.01)


def is_seen_running(process: subprocess.Popen[str], engine: Engine) -> bool:
    """Whether ``process``'s sync run is seen running in the store before the process ends."""
    deadline = time.monotonic() + 120
    while not count(engine, "sync_run", "status=running"):
        if process.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the sync started no run within two minutes"
        time.sleep(0.05)
    return True


def test_a_second_process_cannot_sync_a_connection_that_is_being_synced(db_url: str, tmp_path: Path) -> None:
    config = tmp_path / "demo.yaml"
    config.write_text(DEMO_CONFIG)
    env = {"CRM_PERF_SYNC_DATABASE_URL": db_url, "CRM_PERF_SYNC_CONFIG": str(config)}
    engine = create_db_engine(db_url)
    first = cli("sync", env=env)
    try:
        # The first sync must be caught mid-way. On a fast machine under load it once finished
        # (in 2.7 s) before the poll's reads saw its run; then it syncs again, whole, and is
        # caught on a later try.
        runs = 1
        while not is_seen_running(first, engine):
            assert first.returncode == 0, first.communicate()
            first.communicate()
            assert runs < 3, "three syncs in a row each ended before their run was seen running"
            first = cli("sync", "--full", env=env)
            runs += 1
        # Held still between two transactions (its lease lasts minutes), so it is mid-sync while
        # the second one asks, however fast or slow either process runs.
        freeze_between_transactions(first, engine)
        try:
            second = run_cli("sync", env=env)
        finally:
            first.send_signal(signal.SIGCONT)
        assert second.returncode == 1
        assert "connection 'demo' is already being synced by" in second.stderr
        assert f":{first.pid}:" in second.stderr  # names the holder: host, pid, instance
        stdout, stderr = first.communicate(timeout=300)
        assert first.returncode == 0, stderr
        assert "demo: succeeded" in stdout
        assert count(engine, "sync_run") == runs  # the refused sync never started a run
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()  # and its pipes are closed, whatever happened above
        engine.dispose()
