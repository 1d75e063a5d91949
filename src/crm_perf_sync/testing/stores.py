"""Fresh, migrated stores for tests: a SQLite file or a PostgreSQL database, cloned from a template.

Migrating takes a while, so a test session migrates one template per backend and each test gets
its own copy: a copied SQLite file, or a PostgreSQL database created ``TEMPLATE`` the migrated one.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from crm_perf_sync.kit import migrate
from crm_perf_sync.kit.db import create_db_engine

#: Names the PostgreSQL server (an admin URL: its user may create databases) that tests may use.
PG_URL_ENV = "CRM_PERF_SYNC_TEST_PG_URL"


def migrate_url(url: str) -> None:
    """Migrate the (empty) store at ``url`` to the newest revision."""
    engine = create_db_engine(url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()  # closing the last SQLite connection checkpoints the WAL into the file


def sqlite_template(path: Path) -> Path:
    """Create a migrated SQLite store at ``path`` to copy from."""
    migrate_url(f"sqlite:///{path}")
    return path


def sqlite_copy(template: Path, path: Path) -> str:
    """Copy the migrated ``template`` to ``path``; its URL."""
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


def _admin_engine(admin_url: str) -> Engine:
    url = make_url(admin_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    # CREATE and DROP DATABASE cannot run inside a transaction.
    return create_engine(url, isolation_level="AUTOCOMMIT")


def pg_database_url(admin_url: str, name: str) -> str:
    """The URL of the database ``name`` on the server of ``admin_url``, password included."""
    return (
        make_url(admin_url)
        .set(database=name, drivername="postgresql+psycopg")
        .render_as_string(hide_password=False)
    )


def create_pg_database(admin_url: str, prefix: str, *, template: str | None = None) -> str:
    """Create a database with a fresh name starting with ``prefix`` (a copy of ``template``); its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template is not None else ""
    admin = _admin_engine(admin_url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    finally:
        admin.dispose()
    return name


def drop_pg_database(admin_url: str, name: str) -> None:
    """Drop the database ``name``, disconnecting whoever is still connected to it."""
    admin = _admin_engine(admin_url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
