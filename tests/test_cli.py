"""The command line as a user meets it: exit codes and one-line reasons, never a traceback."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import chdir
from pathlib import Path

import pytest
from typer.testing import Result

from crm_perf_sync.kit import migrate
from tests.cli_inprocess import invoke

REPO = Path(__file__).resolve().parent.parent


def binary(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The console script's own process: for what only a process shows (its exit status)."""
    return subprocess.run(
        [sys.executable, "-c", "from crm_perf_sync.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        cwd=REPO,
        timeout=120,
    )


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> Result:
    """A command run in this process (:func:`tests.cli_inprocess.invoke`) from ``cwd``."""
    with chdir(cwd):
        return invoke(*args, env=env)


def test_config_check_lists_each_problem_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("connections:\n  - id: demo\n    kind: salesforse\n    schedule: {interval: soon}\n")
    result = binary("config", "check", str(bad))
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
        assert result.exit_code == 0, f"{path}: {result.stderr}"
        assert f"{path}: OK" in result.stdout


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    env = {
        "CRM_PERF_SYNC_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:9/crm?connect_timeout=2",
        "CRM_PERF_SYNC_CONFIG": str(REPO / "config/crm-perf-sync.yaml"),
    }
    result = cli("sync", env=env, cwd=tmp_path)
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: database postgresql+psycopg://nobody@127.0.0.1:9/crm")
    assert "is unreachable" in result.stderr


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    result = cli("sync", env={"CRM_PERF_SYNC_SYNC_BATCH_SIZE": "lots"}, cwd=tmp_path)
    assert result.exit_code == 2
    assert "CRM_PERF_SYNC_SYNC_BATCH_SIZE" in result.stderr
    assert "Traceback" not in result.stderr


def test_syncing_an_unknown_connection_fails_with_the_known_ones(tmp_path: Path) -> None:
    env = {
        "CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "CRM_PERF_SYNC_CONFIG": str(REPO / "config/crm-perf-sync.yaml"),
    }
    result = cli("sync", "hubspot-eu", env=env, cwd=tmp_path)
    assert result.exit_code == 1
    assert "no connection 'hubspot-eu'" in result.stderr
    assert "configured: demo" in result.stderr


def test_migrate_reports_the_revision(tmp_path: Path) -> None:
    env = {"CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    result = cli("migrate", env=env, cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip().endswith(f"at revision {migrate.head_revision()}")


def test_a_database_from_another_version_is_refused_in_one_line(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "store.db"
    env = {"CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{path}"}
    assert cli("migrate", env=env).exit_code == 0
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
    for args in (("migrate",), ("refresh", "--config", str(REPO / "config/crm-perf-sync.yaml"))):
        result = cli(*args, env=env)
        assert result.exit_code == 1, result.stderr
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
        assert result.exit_code == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert message in result.stderr, (args, result.stderr)


def test_api_keys_are_created_listed_and_revoked(tmp_path: Path) -> None:
    env = {"CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    created = cli("apikey", "create", "--scope", "admin", "--name", "Power BI finance", env=env, cwd=tmp_path)
    assert created.exit_code == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("cps_")
    assert len(key) == 47
    assert "shown once" in created.stderr
    listed = cli("apikey", "list", "--format", "json", env=env, cwd=tmp_path)
    (row,) = json.loads(listed.stdout)
    assert (row["name"], row["scope"], row["prefix"], row["revoked_at"]) == (
        "Power BI finance",
        "admin",
        key[:12],
        None,
    )
    assert key not in listed.stdout  # only its prefix is ever shown again
    with sqlite3.connect(tmp_path / "store.db") as db:
        (stored,) = db.execute("SELECT key_hash FROM api_key").fetchone()
    assert stored == hashlib.sha256(key.encode()).hexdigest()
    assert cli("apikey", "revoke", str(row["id"]), env=env, cwd=tmp_path).exit_code == 0
    (row,) = json.loads(cli("apikey", "list", "--format", "json", env=env, cwd=tmp_path).stdout)
    assert row["revoked_at"] is not None
    bad = cli("apikey", "create", "--scope", "write", env=env, cwd=tmp_path)
    assert bad.exit_code != 0
    assert "--scope" in bad.stderr


def test_a_value_that_is_not_one_of_an_options_choices_is_refused_by_name(tmp_path: Path) -> None:
    env = {"CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    refused = {
        ("values", "win_rate", "--grain", "fortnight"): ("--grain", "fortnight"),
        ("explain", "win_rate", "--scope", "region"): ("--scope", "region"),
        ("scores", "reps", "--grain", "all"): ("--grain", "all"),
        ("status", "--format", "csv"): ("--format", "csv"),
        ("alerts", "status", "--state", "burning"): ("--state", "burning"),
        ("webhooks", "deliveries", "--status", "lost"): ("--status", "lost"),
        ("apikey", "create", "--scope", "write"): ("--scope", "write"),
    }
    for args, (option, value) in refused.items():
        result = invoke(*args, env=env)
        assert result.exit_code == 2, (args, result.stderr)
        assert f"Invalid value for '{option}'" in result.stderr, (args, result.stderr)
        assert f"'{value}' is not one of" in result.stderr, (args, result.stderr)
    assert not (tmp_path / "store.db").exists()  # refused before anything was opened


def test_a_database_url_of_another_kind_is_one_line() -> None:
    result = invoke("apikey", "list", env={"CRM_PERF_SYNC_DATABASE_URL": "mysql://crm@127.0.0.1/crm"})
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unsupported database mysql://crm@127.0.0.1/crm: use sqlite")


def test_a_value_error_from_a_bug_is_not_turned_into_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm_perf_sync.apikeys import service

    def broken(_session: object) -> list[object]:
        raise ValueError("a bug, not something the user can fix")

    monkeypatch.setattr(service, "listed", broken)
    with pytest.raises(ValueError, match="a bug"):
        invoke("apikey", "list", env={"CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"})


def test_webhooks_apikey_and_alerts_take_config_and_read_the_store_of_the_settings(tmp_path: Path) -> None:
    """The configuration `--config` names is the one checked (not $CRM_PERF_SYNC_CONFIG's), and
    the store read is the one the settings name, not another one beside it."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("connections:\n  - id: Bad Id\n    kind: demo\n")
    good = str(REPO / "config/crm-perf-sync.yaml")
    stores = {name: {"CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / name}.db"} for name in ("a", "b")}
    for name, env in stores.items():
        assert invoke("apikey", "create", "--name", f"key of {name}", env=env).exit_code == 0
        assert invoke("webhooks", "add", f"https://hooks.example.com/{name}", env=env).exit_code == 0
        with sqlite3.connect(tmp_path / f"{name}.db") as db:
            db.execute(
                "INSERT INTO alert_state (rule_id, rule_hash, scope, scope_id, currency, state, breaches,"
                " outcome, value, threshold, period_key, since, evaluated_at, severity)"
                " VALUES (?, 'h', 'company', 'company', '', 'firing', 1, 'breach', 0.1, 0.2, NULL,"
                " '2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000', 'warning')",
                (f"rule-of-{name}",),
            )
    in_a = {**stores["a"], "CRM_PERF_SYNC_CONFIG": str(broken)}

    webhooks = invoke("webhooks", "list", "--config", good, env=in_a)
    assert webhooks.exit_code == 0, webhooks.stderr
    assert "https://hooks.example.com/a" in webhooks.stdout
    assert "https://hooks.example.com/b" not in webhooks.stdout
    keys = invoke("apikey", "list", "--format", "json", "--config", good, env=in_a)
    assert keys.exit_code == 0, keys.stderr
    assert [key["name"] for key in json.loads(keys.stdout)] == ["key of a"]
    alerts = invoke("alerts", "status", "--format", "json", "--config", good, env=in_a)
    assert alerts.exit_code == 0, alerts.stderr
    assert [state["rule_id"] for state in json.loads(alerts.stdout)] == ["rule-of-a"]

    for command in (("webhooks", "list"), ("apikey", "list"), ("alerts", "status")):
        refused = invoke(*command, "--config", str(broken), env=stores["a"])
        assert refused.exit_code == 2, (command, refused.stderr)
        assert f"{broken}:2: connections[0].id" in refused.stderr


class Served:
    """A ``serve`` process: its log (stderr) and its stdout, on a terminal (a pty) or a pipe."""

    def __init__(
        self, tmp_path: Path, store: str, *, terminal: bool, env: dict[str, str] | None = None
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = tmp_path / "config.yaml"
        config.write_text(
            "connections:\n  - id: demo\n    kind: demo\n    schedule: {interval: 1h}\n"
            "    settings: {opportunities: 200, reps: 6, as_of: '2026-01-01T00:00:00Z'}\n"
        )
        self.env = {
            "CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / store}",
            "CRM_PERF_SYNC_CONFIG": str(config),
            "CRM_PERF_SYNC_PORT": str(self.port),
            "CRM_PERF_SYNC_RUN_ON_START": "false",
            **(env or {}),
        }
        self.log: list[str] = []
        self.stdout: list[str] = []
        self._terminal: int | None = None
        out: int
        if terminal:
            self._terminal, out = pty.openpty()
        else:
            out = subprocess.PIPE
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from crm_perf_sync.cli import main; main()", "serve"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env={**os.environ, **self.env},
        )
        if terminal:
            os.close(out)
        # Read everything it writes (a full pipe would block the server).
        self._readers = [threading.Thread(target=self._read_log, daemon=True)]
        self._readers.append(threading.Thread(target=self._read_stdout, daemon=True))
        for reader in self._readers:
            reader.start()

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        self.log.extend(iter(self.process.stderr.readline, ""))

    def _read_stdout(self) -> None:
        if self._terminal is None:
            assert self.process.stdout is not None
            self.stdout.extend(iter(self.process.stdout.readline, ""))
            return
        while True:
            try:
                chunk = os.read(self._terminal, 4096)
            except OSError:  # EIO: the process closed the terminal
                return
            if not chunk:
                return
            self.stdout.append(chunk.decode(errors="replace"))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_until_serving(self, deadline: float) -> None:
        import httpx

        while True:
            assert time.monotonic() < deadline, "the API did not come up:\n" + "".join(self.log)
            assert self.process.poll() is None, "serve exited:\n" + "".join(self.log)
            try:
                if httpx.get(self.url("/healthz"), timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        for reader in self._readers:
            reader.join(timeout=10)
        for stream in (self.process.stderr, self.process.stdout):
            if stream is not None:
                stream.close()
        if self._terminal is not None:
            os.close(self._terminal)
            self._terminal = None


KEY = re.compile(r"cps_[A-Za-z0-9_-]{43}")


def keys_in(store: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(store) as db:
        return [(name, revoked) for name, revoked in db.execute("SELECT name, revoked_at FROM api_key")]


def test_serve_prints_a_read_key_once_on_a_terminal_when_it_creates_the_store(tmp_path: Path) -> None:
    import httpx

    first = Served(tmp_path, "store.db", terminal=True)
    try:
        first.wait_until_serving(time.monotonic() + 60)
        deadline = time.monotonic() + 120
        while not KEY.search("".join(first.stdout)):
            assert time.monotonic() < deadline, "".join(first.stdout) + "".join(first.log)
            time.sleep(0.05)
        (key,) = set(KEY.findall("".join(first.stdout)))
        response = httpx.get(first.url("/api/v1/kpis"), headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text
        assert "win_rate" in {k["id"] for k in response.json()["data"]}
        assert httpx.get(first.url("/docs")).status_code == 200
    finally:
        first.stop()
    log = "".join(first.log)
    assert f"API docs: http://127.0.0.1:{first.port}/docs" in log
    assert "cps_" not in log  # the key went to the terminal only, never to the log
    # Only its hash is stored: nothing in the store can print it again.
    with sqlite3.connect(tmp_path / "store.db") as db:
        assert key not in str(db.execute("SELECT * FROM api_key").fetchall())

    revoked = invoke("apikey", "revoke", "1", env=first.env)
    assert revoked.exit_code == 0, revoked.stderr
    again = Served(tmp_path, "store.db", terminal=True)
    try:
        again.wait_until_serving(time.monotonic() + 60)
    finally:
        again.stop()
    # Not a new store: no key is minted, revoked or not; the log says how to make one.
    assert "cps_" not in "".join(again.stdout) + "".join(again.log)
    assert "crm-perf-sync apikey create" in "".join(again.log)
    (row,) = keys_in(tmp_path / "store.db")
    assert row[1] is not None


def test_serve_mints_no_key_off_a_terminal_or_when_switched_off(tmp_path: Path) -> None:
    for store, terminal, env in (
        ("piped.db", False, None),
        ("off.db", True, {"CRM_PERF_SYNC_DEMO_KEY": "false"}),  # as in the image
    ):
        served = Served(tmp_path, store, terminal=terminal, env=env)
        try:
            served.wait_until_serving(time.monotonic() + 60)
        finally:
            served.stop()
        assert "cps_" not in "".join(served.stdout) + "".join(served.log), store
        assert "crm-perf-sync apikey create" in "".join(served.log), store
        assert keys_in(tmp_path / store) == [], store


def test_the_shipped_demo_scores_reps_and_raises_the_alerts_its_values_call_for(tmp_path: Path) -> None:
    env = {
        "CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "CRM_PERF_SYNC_CONFIG": str(REPO / "config/crm-perf-sync.yaml"),
    }
    for step in (("sync",), ("refresh",)):
        done = cli(*step, env=env, cwd=tmp_path)
        assert done.exit_code == 0, done.stderr

    every = json.loads(cli("scores", "reps", "--period", "all", "--format", "json", env=env).stdout)
    latest = json.loads(cli("scores", "reps", "--format", "json", env=env).stdout)
    newest = max(row["period_key"] for row in every)
    assert len({row["period_key"] for row in every}) > 1
    assert latest == [row for row in every if row["period_key"] == newest]
    assert sorted(row["rank"] for row in latest) == list(range(1, len(latest) + 1))
    with sqlite3.connect(tmp_path / "store.db") as db:
        teams = dict(db.execute("SELECT connection_id || ':' || external_id, name FROM team"))
    assert all(row["team_name"] == teams[row["team_id"]] for row in latest)

    # Every rep with at least 5 closed deals this quarter is firing exactly when below 20%.
    rates = json.loads(
        cli(
            "values", "win_rate", "--grain", "quarter", "--scope", "owner", "--period", newest,
            "--format", "json", env=env,
        ).stdout
    )  # fmt: skip
    expected = {
        row["scope_id"]: "firing" if row["value"] < 0.20 else "ok"
        for row in rates
        if row["sample_count"] >= 5 and row["value"] is not None
    }
    states = json.loads(
        cli("alerts", "status", "--rule", "rep-win-rate-low", "--format", "json", env=env).stdout
    )
    observed = {row["scope_id"]: row["state"] for row in states if row["outcome"] != "low_sample"}
    assert observed == expected
    assert "firing" in observed.values()  # the demo has reps below the line: the check can fail
    history = json.loads(cli("alerts", "history", "--format", "json", env=env).stdout)
    fired = {
        row["scope_id"]
        for row in history
        if row["to_state"] == "firing" and row["rule_id"] == "rep-win-rate-low"
    }
    assert fired == {scope for scope, state in expected.items() if state == "firing"}

    # The table prints counts as whole numbers and the rate beside them, as the JSON has them.
    (company,) = json.loads(
        cli("values", "win_rate", "--grain", "all", "--scope", "company", "--format", "json", env=env).stdout
    )
    table = cli("values", "win_rate", "--grain", "all", "--scope", "company", env=env).stdout
    won, closed = int(company["numerator"]), int(company["denominator"])
    assert (won, closed) == (company["numerator"], company["denominator"])
    assert f" {won:,} " in table
    assert f" {closed:,} " in table
    assert f"{won:,}.00" not in table
    assert f"{company['value']:.1%}" in table


def test_status_reports_each_connections_last_run_the_refresh_deliveries_and_firing_alerts(
    tmp_path: Path,
) -> None:
    env = {
        "CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "CRM_PERF_SYNC_CONFIG": str(REPO / "config/crm-perf-sync.yaml"),
    }
    before = cli("status", env=env, cwd=tmp_path)
    assert before.exit_code == 1  # an empty store: status says what to do instead of guessing
    assert "run `crm-perf-sync migrate` first" in before.stderr
    for step in (("sync",), ("refresh",), ("webhooks", "add", "https://hooks.example.com/crm")):
        done = cli(*step, env=env, cwd=tmp_path)
        assert done.exit_code == 0, done.stderr
    result = cli("status", "--format", "json", env=env, cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    with sqlite3.connect(tmp_path / "store.db") as db:
        (run_id,) = db.execute("SELECT max(id) FROM sync_run WHERE status = 'succeeded'").fetchone()
        pending = db.execute("SELECT count(*) FROM webhook_delivery WHERE status = 'pending'").fetchone()[0]
        firing = db.execute("SELECT count(*) FROM alert_state WHERE state = 'firing'").fetchone()[0]
    (demo,) = report["connections"]
    assert demo["connection_id"] == "demo"
    assert demo["last_run_id"] == run_id
    assert demo["last_run_status"] == "succeeded"
    assert demo["last_error"] is None
    assert 0 <= demo["lag_seconds"] < 600
    assert report["kpi_refresh"]["last_refresh_status"] == "succeeded"
    # The endpoint was added after the events that were emitted, so nothing waits for it.
    assert report["webhook_deliveries"]["pending"] == pending
    assert len(report["firing_alerts"]) == firing > 0
    table = cli("status", env=env, cwd=tmp_path)
    assert "succeeded" in table.stdout
    assert "Alerts firing" in table.stdout


def test_doctor_checks_config_database_migrations_connections_and_endpoints(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens: the CRM is unreachable
    config = tmp_path / "crm-perf-sync.yaml"
    config.write_text(
        f"""
connections:
  - id: demo
    kind: demo
  - id: hs
    kind: hubspot
    settings: {{access_token: pat-na1-0000, base_url: "http://127.0.0.1:{closed}",
               max_attempts: 1}}
"""
    )
    env = {
        "CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "CRM_PERF_SYNC_CONFIG": str(config),
    }
    fresh = cli("doctor", env=env, cwd=tmp_path)
    assert fresh.exit_code == 1
    assert "ok   configuration" in fresh.stdout
    assert "ok   database" in fresh.stdout
    assert "FAIL migrations: the schema is at nothing (empty database)" in fresh.stdout
    assert "run `crm-perf-sync migrate`" in fresh.stdout
    assert "ok   connection demo" in fresh.stdout
    assert "FAIL connection hs" in fresh.stdout
    assert "Traceback" not in fresh.stdout + fresh.stderr

    assert cli("migrate", env=env, cwd=tmp_path).exit_code == 0
    allow = {**env, "CRM_PERF_SYNC_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"}
    assert cli("webhooks", "add", "http://127.0.0.1:9/hooks", env=allow, cwd=tmp_path).exit_code == 0
    migrated = cli("doctor", env=env, cwd=tmp_path)
    assert "ok   migrations: at" in migrated.stdout
    # Added while allow-listed; without the allow-list, this process would refuse to send to it.
    assert "FAIL webhook endpoint 1" in migrated.stdout
    assert "CRM_PERF_SYNC_WEBHOOK_ALLOW_HOSTS" in migrated.stdout

    config.write_text("connections:\n  - id: demo\n    kind: demo\n")
    allowed = cli("doctor", env=allow, cwd=tmp_path)
    assert allowed.exit_code == 0, allowed.stdout
    assert "everything checks out" in allowed.stderr


def test_an_endpoint_added_with_send_firing_is_queued_the_alerts_firing_by_the_next_refresh(
    tmp_path: Path,
) -> None:
    env = {
        "CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "CRM_PERF_SYNC_CONFIG": str(REPO / "config/crm-perf-sync.yaml"),
    }
    for step in (
        ("sync",),
        ("refresh",),
        ("webhooks", "add", "https://hooks.example.com/crm", "--event", "alert.*", "--send-firing"),
    ):
        done = cli(*step, env=env, cwd=tmp_path)
        assert done.exit_code == 0, done.stderr
    nothing = cli("webhooks", "replay", "1", env=env, cwd=tmp_path)
    assert nothing.exit_code == 2
    assert "give --since, --firing or both" in nothing.stderr
    assert cli("refresh", env=env, cwd=tmp_path).exit_code == 0
    query = (
        "SELECT e.message_id FROM webhook_delivery d JOIN webhook_event e ON e.id = d.event_id"
        " WHERE d.endpoint_id = 1"
    )
    with sqlite3.connect(tmp_path / "store.db") as db:
        firing = sorted(r[0] for r in db.execute("SELECT message_id FROM alert_state WHERE state = 'firing'"))
        queued = sorted(r[0] for r in db.execute(query))
    assert firing
    assert queued == firing  # each alert firing, as the alert.firing event that announced it

    again = cli("webhooks", "replay", "1", "--firing", env=env, cwd=tmp_path)
    assert again.exit_code == 0, again.stderr
    assert "at the next alert evaluation" in again.stdout
    assert cli("refresh", env=env, cwd=tmp_path).exit_code == 0
    with sqlite3.connect(tmp_path / "store.db") as db:
        assert sorted(r[0] for r in db.execute(query)) == sorted(firing * 2)
