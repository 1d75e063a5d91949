"""The sync's hot path: bulk upserts that bypass per-row ORM/Core processing.

SQLAlchemy's per-parameter type processing costs more than the database itself at tens of
thousands of rows per second, so the values are converted once here, by column type, and sent
straight to the driver:

- SQLite: one ``INSERT ... ON CONFLICT DO UPDATE`` run with the driver's ``executemany``; values are
  stored exactly as SQLAlchemy stores them (naive-UTC datetime text, ISO dates, JSON text, 0/1).
- PostgreSQL: ``COPY`` into a temporary table, then one ``INSERT ... SELECT ... ON CONFLICT``.

Both statements are built from the table metadata, never from input, and every value travels as
a bound parameter or COPY data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import Boolean, Connection, Date, Table
from sqlalchemy.orm import Session

from crm_perf_sync.models.types import JSONDoc, Money, UTCDateTime

Convert = Callable[[Any], Any]


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _sqlite_datetime(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} given for a UTC column")
    # The exact text SQLAlchemy's SQLite DATETIME type writes and parses back.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _sqlite_date(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _sqlite_money(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _sqlite_bool(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _converter(table: Table, column: str, dialect: str) -> Convert | None:
    col_type = table.c[column].type
    if isinstance(col_type, type(JSONDoc)) or column in ("raw", "custom", "state"):
        return _json
    if dialect == "sqlite":
        if isinstance(col_type, UTCDateTime):
            return _sqlite_datetime
        if isinstance(col_type, Money):
            return _sqlite_money
        if isinstance(col_type, Boolean):
            return _sqlite_bool
        if isinstance(col_type, Date):
            return _sqlite_date
        return None
    # psycopg adapts aware datetimes, dates, Decimals and booleans itself (records were validated
    # as aware before they got here).
    return None


@lru_cache(maxsize=64)
def _plan(table: Table, columns: tuple[str, ...], dialect: str) -> tuple[tuple[int, Convert], ...]:
    """The positions of ``columns`` whose values need converting, with their converters."""
    converters = (_converter(table, name, dialect) for name in columns)
    return tuple((i, f) for i, f in enumerate(converters) if f is not None)


def _tuples(
    table: Table, columns: tuple[str, ...], rows: Sequence[dict[str, Any]], dialect: str
) -> list[Any]:
    getter = itemgetter(*columns)
    plan = _plan(table, columns, dialect)
    if len(columns) == 1:
        return [(getter(row),) for row in rows]
    if not plan:
        return [getter(row) for row in rows]
    out = []
    for row in rows:
        values = list(getter(row))
        for position, convert in plan:
            values[position] = convert(values[position])
        out.append(tuple(values))
    return out


def _digest(columns: tuple[str, ...]) -> str:
    return hashlib.blake2b(",".join(columns).encode(), digest_size=6).hexdigest()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def bulk_upsert(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    constants: dict[str, Any],
    conflict: Sequence[str],
    update: Sequence[str] | None,
) -> None:
    """Insert ``rows`` (dicts with identical keys) plus the ``constants`` columns; on a
    ``conflict`` key clash update ``update`` columns from the new row, or do nothing when
    ``update`` is ``None``."""
    if not rows:
        return
    row_columns = tuple(rows[0])
    columns = row_columns + tuple(constants)
    dialect = session.get_bind().dialect.name
    tail = tuple(_tuples(table, tuple(constants), [constants], dialect)[0]) if constants else ()
    values = [head + tail for head in _tuples(table, row_columns, rows, dialect)]
    cols = ", ".join(_quote(c) for c in columns)
    target = ", ".join(_quote(c) for c in conflict)
    if update is None:
        on_conflict = f"ON CONFLICT ({target}) DO NOTHING"
    else:
        sets = ", ".join(f"{_quote(c)} = excluded.{_quote(c)}" for c in update)
        on_conflict = f"ON CONFLICT ({target}) DO UPDATE SET {sets}"
    connection = session.connection()
    if dialect == "postgresql":
        raw = connection.connection.dbapi_connection
        assert raw is not None
        # One staging table per column set and connection, emptied at each commit: no catalog
        # churn from creating and dropping a table for every batch.
        stage = _quote(f"_stage_{table.name}_{_digest(columns)}")
        with raw.cursor() as cursor:  # type: ignore[attr-defined]
            cursor.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
                f"SELECT {cols} FROM {_quote(table.name)} WITH NO DATA"
            )
            with cursor.copy(f"COPY {stage} ({cols}) FROM STDIN") as copy:
                for value in values:
                    copy.write_row(value)
            cursor.execute(
                f"INSERT INTO {_quote(table.name)} ({cols}) SELECT {cols} FROM {stage} {on_conflict}"
            )
            cursor.execute(f"TRUNCATE {stage}")
        return
    placeholders = ", ".join("?" for _ in columns)
    sql = f"INSERT INTO {_quote(table.name)} ({cols}) VALUES ({placeholders}) {on_conflict}"
    connection.exec_driver_sql(sql, values)


def bulk_insert(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with identical keys) as fast as the driver allows: ``COPY`` on
    PostgreSQL, one ``executemany`` on SQLite. For tables the caller has just cleared."""
    if not rows:
        return
    columns = tuple(rows[0])
    dialect = connection.dialect.name
    values = _tuples(table, columns, rows, dialect)
    cols = ", ".join(_quote(c) for c in columns)
    if dialect == "postgresql":
        raw = connection.connection.dbapi_connection
        assert raw is not None
        with raw.cursor() as cursor:  # type: ignore[attr-defined]
            with cursor.copy(f"COPY {_quote(table.name)} ({cols}) FROM STDIN") as copy:
                for value in values:
                    copy.write_row(value)
        return
    placeholders = ", ".join("?" for _ in columns)
    connection.exec_driver_sql(f"INSERT INTO {_quote(table.name)} ({cols}) VALUES ({placeholders})", values)
