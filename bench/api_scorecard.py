"""``api-scorecard``: a month's scorecard for 500 reps under load, against a trivial endpoint.

A store with the demo company at ``REPS[size]`` reps (500 at full size; 50 at small size, which
only proves the harness works and need not refresh the 200,000 values of 500 reps) is synced and
refreshed (a rep scorecard at month grain). The API runs in uvicorn in a process of its own, as
the ``api`` role does; a load generator in another process keeps ``CLIENTS`` requests in flight
for ``SECONDS`` against:

``trivial``: ``GET /healthz`` (no key, no database), the server's own ceiling;
``scorecard``: ``GET /api/v1/scorecards/reps?grain=month&period=<a month>&limit=500`` with a read
key: one month's 500 ranked reps with their component breakdowns, as a dashboard polls it (at small
size, ``limit=50`` and 50 reps).

The ratio is the scorecard's requests per second over the trivial endpoint's (target >= 0.40),
and the scorecard's p99 latency must be at most 50 ms. Every scorecard response is checked: 200,
one row per rep. Both endpoints are measured alternately, ``REPEATS[size]`` times, the best of each.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import statistics
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from bench.harness import Result, child_context, in_child, shared_store

REPS = {"small": 50, "full": 500}
SIZES = {"small": 5_000, "full": 200_000}
SECONDS = {"small": 0.5, "full": 15.0}
REPEATS = {"small": 1, "full": 2}
CLIENTS = 50
TARGET_RATIO = 0.40
TARGET_P99_MS = 50.0
CONNECTION = "demo"


def _write_config(workdir: Path, count: int, reps: int) -> Path:
    path = workdir / f"api-scorecard-{count}-{reps}.yaml"
    path.write_text(
        "business: {timezone: UTC, fiscal_year_start_month: 1, currency: USD}\n"
        "connections:\n"
        f"  - id: {CONNECTION}\n"
        "    kind: demo\n"
        "    settings:\n"
        f"      reps: {reps}\n"
        "      regions: 5\n"
        "      teams_per_region: 10\n"
        f"      opportunities: {count}\n"
        f"      leads: {count}\n"
        "      batch_size: 5000\n"
        '      as_of: "2026-01-01T00:00:00Z"\n'
        "kpis:\n"
        "  scorecards:\n"
        "    - id: reps\n"
        "      name: Rep scorecard\n"
        "      grains: [month]\n"
        "      currency: USD\n"
        "      components:\n"
        "        - {kpi: won_deals, weight: 0.5, normalise: {method: linear, floor: 0, goal: 10}}\n"
        "        - {kpi: win_rate, weight: 0.3, normalise: {method: linear, floor: 0.1, goal: 0.5}}\n"
        "        - {kpi: sales_cycle_days_median, weight: 0.2,"
        " normalise: {method: linear, floor: 90, goal: 30}}\n",
        encoding="utf-8",
    )
    return path


def _build(url: str, config_path: Path) -> dict[str, Any]:
    """Sync and refresh the store (shared with ``dashboard``: see :func:`bench.harness.shared_store`)."""
    from crm_perf_sync.config import load_config
    from crm_perf_sync.jobs.refresh import RefreshJob
    from crm_perf_sync.jobs.sync import SyncService
    from crm_perf_sync.kit.db import create_db_engine, make_session_factory
    from crm_perf_sync.plugins import ConnectorRegistry
    from crm_perf_sync.sync.service import SyncOptions

    registry = ConnectorRegistry.discover()
    config = load_config(config_path, registry)
    engine = create_db_engine(url)
    factory = make_session_factory(engine)
    sync = SyncService(session_factory=factory, registry=registry, config=config, options=SyncOptions())
    sync.apply_config()
    outcome = sync.sync(CONNECTION)
    if outcome.status != "succeeded":
        raise RuntimeError(outcome.summary())
    RefreshJob(factory, config).refresh()
    engine.dispose()
    return {}


def store(kind: str, workdir: Path, config_path: Path) -> AbstractContextManager[tuple[str, dict[str, Any]]]:
    """The synced and refreshed store of ``config_path``, built once per run for both scenarios."""
    return shared_store(kind, workdir, config_path.name, _build, config_path)


def _prepare(url: str) -> dict[str, Any]:
    """A read key of its own and the month to read."""
    from sqlalchemy import func, select

    from crm_perf_sync.apikeys import service as keys
    from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
    from crm_perf_sync.models import ScorecardValue

    engine = create_db_engine(url)
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        _, key = keys.create(session, "bench", "read")
        # The month with the most scored reps (every rep is listed in every month).
        period = session.execute(
            select(ScorecardValue.period_key)
            .where(ScorecardValue.scorecard_id == "reps", ScorecardValue.grain == "month")
            .group_by(ScorecardValue.period_key)
            .order_by(func.count(ScorecardValue.score).desc(), ScorecardValue.period_key.desc())
            .limit(1)
        ).scalar_one()
    engine.dispose()
    return {"key": key, "period": period}


def _serve(url: str, config_path: Path, port: int) -> dict[str, Any]:
    """The ``api`` role: uvicorn serving the app, until the parent stops the process."""
    import uvicorn

    from crm_perf_sync.api.app import create_app
    from crm_perf_sync.api.server import server_options
    from crm_perf_sync.config import load_config
    from crm_perf_sync.kit.db import create_db_engine
    from crm_perf_sync.plugins import ConnectorRegistry

    logging.disable(logging.WARNING)
    engine = create_db_engine(url, pool_size=20)
    config = load_config(config_path, ConnectorRegistry.discover())
    uvicorn.run(
        create_app(engine, config),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        **server_options(),
    )
    return {}


def _load(
    base: str, path: str, headers: dict[str, str], seconds: float, expect_rows: int | None
) -> dict[str, Any]:
    """``CLIENTS`` keep-alive connections each sending requests back to back for ``seconds``.

    A bare HTTP/1.1 client on asyncio streams: a general-purpose client (httpx) spends more time
    per request than the server it measures, so it would measure itself. The first response is
    checked with httpx (status, rows); each later one must have the same status and size.
    """
    import httpx

    first = httpx.get(base + path, headers=headers, timeout=60)
    if first.status_code != 200:
        raise RuntimeError(f"{path}: {first.status_code} {first.text[:200]}")
    if expect_rows is not None and len(first.json()["data"]) != expect_rows:
        raise RuntimeError(f"{path}: {len(first.json()['data'])} rows, expected {expect_rows}")
    host, port = base.removeprefix("http://").split(":")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept-Encoding: gzip"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def run() -> dict[str, Any]:
        latencies: list[float] = []
        errors = 0
        sizes: set[int] = set()
        deadline = 0.0

        async def worker() -> None:
            nonlocal errors
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                while True:
                    started = time.perf_counter()
                    writer.write(request)
                    status_line = await reader.readline()
                    length = 0
                    while True:
                        line = await reader.readline()
                        if line in (b"\r\n", b""):
                            break
                        name, _, value = line.partition(b":")
                        if name.lower() == b"content-length":
                            length = int(value)
                    await reader.readexactly(length)
                    if started >= deadline > 0:
                        return
                    if deadline:
                        latencies.append(time.perf_counter() - started)
                        sizes.add(length)
                        if b" 200 " not in status_line:
                            errors += 1
                    else:
                        await asyncio.sleep(0)  # warming up until every connection is open
            finally:
                writer.close()

        tasks = [asyncio.create_task(worker()) for _ in range(CLIENTS)]
        await asyncio.sleep(0.5)
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        latencies.sort()
        return {
            "requests": len(latencies),
            "rps": len(latencies) / elapsed,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
            "errors": errors + (len(sizes) > 1),
        }

    return asyncio.run(run())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def api_scorecard(size: str, databases: list[str], workdir: Path) -> Iterator[Result]:
    import httpx

    count, reps = SIZES[size], REPS[size]
    config_path = _write_config(workdir, count, reps)
    for kind in databases:
        with store(kind, workdir, config_path) as (url, _):
            prepared = in_child(_prepare, url)
            port = _free_port()
            context = child_context()
            server = context.Process(target=_serve, args=(url, config_path, port), daemon=True)
            server.start()
            base = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError("the API did not start")
                    time.sleep(0.2)
                headers = {"Authorization": f"Bearer {prepared['key']}"}
                path = f"/api/v1/scorecards/reps?grain=month&period={prepared['period']}&limit={reps}"
                trivial: dict[str, Any] = {}
                card: dict[str, Any] = {}
                for _ in range(REPEATS[size]):
                    t = in_child(_load, base, "/healthz", {}, SECONDS[size], None)
                    c = in_child(_load, base, path, headers, SECONDS[size], reps)
                    trivial = t if t["rps"] > trivial.get("rps", 0) else trivial
                    card = c if c["rps"] > card.get("rps", 0) else card
            finally:
                server.terminate()
                server.join(timeout=30)
        if card["errors"] or trivial["errors"]:
            raise RuntimeError(f"failed requests: scorecard {card['errors']}, trivial {trivial['errors']}")
        ratio = card["rps"] / trivial["rps"]
        passed = ratio >= TARGET_RATIO and card["p99_ms"] <= TARGET_P99_MS
        yield Result(
            scenario="api-scorecard",
            size=f"{reps} reps",
            database=kind,
            records=card["requests"],
            seconds=SECONDS[size],
            rate=card["rps"],
            peak_rss_mb=card["peak_rss_mb"],
            floor="GET /healthz",
            floor_rate=trivial["rps"],
            ratio=ratio,
            target=f"rps >= {TARGET_RATIO} x trivial, p99 <= {TARGET_P99_MS:.0f} ms",
            passed=passed if size == "full" else None,
            notes={
                "clients": CLIENTS,
                "scorecard_p50_ms": round(card["p50_ms"], 1),
                "scorecard_p99_ms": round(card["p99_ms"], 1),
                "trivial_p99_ms": round(trivial["p99_ms"], 1),
                "trivial_rps": round(trivial["rps"]),
                "opportunities": count,
            },
        )
