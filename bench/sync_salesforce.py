"""``sync-salesforce``: a full sync of N opportunities from the emulated org, against a floor.

The org runs in its own process (the emulator of ``tests/connectors/salesforce``, HTTPS with a
throw-away CA), so that neither measurement pays for serving and each child's peak RSS is its
own. Two measurements, each in a fresh child process:

- the floor: simple-salesforce alone fetching and parsing the same pages the connector reads —
  the same SOQL over ``queryAll``, ``query`` + ``query_more`` with 2,000-row batches, the same
  JSON options (exact decimals, plain dicts) — counting the records and storing nothing;
- the sync: the ``salesforce`` connector through the real :class:`SyncEngine` into a fresh store
  (checkpoint per page, batch upserts, lease renewals, run counters), REST path (Bulk disabled:
  the floor is the REST pages).

``ratio`` = sync records/s ÷ floor records/s, reported: against an org on the same two cores the
best this machine allows is about 0.66 (``ceiling`` below), and the emulated org serves records
several times faster than Salesforce does. What a user waits for is judged by
``sync-salesforce-latency``, against an org answering at Salesforce's pace. Peak RSS is taken at a
tenth of the size and at the size, and must stay flat (within a factor of 1.5) as the data grows
tenfold.

Where the time goes, per record, is measured too: the CPU the org spends serving the floor's pages
and the CPU the floor spends fetching and parsing them, then, each alone on the same records
(:data:`COST_SAMPLE` of them, already parsed), what the sync does beyond the floor: the connector's
mapping and validation, the row and its content hash, and the store's write, split into the
value conversions and the driver and database. From those, ``ceiling`` is the best ratio this
machine allows if all of that ran perfectly in parallel on all its cores, and
``ceiling_one_process`` the best for a sync in one process, where the GIL also runs the
interpreter's share of it (parsing, mapping, rows and hashes, conversions) one step at a time.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from bench.harness import Result, child_context, database, in_child

SIZES = {"small": 2_500, "full": 1_000_000}
#: Each measurement at the size is repeated and the fastest run kept: the machine is shared.
REPEATS = {"small": 1, "full": 2}
RSS_FLAT_FACTOR = 1.5
#: Records the per-stage costs are measured on (each stage alone, best of three).
COST_SAMPLE = 20_000
#: The org's rows end an hour before the benchmark starts (well before now minus the skew).
_END_OFFSET = timedelta(hours=1)


def _seed(org: Any, *, count: int, end: datetime, latency: dict[str, float]) -> None:
    """``count`` opportunities; every request of each route in ``latency`` answered that many
    seconds after it arrived (the org's own work included, as a real org's response time is)."""
    from tests.connectors.salesforce.seed import bulk_opportunities

    bulk_opportunities(org, count=count, end=end)
    for route, seconds in latency.items():
        org.add_fault(route, kind="paced", delay=seconds, times=2**62)


@contextmanager
def emulated_org(
    workdir: Path, count: int, latency: dict[str, float] | None = None
) -> Iterator[tuple[str, str, int]]:
    """An emulated org with ``count`` opportunities in a child process: ``(url, ca_path, pid)``;
    ``latency``: the response time of each request of a route (``query``, ``query_more``,
    ``bulk_results``, …), in seconds."""
    from tests.connectors.salesforce.emulator import serve_forever_in_process

    context = child_context()
    receive, send = context.Pipe(duplex=False)
    tls_dir = workdir / (f"org-{count}-latent" if latency else f"org-{count}")
    tls_dir.mkdir(parents=True, exist_ok=True)
    end = datetime.now(UTC).replace(microsecond=0) - _END_OFFSET
    seed = partial(_seed, count=count, end=end, latency=dict(latency or {}))
    process = context.Process(target=serve_forever_in_process, args=(str(tls_dir), seed, send), daemon=True)
    process.start()
    try:
        if not receive.poll(600):
            raise RuntimeError("the emulated org did not start within 10 minutes")
        url, ca_path = receive.recv()
        assert process.pid is not None
        yield url, ca_path, process.pid
    finally:
        process.terminate()
        process.join(10)
        receive.close()
        send.close()


def connection_settings(url: str, ca_path: str, *, keep_raw: bool = True, **overrides: Any) -> dict[str, Any]:
    """The connection's settings: REST only (Bulk off), no reconciliation; ``overrides`` on top."""
    return {
        "auth": {
            "type": "password",
            "username": "admin@example.com",
            "password": "admin-password",
            "security_token": "TOKEN",
        },
        "login_url": url,
        "ca_bundle": ca_path,
        "streams": ["opportunities"],
        "bulk_threshold": None,
        "reconcile_every": None,
        "keep_raw": keep_raw,
        **overrides,
    }


def rest_floor(url: str, ca_path: str) -> dict[str, Any]:
    """Fetch and parse every page of the connector's query with simple-salesforce alone."""
    import requests
    from simple_salesforce.api import Salesforce

    from crm_perf_sync_salesforce import soql
    from crm_perf_sync_salesforce.auth import login
    from crm_perf_sync_salesforce.connector import OBJECTS
    from crm_perf_sync_salesforce.settings import SalesforceSettings

    config = SalesforceSettings.model_validate(connection_settings(url, ca_path))
    http = requests.Session()
    http.trust_env = False  # so that verify= is not overridden by REQUESTS_CA_BUNDLE
    http.verify = ca_path
    session = login(config, http)
    sf = Salesforce(
        session_id=session.token,
        instance=session.instance,
        version=config.api_version,
        session=http,
        parse_float=Decimal,
        object_pairs_hook=None,
    )
    obj = OBJECTS["opportunities"]
    # The fields the connector selects in a single-currency org (no CurrencyIsoCode), same order.
    fields = [name for name in obj.fields if name != "CurrencyIsoCode"]
    upper = datetime.now(UTC).replace(microsecond=0) - config.skew
    text = soql.select(
        obj.sobject, fields, [soql.at_most("SystemModstamp", upper)], order_by=("SystemModstamp", "Id")
    )
    headers = {"Sforce-Query-Options": f"batchSize={config.page_size}"}
    started, cpu = time.perf_counter(), time.process_time()
    records = 0
    for _record in sf.query_all_iter(text, include_deleted=True, headers=headers):
        records += 1
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    http.close()
    return {"records": records, "seconds": seconds, "cpu_seconds": cpu}


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fastest(step: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    """The best wall time of ``repeats`` runs of ``step``, and what the last one returned."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = step()
        best = min(best, time.perf_counter() - started)
    return best, result


def _convert_all(table: Any, chunks: list[Any], constants: dict[str, Any], dialect: str) -> list[Any]:
    from crm_perf_sync.kit import bulk

    return [bulk.convert_rows(table, chunk, constants, dialect) for chunk in chunks]


def _costs(url: str, ca_path: str, db_urls: tuple[str, str]) -> dict[str, Any]:
    """Per-record seconds of each step the sync adds to the floor, each measured alone on the
    first :data:`COST_SAMPLE` records, parsed beforehand: the connector's mapping (with the
    engine's validation), the store row and its content hash, and the store's write into a fresh
    store, as a whole (``store``) and split into the value conversions and what is left for the
    driver and the database (the converted values written by the same statements)."""
    from crm_perf_sync.config import ConnectionConfig
    from crm_perf_sync.connector_sdk import ConnectorContext, OpportunityRecord
    from crm_perf_sync.kit import bulk
    from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
    from crm_perf_sync.kit.timeutil import utc_now
    from crm_perf_sync.sync import repository as repo
    from crm_perf_sync.sync.rows import to_row
    from crm_perf_sync_salesforce import soql
    from crm_perf_sync_salesforce.connector import OBJECTS, SalesforceConnector
    from crm_perf_sync_salesforce.settings import SalesforceSettings

    config = SalesforceSettings.model_validate(connection_settings(url, ca_path))
    connector = SalesforceConnector(config, ConnectorContext("bench", Path.cwd(), logging.getLogger("bench")))
    connector.check()
    prepared = connector._prepare(OBJECTS["opportunities"])
    text = soql.select("Opportunity", prepared.fields, order_by=("SystemModstamp", "Id"))
    rows: list[dict[str, Any]] = []
    for page in connector.client.query_pages(text, include_deleted=True):
        rows.extend(page.get("records") or [])
        if len(rows) >= COST_SAMPLE:
            break
    connector.close()
    rows = rows[:COST_SAMPLE]

    def mapped() -> list[OpportunityRecord]:
        records = [prepared.parse(row) for row in rows]
        for record in records:
            record.validate()  # type: ignore[union-attr]
        return records  # type: ignore[return-value]

    map_seconds, records = _fastest(mapped)
    row_seconds, store_rows = _fastest(lambda: [to_row("opportunities", record) for record in records])
    spec = repo._ENTITY_TABLES["opportunities"]
    batches = [store_rows[start : start + 5000] for start in range(0, len(store_rows), 5000)]

    def fresh_store(db_url: str) -> tuple[Any, dict[str, Any]]:
        engine = create_db_engine(db_url)
        now = utc_now()
        with session_scope(make_session_factory(engine)) as session:
            connections = [ConnectionConfig.model_validate({"id": "bench", "kind": "salesforce"})]
            repo.sync_connections(session, connections, now)
        return engine, repo._constants("opportunities", "bench", now)

    # The store's write as the engine makes it: conversions and statements, a commit a batch.
    engine, constants = fresh_store(db_urls[0])
    started = time.perf_counter()
    for chunk in batches:
        with engine.begin() as conn:
            bulk.bulk_insert(conn, spec.table, chunk, constants=constants)
    store_seconds = time.perf_counter() - started
    engine.dispose()
    # The same split in two: the conversions alone, then the converted values written by the same
    # statements into a second fresh store (the driver and the database).
    engine, constants = fresh_store(db_urls[1])
    dialect = engine.dialect.name
    convert_seconds, converted = _fastest(partial(_convert_all, spec.table, batches, constants, dialect))
    started = time.perf_counter()
    for columns, values in converted:
        with engine.begin() as conn:
            bulk.insert_converted(conn, spec.table, columns, values)
    driver_seconds = time.perf_counter() - started
    engine.dispose()
    count = len(rows)
    return {
        "records": count,
        "seconds": map_seconds + row_seconds + store_seconds,
        "map": map_seconds / count,
        "row": row_seconds / count,
        "store": store_seconds / count,
        "store_conversions": convert_seconds / count,
        "store_driver": driver_seconds / count,
    }


def _read_only(url: str, ca_path: str) -> dict[str, Any]:
    """The connector's read of the opportunities alone (fetch, parse, map; no engine, no store)."""
    from crm_perf_sync.connector_sdk import ConnectorContext, OpportunityRecord
    from crm_perf_sync_salesforce.connector import SalesforceConnector
    from crm_perf_sync_salesforce.settings import SalesforceSettings

    config = SalesforceSettings.model_validate(connection_settings(url, ca_path))
    connector = SalesforceConnector(config, ConnectorContext("bench", Path.cwd(), logging.getLogger("bench")))
    (spec,) = [spec for spec in connector.streams() if spec.name == "opportunities"]
    connector.check()
    started = time.perf_counter()
    records = sum(1 for message in connector.read(spec, None) if isinstance(message, OpportunityRecord))
    seconds = time.perf_counter() - started
    connector.close()
    return {"records": records, "seconds": seconds}


def run_sync(
    db_url: str, url: str, ca_path: str, keep_raw: bool = True, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A full sync of the org's opportunities through the connector and the engine."""
    from crm_perf_sync.config import ConnectionConfig
    from crm_perf_sync.connector_sdk import ConnectorContext
    from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
    from crm_perf_sync.kit.timeutil import utc_now
    from crm_perf_sync.leases import new_holder_id
    from crm_perf_sync.sync import repository as repo
    from crm_perf_sync.sync.service import SyncEngine, SyncOptions
    from crm_perf_sync_salesforce.connector import SalesforceConnector
    from crm_perf_sync_salesforce.settings import SalesforceSettings

    engine = create_db_engine(db_url)
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        repo.sync_connections(
            session,
            [ConnectionConfig.model_validate({"id": "bench", "kind": "salesforce"})],
            utc_now(),
        )
    config = SalesforceSettings.model_validate(
        connection_settings(url, ca_path, keep_raw=keep_raw, **(overrides or {}))
    )
    connector = SalesforceConnector(config, ConnectorContext("bench", Path.cwd(), logging.getLogger("bench")))
    sync = SyncEngine(
        session_factory=factory,
        connector=connector,
        connection_id="bench",
        options=SyncOptions(batch_size=5000),
        holder=new_holder_id(),
    )
    started = time.perf_counter()
    outcome = sync.run(trigger="bench", full_refresh=False)
    seconds = time.perf_counter() - started
    engine.dispose()
    if outcome.status != "succeeded":
        raise RuntimeError(outcome.summary())
    return {"records": outcome.total("inserted"), "seconds": seconds}


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of repeated runs (the machine is shared), with the highest peak RSS among them."""
    fastest = min(runs, key=lambda run: run["seconds"])
    return {**fastest, "peak_rss_mb": max(run["peak_rss_mb"] for run in runs)}


def sync_salesforce(size: str, databases: list[str], workdir: Path) -> Iterator[Result]:
    """Floor, read alone and syncs, interleaved and repeated (best of ``REPEATS``) at the size; a
    sync per database at a tenth of the size for the peak RSS comparison.

    Notes say where the time goes: the connector's read alone (no engine, no store) against the
    floor, and a sync that keeps no raw payload (``keep_raw: false``).
    """
    large = SIZES[size]
    small = large // 10
    repeats = REPEATS[size]
    floors: list[dict[str, Any]] = []
    reads: list[dict[str, Any]] = []
    syncs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in databases}
    without_raw: dict[str, list[dict[str, Any]]] = {kind: [] for kind in databases}
    smaller: dict[str, dict[str, Any]] = {}
    with emulated_org(workdir, small) as (url, ca_path, _pid):
        for kind in databases:
            with database(kind, workdir) as db_url:
                smaller[kind] = in_child(run_sync, db_url, url, ca_path)
    costs: dict[str, dict[str, Any]] = {}
    with emulated_org(workdir, large) as (url, ca_path, org_pid):
        for _ in range(repeats):
            served = _cpu_seconds(org_pid)
            floors.append(in_child(rest_floor, url, ca_path))
            floors[-1]["serve_cpu_seconds"] = _cpu_seconds(org_pid) - served
            reads.append(in_child(_read_only, url, ca_path))
            for kind in databases:
                with database(kind, workdir) as db_url:
                    syncs[kind].append(in_child(run_sync, db_url, url, ca_path))
                with database(kind, workdir) as db_url:
                    without_raw[kind].append(in_child(run_sync, db_url, url, ca_path, False))
        for kind in databases:
            with database(kind, workdir) as first, database(kind, workdir) as second:
                costs[kind] = in_child(_costs, url, ca_path, (first, second))
    floor, read_only = _best(floors), _best(reads)
    floor_rate = floor["records"] / floor["seconds"]
    read_rate = read_only["records"] / read_only["seconds"]
    for kind in databases:
        run, bare = _best(syncs[kind]), _best(without_raw[kind])
        rate = run["records"] / run["seconds"]
        ratio = rate / floor_rate
        rss_small, rss_large = smaller[kind]["peak_rss_mb"], run["peak_rss_mb"]
        flat = rss_large <= RSS_FLAT_FACTOR * rss_small
        cost = costs[kind]
        us = 1e6
        serve, parse = floor["serve_cpu_seconds"] / floor["records"], floor["cpu_seconds"] / floor["records"]
        beyond = cost["map"] + cost["row"] + cost["store"]
        cores = os.cpu_count() or 1
        # The floor's wall time per record against the least the whole sync could take: all the
        # CPU it needs (the org serving, the fetch and parse, and each step beyond) spread evenly
        # over every core, with no waiting and no overhead.
        floor_wall = floor["seconds"] / floor["records"]
        ceiling = floor_wall / ((serve + parse + beyond) / cores)
        # In one process the GIL also serialises the interpreter's share: parsing, mapping, rows
        # and hashes, conversions (the driver and the database are counted as running beside it).
        interpreted = parse + cost["map"] + cost["row"] + cost["store_conversions"]
        ceiling_one_process = floor_wall / max(interpreted, (serve + parse + beyond) / cores)
        yield Result(
            scenario="sync-salesforce",
            size=f"{large // 1000}k",
            database=kind,
            records=run["records"],
            seconds=run["seconds"],
            rate=rate,
            peak_rss_mb=rss_large,
            floor="simple-salesforce fetch + parse of the same pages",
            floor_rate=floor_rate,
            ratio=ratio,
            target="reported: ratio; RSS flat",
            passed=flat and run["records"] == large,
            notes={
                "repeats": repeats,
                "floor_seconds": round(floor["seconds"], 2),
                "connector_read_rate": round(read_rate),
                "connector_read_ratio": round(read_rate / floor_rate, 3),
                "ratio_keep_raw_false": round(bare["records"] / bare["seconds"] / floor_rate, 3),
                "floor_us": f"{floor_wall * us:.1f} wall; CPU: org serving "
                f"{serve * us:.1f}, fetch + parse {parse * us:.1f}",
                "beyond_floor_us": f"{beyond * us:.1f} = mapping {cost['map'] * us:.1f} + row and hash "
                f"{cost['row'] * us:.1f} + store {cost['store'] * us:.1f} (conversions "
                f"{cost['store_conversions'] * us:.1f}, driver and database {cost['store_driver'] * us:.1f})",
                "ceiling": round(ceiling, 3),
                "ceiling_one_process": round(ceiling_one_process, 3),
                "cores": cores,
                "floor_rss_mb": round(floor["peak_rss_mb"], 1),
                "rss_small_mb": round(rss_small, 1),
                "rss_large_mb": round(rss_large, 1),
                "rss_flat": flat,
            },
        )
