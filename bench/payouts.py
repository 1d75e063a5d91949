"""``payouts``: a year of monthly payouts for every rep, against the KPI refresh they are read from.

The demo company of ``kpi-full`` (N deals and N leads) with ``REPS[size]`` reps instead of 24 (500
at full size; 50 at small size, which only proves the scenario works), a monthly scorecard, and
one incentive plan over every rep for the 12 months up to the demo's ``as_of`` (February 2025 to
January 2026): a commission on won revenue with marginal tiers on a quota from the plan and a cap,
a SPIFF per won deal and a bonus by the scorecard's score. The store is synced and then, each in
its own child process:

``kpi``: a full refresh (``RefreshJob.refresh(full=True)`` at the grains ``kpi-full`` times):
every KPI and score recomputed. It computes the payouts too, at its end; their time is taken out of the
KPI refresh's (both are in the notes).

``payouts``: the full payout computation alone (``IncentiveService.refresh(full=True)`` in one
transaction, committed): every line of the plan computed from the stored values and written.
Target: at most :data:`TARGET` of the KPI refresh's time. Each side runs ``REPEATS[size]`` times,
alternating; the best of each counts.

``clock``: in a copy of the store, refreshed at every grain, ``kpi-incremental``'s ``clock``
change (the demo company 52 hours later, synced incrementally: about 1% of the records
change). The refresh that follows brings the KPIs and scores up to date from the change log and
then the payouts of the plan periods whose KPI values or scores changed; its payout time (the
refresh's ``incentives`` timing) is measured against a full payout computation of the same store
right after. Target: at most :data:`INCREMENTAL_TARGET`. Every line the incremental refresh left
is then compared with the line the full computation wrote (all columns but the id and the time it
was written).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import Result, copy_of, database, in_child
from bench.kpi_full import SIZES, _load, _load_config, _write_config
from bench.kpi_incremental import _advance, _full, _same

TARGET = 0.20  # full payout seconds / full KPI refresh seconds
INCREMENTAL_TARGET = 0.10  # incremental payout seconds / full payout seconds
REPEATS = {"small": 1, "full": 2}
REPS = {"small": 50, "full": 500}
PLAN = "reps-monthly"


def _extra(count: int) -> str:
    """The scorecard and the plan. The quota grows with the company: about what a rep wins in a
    month (1M deals over two years, 500 reps: some 500,000), so the tiers above it are reached."""
    quota = count // 2
    return (
        "kpis:\n"
        "  scorecards:\n"
        "    - id: reps\n"
        "      name: Rep scorecard\n"
        "      grains: [month]\n"
        "      currency: USD\n"
        "      components:\n"
        "        - {kpi: won_deals, weight: 0.4, normalise: {method: linear, floor: 0, goal: 30}}\n"
        "        - {kpi: won_revenue, weight: 0.4,"
        f" normalise: {{method: linear, floor: 0, goal: {quota}}}}}\n"
        "        - {kpi: win_rate, weight: 0.2, normalise: {method: linear, floor: 0.1, goal: 0.5}}\n"
        "incentives:\n"
        "  plans:\n"
        f"    - id: {PLAN}\n"
        "      name: Monthly rep plan\n"
        "      period: month\n"
        "      currency: USD\n"
        "      from: 2025-02-01\n"
        "      to: 2026-01-31\n"
        "      participants:\n"
        + "".join(f'        - {{team: "demo:REGION-{r:02d}"}}\n' for r in (1, 2, 3))
        + "      components:\n"
        "        - id: commission\n"
        "          type: commission\n"
        "          base: {kpi: won_revenue}\n"
        f"          quota: {{source: plan, amount: {quota}}}\n"
        "          tiers:\n"
        "            - {from: 0, to: 0.5, rate: 0.02}\n"
        "            - {from: 0.5, to: 1, rate: 0.05}\n"
        "            - {from: 1, rate: 0.08}\n"
        "          cap: {on_target_multiple: 2.5}\n"
        "        - {id: won-spiff, type: spiff, kpi: won_deals, amount: 100, cap: 5000}\n"
        "        - {id: scored, type: score_bonus, scorecard: reps, amount: 1500, min_score: 0.25}\n"
    )


def _kpi_full(url: str, config_path: Path) -> dict[str, Any]:
    """A full refresh; the KPI part of its time (the whole refresh less the payouts)."""
    from crm_perf_sync.jobs.refresh import RefreshJob
    from crm_perf_sync.kit.db import create_db_engine, make_session_factory

    engine = create_db_engine(url)
    job = RefreshJob(make_session_factory(engine), _load_config(config_path))
    started = time.perf_counter()
    outcome = job.refresh(grains=("month", "quarter", "year", "all"), full=True)
    seconds = time.perf_counter() - started
    engine.dispose()
    if PLAN not in outcome.incentives:
        raise RuntimeError("the refresh computed no payouts")
    payouts = outcome.timings["incentives"]
    return {"seconds": seconds - payouts, "refresh_seconds": seconds, "payout_seconds": payouts}


def _payouts_full(url: str, config_path: Path) -> dict[str, Any]:
    """Every payout line of the plan computed and written, in one committed transaction."""
    from crm_perf_sync.jobs.refresh import RefreshJob
    from crm_perf_sync.kit.db import create_db_engine, make_session_factory

    engine = create_db_engine(url)
    job = RefreshJob(make_session_factory(engine), _load_config(config_path))
    with engine.connect() as conn:
        started = time.perf_counter()
        now = datetime.now(UTC)
        work = job.incentives.pending(conn, now, changed=True, full=True)
        outcome = job.incentives.refresh(conn, now, work)
        conn.commit()
        seconds = time.perf_counter() - started
    engine.dispose()
    return {"seconds": seconds, "lines": outcome[PLAN].lines}


def _lines(url: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Every stored line by its key, without its id and the time it was written."""
    from sqlalchemy import select

    from crm_perf_sync.kit.db import create_db_engine
    from crm_perf_sync.models import IncentiveLine

    table = IncentiveLine.__table__
    key = ("plan_id", "period_key", "owner_id", "component_id", "kind", "for_period_key")
    columns = [c for c in table.columns if c.name not in ("id", "computed_at")]
    engine = create_db_engine(url)
    with engine.connect() as conn:
        rows = {tuple(r._mapping[n] for n in key): tuple(r) for r in conn.execute(select(*columns))}
    engine.dispose()
    return rows


def _incremental(url: str, config_path: Path) -> dict[str, Any]:
    """The refresh after the change (its payout time), then a full payout computation, compared."""
    from crm_perf_sync.jobs.refresh import RefreshJob
    from crm_perf_sync.kit.db import create_db_engine, make_session_factory

    engine = create_db_engine(url)
    job = RefreshJob(make_session_factory(engine), _load_config(config_path))
    outcome = job.refresh()
    engine.dispose()
    if outcome.recomputed:
        raise RuntimeError(f"the change recomputed KPIs whole: {', '.join(outcome.recomputed)}")
    plan = job.incentives.plans[PLAN]
    periods = job.incentives.changed_periods(plan, outcome)
    incremental = _lines(url)
    full = _payouts_full(url, config_path)
    recomputed = _lines(url)
    differences = [
        key
        for key in incremental.keys() | recomputed.keys()
        if not _same(incremental.get(key), recomputed.get(key))
    ]
    if differences:
        shown = sorted(differences, key=str)[:5]
        raise AssertionError(f"{len(differences)} lines differ from a full computation, e.g. {shown}")
    written = outcome.incentives.get(PLAN)
    return {
        "seconds": outcome.timings["incentives"],
        "refresh_seconds": outcome.seconds,
        "full_seconds": full["seconds"],
        "periods": sorted(periods or ()),
        "lines_written": 0 if written is None else written.lines + written.adjustments,
        "lines_checked": len(incremental),
    }


def payouts(size: str, databases: list[str], workdir: Path) -> Iterator[Result]:
    count, reps = SIZES[size], REPS[size]
    config_path = _write_config(workdir, count, reps=reps, extra=_extra(count), name="payouts")
    for kind in databases:
        with database(kind, workdir) as url:
            loaded = in_child(_load, url, config_path)
            kpi_runs, payout_runs = [], []
            for _ in range(REPEATS[size]):
                kpi_runs.append(in_child(_kpi_full, url, config_path))
                payout_runs.append(in_child(_payouts_full, url, config_path))
            with copy_of(kind, workdir, url) as changed_url:
                # Every grain (``kpi-full`` times four of them), so that the refresh after the
                # change has the context it left and applies the change log.
                in_child(_full, changed_url, config_path)
                changed = in_child(_advance, changed_url, config_path)
                incremental = in_child(_incremental, changed_url, config_path)
        kpi = min(kpi_runs, key=lambda run: float(run["seconds"]))
        full = min(payout_runs, key=lambda run: float(run["seconds"]))
        lines = int(full["lines"])
        ratio = full["seconds"] / kpi["seconds"]
        label = f"{count // 1000}k/{reps}"
        yield Result(
            scenario="payouts",
            size=label,
            database=kind,
            records=lines,
            seconds=full["seconds"],
            rate=lines / full["seconds"],
            peak_rss_mb=full["peak_rss_mb"],
            floor="full KPI refresh of the same store",
            floor_rate=lines / kpi["seconds"],
            ratio=ratio,
            target=f"payouts/KPI full time <= {TARGET}",
            passed=ratio <= TARGET if size == "full" else None,
            notes={
                "reps": reps,
                "deals": loaded["opportunity"],
                "lines": lines,
                "payout_seconds": [round(run["seconds"], 3) for run in payout_runs],
                "kpi_seconds": [round(run["seconds"], 3) for run in kpi_runs],
                "kpi_best_seconds": round(kpi["seconds"], 3),
                "refresh_seconds": [round(run["refresh_seconds"], 3) for run in kpi_runs],
                "kpi_peak_rss_mb": round(kpi["peak_rss_mb"], 1),
            },
        )
        ratio = incremental["seconds"] / incremental["full_seconds"]
        yield Result(
            scenario="payouts",
            size=label,
            database=f"{kind}/clock",
            records=lines,
            seconds=incremental["seconds"],
            rate=lines / incremental["seconds"],
            peak_rss_mb=incremental["peak_rss_mb"],
            floor="full payout computation of the changed store",
            floor_rate=lines / incremental["full_seconds"],
            ratio=ratio,
            target=f"incremental/full time <= {INCREMENTAL_TARGET}",
            passed=ratio <= INCREMENTAL_TARGET if size == "full" else None,
            notes={
                "full_seconds": round(incremental["full_seconds"], 3),
                "refresh_seconds": round(incremental["refresh_seconds"], 3),
                "changed_records": changed["updated"],
                "periods": len(incremental["periods"]),
                "periods_recomputed": incremental["periods"],
                "lines_written": incremental["lines_written"],
                "lines_checked": incremental["lines_checked"],
            },
        )
