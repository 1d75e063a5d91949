"""The sync's hot path: bulk upserts that bypass per-row ORM/Core processing.

SQLAlchemy's per-parameter type processing costs more than the database itself at tens of
thousands of rows per second, so the values are converted once here, by column type, and sent
straight to the driver:

- SQLite: multi-row ``INSERT ... ON CONFLICT DO UPDATE`` statements (plain ``INSERT`` for new rows)
  run with the driver's ``executemany``; values are stored exactly as SQLAlchemy stores them
  (naive-UTC datetime text, ISO dates, JSON text, 0/1 — the driver binds a ``bool`` as the
  integer it is).
- PostgreSQL: binary ``COPY`` into a temporary table, then one ``INSERT ... SELECT ... ON CONFLICT``
  (new rows: binary ``COPY`` straight into the table).

Both statements are built from the table metadata, never from input, and every value travels as
a bound parameter or COPY data.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from typing import Any

import orjson
from psycopg.types.json import set_json_dumps
from sqlalchemy import Connection, Date, String, Table
from sqlalchemy.orm import Session

from crm_perf_sync.kit.columns import JSONDoc, Money, UTCDateTime

Convert = Callable[[Any], Any]

#: SQLite's bound-parameter limit (999 before 3.32) and how many rows one statement carries.
_SQLITE_MAX_PARAMS = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999
_SQLITE_ROWS_PER_STATEMENT = 40


class RawJSON(str):
    """A raw payload already rendered as JSON text: rendered once, hashed and stored as it is."""

    __slots__ = ()


def _json(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is RawJSON:
        return str(value)
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _sqlite_datetime(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given for a UTC column")
        value = value.astimezone(UTC)
    # The exact text SQLAlchemy's SQLite DATETIME type writes and parses back: the ISO form less
    # its "+00:00" (cheaper than dropping the zone first; positional arguments on purpose).
    return value.isoformat(" ", "microseconds")[:26]


def _sqlite_date(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _sqlite_money(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _converter(table: Table, column: str, dialect: str) -> Convert | None:
    col_type = table.c[column].type
    if isinstance(col_type, type(JSONDoc)) or column in ("raw", "custom", "state"):
        return _json
    if dialect == "sqlite":
        if isinstance(col_type, UTCDateTime):
            return _sqlite_datetime
        if isinstance(col_type, Money):
            return _sqlite_money
        if isinstance(col_type, Date):
            return _sqlite_date
        return None
    # Binary COPY takes aware datetimes, dates, booleans and numbers as they are (records were
    # validated as aware before they got here), but is strict where text is lenient: a string
    # column takes only ``str`` and a numeric one only ``Decimal``.
    if isinstance(col_type, Money):
        return _pg_decimal
    if isinstance(col_type, String):
        return _pg_str
    return None


def _pg_str(value: Any) -> str | None:
    return value if value is None or type(value) is str else str(value)


def _pg_decimal(value: Any) -> Decimal | None:
    if value is None or type(value) is Decimal:
        return value
    return Decimal(repr(value) if isinstance(value, float) else value)


def _as_is(value: Any) -> Any:
    return value


def _pg_copy(cursor: Any, target: str, cols: str, values: Sequence[Any]) -> None:
    """``COPY target (cols)`` in binary: several times cheaper to encode than text for timestamps,
    dates and booleans. The column types come from the target itself; JSON columns arrive as text
    rendered by the converters and go in as they are."""
    cursor.execute(f"SELECT {cols} FROM {target} LIMIT 0")
    types = [column.type_code for column in cursor.description]
    set_json_dumps(_as_is, cursor)
    with cursor.copy(f"COPY {target} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for value in values:
            copy.write_row(value)


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
        convert = plan[0][1] if plan else None
        return [(convert(getter(row)),) for row in rows] if convert else [(getter(row),) for row in rows]
    if not plan:
        return [getter(row) for row in rows]
    out = []
    for row in rows:
        values = list(getter(row))
        for position, convert in plan:
            values[position] = convert(values[position])
        out.append(tuple(values))
    return out


def convert_rows(
    table: Table, rows: Sequence[dict[str, Any]], constants: dict[str, Any], dialect: str
) -> tuple[tuple[str, ...], list[Any]]:
    """The column names and the converted value tuples of ``rows``, each followed by ``constants``."""
    row_columns = tuple(rows[0])
    values = _tuples(table, row_columns, rows, dialect)
    if constants:
        tail = tuple(_tuples(table, tuple(constants), [constants], dialect)[0])
        values = [head + tail for head in values]
    return row_columns + tuple(constants), values


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
    dialect = session.get_bind().dialect.name
    columns, values = convert_rows(table, rows, constants, dialect)
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
            _pg_copy(cursor, stage, cols, values)
            cursor.execute(
                f"INSERT INTO {_quote(table.name)} ({cols}) SELECT {cols} FROM {stage} {on_conflict}"
            )
            cursor.execute(f"TRUNCATE {stage}")
        return
    _sqlite_insert(connection, f"INSERT INTO {_quote(table.name)} ({cols}) VALUES", on_conflict, values)


def _sqlite_insert(connection: Connection, head: str, tail: str, values: list[Any]) -> None:
    """``head (?, ...), (?, ...) ... tail`` for ``values`` (tuples of one length), many rows per
    statement: the driver releases and retakes the GIL around every step of a statement, and one
    step per row stalls the writer behind whichever thread holds it (the connector's parsing)."""
    width = len(values[0])
    per_statement = max(1, min(_SQLITE_ROWS_PER_STATEMENT, _SQLITE_MAX_PARAMS // width))
    group = "(" + ", ".join("?" for _ in range(width)) + ")"
    full, rest = divmod(len(values), per_statement)
    if full:
        sql = f"{head} {', '.join(group for _ in range(per_statement))} {tail}"
        params = [
            tuple(chain.from_iterable(values[i : i + per_statement]))
            for i in range(0, full * per_statement, per_statement)
        ]
        connection.exec_driver_sql(sql, params)
    if rest:
        sql = f"{head} {', '.join(group for _ in range(rest))} {tail}"
        connection.exec_driver_sql(sql, tuple(chain.from_iterable(values[full * per_statement :])))


def bulk_insert(
    connection: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    constants: dict[str, Any] | None = None,
) -> None:
    """Insert ``rows`` (dicts with identical keys), plus the ``constants`` columns, as fast as the
    driver allows: ``COPY`` straight into the table on PostgreSQL, multi-row ``INSERT`` on SQLite.
    For rows the caller knows are not stored (a table it has just cleared, keys it has looked up
    under a lease that keeps other writers out): a clash is an integrity error, not an update."""
    if not rows:
        return
    columns, values = convert_rows(table, rows, constants or {}, connection.dialect.name)
    insert_converted(connection, table, columns, values)


def insert_converted(
    connection: Connection, table: Table, columns: tuple[str, ...], values: list[Any]
) -> None:
    """Write what :func:`convert_rows` returned for ``table`` (the second half of :func:`bulk_insert`)."""
    cols = ", ".join(_quote(c) for c in columns)
    if connection.dialect.name == "postgresql":
        raw = connection.connection.dbapi_connection
        assert raw is not None
        with raw.cursor() as cursor:  # type: ignore[attr-defined]
            _pg_copy(cursor, _quote(table.name), cols, values)
        return
    _sqlite_insert(connection, f"INSERT INTO {_quote(table.name)} ({cols}) VALUES", "", values)


def dialect_insert(session: Session, table: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)
