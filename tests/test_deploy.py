"""The deployment files agree with the code: the image installs and starts the project the way the
Makefile does, compose sets only settings that exist, and the shipped Prometheus rules and Grafana
dashboard query only metrics the service exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from sqlalchemy import Engine
from typer.main import get_command

from crm_perf_sync.api.app import create_app
from crm_perf_sync.cli import app as cli_app
from crm_perf_sync.db import make_session_factory
from crm_perf_sync.metrics import worker_registry
from crm_perf_sync.settings import TABLE_END, TABLE_START, Settings, rewrite_readme, settings_table

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()
MAKEFILE = (REPO / "Makefile").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text())
ROLES = ("serve", "api", "worker", "migrate")


def _instructions(name: str) -> list[str]:
    """The arguments of every ``name`` instruction, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", joined, re.MULTILINE)]


def _uv_syncs(text: str) -> list[set[str]]:
    return [set(m.group(1).split()) for m in re.finditer(r"(?i)uv\)? sync ([^\n&;]+)", text)]


def test_the_image_installs_with_the_makefiles_pinned_uv_from_the_lock_file() -> None:
    pinned = re.search(r"^UV_VERSION := (\S+)$", MAKEFILE, re.MULTILINE)
    assert pinned is not None
    assert any(f'"uv=={pinned.group(1)}"' in run for run in _instructions("RUN"))
    make_syncs, image_syncs = _uv_syncs(MAKEFILE), _uv_syncs(DOCKERFILE)
    assert make_syncs
    assert len(image_syncs) == 2
    for flags in image_syncs:
        assert {"--frozen", "--all-packages"} <= flags  # as the Makefile: exactly the lock, every package
        assert {"--frozen", "--all-packages"} <= make_syncs[0]
        assert "--no-dev" in flags  # and no test tools in the image
    assert "--no-install-workspace" in image_syncs[0]


def test_the_image_copies_every_distribution_the_lock_installs() -> None:
    copied = set(re.findall(r"^COPY (connectors/\S+/pyproject\.toml) ", DOCKERFILE, re.MULTILINE))
    present = {str(p.relative_to(REPO)) for p in REPO.glob("connectors/*/pyproject.toml")}
    assert copied == present


def test_the_image_runs_the_projects_command_as_a_non_root_user_with_a_health_check() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,) = _instructions("ENTRYPOINT")
    assert orjson.loads(entrypoint) == [next(iter(scripts))]
    (command,) = _instructions("CMD")
    assert orjson.loads(command) == ["serve"]
    (user,) = _instructions("USER")
    assert user.split(":")[0] not in ("0", "root")
    (stop,) = _instructions("STOPSIGNAL")
    assert stop == "SIGTERM"
    (health,) = _instructions("HEALTHCHECK")
    assert "/healthz" in health
    assert f":{Settings().port}/" in health
    # Build tools stay in the build stage: the final stage only copies the environment in.
    final = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    assert "pip install" not in final
    assert "uv sync" not in final
    bases = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    assert len(bases) == 2
    assert len(set(bases)) == 1
    minimum = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    image_python = tuple(int(p) for p in bases[0].removeprefix("python:").split("-")[0].split("."))
    assert image_python >= tuple(int(p) for p in minimum.removeprefix(">=").split("."))


def test_every_role_the_image_and_compose_start_is_a_command() -> None:
    commands = set(get_command(cli_app).commands)  # type: ignore[attr-defined]
    assert set(ROLES) <= commands
    started = {tuple(s["command"]) for s in COMPOSE["services"].values() if "command" in s}
    assert started == {("migrate",), ("api",), ("worker",)}


def test_compose_runs_postgresql_a_one_shot_migration_and_two_replicas_of_each_role() -> None:
    services = COMPOSE["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["migrate"]["restart"] == "no"
    for role in ("api", "worker"):
        assert services[role]["deploy"]["replicas"] == 2
        assert services[role]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # The workers' health check asks the port their metrics are served on.
    probe = " ".join(services["worker"]["healthcheck"]["test"])
    port = services["worker"]["environment"]["CRM_PERF_SYNC_WORKER_METRICS_PORT"]
    assert f":{port}/metrics" in probe
    # SIGKILL comes only after the service's own grace period had its chance.
    grace = float(services["api"]["environment"]["CRM_PERF_SYNC_SHUTDOWN_GRACE_SECONDS"])
    assert float(services["worker"]["stop_grace_period"].rstrip("s")) > grace


def test_compose_sets_only_settings_that_exist() -> None:
    fields = {f"CRM_PERF_SYNC_{name.upper()}" for name in Settings.model_fields}
    for service in COMPOSE["services"].values():
        names = {k for k in service.get("environment", {}) if k.startswith("CRM_PERF_SYNC_")}
        assert names <= fields, names - fields


def test_compose_and_prometheus_agree_on_the_ports() -> None:
    scrape = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    ports = {job["job_name"]: job["dns_sd_configs"][0]["port"] for job in scrape["scrape_configs"]}
    assert ports == {
        "crm-perf-sync-api": Settings().port,
        "crm-perf-sync-worker": Settings().worker_metrics_port,
    }


def _exposed(engine: Engine) -> set[str]:
    """Every series name the API's and a worker's /metrics can carry (from their TYPE lines)."""
    with TestClient(create_app(engine)) as client:
        client.get("/healthz")
        api_text = client.get("/metrics").text
    worker_text = generate_latest(worker_registry(make_session_factory(engine))).decode()
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", api_text + worker_text, re.MULTILINE):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
        # An empty counter's TYPE line already ends in _total; one with samples does not.
        base = name.removesuffix("_total") if kind == "counter" else name
        names.update(base + suffix for suffix in suffixes.get(kind, ("",)))
    return names


def _queried(text: str) -> set[str]:
    return set(re.findall(r"\bcrm_perf_sync_[a-z_]+\b", text))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_shipped_alert_rules_and_dashboard_query_only_exposed_metrics(engine: Engine) -> None:
    exposed = _exposed(engine)
    rules = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert len(exprs) >= 8
    dashboard = orjson.loads((REPO / "deploy/grafana/dashboards/crm-perf-sync.json").read_bytes())
    panel_exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for expr in exprs + panel_exprs:
        queried = _queried(expr)
        assert queried <= exposed, (expr, queried - exposed)
    # Everything the issue asks to watch is on the dashboard.
    shown = _queried(" ".join(panel_exprs))
    for wanted in (
        "crm_perf_sync_sync_runs_total",
        "crm_perf_sync_stream_records_total",
        "crm_perf_sync_sync_lag_seconds",
        "crm_perf_sync_kpi_refresh_duration_seconds_bucket",
        "crm_perf_sync_alert_transitions_total",
        "crm_perf_sync_webhook_attempts_total",
        "crm_perf_sync_webhook_attempt_duration_seconds_bucket",
        "crm_perf_sync_claim_takeovers_total",
    ):
        assert wanted in shown


def test_the_image_builds_where_a_container_engine_runs() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        pytest.skip("no container engine on this machine (the image's commands are checked above)")
    result = subprocess.run(
        [docker, "build", "-t", "crm-perf-sync:test", str(REPO)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    version = subprocess.run(
        [docker, "run", "--rm", "crm-perf-sync:test", "version"], capture_output=True, text=True
    )
    assert version.returncode == 0
    assert version.stdout.strip()


def test_the_readmes_environment_table_is_the_one_the_settings_generate(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    start = readme.index(TABLE_START) + len(TABLE_START)
    assert readme[start : readme.index(TABLE_END)] == "\n" + settings_table()
    assert settings_table().count("\n| `CRM_PERF_SYNC_") == len(Settings.model_fields)
    # The generator rewrites a stale table in place (what `python -m crm_perf_sync.settings` does).
    stale = tmp_path / "README.md"
    stale.write_text(readme.replace("| `CRM_PERF_SYNC_PORT` | `8000` |", "| `CRM_PERF_SYNC_PORT` | `80` |"))
    assert rewrite_readme(stale)
    assert stale.read_text() == readme
