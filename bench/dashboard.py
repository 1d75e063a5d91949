"""``dashboard``: the overview and the leaderboard of the 500-rep store, on the server and in a browser.

The store is :mod:`bench.api_scorecard`'s (the demo company at 500 reps, 50 at small size, synced
and refreshed), and the API runs the same way, in uvicorn in a process of its own. Two measurements,
in one sitting:

``server``: one client signs in once, then requests ``GET /dashboard`` (month grain, the latest
month) and ``GET /dashboard/leaderboard`` (the same month) one at a time, with
``Accept-Encoding: gzip``, ``RENDERS[size]`` times each after a warm-up, interleaved with
``GET /healthz`` (no session, no database: the floor of a request). This is render latency, not
throughput. Targets: each page's p95 at most 50 ms. Every response is checked: 200, gzip, every rep
on the leaderboard, every tile the store has a value for on the overview. The transfer of a
page is its compressed body plus every same-origin asset it references (the stylesheet, the
script) except the chart library, which a browser holds in its cache: at most 200 KB each.

``browser``: headless Chromium driven by Playwright signs in through the form, then loads the
overview ``LOADS[size]`` times with a warm cache, each from navigation start until the page's
script marks the charts drawn (``data-charts-drawn`` on ``<body>``). Target: p95 at most 1 s.
Chromium is ``CRM_PERF_SYNC_CHROMIUM`` or ``/usr/bin/chromium``.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.api_scorecard import REPS, SIZES, _free_port, _prepare, _serve, _write_config, store
from bench.harness import Result, in_child

RENDERS = {"small": 30, "full": 300}
WARM_UP = 10
LOADS = {"small": 5, "full": 30}
TARGET_P95_MS = 50.0
TARGET_TRANSFER_BYTES = 200 * 1000
TARGET_DRAWN_MS = 1000.0
CHART_LIBRARY = "echarts.min.js"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
#: Records when the page's script marks the charts drawn, in the page's own clock (milliseconds
#: since navigation start). Installed before any script of the page runs.
DRAWN_OBSERVER = """
new MutationObserver(function (_, observer) {
  if (document.body && document.body.hasAttribute("data-charts-drawn")) {
    window.__chartsDrawnAt = performance.now();
    observer.disconnect();
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ["data-charts-drawn"]});
"""
#: A function, not an expression: Playwright evaluates an expression with eval() when it polls,
#: which the pages' Content-Security-Policy (no 'unsafe-eval') refuses.
DRAWN = "() => window.__chartsDrawnAt !== undefined"
TILE = re.compile(rb'<article class="tile" id="tile-([^"]+)" data-kpi="([^"]+)"')
REP_ROW = re.compile(rb'<tr data-owner="([^"]+)"')
ASSET = re.compile(r'<(?:link|script)\b[^>]*?\b(?:href|src)="(/[^/"][^"]*)"')


def chromium_path() -> str:
    return os.environ.get("CRM_PERF_SYNC_CHROMIUM") or DEFAULT_CHROMIUM


def _require_browser() -> None:
    """Fail before the store is built if the browser half cannot run, saying what to install."""
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("the Python package playwright (pip install playwright)")
    if not Path(chromium_path()).is_file():
        missing.append(
            f"Chromium at {chromium_path()} (apt-get install chromium, or set CRM_PERF_SYNC_CHROMIUM "
            "to a Chromium executable)"
        )
    if missing:
        raise RuntimeError("the dashboard scenario needs " + " and ".join(missing))


def _prepare_dashboard(url: str, config_path: Path) -> dict[str, Any]:
    """The api-scorecard store, plus the latest month and the overview tiles it must show."""
    from sqlalchemy import select

    from crm_perf_sync.api.dashboard.views import OVERVIEW_KPIS
    from crm_perf_sync.config import load_config
    from crm_perf_sync.kit.db import create_db_engine
    from crm_perf_sync.kpi.service import KpiService
    from crm_perf_sync.models import KpiValue
    from crm_perf_sync.plugins import ConnectorRegistry

    prepared = _prepare(url)
    engine = create_db_engine(url)
    company = (
        KpiValue.kpi_id.in_(OVERVIEW_KPIS),
        KpiValue.grain == "month",
        KpiValue.scope == "company",
        KpiValue.dimension == "",
    )
    with engine.connect() as conn:
        month = conn.execute(select(KpiValue.period_key).where(*company).order_by(KpiValue.period_key.desc()))
        latest = month.scalars().first()
        if latest is None:
            raise RuntimeError("the store has no company values at month grain")
        found = conn.execute(
            select(KpiValue.kpi_id, KpiValue.currency).where(*company, KpiValue.period_key == latest)
        ).all()
    engine.dispose()
    configured = KpiService(load_config(config_path, ConnectorRegistry.discover()).kpi_config()).kpis
    # Every overview KPI the configuration has gets a tile, one per currency it has values in.
    kpis = sorted(kpi for kpi in OVERVIEW_KPIS if kpi in configured)
    tiles = sorted(kpi + (f"-{currency}" if currency else "") for kpi, currency in found)
    return {
        "key": prepared["key"],
        "month": latest,
        "scored_month": prepared["period"],
        "kpis": kpis,
        "tiles": tiles,
    }


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": 1000 * statistics.median(ordered),
        "p95": 1000 * ordered[round(0.95 * (len(ordered) - 1))],
        "max": 1000 * ordered[-1],
    }


def _check_page(name: str, response: Any, expected: dict[str, list[str]], reps: int) -> None:
    """A page as the targets mean it: complete, and compressed for a client that accepts gzip."""
    if response.status_code != 200:
        raise RuntimeError(f"{name}: {response.status_code} {response.text[:200]}")
    if response.headers.get("content-encoding") != "gzip":
        raise RuntimeError(f"{name}: not gzip-compressed ({response.headers.get('content-encoding')})")
    body = response.content
    if name == "leaderboard":
        owners = REP_ROW.findall(body)
        if len(owners) != reps or len(set(owners)) != reps:
            raise RuntimeError(f"leaderboard: {len(set(owners))} reps in {len(owners)} rows, expected {reps}")
    else:
        found = TILE.findall(body)
        tiles, kpis = {tile.decode() for tile, _ in found}, {kpi.decode() for _, kpi in found}
        if not set(expected["tiles"]) <= tiles or not set(expected["kpis"]) <= kpis:
            missing = sorted((set(expected["tiles"]) - tiles) | (set(expected["kpis"]) - kpis))
            raise RuntimeError(f"overview: tiles of {missing} missing")


def _render(
    base: str, key: str, paths: dict[str, str], expected: dict[str, list[str]], reps: int, count: int
) -> dict[str, Any]:
    """Sign in, then request each page and the floor in turn, ``count`` times after a warm-up."""
    import httpx

    with httpx.Client(base_url=base, headers={"Accept-Encoding": "gzip"}, timeout=60) as client:
        signed = client.post("/dashboard/sign-in", data={"key": key, "next": "/dashboard"})
        if signed.status_code != 303 or not client.cookies:
            raise RuntimeError(f"sign-in: {signed.status_code} {signed.text[:200]}")
        transfer: dict[str, dict[str, int]] = {}
        for name, path in paths.items():
            first = client.get(path)
            _check_page(name, first, expected, reps)
            page = first.num_bytes_downloaded
            assets = {}
            for asset in sorted(set(ASSET.findall(first.text))):
                if asset.split("?")[0].endswith("/" + CHART_LIBRARY):
                    continue
                fetched = client.get(asset.replace("&amp;", "&"))
                if fetched.status_code != 200:
                    raise RuntimeError(f"{name}: {asset} answered {fetched.status_code}")
                assets[asset] = fetched.num_bytes_downloaded
            if not assets:
                raise RuntimeError(f"{name}: references no same-origin asset besides {CHART_LIBRARY}")
            transfer[name] = {"page": page, "total": page + sum(assets.values()), "html": len(first.content)}
        latencies: dict[str, list[float]] = {name: [] for name in [*paths, "healthz"]}
        started = time.perf_counter()
        for n in range(WARM_UP + count):
            for name, path in [*paths.items(), ("healthz", "/healthz")]:
                began = time.perf_counter()
                response = client.get(path)
                elapsed = time.perf_counter() - began
                if name == "healthz":
                    if response.status_code != 200:
                        raise RuntimeError(f"/healthz: {response.status_code}")
                else:
                    _check_page(name, response, expected, reps)
                if n >= WARM_UP:
                    latencies[name].append(elapsed)
            if n + 1 == WARM_UP:
                started = time.perf_counter()
        seconds = time.perf_counter() - started
    return {
        "latency": {name: _percentiles(samples) for name, samples in latencies.items()},
        "transfer": transfer,
        "requests": sum(len(samples) for samples in latencies.values()),
        "seconds": seconds,
    }


def _browse(base: str, key: str, path: str, loads: int) -> dict[str, Any]:
    """Sign in through the form, then load ``path`` ``loads`` times, each until its charts are drawn."""
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    drawn: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=args)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.add_init_script(DRAWN_OBSERVER)
            page.goto(base + "/dashboard/sign-in?next=" + path.replace("&", "%26"))
            page.fill("input[name=key]", key)
            with page.expect_navigation():
                page.click("button[type=submit]")
            # The first load fetched the chart library: every load from here on finds it cached.
            page.wait_for_function(DRAWN)
            if not page.url.endswith(path):
                raise RuntimeError(f"sign-in led to {page.url}, not {path}")
            cold = page.evaluate("() => window.__chartsDrawnAt")
            charts = 0
            started = time.perf_counter()
            for _ in range(loads):
                page.goto(base + path, wait_until="commit")
                page.wait_for_function(DRAWN)
                drawn.append(page.evaluate("() => window.__chartsDrawnAt") / 1000)
                charts = int(page.evaluate("() => document.body.dataset.chartsDrawn"))
                declared = page.locator("[data-chart]").count()
                if charts == 0 or charts != declared:
                    raise RuntimeError(f"{charts} charts drawn of {declared} on {path}")
            seconds = time.perf_counter() - started
            version = browser.version
        finally:
            browser.close()
    return {
        "drawn": _percentiles(drawn),
        "seconds": seconds,
        "cold_ms": cold,
        "charts": charts,
        "chromium": version,
    }


def _wait_for(base: str) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.2)


def _peak_rss_mb(pid: int | None) -> float:
    """The server process's peak resident memory (0 where /proc is missing)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def dashboard(size: str, databases: list[str], workdir: Path) -> Iterator[Result]:
    _require_browser()
    count, reps = SIZES[size], REPS[size]
    config_path = _write_config(workdir, count, reps)
    for kind in databases:
        with store(kind, workdir, config_path) as (url, _):
            prepared = in_child(_prepare_dashboard, url, config_path)
            month = prepared["month"]
            paths = {
                "overview": f"/dashboard?grain=month&period={month}",
                "leaderboard": f"/dashboard/leaderboard?grain=month&period={prepared['scored_month']}",
            }
            port = _free_port()
            server = multiprocessing.get_context("spawn").Process(
                target=_serve, args=(url, config_path, port), daemon=True
            )
            server.start()
            base = f"http://127.0.0.1:{port}"
            try:
                _wait_for(base)
                expected = {"tiles": prepared["tiles"], "kpis": prepared["kpis"]}
                rendered = in_child(_render, base, prepared["key"], paths, expected, reps, RENDERS[size])
                browsed = in_child(_browse, base, prepared["key"], paths["overview"], LOADS[size])
                server_rss = _peak_rss_mb(server.pid)
            finally:
                server.terminate()
                server.join(timeout=30)
        latency, transfer = rendered["latency"], rendered["transfer"]
        worst = max(latency["overview"]["p95"], latency["leaderboard"]["p95"])
        heaviest = max(t["total"] for t in transfer.values())
        passed = worst <= TARGET_P95_MS and heaviest <= TARGET_TRANSFER_BYTES
        notes: dict[str, Any] = {
            "renders": RENDERS[size],
            "opportunities": count,
            "overview_month": month,
            "leaderboard_month": prepared["scored_month"],
        }
        for name in ("overview", "leaderboard", "healthz"):
            for stat, value in latency[name].items():
                notes[f"{name}_{stat}_ms"] = round(value, 1)
        for name, sizes in transfer.items():
            notes[f"{name}_bytes"] = sizes["page"]
            notes[f"{name}_html_bytes"] = sizes["html"]
            notes[f"{name}_transfer_bytes"] = sizes["total"]
        notes["tiles_checked"] = len(prepared["kpis"])
        yield Result(
            scenario="dashboard",
            size=f"{reps} reps",
            database=kind,
            records=rendered["requests"],
            seconds=rendered["seconds"],
            rate=rendered["requests"] / rendered["seconds"],
            peak_rss_mb=server_rss,
            floor="GET /healthz",
            floor_rate=1000 / latency["healthz"]["p95"],
            ratio=worst / latency["healthz"]["p95"],
            target=f"p95 <= {TARGET_P95_MS:.0f} ms, <= {TARGET_TRANSFER_BYTES // 1000} KB",
            passed=passed if size == "full" else None,
            notes=notes,
        )
        drawn = browsed["drawn"]
        yield Result(
            scenario="dashboard-browser",
            size=f"{reps} reps",
            database=kind,
            records=LOADS[size],
            seconds=browsed["seconds"],
            rate=LOADS[size] / browsed["seconds"],
            peak_rss_mb=browsed["peak_rss_mb"],
            target=f"charts drawn p95 <= {TARGET_DRAWN_MS:.0f} ms",
            passed=drawn["p95"] <= TARGET_DRAWN_MS if size == "full" else None,
            notes={
                "drawn_p50_ms": round(drawn["p50"], 1),
                "drawn_p95_ms": round(drawn["p95"], 1),
                "drawn_max_ms": round(drawn["max"], 1),
                "cold_ms": round(browsed["cold_ms"], 1),
                "charts": browsed["charts"],
                "chromium": browsed["chromium"],
                "loads": LOADS[size],
            },
        )
