"""``ingest-dlt``: the sync engine's first load and idempotent re-load against dlt's, same records,
same databases.

dlt is what a data engineer would pick to land CRM records in a database: it merges on a primary
key into SQLite (through its ``sqlalchemy`` destination) and PostgreSQL. Both sides load the same
demo opportunities (:func:`crm_perf_sync_demo.generate_opportunities`) into a fresh database of the
same kind, then load them again unchanged:

- ours: the demo connector through the real :class:`SyncEngine` (:func:`bench.upsert.sync`): key
  lookups, content hashes, stage history, the change log, checkpoints and run counters;
- dlt: a resource with ``write_disposition="merge"`` on ``external_id`` (its default merge strategy,
  ``delete-insert``), fed each of its two input paths: the records as plain dicts (what a REST
  source yields), and Arrow record batches of :data:`ARROW_BATCH` rows (its fast path, which skips
  its row-by-row normalisation).

Each load runs in a fresh child process. Each side's input time — generating the records, and for
dlt turning them into dicts or Arrow batches — is measured alone and taken off, so the rates
compared are store rates: ``records / (load seconds - input seconds)``. ``ratio`` = our store rate
÷ dlt's best (of its two paths), per database and per load; target ≥ :data:`TARGET_RATIO`. Every
load is checked: the table holds each record once.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.harness import Result, database, in_child
from bench.upsert import demo_settings, generate_only, sync

SIZES = {"small": 6_000, "full": 1_000_000}
TARGET_RATIO = 1.5
#: Rows per Arrow record batch handed to dlt.
ARROW_BATCH = 50_000
#: The record fields both sides store (the demo's records carry no custom fields or raw payload).
FIELDS = (
    "external_id",
    "owner_external_id",
    "name",
    "amount",
    "currency",
    "stage",
    "probability",
    "pipeline",
    "forecast_category",
    "type",
    "lead_source",
    "account_external_id",
    "product",
    "created_at",
    "close_date",
    "closed_at",
    "is_closed",
    "is_won",
    "lead_external_id",
    "is_deleted",
    "remote_updated_at",
)
LOADS = ("first", "reload")


def _dicts(count: int) -> Iterator[dict[str, Any]]:
    from crm_perf_sync_demo import generate_opportunities

    for record in generate_opportunities(demo_settings(count)):
        yield {name: getattr(record, name) for name in FIELDS}


def _arrow(count: int) -> Iterator[Any]:
    import pyarrow as pa

    from crm_perf_sync_demo import generate_opportunities

    text_type, stamp = pa.string(), pa.timestamp("us", tz=str(UTC))
    types = dict.fromkeys(FIELDS, text_type)
    types |= {
        "amount": pa.decimal128(18, 2),
        "probability": pa.float64(),
        "created_at": stamp,
        "closed_at": stamp,
        "remote_updated_at": stamp,
        "close_date": pa.date32(),
        "is_closed": pa.bool_(),
        "is_won": pa.bool_(),
        "is_deleted": pa.bool_(),
    }
    schema = pa.schema([(name, types[name]) for name in FIELDS])
    columns: dict[str, list[Any]] = {name: [] for name in FIELDS}
    filled = 0
    for record in generate_opportunities(demo_settings(count)):
        for name in FIELDS:
            columns[name].append(getattr(record, name))
        filled += 1
        if filled == ARROW_BATCH:
            yield pa.RecordBatch.from_pydict(columns, schema=schema)
            columns, filled = {name: [] for name in FIELDS}, 0
    if filled:
        yield pa.RecordBatch.from_pydict(columns, schema=schema)


_INPUTS = {"dicts": _dicts, "arrow": _arrow}


def _input_only(count: int, path: str) -> dict[str, Any]:
    """dlt's input alone: the records generated and turned into dicts or Arrow batches."""
    started = time.perf_counter()
    items = sum(1 for _ in _INPUTS[path](count))
    return {"items": items, "seconds": time.perf_counter() - started}


def _credentials(db_url: str, workdir: Path) -> tuple[str, str]:
    """dlt's destination for the store at ``db_url``: ``(kind, credentials)``. SQLite gets a file of
    its own beside the store (dlt attaches a further file per dataset); PostgreSQL the same
    database, with a password for dlt's configuration check (trust auth ignores it)."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        return "sqlalchemy", f"sqlite:///{workdir / (Path(str(url.database)).stem + '-dlt.db')}"
    return "postgres", url.set(drivername="postgresql", password=url.password or "unused").render_as_string(
        hide_password=False
    )


def _dlt_load(db_url: str, count: int, path: str, workdir: str) -> dict[str, Any]:
    """One dlt load of the ``count`` records through ``path`` into the database at ``db_url``."""
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    os.environ["RUNTIME__LOG_LEVEL"] = "ERROR"
    import dlt
    from sqlalchemy.exc import SAWarning

    # dlt's SQLite merge builds a statement SQLAlchemy warns about (a coerced scalar subquery).
    warnings.filterwarnings("ignore", category=SAWarning, module="dlt")

    kind, credentials = _credentials(db_url, Path(workdir))
    # Keys declared in the database, as ours are: without them dlt's SQLite merge looks up every
    # stored row's key in the staged rows by scanning them (a re-load of 50k rows took 171 s).
    destination = (
        dlt.destinations.sqlalchemy(credentials=credentials, create_primary_keys=True)
        if kind == "sqlalchemy"
        else dlt.destinations.postgres(credentials=credentials)
    )
    # The pipeline's local state goes with the database it loads into (its re-load reads it).
    store = hashlib.sha256(db_url.encode()).hexdigest()[:12]
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{path}",
        destination=destination,
        dataset_name="bench",
        pipelines_dir=str(Path(workdir) / "dlt-pipelines" / store),
    )
    resource = dlt.resource(
        _INPUTS[path](count), name="opportunities", write_disposition="merge", primary_key="external_id"
    )
    started = time.perf_counter()
    info = pipeline.run(resource)
    seconds = time.perf_counter() - started
    info.raise_on_failed_jobs()
    with pipeline.sql_client() as client:
        counted = client.execute_sql("SELECT COUNT(*), COUNT(DISTINCT external_id) FROM opportunities")
    assert counted is not None
    ((rows, keys),) = counted
    return {"records": int(rows), "keys": int(keys), "seconds": seconds}


def _stored(db_url: str) -> tuple[int, int]:
    """Our store's opportunities: rows, distinct keys."""
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows, keys = conn.execute(text("SELECT COUNT(*), COUNT(DISTINCT external_id) FROM opportunity")).one()
    engine.dispose()
    return int(rows), int(keys)


def _rate(count: int, seconds: float, input_seconds: float) -> float:
    return count / max(seconds - input_seconds, 1e-9)


def ingest_dlt(size: str, databases: list[str], workdir: Path) -> Iterator[Result]:
    """Per database: our two loads, then dlt's two loads per input path, each into a fresh store."""
    count = SIZES[size]
    ours_input = in_child(generate_only, count)["seconds"]
    dlt_input = {path: in_child(_input_only, count, path)["seconds"] for path in _INPUTS}
    for kind in databases:
        ours: dict[str, dict[str, Any]] = {}
        with database(kind, workdir) as url:
            for load in LOADS:
                ours[load] = in_child(sync, url, count, 5000)
            stored = _stored(url)
        peers: dict[str, dict[str, dict[str, Any]]] = {}
        for path in _INPUTS:
            with database(kind, workdir) as url:
                peers[path] = {load: in_child(_dlt_load, url, count, path, str(workdir)) for load in LOADS}
        for load in LOADS:
            rate = _rate(count, ours[load]["seconds"], ours_input)
            peer_rates = {
                path: _rate(count, peers[path][load]["seconds"], dlt_input[path]) for path in _INPUTS
            }
            best = max(peer_rates, key=peer_rates.__getitem__)
            exact = stored == (count, count) and all(
                (peers[path][load]["records"], peers[path][load]["keys"]) == (count, count)
                for path in _INPUTS
            )
            notes: dict[str, Any] = {"store_rate": round(rate), "input_seconds": round(ours_input, 2)}
            for path in _INPUTS:
                notes[f"dlt {path} (store /s)"] = round(peer_rates[path])
                notes[f"dlt {path} (s)"] = round(peers[path][load]["seconds"], 2)
                notes[f"dlt {path} input (s)"] = round(dlt_input[path], 2)
                notes[f"dlt {path} RSS (MB)"] = round(peers[path][load]["peak_rss_mb"])
            notes["every record once"] = exact
            yield Result(
                scenario="ingest-dlt",
                size=f"{count // 1000}k",
                database=f"{kind}/{load}",
                records=count,
                seconds=ours[load]["seconds"],
                rate=count / ours[load]["seconds"],
                peak_rss_mb=ours[load]["peak_rss_mb"],
                floor=f"dlt merge, best input path ({best})",
                floor_rate=peer_rates[best],
                ratio=rate / peer_rates[best],
                target=f"store rate >= {TARGET_RATIO} x dlt's best",
                passed=rate >= TARGET_RATIO * peer_rates[best] and exact,
                notes=notes,
            )
