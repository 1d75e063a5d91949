"""The deployment files agree with the code: the image installs and starts the project the way the
Makefile does, compose sets only settings that exist, and the shipped Prometheus rules and Grafana
dashboard query only metrics the service exposes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from dotenv import dotenv_values
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from sqlalchemy import Engine
from typer.main import get_command

from crm_perf_sync.api.app import create_app
from crm_perf_sync.cli import app as cli_app
from crm_perf_sync.kit.db import make_session_factory
from crm_perf_sync.kit.settings import Settings
from crm_perf_sync.kit.settings_table import TABLE_END, TABLE_START, rewrite_readme, settings_table
from crm_perf_sync.ops.metrics import worker_registry

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


_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def _interpolate(value: Any, variables: Mapping[str, str]) -> Any:
    """Compose's interpolation of ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}`` and ``$$`` in every string value of the file."""
    if isinstance(value, dict):
        return {key: _interpolate(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, variables) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        found = variables.get(name)
        if op in (":-", "-") and (found is None or (op == ":-" and found == "")):
            return str(arg)
        if op in (":?", "?") and (found is None or (op == ":?" and found == "")):
            raise AssertionError(f"compose refuses to render: {name}: {arg}")
        return found or ""

    return _VARIABLE.sub(replace, value)


def compose_environments(project: Path, shell: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Each service's container environment as Compose resolves ``project/compose.yaml``.

    The rules of the Compose specification, as ``docker compose config`` applies them: the file is
    interpolated from the shell's variables, then the project's ``.env`` (the shell wins); YAML
    anchors and ``<<`` merges are resolved; ``env_file`` entries (a path, or ``{path, required}``
    with ``required`` true unless said otherwise) are read in order relative to the project, later
    files winning, and a missing optional one is skipped; ``environment`` wins over them all, and
    a name listed there without a value takes the shell's.
    """
    dotenv = project / ".env"
    variables = {**(dotenv_values(dotenv) if dotenv.is_file() else {}), **shell}
    document = _interpolate(
        yaml.safe_load((project / "compose.yaml").read_text()),
        {k: v for k, v in variables.items() if v is not None},
    )
    environments: dict[str, dict[str, str]] = {}
    for name, service in document["services"].items():
        env: dict[str, str] = {}
        entries = service.get("env_file") or []
        for entry in [entries] if isinstance(entries, str | dict) else entries:
            spec = {"path": entry} if isinstance(entry, str) else entry
            path = project / spec["path"]
            if not path.is_file():
                assert spec.get("required", True) is False, f"{name}: env file {path} is missing"
                continue
            env.update({k: v or "" for k, v in dotenv_values(path).items()})
        declared = service.get("environment") or {}
        if isinstance(declared, list):
            declared = dict(item.split("=", 1) if "=" in item else (item, None) for item in declared)
        for key, value in declared.items():
            if value is None:
                if key in shell:
                    env[key] = shell[key]
            else:
                env[key] = str(value)
        environments[name] = env
    return environments


def _compose_cli() -> list[str] | None:
    """The Compose v2 command line, as a docker plugin or standalone, if this machine has one."""
    candidates = []
    if docker := shutil.which("docker"):
        candidates.append([docker, "compose"])
    if standalone := shutil.which("docker-compose"):
        candidates.append([standalone])
    for command in candidates:
        version = subprocess.run([*command, "version", "--short"], capture_output=True, text=True)
        if version.returncode == 0 and int(version.stdout.strip().lstrip("v").split(".")[0]) >= 2:
            return command
    return None


def _render(project: Path, dotenv: str | None) -> None:
    shutil.copyfile(REPO / "compose.yaml", project / "compose.yaml")
    if dotenv is not None:
        (project / ".env").write_text(dotenv)


DOTENV = (
    "POSTGRES_PASSWORD=pg-s3cret\n"
    "HUBSPOT_TOKEN=pat-na1-0000\n"  # a credential the configuration names as ${HUBSPOT_TOKEN}
    "CRM_PERF_SYNC_WEBHOOK_ALLOW_HOSTS=hooks.internal,10.20.0.0/16\n"
    "CRM_PERF_SYNC_DATABASE_URL=sqlite:///not-this.db\n"  # compose's own settings win
)


def test_an_env_file_beside_compose_yaml_reaches_every_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Optional: without it, the services run on compose's own settings.
    (tmp_path / "bare").mkdir()
    _render(tmp_path / "bare", None)
    bare = compose_environments(tmp_path / "bare", {})
    assert "HUBSPOT_TOKEN" not in bare["api"]
    assert (
        bare["api"]["CRM_PERF_SYNC_DATABASE_URL"]
        == "postgresql+psycopg://crm:crm-perf-sync@postgres:5432/crm"
    )

    _render(tmp_path, DOTENV)
    rendered = compose_environments(tmp_path, {})
    assert rendered["postgres"]["POSTGRES_PASSWORD"] == "pg-s3cret"
    for role in ("migrate", "api", "worker"):
        env = rendered[role]
        assert env["HUBSPOT_TOKEN"] == "pat-na1-0000", role
        assert env["CRM_PERF_SYNC_DATABASE_URL"] == "postgresql+psycopg://crm:pg-s3cret@postgres:5432/crm"
        with monkeypatch.context() as patched:
            for key, value in env.items():
                patched.setenv(key, value)
            settings = Settings()
        assert settings.webhook_allow_hosts == ["hooks.internal", "10.20.0.0/16"], role
        assert settings.log_format == "json"
    assert rendered["worker"]["CRM_PERF_SYNC_WORKER_METRICS_PORT"] == "9464"


@pytest.mark.parametrize("dotenv", [None, DOTENV], ids=["without .env", "with .env"])
def test_the_compose_cli_renders_the_environments_the_compose_rules_give(
    tmp_path: Path, dotenv: str | None
) -> None:
    command = _compose_cli()
    if command is None:
        pytest.skip("no Compose v2 command line on this machine (the rules above render the file)")
    _render(tmp_path, dotenv)
    shell = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    rendered = subprocess.run(
        [*command, "--project-directory", str(tmp_path), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=shell,
        cwd=tmp_path,
    )
    assert rendered.returncode == 0, rendered.stderr
    services = orjson.loads(rendered.stdout)["services"]
    expected = compose_environments(tmp_path, shell)
    for role in ("postgres", "migrate", "api", "worker"):
        assert dict(services[role].get("environment") or {}) == expected[role], role


def test_the_image_prints_no_read_key() -> None:
    env = dict(
        item.split("=", 1) for line in _instructions("ENV") for item in re.split(r"\s+", line) if "=" in item
    )
    assert env["CRM_PERF_SYNC_DEMO_KEY"] == "false"
    assert "demo_key" in Settings.model_fields


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
    # The generator rewrites a stale table in place (what `python -m crm_perf_sync.kit.settings` does).
    stale = tmp_path / "README.md"
    stale.write_text(readme.replace("| `CRM_PERF_SYNC_PORT` | `8000` |", "| `CRM_PERF_SYNC_PORT` | `80` |"))
    assert rewrite_readme(stale)
    assert stale.read_text() == readme
