"""The PostgreSQL stores the suite reuses between tests come back exactly as the template made
them, or not at all (tests/conftest.py, PgStores)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.conftest import PgStores

pytestmark = pytest.mark.postgres

_CONNECTION = (
    "INSERT INTO connection (id, kind, enabled, created_at, updated_at)"
    " VALUES ('c1', 'csv', true, now(), now())"
)
_TEAM = (
    "INSERT INTO team (namespace, connection_id, external_id, name, content_hash, synced_at)"
    " VALUES ('c1', 'c1', :n, :n, 'h', now())"
)


@pytest.fixture
def stores(pg_admin_url: str | None, pg_template: str | None, run_id: str) -> Iterator[PgStores]:
    if pg_admin_url is None or pg_template is None:
        pytest.skip("PostgreSQL tests need CRM_PERF_SYNC_TEST_PG_URL")
    found = PgStores(pg_admin_url, pg_template, f"cps_test_{run_id}")
    yield found
    found.close()


def _exists(admin_url: str, url: str) -> bool:
    engine = create_engine(admin_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": make_url(url).database}
            )
            count: int = found.scalar_one()
            return count == 1
    finally:
        engine.dispose()


def _rows_and_sequences(url: str) -> tuple[dict[str, int], dict[str, int | None]]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).scalars()
            rows = {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in list(tables)}
            sequences = conn.execute(
                text("SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public'")
            ).all()
            return rows, dict(sequences)
    finally:
        engine.dispose()


def test_a_store_given_back_is_emptied_and_its_sequences_restarted(stores: PgStores) -> None:
    url = stores.take()
    fresh_rows, fresh_sequences = _rows_and_sequences(url)
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(_CONNECTION))
        for n in range(3):
            conn.execute(text(_TEAM), {"n": f"t{n}"})
    held = engine.connect()  # a transaction left open: the store must still come back emptied
    held.execute(text("SELECT 1 FROM team FOR UPDATE")).all()
    assert _rows_and_sequences(url)[0]["team"] == 3
    stores.give_back(url)
    held.invalidate()  # its server process was ended: nothing to roll back
    engine.dispose()

    again = stores.take()
    assert again == url
    assert _rows_and_sequences(again) == (fresh_rows, fresh_sequences)
    assert all(count == 0 for table, count in fresh_rows.items() if table != "alembic_version")
    assert fresh_rows["alembic_version"] == 1
    with create_engine(again, poolclass=NullPool).begin() as conn:
        conn.execute(text(_CONNECTION))
        first_id = conn.execute(text(_TEAM + " RETURNING id"), {"n": "t9"}).scalar_one()
    assert first_id == 1
    stores.give_back(again)


def test_a_store_whose_schema_a_test_changed_is_dropped_not_reused(
    stores: PgStores, pg_admin_url: str
) -> None:
    url = stores.take()
    with create_engine(url, poolclass=NullPool).begin() as conn:
        conn.execute(text("ALTER TABLE team ADD COLUMN nickname TEXT"))
    stores.give_back(url)
    assert not _exists(pg_admin_url, url)
    assert stores.free == []
    other = stores.take()
    assert other != url
    stores.give_back(other)
    assert stores.free == [other]


def _statistics(url: str) -> dict[str, tuple[float, int]]:
    """Each table's planner statistics: its row estimate and pages as last measured."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                text(
                    "SELECT relname, reltuples, relpages FROM pg_class"
                    " WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
                )
            ).all()
            return {name: (float(tuples), int(pages)) for name, tuples, pages in found}
    finally:
        engine.dispose()


def test_a_store_given_back_carries_no_statistics_of_the_rows_it_held(stores: PgStores) -> None:
    """A table emptied by DELETE keeps its pages; analysed then, it reads as holding no row per
    page, and the planner then believes it empty however many rows the next test writes."""
    url = stores.take()
    fresh = _statistics(url)
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(_CONNECTION))
        conn.execute(
            text(
                "INSERT INTO team (namespace, connection_id, external_id, name, content_hash, synced_at)"
                " SELECT 'c1', 'c1', 't' || n, 't' || n, 'h', now() FROM generate_series(1, 5000) n"
            )
        )
        conn.execute(text("ANALYZE team"))
    engine.dispose()
    assert _statistics(url)["team"][0] == 5000
    stores.give_back(url)

    again = stores.take()
    assert again == url
    assert _statistics(again) == fresh
    assert fresh["team"] == (-1.0, 0)  # never analysed, as a new store's tables are
    stores.give_back(again)
