"""Migrations upgrade and downgrade cleanly, and produce exactly the schema the models declare."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from crm_perf_sync.kit import migrate
from crm_perf_sync.kit.db import create_db_engine
from crm_perf_sync.models import Base

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("empty_db_url", BACKENDS, indirect=True)
def test_upgrade_matches_models_and_downgrade_removes_everything(empty_db_url: str) -> None:
    engine = create_db_engine(empty_db_url)
    try:
        assert migrate.current_revision(engine) is None
        migrate.upgrade(engine)
        assert migrate.is_at_head(engine)
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables

        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"

        migrate.downgrade(engine, "base")
        remaining = set(inspect(engine).get_table_names()) - {"alembic_version"}
        assert remaining == set()
        assert migrate.current_revision(engine) is None

        migrate.upgrade(engine)  # and back up again: the downgrade left nothing behind that clashes
        assert migrate.is_at_head(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("empty_db_url", BACKENDS, indirect=True)
def test_keys_stored_readable_are_dropped_and_keep_working_through_their_hash(empty_db_url: str) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import text

    from crm_perf_sync.apikeys import service as keys
    from crm_perf_sync.kit.db import make_session_factory, session_scope

    key = "cps_" + "k" * 43
    engine = create_db_engine(empty_db_url)
    try:
        migrate.upgrade(engine, "7a1e2c5d9b40")  # the last revision that kept the demo key readable
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO api_key (name, scope, prefix, key_hash, created_at, display_key) "
                    "VALUES ('embedded demo (read)', 'read', :prefix, :hash, :at, :key)"
                ),
                {
                    "prefix": key[:12],
                    "hash": keys.hash_key(key),
                    "at": datetime(2026, 12, 1, tzinfo=UTC),
                    "key": key,
                },
            )
        migrate.upgrade(engine)
        columns = {column["name"] for column in inspect(engine).get_columns("api_key")}
        assert "display_key" not in columns
        with engine.connect() as conn:
            assert key not in str(conn.execute(text("SELECT * FROM api_key")).all())
        with session_scope(make_session_factory(engine)) as session:
            principal = keys.authenticate(session, f"Bearer {key}")
        assert (principal.name, principal.scope) == ("embedded demo (read)", "read")
    finally:
        engine.dispose()
