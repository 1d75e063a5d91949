"""Measure entries in the store, on SQLite and PostgreSQL: exact decimals, uploads that cost the
same few statements at any size, and the rows a KPI on a measure reads."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.errors import Conflict
from crm_perf_sync.measures import repository as repo
from crm_perf_sync.measures import service
from crm_perf_sync.measures.library import resolve
from crm_perf_sync.measures.schemas import MeasureSection
from crm_perf_sync.models import MeasureChange

NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
CATALOG = service.Catalog(resolve(MeasureSection()), 1)


def weekly_hours(weeks: int, value: str) -> str:
    first = date(2001, 1, 1)
    rows = [
        f"training_hours,company,company,week,{first + timedelta(days=7 * i)},{value}" for i in range(weeks)
    ]
    return "\n".join(["measure_id,scope,scope_id,grain,period_key,value", *rows])


def statements(engine: Engine, factory: sessionmaker[Session], text: str) -> tuple[Any, Counter[str]]:
    seen: Counter[str] = Counter()

    def count(*args: Any) -> None:
        seen[args[2].split()[0].upper()] += 1

    event.listen(engine, "before_cursor_execute", count)
    try:
        with session_scope(factory) as session:
            done = service.upload(session, CATALOG, text, source="csv", by="hr", now=NOW)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    seen.pop("BEGIN", None)
    return done, seen


def test_an_upload_costs_the_same_statements_for_ten_rows_as_for_a_thousand(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    small, seen = statements(engine, session_factory, weekly_hours(10, "1"))
    assert small.created == 10
    assert seen == Counter({"SELECT": 1, "INSERT": 2})  # the entries in its periods; entries, history

    large, seen = statements(engine, session_factory, weekly_hours(1000, "5"))
    assert (large.created, large.updated) == (990, 10)
    # New entries; the history, one statement per kind of change (created, updated); the changes.
    assert seen == Counter({"SELECT": 1, "INSERT": 3, "UPDATE": 1})

    again, seen = statements(engine, session_factory, weekly_hours(1000, "5"))
    assert again.unchanged == 1000
    assert seen == Counter({"SELECT": 1})
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(MeasureChange)) == 10 + 1000


def test_values_come_back_exactly_as_entered_and_in_the_rows_a_kpi_reads(
    session_factory: sessionmaker[Session],
) -> None:
    text = "\n".join(
        [
            "measure_id,scope,scope_id,grain,period_key,value",
            "training_hours,company,company,quarter,2026-04,4.100000",
            "training_hours,company,company,quarter,2026-01,0.1",
            "training_hours,company,company,year,2026,999999999999.5",
            "customer_satisfaction,company,company,month,2026-04,3",
        ]
    )
    with session_scope(session_factory) as session:
        service.upload(session, CATALOG, text, source="csv", by="hr", now=NOW)
    with session_factory() as session:
        quarters = repo.measure_values(session, "training_hours", "quarter")
        years = repo.measure_values(session, "training_hours", "year")
    assert [(v.period_key, v.period_end, v.value) for v in quarters] == [
        ("2026-01-01", date(2026, 4, 1), Decimal("0.1")),
        ("2026-04-01", date(2026, 7, 1), Decimal("4.1")),
    ]
    assert [str(v.value) for v in quarters] == ["0.1", "4.1"]
    assert [(v.scope, v.scope_id, str(v.value)) for v in years] == [("company", "company", "999999999999.5")]


def test_an_entry_created_meanwhile_by_another_request_is_a_conflict_not_a_crash(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("a SQLite write request takes the write lock before it reads: no other can interleave")
    named = service.Given("training_hours", "company", "company", "year", date(2026, 1, 1), Decimal(8))
    with session_factory() as first:
        checked = service.check(first, CATALOG, named)
        assert repo.entry(first, checked.key) is None  # read before the other request commits
        with session_scope(session_factory) as other:
            service.set_entry(other, CATALOG, named, source="api", by="other", now=NOW)
        writer = service.Writer(first, "api", "first", NOW)
        assert writer.put(checked, None) == "created"
        with pytest.raises(Conflict, match="entered at the same time by another request"):
            writer.done()
        first.rollback()
    with session_factory() as session:
        found = repo.entry(session, checked.key)
        assert found is not None
        assert (found.value, found.entered_by) == (Decimal(8), "other")
