"""The ``crm-perf-sync`` command line.

Every command exits non-zero with a one-line reason on failure (configuration problems list one
line per issue); a traceback means a bug. Exit codes: 0 done, 1 failed, 2 usage or configuration,
3 a worker stopped with work still busy; ``sync`` adds :data:`.data.EXIT_REJECTED` and
:data:`.data.EXIT_DEFERRED` (the README's CLI section is their documentation).
"""

from __future__ import annotations

import sys

import typer

from crm_perf_sync.cli import admin, alerts, data, incentives, kpis, measures, ops, processes, webhooks
from crm_perf_sync.cli.render import err

app = typer.Typer(
    name="crm-perf-sync",
    help="Sales performance KPIs from your CRM: sync, compute, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for commands in (admin.app, data.app, kpis.app, ops.app, processes.app):
    app.add_typer(commands)
app.add_typer(admin.config_app, name="config")
app.add_typer(admin.connectors_app, name="connectors")
app.add_typer(admin.apikey_app, name="apikey")
app.add_typer(webhooks.webhooks_app, name="webhooks")
app.add_typer(alerts.alerts_app, name="alerts")
app.add_typer(measures.measures_app, name="measures")
app.add_typer(incentives.incentives_app, name="incentives")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
