"""A served store for the API tests: the Maven example synced and refreshed, keys to read and write.

The Maven sync and refresh take seconds, so each backend's store is built once per session (by
the first xdist worker to need it, shared by the others) as a template, and each test module gets
its own copy of it (a file copy on SQLite, ``CREATE DATABASE ... TEMPLATE`` on PostgreSQL); the
read-only tests of a module share that copy.
Tests that write (targets, sync requests, keys) undo nothing, so they use their own module or a
fresh store.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.api.app import create_app
from crm_perf_sync.apikeys import service as keys
from crm_perf_sync.config import LoadedConfig, load_config
from crm_perf_sync.jobs.refresh import RefreshJob
from crm_perf_sync.jobs.sync import SyncService
from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.sync.service import SyncOptions
from tests.conftest import DATA_DIR, REPO_ROOT, built_once, create_pg_database, pg_database

KPIS = """
kpis:
  dimensions: [product]
  targets:
    - {kpi: won_revenue, period: 2017, value: 12000000, currency: USD}
    - {kpi: win_rate, grain: quarter, period: 2017-04, value: 0.6}
  scorecards:
    - id: reps
      name: Rep scorecard
      i18n: {zh: {name: 销售代表评分卡}}
      grains: [month, quarter]
      currency: USD
      components:
        - {kpi: won_deals, weight: 0.5, normalise: {method: linear, floor: 0, goal: 40}}
        - {kpi: win_rate, weight: 0.3, normalise: {method: linear, floor: 0.4, goal: 0.8}}
        - {kpi: sales_cycle_days_median, weight: 0.2, normalise: {method: linear, floor: 90, goal: 30}}
alerts:
  rules:
    - id: rep-win-rate
      name: A rep's all-time win rate below 62%
      kpi: win_rate
      scope: owner
      grain: all
      when: {op: "<", value: 0.62}
      min_sample: 20
"""


def maven_config(directory: Path, kpis: str = KPIS) -> Path:
    """The shipped Maven example with ``kpis`` as its KPI and alert sections: by default a smaller
    breakdown, targets, a scorecard and an alert rule."""
    text_ = (REPO_ROOT / "config" / "examples" / "maven.yaml").read_text(encoding="utf-8")
    text_ = text_.replace("${CRM_DATA_DIR:-../shared/data}", str(DATA_DIR))
    path = directory / "maven.yaml"
    path.write_text(text_[: text_.index("\nkpis:")] + kpis, encoding="utf-8")
    return path


@dataclass
class Served:
    client: TestClient
    engine: Engine
    session_factory: sessionmaker[Session]
    config: LoadedConfig
    read_key: str
    admin_key: str

    @property
    def read(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.read_key}"}

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def get(self, url: str, **kw: Any) -> Any:
        headers = {**self.read, **kw.pop("headers", {})}
        return self.client.get(url, headers=headers, **kw)

    def service(self) -> RefreshJob:
        return RefreshJob(self.session_factory, self.config)


@dataclass(frozen=True)
class BuiltStore:
    """A Maven store built once, to copy: a SQLite file or a PostgreSQL template database."""

    location: str
    read_key: str
    admin_key: str


def build_store(url: str, directory: Path) -> tuple[str, str]:
    """Sync and refresh the Maven example into the store at ``url``; returns a read and an admin key."""
    config = load_config(maven_config(directory), ConnectorRegistry.discover())
    engine = create_db_engine(url)
    try:
        factory = make_session_factory(engine)
        sync = SyncService(
            session_factory=factory,
            registry=ConnectorRegistry.discover(),
            config=config,
            options=SyncOptions(),
        )
        sync.apply_config()
        assert sync.sync("maven").status == "succeeded"
        RefreshJob(factory, config).refresh()
        with session_scope(factory) as session:
            _, read_key = keys.create(session, "tests (read)", "read")
            _, admin_key = keys.create(session, "tests (admin)", "admin")
    finally:
        # SQLite: closing checkpoints the WAL into the file; PostgreSQL: a template must have no connection.
        engine.dispose()
    return read_key, admin_key


def serve(url: str, directory: Path, built: BuiltStore, kpis: str = KPIS) -> Served:
    config = load_config(maven_config(directory, kpis), ConnectorRegistry.discover())
    engine = create_db_engine(url)
    client = TestClient(create_app(engine, config))
    return Served(client, engine, make_session_factory(engine), config, built.read_key, built.admin_key)


@pytest.fixture(scope="session")
def maven_sqlite(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> BuiltStore:
    def build(directory: Path) -> dict[str, str]:
        path = directory / "store.db"
        shutil.copyfile(sqlite_template, path)
        read_key, admin_key = build_store(f"sqlite:///{path}", directory)
        return {"location": str(path), "read_key": read_key, "admin_key": admin_key}

    return BuiltStore(**built_once(tmp_path_factory, "maven-sqlite", build))


@pytest.fixture(scope="session")
def maven_postgresql(
    tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str | None, pg_template: str | None, run_id: str
) -> BuiltStore | None:
    if pg_admin_url is None or pg_template is None:
        return None
    admin_url, template = pg_admin_url, pg_template

    def build(directory: Path) -> dict[str, str]:
        # Named after the run, so the controller drops it at the end (tests/conftest.py).
        name = f"cps_api_template_{run_id}"
        read_key, admin_key = build_store(create_pg_database(admin_url, name, template), directory)
        return {"location": name, "read_key": read_key, "admin_key": admin_key}

    return BuiltStore(**built_once(tmp_path_factory, "maven-postgresql", build))


@contextmanager
def serving(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pg_admin_url: str | None,
    kpis: str = KPIS,
) -> Iterator[Served]:
    """A copy of the built Maven store on the backend of ``request.param``, served with ``kpis``."""
    directory = tmp_path_factory.mktemp("served")
    if request.param == "sqlite":
        built: BuiltStore = request.getfixturevalue("maven_sqlite")
        path = directory / "store.db"
        shutil.copyfile(built.location, path)
        found = serve(f"sqlite:///{path}", directory, built, kpis)
        try:
            yield found
        finally:
            found.engine.dispose()
        return
    template: BuiltStore | None = request.getfixturevalue("maven_postgresql")
    if pg_admin_url is None or template is None:
        pytest.skip("PostgreSQL tests need CRM_PERF_SYNC_TEST_PG_URL")
    with pg_database(pg_admin_url, "cps_api", template.location) as url:
        found = serve(url, directory, template, kpis)
        try:
            yield found
        finally:
            found.engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str | None
) -> Iterator[Served]:
    """A copy of the built Maven store for this module, served on each backend in turn."""
    with serving(request, tmp_path_factory, pg_admin_url) as found:
        yield found
