"""How the deployment is doing (status) and whether its setup is sound (doctor)."""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.table import Table

from crm_perf_sync.cli._shared import (
    ConfigOption,
    TableOrJson,
    _settings,
    opened_runtime,
)
from crm_perf_sync.cli.render import (
    ago,
    err,
    json_text,
    number,
    out,
    styled,
)

app = typer.Typer()


@app.command()
def status(output: TableOrJson = "table", config: ConfigOption = None) -> None:
    """How the deployment is doing: each connection's last run, lag and errors; the KPI refresh;
    webhook deliveries waiting; alerts firing."""
    from crm_perf_sync.alerts import repository as alerts_repo
    from crm_perf_sync.kit.db import session_scope
    from crm_perf_sync.kit.timeutil import utc_now
    from crm_perf_sync.ops import status as ops
    from crm_perf_sync.org.repository import scope_names

    with opened_runtime(config, auto_migrate=False) as runtime:
        with session_scope(runtime.session_factory) as session:
            now = utc_now()
            names = scope_names(session)
            firing = [dict(r._mapping) for r in alerts_repo.current_states(session, None, "firing")]
            for row in firing:
                row["scope_name"] = names.get((row["scope"], row["scope_id"]), row["scope_id"])
            report: dict[str, Any] = {
                "connections": ops.connection_status(session, runtime.config, now),
                "kpi_refresh": ops.refresh_status(session),
                "webhook_deliveries": ops.delivery_status(session, now),
                "firing_alerts": firing,
            }
    if output == "json":
        sys.stdout.write(json_text(report) + "\n")
        return
    table = Table(
        "connection", "kind", "last run", "ended", "last success", "lag", "pushes", "failed 24h", "error"
    )
    for c in report["connections"]:
        state = "syncing now" if c["syncing_now"] else (c["last_run_status"] or "never run")
        if c["last_run_skipped"] and not c["syncing_now"]:
            state += f", {c['last_run_skipped']:,} skipped"
        if not c["enabled"]:
            state += " (disabled)"
        ended = c["last_run_finished_at"]
        success = c["last_success_at"]
        table.add_row(
            c["connection_id"],
            c["kind"],
            state,
            f"{ended:%Y-%m-%d %H:%M}" if ended else "-",
            f"{success:%Y-%m-%d %H:%M}" if success else "-",
            ago(c["lag_seconds"]),
            pushes(c),
            str(c["failed_runs_24h"]),
            (c["last_error"] or "")[:80],
        )
    out.print(table)
    r = report["kpi_refresh"]
    if r["last_refresh_at"] is None:
        out.print("KPI refresh: none yet")
    else:
        line = (
            f"KPI refresh: {r['last_refresh_status']} ({r['last_refresh_kind']}) at "
            f"{r['last_refresh_at']:%Y-%m-%d %H:%M} in {r['last_refresh_seconds']}s"
        )
        out.print(line + (f": {r['last_refresh_error']}" if r["last_refresh_error"] else ""), soft_wrap=True)
    d = report["webhook_deliveries"]
    out.print(
        f"Webhook deliveries: {d['pending']} pending ({d['retrying']} retrying, oldest "
        f"{ago(d['oldest_pending_age_seconds'])}), {d['failed_24h']} failed in the last 24h"
    )
    if not firing:
        out.print("Alerts firing: none")
        return
    alerts = Table("rule", "scope", "name", "since", "value", "threshold", title="Alerts firing")
    for a in firing:
        alerts.add_row(
            str(a["rule_id"]),
            str(a["scope"]),
            str(a["scope_name"]),
            f"{a['since']:%Y-%m-%d %H:%M}",
            number(a["value"]),
            number(a["threshold"]),
        )
    out.print(alerts)


@app.command()
def doctor(config: ConfigOption = None) -> None:
    """Check the setup: configuration, database, migrations, each connection's credentials and
    each webhook endpoint. Exits 1 if anything is wrong."""
    from crm_perf_sync.ops.doctor import Doctor

    settings = _settings(config)
    report = Doctor(settings).run()
    for check in report.checks:
        mark = ("ok  ", "green") if check.ok else ("FAIL", "red")
        out.print(styled(mark, f" {check.name}: {check.detail}"), soft_wrap=True)
        if not check.ok and check.hint:
            out.print(f"     → {check.hint}", soft_wrap=True)
    failed = sum(not c.ok for c in report.checks)
    if failed:
        err.print(f"{failed} problem{'s' if failed != 1 else ''} found")
        raise typer.Exit(1)
    err.print("everything checks out")


def pushes(c: dict[str, Any]) -> str:
    """A connection's inbox in a word: the last push and what waits (``-``: never pushed to)."""
    last = c["push_last_received_at"]
    if last is None:
        return "-"
    text = f"{last:%Y-%m-%d %H:%M}, {c['push_waiting']:,} waiting"
    return text + (f", {c['push_parked']:,} parked" if c["push_parked"] else "")
