"""``crm-perf-sync sync`` as cron and monitoring see it: the exit code says what happened.

0 synced; 1 failed (a mass deletion held back included); 2 usage or configuration; 65 synced but
records were rejected; 75 deferred by the CRM's API budget, to be resumed by the next run. Run
in-process (typer's runner) against real stores and the vendor emulators.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from crm_perf_sync.cli import app
from crm_perf_sync.cli.data import EXIT_DEFERRED, EXIT_REJECTED
from tests.conftest import DATA_DIR, REPO_ROOT
from tests.connectors.salesforce.emulator import SalesforceEmulator, Tls, make_tls
from tests.connectors.salesforce.seed import add_opportunities, minimal_org
from tests.connectors.salesforce.support import settings_for

MAVEN = REPO_ROOT / "config" / "examples" / "maven.yaml"


@pytest.fixture(autouse=True)
def _restore_process_state() -> Iterator[None]:
    """The commands install signal handlers and logging for a whole process: undo both."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    root = logging.getLogger()
    log_handlers, level = root.handlers[:], root.level
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    root.handlers[:] = log_handlers
    root.setLevel(level)


def cli(*args: str, env: dict[str, str]) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", **env})


@pytest.fixture
def maven_env(tmp_path: Path, db_url: str) -> dict[str, str]:
    """A copy of the Maven export (``$CRM_DATA_DIR``) that the tests may edit, and a store."""
    data = tmp_path / "data" / "maven_crm_sales_opportunities"
    data.mkdir(parents=True)
    for name in ("sales_pipeline.csv", "sales_teams.csv", "products.csv", "accounts.csv"):
        shutil.copyfile(DATA_DIR / "maven_crm_sales_opportunities" / name, data / name)
    return {
        "CRM_DATA_DIR": str(tmp_path / "data"),
        "CRM_PERF_SYNC_DATABASE_URL": db_url,
        "CRM_PERF_SYNC_CONFIG": str(MAVEN),
    }


def _pipeline(env: dict[str, str]) -> Path:
    return Path(env["CRM_DATA_DIR"]) / "maven_crm_sales_opportunities" / "sales_pipeline.csv"


def _rewrite(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_truncated_export_exits_1_and_allow_mass_delete_confirms_it(maven_env: dict[str, str]) -> None:
    first = cli("sync", env=maven_env)
    assert first.exit_code == 0, first.output
    assert "deleted 0" in first.stdout
    pipeline = _pipeline(maven_env)
    _rewrite(pipeline, _rows(pipeline)[:100])

    refused = cli("sync", env=maven_env)

    assert refused.exit_code == 1, refused.output
    assert "maven: failed" in refused.stdout
    assert "deleted 0" in refused.stdout
    assert "would soft-delete 8,700 of the 8,800 live opportunities (99%)" in refused.stdout
    assert "crm-perf-sync sync maven --allow-mass-delete" in refused.stdout

    status = cli("status", "--format", "json", env=maven_env)
    assert status.exit_code == 0, status.output
    (connection,) = json.loads(status.stdout)["connections"]
    assert connection["last_run_status"] == "failed"
    assert "8,700 of the 8,800" in connection["last_error"]

    confirmed = cli("sync", "maven", "--allow-mass-delete", env=maven_env)

    assert confirmed.exit_code == 0, confirmed.output
    assert "maven: succeeded" in confirmed.stdout
    assert "deleted 8700" in confirmed.stdout


def test_a_connection_may_allow_a_larger_share(maven_env: dict[str, str], tmp_path: Path) -> None:
    """An export of open deals only drops every deal that closed: its connection allows more."""
    config = yaml.safe_load(MAVEN.read_text(encoding="utf-8"))
    config["connections"][0]["mass_delete_share"] = 0.5
    path = tmp_path / "open-deals.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {**maven_env, "CRM_PERF_SYNC_CONFIG": str(path)}
    assert cli("sync", env=env).exit_code == 0
    pipeline = _pipeline(env)
    rows = _rows(pipeline)
    _rewrite(pipeline, rows[: len(rows) * 2 // 3])  # 2,934 of 8,800 gone: 33%

    result = cli("sync", env=env)

    assert result.exit_code == 0, result.output
    assert "deleted 2934" in result.stdout
    _rewrite(pipeline, rows[:100])
    assert cli("sync", env=env).exit_code == 1  # 5,766 of 5,866 is more than half


def test_rejected_records_exit_65_and_status_counts_them(maven_env: dict[str, str]) -> None:
    pipeline = _pipeline(maven_env)
    rows = _rows(pipeline)
    for row in rows[:3]:
        row["deal_stage"] = "Negotiating"  # a stage the mapping does not know: a bad row
    _rewrite(pipeline, rows)

    result = cli("sync", env=maven_env)

    assert result.exit_code == EXIT_REJECTED == 65, result.output
    assert "maven: succeeded" in result.stdout
    assert "skipped 3" in result.stdout
    status = cli("status", "--format", "json", env=maven_env)
    (connection,) = json.loads(status.stdout)["connections"]
    assert (connection["last_run_status"], connection["last_run_skipped"]) == ("succeeded", 3)
    table = cli("status", env=maven_env)
    assert "succeeded, 3 skipped" in table.stdout

    _rewrite(pipeline, _rows(DATA_DIR / "maven_crm_sales_opportunities" / "sales_pipeline.csv"))
    fixed = cli("sync", env=maven_env)
    assert fixed.exit_code == 0, fixed.output
    status = cli("status", "--format", "json", env=maven_env)
    assert json.loads(status.stdout)["connections"][0]["last_run_skipped"] == 0


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("salesforce-tls"))


def test_a_run_deferred_by_the_api_budget_exits_75(tmp_path: Path, db_url: str, tls: Tls) -> None:
    with SalesforceEmulator(tls) as emulator:
        minimal_org(emulator.org)
        add_opportunities(emulator.org, 10, start=emulator.org.now() - timedelta(hours=2))
        emulator.org.api_limit = 100
        emulator.org.api_used = 95  # other integrations spent the day's budget
        settings: dict[str, Any] = settings_for(emulator, streams=["opportunities"])
        config = tmp_path / "sfdc.yaml"
        config.write_text(
            yaml.safe_dump({"connections": [{"id": "sfdc", "kind": "salesforce", "settings": settings}]}),
            encoding="utf-8",
        )
        env = {"CRM_PERF_SYNC_DATABASE_URL": db_url, "CRM_PERF_SYNC_CONFIG": str(config)}

        deferred = cli("sync", env=env)

        assert deferred.exit_code == EXIT_DEFERRED == 75, deferred.output
        assert "sfdc: deferred" in deferred.stdout
        assert "resuming on the next run: 96 of 100 daily API requests used" in deferred.stdout

        emulator.org.api_used = 0  # a new day
        resumed = cli("sync", env=env)
        assert resumed.exit_code == 0, resumed.output
        assert "inserted 10" in resumed.stdout
