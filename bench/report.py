"""``python -m bench.report``: write ``docs/benchmarks.md`` from ``bench/results/full.jsonl``.

The latest full-size result of every scenario, size and database goes into the table, with when it
was measured and the command that reproduces it; the machine section says where. The results file
is committed, so any checkout regenerates the same report, and a run of one scenario replaces only
its own rows.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import RESULTS, describe_machine

REPORT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
#: The figures worth a column of their own, per scenario (the rest stay in the results file).
DETAILS: dict[str, tuple[tuple[str, str], ...]] = {
    "upsert": (
        ("store_rate", "store rate (/s)"),
        ("rss_small_mb", "RSS at 100k (MB)"),
        ("rss_large_mb", "RSS at 1M (MB)"),
    ),
    "kpi-full": (("floor_seconds", "floor (s)"), ("kpi_values", "values"), ("values_checked", "checked")),
    "kpi-incremental": (
        ("full_seconds", "full (s)"),
        ("changed_records", "changed"),
        ("values_checked", "checked"),
    ),
    "payouts": (
        ("kpi_best_seconds", "KPI full refresh (s)"),
        ("full_seconds", "full payouts (s)"),
        ("reps", "reps"),
        ("changed_records", "changed"),
        ("periods", "plan periods recomputed"),
        ("lines_checked", "lines checked"),
    ),
    "api-scorecard": (
        ("scorecard_p50_ms", "p50 (ms)"),
        ("scorecard_p99_ms", "p99 (ms)"),
        ("trivial_rps", "trivial (req/s)"),
        ("trivial_p99_ms", "trivial p99 (ms)"),
        ("clients", "clients"),
    ),
    "dashboard": (
        ("overview_p50_ms", "overview p50 (ms)"),
        ("overview_p95_ms", "overview p95 (ms)"),
        ("leaderboard_p50_ms", "leaderboard p50 (ms)"),
        ("leaderboard_p95_ms", "leaderboard p95 (ms)"),
        ("healthz_p95_ms", "trivial p95 (ms)"),
        ("overview_transfer_bytes", "overview transfer (B)"),
        ("leaderboard_transfer_bytes", "leaderboard transfer (B)"),
    ),
    "dashboard-browser": (
        ("drawn_p50_ms", "charts drawn p50 (ms)"),
        ("drawn_p95_ms", "charts drawn p95 (ms)"),
        ("cold_ms", "first load, cold cache (ms)"),
        ("charts", "charts"),
    ),
    "webhooks": (("worst_s", "alert → receiver, worst (s)"), ("verified_signatures", "verified")),
    "freshness": (
        ("crm", "CRM"),
        ("api_p50_s", "CRM → API p50 (s)"),
        ("api_p95_s", "CRM → API p95 (s)"),
        ("alert_p50_s", "CRM → alert p50 (s)"),
        ("alert_p95_s", "CRM → alert p95 (s)"),
        ("dashboard_p50_s", "CRM → open dashboard p50 (s)"),
        ("dashboard_p95_s", "CRM → open dashboard p95 (s)"),
        ("store_deals", "deals in the store"),
        ("arrived", "burst: arrived"),
        ("lost", "burst: lost"),
        ("lag_max_s", "burst: worst lag (s)"),
    ),
    "sync-salesforce": (
        ("floor_seconds", "floor (s)"),
        ("connector_read_ratio", "connector read / floor"),
        ("ratio_keep_raw_false", "ratio with keep_raw: false"),
        ("floor_us", "floor per record (µs)"),
        ("beyond_floor_us", "each step beyond it alone (µs/record)"),
        ("ceiling", "ceiling ratio if all of it ran in parallel on every core"),
        ("ceiling_one_process", "ceiling in one process (the GIL serialises the interpreter's share)"),
    ),
    "sync-hubspot": (("floor_seconds", "floor (s)"), ("rss_large_mb", "RSS (MB)")),
    "sync-rest": (
        ("floor_seconds", "floor (s)"),
        ("sync_rate", "sync (records/s)"),
        ("rss_large_mb", "RSS (MB)"),
    ),
    "analyst-pandas": (("engine_seconds", "engine (s)"), ("values_checked", "agreed")),
    "kpi-duckdb": (
        ("engine_seconds", "engine (s)"),
        ("duckdb_seconds", "DuckDB (s)"),
        ("duckdb copy of the store (s, not counted)", "DuckDB's copy of the store (s, not counted)"),
        ("duckdb_peak_rss_mb", "DuckDB RSS (MB)"),
        ("values_checked", "agreed"),
    ),
    "ingest-dlt": (
        ("store_rate", "our store rate (/s)"),
        ("dlt dicts (store /s)", "dlt, dicts (store /s)"),
        ("dlt arrow (store /s)", "dlt, Arrow (store /s)"),
        ("dlt dicts RSS (MB)", "dlt, dicts RSS (MB)"),
        ("dlt arrow RSS (MB)", "dlt, Arrow RSS (MB)"),
        ("every record once", "every record once"),
    ),
    "sync-salesforce-latency": (
        ("floor_seconds", "bare fetch (s)"),
        ("request_latency_s", "request (s)"),
        ("bulk_page_latency_s", "Bulk page (s)"),
        ("page_rows", "rows a page"),
    ),
}


def latest(results: Path = RESULTS) -> list[dict[str, Any]]:
    """The newest result per (scenario, size, database), in scenario order."""
    newest: dict[tuple[str, str, str], dict[str, Any]] = {}
    if results.exists():
        for line in results.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                newest[(row["scenario"], row["size"], row["database"])] = row
    return sorted(newest.values(), key=lambda r: (r["scenario"], r["size"] != "full", r["database"]))


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return "-" if value is None else str(value)


#: Rows another scenario produces (the analyst's script runs inside kpi-full, on its store; the
#: browser's loads inside dashboard, against its server).
PRODUCED_BY = {"analyst-pandas": "kpi-full", "dashboard-browser": "dashboard"}


def _command(row: dict[str, Any]) -> str:
    database = row["database"].split("/")[0]
    scenario = PRODUCED_BY.get(row["scenario"], row["scenario"])
    return f"python -m bench --size {row.get('run_size', 'full')} --scenario {scenario} --db {database}"


def _when(row: dict[str, Any]) -> str:
    """When ``row`` was measured, to the minute."""
    stamp = row.get("measured_at")
    if not stamp:
        return "-"
    return datetime.fromisoformat(stamp).astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _span(rows: list[dict[str, Any]]) -> str:
    stamps = sorted(_when(r) for r in rows if r.get("measured_at"))
    if not stamps:
        return "at unrecorded times"
    return f"{stamps[0]} UTC" if stamps[0] == stamps[-1] else f"{stamps[0]} to {stamps[-1]} UTC"


def _machine_lines(machine: dict[str, Any]) -> list[str]:
    versions = machine.get("versions", {})
    return [
        f"- {machine['cores']} cores ({machine['processor']}), {machine['memory']} of memory, "
        f"{machine['system']}",
        "- " + ", ".join(f"{name} {version}" for name, version in versions.items()),
    ]


def render(rows: list[dict[str, Any]], optimisations: str) -> str:
    machines = list(
        {json.dumps(r["machine"], sort_keys=True): r["machine"] for r in rows if "machine" in r}.values()
    )
    if not machines or any("machine" not in r for r in rows):
        machines.append(describe_machine())  # rows recorded without it: the machine at hand
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench-report` (`python -m bench.report`) from `bench/results/full.jsonl`,",
        "which `make bench` appends to and which is committed with this report. Every row is the latest",
        "full-size run of its scenario, size and database; a ratio compares with the floor named beside",
        "it, measured in the same run. The machine is shared and its speed varies from day to day, so",
        "rows measured on different days compare by their ratios, not their rates.",
        "",
        "## The machine",
        "",
        *(line for machine in machines for line in _machine_lines(machine)),
        f"- measured {_span(rows)}",
        "",
        "## Results",
        "",
        "| scenario | size | database | records | time (s) | rate (/s) | peak RSS (MB) | ratio | target "
        "| verdict | measured (UTC) |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        verdict = {True: "met", False: "**not met**", None: "-"}[r.get("passed")]
        lines.append(
            f"| {r['scenario']} | {r['size']} | {r['database']} | {r['records']:,} | {r['seconds']:.2f} | "
            f"{r['rate']:,.0f} | {r['peak_rss_mb']:.0f} | {_number(r.get('ratio'))} | "
            f"{(r.get('target') or '').replace('|', '/')} | {verdict} | {_when(r)} |"
        )
    lines += ["", "## Details and how to reproduce each row", ""]
    for r in rows:
        details = DETAILS.get(r["scenario"], ())
        shown = [f"{label} {_number(r['notes'].get(key))}" for key, label in details if key in r["notes"]]
        floor = f"; floor: {r['floor']}" if r.get("floor") else ""
        lines.append(
            f"- **{r['scenario']}** ({r['size']}, {r['database']}): `{_command(r)}`{floor}"
            + (f" — {', '.join(shown)}" if shown else "")
        )
    lines += ["", "## What each optimisation bought", "", optimisations.strip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rows = latest()
    if not rows:
        print(f"no results in {RESULTS}: run `make bench` first", file=sys.stderr)
        return 1
    notes = Path(__file__).resolve().parent / "optimisations.md"
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(render(rows, notes.read_text() if notes.exists() else ""))
    print(f"wrote {REPORT} ({len(rows)} results)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
