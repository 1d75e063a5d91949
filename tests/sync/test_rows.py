"""Store rows: the content hash is of the payload as stored, and values survive the bulk path."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Select, select, text
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit.canonical import content_hash
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.models import Opportunity, SyncRecordError
from crm_perf_sync.sync import repository as repo
from crm_perf_sync.sync.rows import to_row
from tests.sync.scripted import Script
from tests.sync.test_engine import OPPS, T0, opp, run, setup_connection

PARIS = timezone(timedelta(hours=2))


def test_the_hash_is_of_the_raw_payload_as_it_is_stored() -> None:
    raw = {
        "b": Decimal("1.50"),
        "a": {"z": datetime(2025, 3, 1, 9, 30, tzinfo=UTC), "y": [1, Decimal("2")]},
        7: None,
    }
    row = to_row("opportunities", opp(1, raw=raw))

    stored = orjson.loads(str(row["raw"]))
    assert stored == {"7": None, "a": {"y": [1, "2"], "z": "2025-03-01T09:30:00+00:00"}, "b": "1.50"}
    # Rendering the payload once for both purposes hashes exactly what a reader of the store sees.
    as_stored = {**row, "raw": stored}
    del as_stored["content_hash"]
    assert row["content_hash"] == content_hash(as_stored)

    nested_change = {**raw, "a": {"z": raw["a"]["z"], "y": [1, Decimal("3")]}}  # type: ignore[index]
    assert to_row("opportunities", opp(1, raw=nested_change))["content_hash"] != row["content_hash"]
    assert (
        to_row("opportunities", opp(1, raw=dict(reversed(raw.items()))))["content_hash"]
        == (row["content_hash"])
    )
    assert to_row("opportunities", opp(1, raw=None))["content_hash"] != row["content_hash"]


def test_values_reach_the_store_exactly_whatever_their_zone(session_factory: sessionmaker[Session]) -> None:
    created = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=PARIS)
    records = [
        opp(1, created_at=created, is_closed=True, is_won=False, stage="Closed Lost"),
        opp(2, created_at=datetime(2025, 2, 1, 23, 59, 59, tzinfo=UTC), amount=None, raw=None),
    ]
    outcome = run(session_factory, Script(streams=[OPPS], pages={"opportunities": [records]}), batch_size=10)
    assert outcome.status == "succeeded"

    with session_scope(session_factory) as session:
        first, second = session.scalars(select(Opportunity).order_by(Opportunity.external_id)).all()
        assert first.created_at == datetime(2025, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)
        assert (first.is_closed, first.is_won, first.amount) == (True, False, Decimal("1001.50"))
        assert first.close_date == date(2025, 6, 30)
        assert first.raw == {"Id": "00600001", "Custom__c": 1}
        assert second.created_at == datetime(2025, 2, 1, 23, 59, 59, tzinfo=UTC)
        assert (second.amount, second.raw) == (None, None)
        # What SQL sees: the same instants in the same order as the ORM (text on SQLite, timestamptz
        # on PostgreSQL), and booleans that compare as booleans.
        ordered = session.execute(
            text("SELECT external_id FROM opportunity WHERE is_closed ORDER BY created_at")
        ).scalars()
        assert list(ordered) == ["00600001"]
        later = session.execute(
            select(Opportunity.external_id).where(
                Opportunity.created_at > datetime(2025, 3, 1, 9, 59, tzinfo=UTC)
            )
        ).scalars()
        assert list(later) == ["00600001"]


def test_a_batch_longer_than_one_statement_inserts_and_updates_every_row(
    session_factory: sessionmaker[Session],
) -> None:
    # SQLite carries a few dozen rows per statement: 97 rows are whole statements and a remainder.
    first = [opp(n) for n in range(97)]
    outcome = run(session_factory, Script(streams=[OPPS], pages={"opportunities": [first]}), batch_size=200)
    assert (outcome.total("inserted"), outcome.total("updated")) == (97, 0)
    again = [opp(n, stage="Negotiation", minutes=5) if n % 3 == 0 else opp(n) for n in range(120)]
    outcome = run(
        session_factory,
        Script(streams=[OPPS], pages={"opportunities": [again]}),
        batch_size=200,
        full=True,
    )
    assert (outcome.total("inserted"), outcome.total("updated"), outcome.total("unchanged")) == (23, 33, 64)
    with session_scope(session_factory) as session:
        stages = dict(session.execute(select(Opportunity.external_id, Opportunity.stage)).all())
    assert len(stages) == 120
    assert {key for key, stage in stages.items() if stage == "Negotiation"} == {
        f"006{n:05d}" for n in range(0, 120, 3)
    }


def test_loosely_typed_values_from_a_connector_are_stored_as_the_column_says(
    session_factory: sessionmaker[Session],
) -> None:
    # Records are not type-checked field by field; PostgreSQL's binary COPY would refuse an int for a
    # string column, so the store converts it (SQLite takes either). A float amount is not exact: that
    # record is reported and skipped, and the run goes on.
    loose = opp(1, name=4711, lead_source=12)
    inexact = opp(2, amount=1234.5)
    script = Script(streams=[OPPS], pages={"opportunities": [[loose, inexact]]})
    outcome = run(session_factory, script, batch_size=10)
    assert outcome.status == "succeeded", outcome.summary()
    assert (outcome.total("inserted"), outcome.total("skipped")) == (1, 1)
    with session_scope(session_factory) as session:
        stored = session.scalars(select(Opportunity)).one()
        assert (stored.external_id, stored.name, stored.lead_source) == ("00600001", "4711", "12")
        error = session.scalars(select(SyncRecordError)).one()
        assert (error.record_key, error.message) == (
            "00600002",
            "invalid record: amount must be a Decimal, got float 1234.5",
        )


def _plan(session: Session, stmt: Select[Any], params: dict[str, Any]) -> list[str]:
    """The database's own plan of ``stmt`` with ``params``, one line per step."""
    conn = session.connection()
    compiled = stmt.compile(dialect=conn.dialect)
    values = {**compiled.params, **params}
    if conn.dialect.name == "postgresql":
        return [row[0] for row in conn.exec_driver_sql(f"EXPLAIN {compiled}", values)]
    ordered = tuple(values[name] for name in compiled.positiontup or ())
    return [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", ordered)]


def test_the_key_lookup_probes_the_unique_index_however_many_rows_are_stored(
    session_factory: sessionmaker[Session],
) -> None:
    # Enough rows that PostgreSQL, with fresh statistics, would rather hash the whole table than
    # probe the index 5,000 times unless the statement leaves it no choice: a full scan per batch.
    setup_connection(session_factory)
    stored = [to_row("opportunities", opp(n)) for n in range(60_000)]
    with session_scope(session_factory) as session:
        for start in range(0, len(stored), 10_000):
            repo.insert_rows(session, "opportunities", "crm", stored[start : start + 10_000], T0)
    with session_scope(session_factory) as session:
        repo.refresh_statistics(session, "opportunities")
        if session.get_bind().dialect.name == "sqlite":
            session.execute(text("ANALYZE"))
    asked = [f"006{n:05d}" for n in range(57_500, 62_500)]  # half stored, half new

    with session_scope(session_factory) as session:
        dialect = session.get_bind().dialect.name
        stmt, params = repo.existing_state_query(dialect, "opportunities", "crm", asked)
        plan = "\n".join(_plan(session, stmt, params))
        found = repo.existing_state(session, "opportunities", "crm", asked)

    if dialect == "postgresql":
        assert "Index Scan using uq_opportunity_connection_id_external_id" in plan, plan
        assert "Seq Scan on opportunity" not in plan, plan
    else:
        assert "SEARCH opportunity USING INDEX" in plan, plan
        assert "SCAN opportunity" not in plan.replace("SEARCH opportunity", ""), plan
    by_key = {row["external_id"]: row for row in stored}
    assert set(found) == {key for key in asked if key in by_key}
    assert len(found) == 2_500
    assert all(state.content_hash == by_key[key]["content_hash"] for key, state in found.items())
    assert all(state.stage == "Prospecting" and not state.is_deleted for state in found.values())
