"""Migrations upgrade and downgrade cleanly, and produce exactly the schema the models declare."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from crm_perf_sync import migrate
from crm_perf_sync.db import create_db_engine
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
