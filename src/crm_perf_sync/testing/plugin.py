"""The pytest plugin of the connector contract suite: a fresh, migrated store for each test.

Installing crm-perf-sync registers this module under the ``pytest11`` entry point, so every test
suite in the environment has these fixtures (``-p no:crm_perf_sync`` turns them off). Their names
start with ``crm_perf_sync_`` so that they cannot clash with a project's own fixtures.

- ``crm_perf_sync_db_url``: the URL of a store migrated by Alembic to the newest revision, fresh
  for the test: a SQLite file in the test's ``tmp_path`` and, when ``CRM_PERF_SYNC_TEST_PG_URL``
  names a PostgreSQL server whose user may create databases, a fresh PostgreSQL database too: a
  test that uses the store runs once on each backend (ids ``sqlite`` and ``postgresql``).
- ``crm_perf_sync_store``: a session factory on that store.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit.db import create_db_engine, make_session_factory
from crm_perf_sync.testing import stores

SQLITE = "sqlite"
POSTGRESQL = "postgresql"


def backends() -> list[str]:
    """The backends a store test runs on here: SQLite always, PostgreSQL when a server is named."""
    return [SQLITE, POSTGRESQL] if os.environ.get(stores.PG_URL_ENV) else [SQLITE]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # At collection, not in a fixture's params: whether PostgreSQL runs is known only once the
    # environment is, and a backend that is not configured yields no test rather than a skip in
    # every plugin author's report.
    if "crm_perf_sync_db_url" in metafunc.fixturenames:
        metafunc.parametrize("crm_perf_sync_db_url", backends(), indirect=True)


@pytest.fixture(scope="session")
def crm_perf_sync_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite store, made once per session, that each test's store is copied from."""
    return stores.sqlite_template(tmp_path_factory.mktemp("crm-perf-sync-template") / "template.db")


@pytest.fixture(scope="session")
def crm_perf_sync_pg_template() -> Iterator[str]:
    """A migrated PostgreSQL database, made once per session, that each test's store is cloned from."""
    admin_url = os.environ.get(stores.PG_URL_ENV)
    if not admin_url:
        pytest.fail(f"a PostgreSQL store needs {stores.PG_URL_ENV} (an admin URL of a server)")
    name = stores.create_pg_database(admin_url, "cps_contract_template")
    try:
        stores.migrate_url(stores.pg_database_url(admin_url, name))
        yield name
    finally:
        stores.drop_pg_database(admin_url, name)


@pytest.fixture
def crm_perf_sync_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh store migrated to head, on the backend of this test's parameter."""
    backend = getattr(request, "param", SQLITE)
    if backend == SQLITE:
        template: Path = request.getfixturevalue("crm_perf_sync_sqlite_template")
        yield stores.sqlite_copy(template, tmp_path / "store.db")
        return
    admin_url = os.environ[stores.PG_URL_ENV]
    pg_template: str = request.getfixturevalue("crm_perf_sync_pg_template")
    name = stores.create_pg_database(admin_url, "cps_contract", template=pg_template)
    try:
        yield stores.pg_database_url(admin_url, name)
    finally:
        stores.drop_pg_database(admin_url, name)


@pytest.fixture
def crm_perf_sync_store(crm_perf_sync_db_url: str) -> Iterator[sessionmaker[Session]]:
    """A session factory on a fresh store migrated to head (see ``crm_perf_sync_db_url``)."""
    engine = create_db_engine(crm_perf_sync_db_url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()
