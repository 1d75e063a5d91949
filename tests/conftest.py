"""Shared fixtures: real SQLite and PostgreSQL stores, migrated by Alembic, a fresh store per test.

A migrated template is built once per session (a file for SQLite, a template database for
PostgreSQL) and each test gets its own copy, so tests can commit, run several processes against
the same store, and never see each other's data. Under xdist the workers share the templates:
the first to ask builds each one (:func:`built_once`), and the controller drops the template
databases when the run ends (:func:`pytest_sessionfinish`). On PostgreSQL each process keeps its
copies and empties one for the next test rather than copying the template again (:class:`PgStores`).

PostgreSQL tests need ``CRM_PERF_SYNC_TEST_PG_URL`` (an admin URL, e.g.
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``). Without it they are skipped locally
and fail in CI (``CI=true``), where a skipped PostgreSQL test would hide a broken store.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from filelock import FileLock
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

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


RUN_ID = pytest.StashKey[str]()
#: The PostgreSQL databases a session builds once and its workers share, each named
#: ``<prefix>_<run id>``; the controller drops them at the end of the run.
SHARED_DATABASES = ("cps_template", "cps_api_template", "cps_maven_template", "cps_incentives_template")


def pytest_configure(config: pytest.Config) -> None:
    """One id for the whole run, the same in the controller and in every xdist worker.

    Workers have it from xdist (``--testrunuid``, which the controller passes on); the controller
    sets that option before it starts them, so it knows the names of the shared databases too.
    """
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        config.stash[RUN_ID] = workerinput["testrunuid"]
        return
    run_id = getattr(config.option, "testrunuid", None) or uuid.uuid4().hex
    if hasattr(config.option, "testrunuid"):
        config.option.testrunuid = run_id
    config.stash[RUN_ID] = run_id


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller (or the only process) drops the shared template databases, once every
    worker has ended and let go of them."""
    if hasattr(session.config, "workerinput"):
        return
    admin_url = os.environ.get("CRM_PERF_SYNC_TEST_PG_URL")
    if not admin_url:
        return
    run_id = session.config.stash[RUN_ID]
    admin = _admin_engine(admin_url)
    try:
        with admin.connect() as conn:
            for prefix in SHARED_DATABASES:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{prefix}_{run_id}" WITH (FORCE)'))
            # Any store a worker's PgStores did not drop itself (a worker that crashed).
            left = conn.execute(
                text("SELECT datname FROM pg_database WHERE starts_with(datname, :prefix)"),
                {"prefix": f"cps_test_{run_id}_"},
            ).scalars()
            for name in list(left):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def run_id(pytestconfig: pytest.Config) -> str:
    return pytestconfig.stash[RUN_ID]


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], dict[str, str]]
) -> dict[str, str]:
    """What ``build(directory)`` returned, built by the first process of the session to ask.

    xdist gives each worker its own base temporary directory inside one shared by the session;
    a lock there lets one worker build while the others wait, and the record it leaves (written
    only once the build succeeded) is what the others read.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    record = shared / f"{name}.json"
    with FileLock(shared / f"{name}.lock"):
        if not record.exists():
            directory = shared / name
            with suppress(FileNotFoundError):
                shutil.rmtree(directory)  # a build that failed half-way in another worker
            directory.mkdir()
            record.write_text(json.dumps(build(directory)), encoding="utf-8")
        built: dict[str, str] = json.loads(record.read_text(encoding="utf-8"))
    return built


@pytest.fixture(scope="session")
def pg_admin_url() -> str | None:
    return _pg_admin_url()


def _build_sqlite_template(directory: Path) -> dict[str, str]:
    path = directory / "template.db"
    engine = create_db_engine(f"sqlite:///{path}")
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()  # closing the last connection checkpoints the WAL into the file
    return {"path": str(path)}


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(built_once(tmp_path_factory, "sqlite-template", _build_sqlite_template)["path"])


def _admin_engine(admin_url: str) -> Engine:
    url = make_url(admin_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(url, isolation_level="AUTOCOMMIT")


def create_pg_database(admin_url: str, name: str, template: str | None = None) -> str:
    """A new PostgreSQL database ``name``, a copy of ``template`` if given; returns its URL."""
    admin = _admin_engine(admin_url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    finally:
        admin.dispose()
    url = make_url(admin_url).set(database=name, drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


@contextmanager
def pg_database(admin_url: str, prefix: str, template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database named ``<prefix>_<random>``, a copy of ``template`` if given,
    dropped on exit; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    url = create_pg_database(admin_url, name, template)
    admin = _admin_engine(admin_url)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_template(
    tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str | None, run_id: str
) -> str | None:
    """The name of the migrated template database, shared by the session's workers."""
    if pg_admin_url is None:
        return None
    admin_url = pg_admin_url

    def build(_directory: Path) -> dict[str, str]:
        name = f"cps_template_{run_id}"
        engine = create_db_engine(create_pg_database(admin_url, name))
        try:
            migrate.upgrade(engine)
        finally:
            engine.dispose()  # a template must have no connection when it is copied
        return {"database": name}

    return built_once(tmp_path_factory, "pg-template", build)["database"]


#: What a migrated store's schema is, in one digest: its tables, columns, constraints, indexes,
#: functions, types and triggers, and the revision Alembic recorded.
_SCHEMA_DIGEST = """
SELECT md5(string_agg(item, E'\\n' ORDER BY item)) FROM (
    SELECT 'rel ' || c.relname || ' ' || c.relkind::text FROM pg_class c
     WHERE c.relnamespace = 'public'::regnamespace
    UNION ALL
    SELECT 'col ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || ' ' || a.attnotnull || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'con ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
     WHERE connamespace = 'public'::regnamespace
    UNION ALL
    SELECT 'idx ' || pg_get_indexdef(indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
     WHERE c.relnamespace = 'public'::regnamespace
    UNION ALL
    SELECT 'fn ' || proname || '(' || pg_get_function_identity_arguments(oid) || ')' FROM pg_proc
     WHERE pronamespace = 'public'::regnamespace
    UNION ALL
    SELECT 'type ' || typname || ' ' || typtype::text FROM pg_type WHERE typnamespace = 'public'::regnamespace
    UNION ALL
    SELECT 'trg ' || tgname FROM pg_trigger WHERE NOT tgisinternal
    UNION ALL
    SELECT 'ns ' || nspname FROM pg_namespace
     WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
    UNION ALL
    SELECT 'alembic ' || version_num FROM alembic_version
) items (item)
"""


class PgStores:
    """This process's migrated PostgreSQL stores, each used by one test at a time and emptied for
    the next rather than copied from the template and dropped.

    Copying the template and dropping the copy costs the server about 0.3 s a test (most of the
    suite's PostgreSQL time); emptying a store costs about 30 ms. A store comes back only as the
    template made it: every connection to it ended, every table written truncated (so the
    planner knows nothing of the rows it held), every sequence restarted, and the schema
    digest equal to the template's. A store whose schema a test changed, or that a process still
    holds, is dropped instead, so the next test gets a fresh copy.
    """

    def __init__(self, admin_url: str, template: str, prefix: str) -> None:
        self.admin_url = admin_url
        self.template = template
        self.prefix = prefix
        self.free: list[str] = []
        self.digest: str | None = None

    def take(self) -> str:
        """The URL of an empty migrated store no one else is using."""
        if self.free:
            return self.free.pop()
        name = f"{self.prefix}_{uuid.uuid4().hex[:12]}"
        url = create_pg_database(self.admin_url, name, self.template)
        if self.digest is None:
            self.digest = self._schema_digest(url)
        return url

    def give_back(self, url: str) -> None:
        """Empties the store at ``url`` for the next test, or drops it when it cannot be."""
        if self._emptied(url):
            self.free.append(url)
        else:
            self._drop(url)

    def close(self) -> None:
        while self.free:
            self._drop(self.free.pop())

    def _emptied(self, url: str) -> bool:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
                conn.commit()
                if conn.execute(text(_SCHEMA_DIGEST)).scalar_one() != self.digest:
                    return False
                # The tables the test wrote to or had analysed. TRUNCATE, not DELETE: it gives a
                # table new, empty files, so the planner sees it as never analysed (as a new
                # store's), not measured empty with its pages still there, which it believes
                # empty however many rows the next test writes. A table that was never written
                # is left alone: a TRUNCATE costs a few milliseconds a table.
                used = conn.execute(
                    text(
                        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
                        " AND relkind = 'r' AND relname <> 'alembic_version'"
                        " AND (pg_relation_size(oid) > 0 OR reltuples >= 0)"
                    )
                ).scalars()
                tables = ", ".join(f'"{table}"' for table in used)
                if tables:
                    conn.execute(text(f"TRUNCATE {tables} CASCADE"))
                conn.execute(
                    text(
                        "SELECT setval(c.oid, s.seqstart, false) FROM pg_class c JOIN pg_sequence s"
                        " ON s.seqrelid = c.oid WHERE c.relnamespace = 'public'::regnamespace"
                    )
                )
                others = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
                if others:
                    return False  # a process reconnected: not safe to hand on
                conn.commit()
            return True
        except SQLAlchemyError:
            return False
        finally:
            engine.dispose()

    def _schema_digest(self, url: str) -> str:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                digest: str = conn.execute(text(_SCHEMA_DIGEST)).scalar_one()
            return digest
        finally:
            engine.dispose()

    def _drop(self, url: str) -> None:
        name = make_url(url).database
        admin = _admin_engine(self.admin_url)
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()


@pytest.fixture(scope="session")
def pg_stores(pg_admin_url: str | None, pg_template: str | None, run_id: str) -> Iterator[PgStores | None]:
    """This process's reusable copies of the migrated template (named after the run, so the
    controller drops any a crashed worker left)."""
    if pg_admin_url is None or pg_template is None:
        yield None
        return
    stores = PgStores(pg_admin_url, pg_template, f"cps_test_{run_id}")
    yield stores
    stores.close()


@contextmanager
def store_copy(request: pytest.FixtureRequest, directory: Path, pg_stores: PgStores | None) -> Iterator[str]:
    """A fresh, migrated store on the backend of ``request.param``: a copy of the SQLite template
    in ``directory``, or an empty store of :class:`PgStores`; yields its URL."""
    if request.param == "sqlite":
        path = directory / "store.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    if pg_stores is None:
        pytest.skip("PostgreSQL tests need CRM_PERF_SYNC_TEST_PG_URL")
    url = pg_stores.take()
    try:
        yield url
    finally:
        pg_stores.give_back(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_stores: PgStores | None) -> Iterator[str]:
    """The URL of a fresh, migrated store: SQLite and PostgreSQL in turn."""
    with store_copy(request, tmp_path, pg_stores) as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def module_db_url(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pg_stores: PgStores | None,
) -> Iterator[str]:
    """The URL of a fresh, migrated store shared by the tests of one module (SQLite and PostgreSQL
    in turn): for a module whose tests only read what a module fixture wrote."""
    with store_copy(request, tmp_path_factory.mktemp("module-store"), pg_stores) as url:
        yield url


@pytest.fixture(scope="module")
def module_session_factory(module_db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(module_db_url)
    yield make_session_factory(engine)
    engine.dispose()


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
