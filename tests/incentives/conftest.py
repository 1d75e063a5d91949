"""The Maven example as shipped (its targets, scorecard and incentive plans), synced and
refreshed once per session and backend, copied for each module that reads or changes it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import LoadedConfig, load_config
from crm_perf_sync.jobs.refresh import RefreshJob
from crm_perf_sync.jobs.sync import SyncService
from crm_perf_sync.kit.db import create_db_engine, make_session_factory
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.sync.service import SyncOptions
from tests.conftest import DATA_DIR, REPO_ROOT, built_once, create_pg_database, pg_database


def example_config(directory: Path) -> LoadedConfig:
    """``config/examples/maven.yaml`` reading the shared data."""
    text = (REPO_ROOT / "config" / "examples" / "maven.yaml").read_text(encoding="utf-8")
    path = directory / "maven.yaml"
    path.write_text(text.replace("${CRM_DATA_DIR:-../shared/data}", str(DATA_DIR)), encoding="utf-8")
    return load_config(path, ConnectorRegistry.discover())


def build(url: str, directory: Path) -> None:
    config = example_config(directory)
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
    finally:
        engine.dispose()  # a template must have no connection when it is copied


@dataclass
class Store:
    url: str
    engine: Engine
    session_factory: sessionmaker[Session]
    config: LoadedConfig

    def job(self) -> RefreshJob:
        return RefreshJob(self.session_factory, self.config)


@pytest.fixture(scope="session")
def incentives_sqlite(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> str:
    def make(directory: Path) -> dict[str, str]:
        path = directory / "store.db"
        shutil.copyfile(sqlite_template, path)
        build(f"sqlite:///{path}", directory)
        return {"location": str(path)}

    return built_once(tmp_path_factory, "incentives-sqlite", make)["location"]


@pytest.fixture(scope="session")
def incentives_postgresql(
    tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str | None, pg_template: str | None, run_id: str
) -> str | None:
    if pg_admin_url is None or pg_template is None:
        return None
    admin_url, template = pg_admin_url, pg_template

    def make(directory: Path) -> dict[str, str]:
        # Named after the run, so the controller drops it at the end (tests/conftest.py).
        name = f"cps_incentives_template_{run_id}"
        build(create_pg_database(admin_url, name, template), directory)
        return {"location": name}

    return built_once(tmp_path_factory, "incentives-postgresql", make)["location"]


@contextmanager
def store_copy(
    request: pytest.FixtureRequest, directory: Path, pg_admin_url: str | None, prefix: str
) -> Iterator[Store]:
    """A copy of the built store on the backend of ``request.param`` (skipped without PostgreSQL)."""
    config = example_config(directory)
    if request.param == "sqlite":
        path = directory / "store.db"
        shutil.copyfile(request.getfixturevalue("incentives_sqlite"), path)
        engine = create_db_engine(f"sqlite:///{path}")
        yield Store(f"sqlite:///{path}", engine, make_session_factory(engine), config)
        engine.dispose()
        return
    template: str | None = request.getfixturevalue("incentives_postgresql")
    if pg_admin_url is None or template is None:
        pytest.skip("PostgreSQL tests need CRM_PERF_SYNC_TEST_PG_URL")
    with pg_database(pg_admin_url, prefix, template) as url:
        engine = create_db_engine(url)
        yield Store(url, engine, make_session_factory(engine), config)
        engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str | None
) -> Iterator[Store]:
    """This module's copy of the Maven example store, on each backend in turn."""
    with store_copy(request, tmp_path_factory.mktemp("incentives"), pg_admin_url, "cps_incentives") as found:
        yield found
