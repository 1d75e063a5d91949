"""``kpi-duckdb``: the full refresh against DuckDB computing the same values from a copy of the
same store: the columnar peer.

What a data engineer would reach for instead of the engine: the store's tables copied into DuckDB
(its own columnar tables, as a Parquet export would give it; the copy is measured but not counted),
then every KPI, grain and scope computed by DuckDB from the floor's hand-written queries in their
PostgreSQL form, which DuckDB's SQL accepts as written (``date_trunc``, ``percentile_cont``,
recursive CTEs). Derived KPIs are evaluated over the fetched values as the floor does. After the
timing every value is compared with the ``kpi_value`` row the engine stored, and vice versa (the
floor's comparison), so the two computations provably agree.

The store is ``kpi-full``'s (the demo company, N deals and N leads, synced through the engine).
The engine's full refresh and DuckDB each run :data:`REPEATS` times, alternating, the best of each
counting; ``ratio`` = engine seconds / DuckDB seconds, target ≤ :data:`TARGET` on both databases.
DuckDB uses every core (its default); the engine is one process on the store's own SQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import kpi_full as floor
from bench.harness import Result, in_child, shared_store

SIZES = {"small": 1_000, "full": 1_000_000}
REPEATS = {"small": 1, "full": 2}
TARGET = 3.0  # engine seconds / DuckDB seconds

#: The columns the floor's queries read, per table.
TABLES: dict[str, str] = {
    "opportunity": "id, connection_id, external_id, owner_external_id, amount, currency, stage, probability,"
    " pipeline, created_at, close_date, closed_at, is_closed, is_won, is_deleted, account_external_id",
    "lead": "connection_id, owner_external_id, created_at, is_converted, is_deleted",
    "activity": "connection_id, owner_external_id, type, occurred_at, is_completed, is_deleted",
    "team": "id, namespace, external_id, parent_id",
    "team_member": "team_id, owner_id",
    "owner": "id, connection_id, external_id, is_deleted",
    "pipeline_stage": "connection_id, pipeline, stage, sort_order, is_deleted, is_closed, is_won",
    "stage_change": "connection_id, opportunity_external_id, to_stage",
}
#: DuckDB types for the columns a store keeps in other shapes (SQLite: text times, integer flags).
TYPES: dict[str, str] = {
    "amount": "DOUBLE",
    "probability": "DOUBLE",
    "created_at": "TIMESTAMPTZ",
    "closed_at": "TIMESTAMPTZ",
    "occurred_at": "TIMESTAMPTZ",
    "close_date": "DATE",
    "is_closed": "BOOLEAN",
    "is_won": "BOOLEAN",
    "is_deleted": "BOOLEAN",
    "is_converted": "BOOLEAN",
    "is_completed": "BOOLEAN",
}


def _copy(conn: Any, duck: Any) -> None:
    """Each table into DuckDB, typed. SQLite's naive UTC times become UTC instants."""
    import pandas as pd

    duck.execute("SET TimeZone = 'UTC'")
    for table, columns in TABLES.items():
        frame = pd.read_sql_query(f"SELECT {columns} FROM {table}", conn)
        for column in frame.columns:
            if TYPES.get(column) == "TIMESTAMPTZ":
                frame[column] = pd.to_datetime(frame[column], utc=True, format="mixed")
        duck.register("incoming", frame)
        selected = ", ".join(
            f"CAST({name} AS {TYPES[name]}) AS {name}" if name in TYPES else name for name in frame.columns
        )
        duck.execute(f"CREATE TABLE {table} AS SELECT {selected} FROM incoming")
        duck.unregister("incoming")


def run(url: str, config_path: Path) -> dict[str, Any]:
    """Copy, then compute (timed) and check against the engine's stored values."""
    import duckdb

    from crm_perf_sync.kit.db import create_db_engine

    business = floor._load_config(config_path).app.business
    queries = floor.floor_queries("postgresql", business.timezone)
    engine = create_db_engine(url)
    duck = duckdb.connect()
    with engine.connect() as conn:
        started = time.perf_counter()
        _copy(conn, duck)
        copy_seconds = time.perf_counter() - started
        started = time.perf_counter()
        slices = floor.run_queries(queries, lambda sql: duck.execute(sql).fetchall())
        seconds = time.perf_counter() - started
        comparison = floor._compare(conn, slices)
    engine.dispose()
    threads = duck.execute("SELECT current_setting('threads')").fetchone()
    duck.close()
    comparison.raise_if_different("DuckDB")
    return {
        "seconds": seconds,
        "copy_seconds": copy_seconds,
        "queries": len(queries),
        "checked": comparison.checked,
        "threads": threads[0] if threads else None,
        "version": duckdb.__version__,
    }


def kpi_duckdb(size: str, databases: list[str], workdir: Path) -> Iterator[Result]:
    count = SIZES[size]
    config_path = floor._write_config(workdir, count)
    for kind in databases:
        with shared_store(kind, workdir, config_path.name, floor._load, config_path) as (url, loaded):
            engine_runs, duck_runs = [], []
            for _ in range(REPEATS[size]):
                engine_runs.append(in_child(floor._engine, url, config_path))
                duck_runs.append(in_child(run, url, config_path))
        engine = min(engine_runs, key=lambda run: float(run["seconds"]))
        duck = min(duck_runs, key=lambda run: float(run["seconds"]))
        records = loaded["opportunity"] + loaded["lead"]
        ratio = engine["seconds"] / duck["seconds"]
        yield Result(
            scenario="kpi-duckdb",
            size=f"{count // 1000}k",
            database=kind,
            records=records,
            seconds=engine["seconds"],
            rate=records / engine["seconds"],
            peak_rss_mb=engine["peak_rss_mb"],
            floor=f"DuckDB {duck['version']} ({duck['threads']} threads): the floor's queries",
            floor_rate=records / duck["seconds"],
            ratio=ratio,
            target=f"engine/DuckDB time <= {TARGET:g}",
            passed=ratio <= TARGET if size == "full" else None,
            notes={
                "engine_seconds": [round(run["seconds"], 3) for run in engine_runs],
                "duckdb_seconds": [round(run["seconds"], 3) for run in duck_runs],
                "duckdb copy of the store (s, not counted)": round(duck["copy_seconds"], 1),
                "duckdb_peak_rss_mb": round(duck["peak_rss_mb"], 1),
                "kpi_values": sum(engine["rows"].values()),
                "values_checked": duck["checked"],
            },
        )
