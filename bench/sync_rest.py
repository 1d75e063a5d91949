"""``sync-rest``: the rest connector reading N deals from the 简道云 emulator, against fetching them alone.

The emulator (``tests/connectors/rest/emulators/jiandaoyun.py``) runs in a process of its own,
serving a synthetic 商机 form of N deals (``jiandaoyun_data.synthetic``); it renders each page of
100 records from columnar data, so it is not what is measured. Then, each in a fresh child process:

``floor``: httpx (the HTTP client the connector uses) making the requests a read makes: the
form's widgets once, then every ``/v5/app/entry/data/list`` page in data-id order with the same
body (keyset on ``data_id``, the ``updateTime`` range filter), each answer parsed with ``json``.
Nothing is mapped. The same with ``orjson`` (which the connector parses with) is reported beside
it, as ``ratio_to_orjson_floor``.

``read``: the ``jiandaoyun`` spec's ``opportunities`` stream read by the connector, every message
consumed: the same requests, plus exact amounts, the field mapping by label, the stage table, the
dates, and a checkpoint per page. The rate is records per second; the ratio is read over floor
(target >= 0.70).

``sync``: a full sync of the connection through the real :class:`SyncEngine` into a fresh store
(SQLite and/or PostgreSQL), for the end-to-end rate and the memory: peak RSS at N / 10 and N,
flat meaning the larger is at most ``RSS_FLAT_FACTOR`` times the smaller.

Floor and read alternate ``REPEATS[size]`` times; the best of each counts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.harness import Result, database, in_child, serving

SIZES = {"small": 2_000, "full": 1_000_000}
REPEATS = {"small": 1, "full": 2}
TARGET = 0.70
RSS_FLAT_FACTOR = 1.5
CONNECTION = "jdy-bench"
PAGE = 100


def _serve(deals: int, queue: Any, stop: Any) -> None:
    from tests.connectors.rest.emulators.jiandaoyun import JiandaoyunEmulator
    from tests.connectors.rest.emulators.jiandaoyun_data import synthetic

    with JiandaoyunEmulator(synthetic(deals), record=False) as emulator:
        queue.put(
            {
                "url": emulator.url,
                "api_key": emulator.api_key,
                "app_id": emulator.app_id,
                "entry_id": emulator.entry_id,
            }
        )
        stop.wait()


@contextmanager
def emulator(deals: int) -> Iterator[Any]:
    """An emulator process serving a synthetic dataset of ``deals`` deals: what its clients need."""
    with serving(_serve, deals) as address:
        yield address


def _settings(server: dict[str, str]) -> dict[str, Any]:
    return {
        "spec": "jiandaoyun",
        "base_url": server["url"],
        # The benchmark is about reading, not about the documented 10 requests a second.
        "requests_per_second": 0,
        "inputs": {
            "api_key": server["api_key"],
            "app_id": server["app_id"],
            "entry_id": server["entry_id"],
            "labels": {"name": "商机编号", "created": "接洽日期"},
        },
    }


def _floor(server: dict[str, str], parser: str = "json") -> dict[str, Any]:
    import httpx
    import orjson

    from crm_perf_sync.kit.timeutil import utc_now

    headers = {"Authorization": f"Bearer {server['api_key']}"}
    form = {"app_id": server["app_id"], "entry_id": server["entry_id"]}
    until = utc_now().isoformat(timespec="milliseconds").replace("+00:00", "Z")
    records = requests = 0
    started = time.perf_counter()
    with httpx.Client(timeout=60) as client:
        client.post(f"{server['url']}/api/v5/app/entry/widget/list", json=form, headers=headers).json()
        requests += 1
        last: str | None = None
        while True:
            body: dict[str, Any] = {
                **form,
                "limit": PAGE,
                "filter": {
                    "rel": "and",
                    "cond": [
                        {"field": "updateTime", "type": "datetime", "method": "range", "value": [None, until]}
                    ],
                },
            }
            if last is not None:
                body["data_id"] = last
            answer = client.post(f"{server['url']}/api/v5/app/entry/data/list", json=body, headers=headers)
            requests += 1
            data = (json.loads if parser == "json" else orjson.loads)(answer.content)["data"]
            records += len(data)
            if len(data) < PAGE:
                break
            last = data[-1]["_id"]
    return {"records": records, "seconds": time.perf_counter() - started, "requests": requests}


def _connector(server: dict[str, str]) -> Any:
    from crm_perf_sync.connector_sdk import ConnectorContext
    from crm_perf_sync_rest.connector import RestConnector, RestSettings

    context = ConnectorContext(CONNECTION, Path.cwd(), logging.getLogger("bench.rest"))
    return RestConnector(RestSettings.model_validate(_settings(server)), context)


def _read(server: dict[str, str]) -> dict[str, Any]:
    from crm_perf_sync.connector_sdk import OpportunityRecord

    connector = _connector(server)
    (stream,) = [s for s in connector.streams() if s.name == "opportunities"]
    records = 0
    started = time.perf_counter()
    for message in connector.read(stream, None):
        if isinstance(message, OpportunityRecord):
            records += 1
    seconds = time.perf_counter() - started
    requests = connector.client().requests
    connector.close()
    return {"records": records, "seconds": seconds, "requests": requests}


def _sync(server: dict[str, str], db_url: str) -> dict[str, Any]:
    from crm_perf_sync.config import ConnectionConfig
    from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
    from crm_perf_sync.kit.timeutil import utc_now
    from crm_perf_sync.leases import new_holder_id
    from crm_perf_sync.sync import repository as repo
    from crm_perf_sync.sync.service import SyncEngine, SyncOptions

    engine = create_db_engine(db_url)
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        connections = [ConnectionConfig.model_validate({"id": CONNECTION, "kind": "rest"})]
        repo.sync_connections(session, connections, utc_now())
    sync = SyncEngine(
        session_factory=factory,
        connector=_connector(server),
        connection_id=CONNECTION,
        options=SyncOptions(batch_size=5000),
        holder=new_holder_id(),
    )
    started = time.perf_counter()
    outcome = sync.run(trigger="bench", full_refresh=False)
    seconds = time.perf_counter() - started
    engine.dispose()
    if outcome.status != "succeeded":
        raise RuntimeError(outcome.summary())
    return {"records": outcome.streams["opportunities"].inserted, "seconds": seconds}


def sync_rest(size: str, databases: list[str], workdir: Path) -> Iterator[Result]:
    """The scenario: floor and read at N deals; syncs at N / 10 and N for the rate and the memory."""
    large = SIZES[size]
    small = large // 10
    baseline: dict[str, dict[str, Any]] = {}
    with emulator(small) as server:
        for kind in databases:
            with database(kind, workdir) as db_url:
                baseline[kind] = in_child(_sync, server, db_url)
    floors: list[dict[str, Any]] = []
    fast_floors: list[dict[str, Any]] = []
    reads: list[dict[str, Any]] = []
    syncs: dict[str, dict[str, Any]] = {}
    with emulator(large) as server:
        # Alternated, best of each: the machine's other load falls on both sides alike.
        for _ in range(REPEATS[size]):
            floors.append(in_child(_floor, server))
            fast_floors.append(in_child(_floor, server, "orjson"))
            reads.append(in_child(_read, server))
        for kind in databases:
            with database(kind, workdir) as db_url:
                syncs[kind] = in_child(_sync, server, db_url)
    floor = min(floors, key=lambda f: f["seconds"])
    read = min(reads, key=lambda r: r["seconds"])
    floor_rate = floor["records"] / floor["seconds"]
    fast_floor = min(fast_floors, key=lambda f: f["seconds"])
    read_rate = read["records"] / read["seconds"]
    ratio = read_rate / floor_rate
    for kind in databases:
        run = syncs[kind]
        flat = run["peak_rss_mb"] <= RSS_FLAT_FACTOR * baseline[kind]["peak_rss_mb"]
        complete = read["records"] == floor["records"] == run["records"] == large
        yield Result(
            scenario="sync-rest",
            size=f"{large // 1000}k",
            database=kind,
            records=read["records"],
            seconds=read["seconds"],
            rate=read_rate,
            peak_rss_mb=run["peak_rss_mb"],
            floor="httpx fetch + json parse, same requests",
            floor_rate=floor_rate,
            ratio=ratio,
            target=f"read/floor >= {TARGET:.2f}, sync RSS flat",
            passed=ratio >= TARGET and flat and complete and read["requests"] == floor["requests"],
            notes={
                "floor_seconds": round(floor["seconds"], 2),
                # The connector parses with orjson: against a floor that does too, for the record.
                "orjson_floor_seconds": round(fast_floor["seconds"], 2),
                "ratio_to_orjson_floor": round(fast_floor["seconds"] / read["seconds"], 3),
                "requests": read["requests"],
                "floor_requests": floor["requests"],
                "sync_seconds": round(run["seconds"], 2),
                "sync_rate": round(run["records"] / run["seconds"]),
                "sync_ratio": round(run["records"] / run["seconds"] / floor_rate, 3),
                "repeats": REPEATS[size],
                "rss_small_mb": round(baseline[kind]["peak_rss_mb"], 1),
                "rss_large_mb": round(run["peak_rss_mb"], 1),
                "rss_flat": flat,
            },
        )


def _main() -> None:
    """``python -m bench.sync_rest [small|full] [sqlite,postgresql]``: this scenario alone (not saved)."""
    import sys
    import tempfile

    from bench import harness

    size = sys.argv[1] if len(sys.argv) > 1 else "small"
    databases = sys.argv[2].split(",") if len(sys.argv) > 2 else ["sqlite"]
    print(harness.header())
    with tempfile.TemporaryDirectory(prefix="crm-perf-sync-bench-") as tmp:
        for result in sync_rest(size, databases, Path(tmp)):
            print(result.row(), flush=True)
            print(result.notes, flush=True)


if __name__ == "__main__":
    _main()
