"""Shared fixtures: real SQLite and PostgreSQL stores, migrated by Alembic, one fresh copy per test.

A migrated template is built once per session (a file for SQLite, a template database for
PostgreSQL) and each test gets its own copy, so tests can commit, run several processes against
the same store, and never see each other's data.

PostgreSQL tests need ``CRM_PERF_SYNC_TEST_PG_URL`` (an admin URL, e.g.
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``). Without it they are skipped locally
and fail in CI (``CI=true``), where a skipped PostgreSQL test would hide a broken store.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit import migrate
from crm_perf_sync.kit.db import create_db_engine, make_session_factory
from tests.dashboard.browser import browser, page  # noqa: F401  (a real browser, for any test folder)

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("CRM_DATA_DIR", REPO_ROOT.parent / "shared" / "data")).resolve()


def _pg_admin_url() -> str | None:
    url = os.environ.get("CRM_PERF_SYNC_TEST_PG_URL")
    if url:
        return url
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but CRM_PERF_SYNC_TEST_PG_URL is not set: the PostgreSQL tests must run in CI")
    return None


@pytest.fixture(scope="session")
def pg_admin_url() -> str | None:
    return _pg_admin_url()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = create_db_engine(f"sqlite:///{path}")
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()  # closing the last connection checkpoints the WAL into the file
    return path


def _admin_engine(admin_url: str) -> Engine:
    url = make_url(admin_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(url, isolation_level="AUTOCOMMIT")


@contextmanager
def pg_database(admin_url: str, prefix: str, template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database named ``<prefix>_<random>``, a copy of ``template`` if given,
    dropped on exit; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine(admin_url)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    try:
        url = make_url(admin_url).set(database=name, drivername="postgresql+psycopg")
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str | None) -> Iterator[str | None]:
    if pg_admin_url is None:
        yield None
        return
    with pg_database(pg_admin_url, "cps_template") as url:
        engine = create_db_engine(url)
        try:
            migrate.upgrade(engine)
        finally:
            engine.dispose()
        yield make_url(url).database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_template: Path,
    pg_admin_url: str | None,
    pg_template: str | None,
) -> Iterator[str]:
    """The URL of a fresh, migrated store: SQLite and PostgreSQL in turn."""
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        shutil.copyfile(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    if pg_admin_url is None or pg_template is None:
        pytest.skip("PostgreSQL tests need CRM_PERF_SYNC_TEST_PG_URL")
    with pg_database(pg_admin_url, "cps_test", pg_template) as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_admin_url: str | None) -> Iterator[str]:
    """An empty (unmigrated) database on the backend named by ``request.param``."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    if pg_admin_url is None:
        pytest.skip("PostgreSQL tests need CRM_PERF_SYNC_TEST_PG_URL")
    with pg_database(pg_admin_url, "cps_empty") as url:
        yield url
