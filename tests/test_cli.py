"""The command line as a user meets it: exit codes and one-line reasons, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from crm_perf_sync import migrate

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from crm_perf_sync.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        cwd=cwd,
        timeout=120,
    )


def test_config_check_lists_each_problem_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("connections:\n  - id: demo\n    kind: salesforse\n    schedule: {interval: soon}\n")
    result = cli("config", "check", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "2 problems in the configuration" in result.stderr
    assert f"{bad}:3: connections[0].kind: unknown connector kind 'salesforse'" in result.stderr
    assert f"{bad}:4: connections[0].schedule.interval: expected a duration" in result.stderr


def test_config_check_accepts_the_shipped_configurations() -> None:
    for path in [
        "config/crm-perf-sync.yaml",
        *sorted(str(p.relative_to(REPO)) for p in (REPO / "config/examples").glob("*.yaml")),
    ]:
        result = cli("config", "check", path)
        assert result.returncode == 0, f"{path}: {result.stderr}"
        assert f"{path}: OK" in result.stdout


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    env = {
        "CRM_PERF_SYNC_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:9/crm?connect_timeout=2",
        "CRM_PERF_SYNC_CONFIG": str(REPO / "config/crm-perf-sync.yaml"),
    }
    result = cli("sync", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: database postgresql+psycopg://nobody@127.0.0.1:9/crm")
    assert "is unreachable" in result.stderr


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    result = cli("sync", env={"CRM_PERF_SYNC_SYNC_BATCH_SIZE": "lots"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "CRM_PERF_SYNC_SYNC_BATCH_SIZE" in result.stderr
    assert "Traceback" not in result.stderr


def test_syncing_an_unknown_connection_fails_with_the_known_ones(tmp_path: Path) -> None:
    env = {
        "CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "CRM_PERF_SYNC_CONFIG": str(REPO / "config/crm-perf-sync.yaml"),
    }
    result = cli("sync", "hubspot-eu", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "no connection 'hubspot-eu'" in result.stderr
    assert "configured: demo" in result.stderr


def test_migrate_reports_the_revision(tmp_path: Path) -> None:
    env = {"CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    result = cli("migrate", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"at revision {migrate.head_revision()}")


def test_a_database_from_another_version_is_refused_in_one_line(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "store.db"
    env = {"CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{path}"}
    assert cli("migrate", env=env).returncode == 0
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
    for args in (("migrate",), ("refresh", "--config", str(REPO / "config/crm-perf-sync.yaml"))):
        result = cli(*args, env=env)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert "the database schema is at revision f00dfeedbeef, which this version" in result.stderr


def test_explain_rejects_a_period_that_is_not_one_in_one_line(tmp_path: Path) -> None:
    env = {
        "CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "CRM_PERF_SYNC_CONFIG": str(REPO / "config/crm-perf-sync.yaml"),
    }
    cases = {
        ("--grain", "month"): "period 'all' is not a date",
        ("--grain", "month", "--period", "2024-13-01"): "period '2024-13-01' is not a date",
        (
            "--grain",
            "month",
            "--period",
            "2024-01-15",
        ): "2024-01-15 does not start a month: the month containing it starts 2024-01-01",
        ("--grain", "all", "--part", "numerater"): "part must be numerator, denominator or measure",
    }
    for args, message in cases.items():
        result = cli("explain", "win_rate", *args, env=env)
        assert result.returncode == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert message in result.stderr, (args, result.stderr)
