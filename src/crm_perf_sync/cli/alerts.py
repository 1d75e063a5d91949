"""Alert states and their history."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.table import Table

from crm_perf_sync.cli._shared import (
    ConfigOption,
    Output,
    _in_store,
)
from crm_perf_sync.cli.render import (
    emit,
    err,
    number,
    out,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

alerts_app = typer.Typer(help="Alert states and their history.", no_args_is_help=True)


@alerts_app.command("status")
def alerts_status(
    state: Annotated[
        Literal["ok", "pending", "firing", "resolved"] | None,
        typer.Option(help="ok, pending, firing or resolved."),
    ] = None,
    rule: Annotated[str | None, typer.Option(help="One rule's id.")] = None,
    output: Output = "table",
    config: ConfigOption = None,
) -> None:
    """Where every alert rule stands, per scope."""
    from crm_perf_sync.alerts import repository as repo
    from crm_perf_sync.org.repository import scope_names

    def read(session: Session) -> list[dict[str, Any]]:
        names = scope_names(session)
        rows = [dict(r._mapping) for r in repo.current_states(session, rule, state)]
        for row in rows:
            row["scope_name"] = names.get((row["scope"], row["scope_id"]), row["scope_id"])
        return rows

    rows = _in_store(config, read)
    if emit(rows, ALERT_STATE_COLUMNS, output):
        return
    table = Table("rule", "scope", "name", "state", "since", "value", "threshold", "last outcome")
    for r in rows:
        table.add_row(
            str(r["rule_id"]),
            str(r["scope"]),
            str(r["scope_name"]),
            str(r["state"]),
            f"{r['since']:%Y-%m-%d %H:%M}",
            number(r["value"]),
            number(r["threshold"]),
            str(r["outcome"]),
        )
    out.print(table)
    if not rows:
        err.print("no alert states yet: rules are evaluated at every refresh (`crm-perf-sync refresh`)")


ALERT_STATE_COLUMNS = (
    "rule_id",
    "scope",
    "scope_id",
    "scope_name",
    "currency",
    "state",
    "since",
    "value",
    "threshold",
    "outcome",
    "period_key",
)


@alerts_app.command("history")
def alerts_history(
    rule: Annotated[str | None, typer.Option(help="One rule's id.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    output: Output = "table",
    config: ConfigOption = None,
) -> None:
    """Every change of an alert state, newest first."""
    from crm_perf_sync.alerts import repository as repo

    rows = _in_store(
        config,
        lambda session: [
            dict(r._mapping) for r in repo.transitions_page(session, rule, None, None, limit)[0]
        ],
    )
    columns = tuple(rows[0]) if rows else ("at", "rule_id", "scope_id", "from_state", "to_state")
    if emit(rows, columns, output):
        return
    table = Table("at", "rule", "scope id", "from", "to", "value", "threshold", "period", "reason")
    for r in rows:
        table.add_row(
            f"{r['at']:%Y-%m-%d %H:%M:%S}",
            str(r["rule_id"]),
            str(r["scope_id"]),
            str(r["from_state"]),
            str(r["to_state"]),
            number(r["value"]),
            number(r["threshold"]),
            str(r["period_key"] or ""),
            str(r["reason"] or ""),
        )
    out.print(table)
