"""Incentive plans, their payout lines, a rep's statement, a line explained, a period closed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from rich.table import Table

from crm_perf_sync.cli._shared import (
    ConfigOption,
    Output,
    TableOrJson,
    _guard,
    opened_runtime,
)
from crm_perf_sync.cli.render import emit, err, number, out, quantity, styled

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from crm_perf_sync.incentives.service import IncentiveService

incentives_app = typer.Typer(
    help="Incentive plans: payouts, statements, explanations, period close.", no_args_is_help=True
)
T = TypeVar("T")

PlanOption = Annotated[str | None, typer.Option("--plan", help="A plan id (see `incentives plans`).")]
PeriodOption = Annotated[
    str | None, typer.Option("--period", help="A period of the plan: its first day, e.g. 2017-04-01.")
]


def _run(config: Path | None, action: Callable[[IncentiveService, Session], T]) -> T:
    """``action`` with the plans (the configuration's and those set through the API), in one unit
    of work on the store (committed when it succeeds)."""
    from crm_perf_sync.incentives.service import IncentiveService
    from crm_perf_sync.kit.db import session_scope
    from crm_perf_sync.kpi.service import KpiService

    with opened_runtime(config) as runtime, session_scope(runtime.session_factory) as session:
        service = IncentiveService(
            KpiService(runtime.config.kpi_config()), runtime.config.app.incentives.plans
        ).in_store(session)
        return _guard(lambda: action(service, session))


def _amount(value: float | None) -> str:
    return "" if value is None else f"{value:,.2f}"


@incentives_app.command("plans")
def plans(output: Output = "table", config: ConfigOption = None) -> None:
    """Every plan: what its components pay, who takes part, its periods and which are closed."""
    from crm_perf_sync.incentives.presented import plan_out
    from crm_perf_sync.kit.timeutil import utc_now

    def read(service: IncentiveService, session: Session) -> list[dict[str, Any]]:
        today = service.today(utc_now())
        return [
            plan_out(service, session, plan, today)
            for plan in sorted(service.plans.values(), key=lambda p: p.id)
        ]

    rows = _run(config, read)
    if emit(rows, PLAN_COLUMNS, output):
        return
    for plan in rows:
        ends = plan["ends"] or "open"
        out.print(
            styled(
                (plan["name"], "bold"),
                f" ({plan['id']}): per {plan['period']} in {plan['currency']}, {plan['starts']} to {ends}",
            )
        )
        for who in plan["participants"]:
            span = (
                ""
                if who["from"] is None and who["to"] is None
                else f" {who['from'] or ''}..{who['to'] or ''}"
            )
            out.print(f"  takes part: {who['owner'] or 'team ' + str(who['team'])}{span}")
        for component in plan["components"]:
            out.print(f"  {component['id']} ({component['type']}): {component['terms']}")
        table = Table("period", "last day", "lines", "amount", "closed", "by")
        for period in plan["periods"]:
            table.add_row(
                period["period_key"],
                str(period["last_day"]),
                str(period["lines"]),
                _amount(period["amount"]),
                "" if period["closed_at"] is None else f"{period['closed_at']:%Y-%m-%d %H:%M}",
                period["closed_by"] or "",
            )
        out.print(table)
    if not rows:
        err.print("no incentive plans in the configuration (`incentives: plans:`)")


PLAN_COLUMNS = (
    "id",
    "source",
    "name",
    "period",
    "currency",
    "starts",
    "ends",
    "participants",
    "components",
    "periods",
)


@incentives_app.command("payouts")
def payouts(
    plan: PlanOption = None,
    owner: Annotated[str | None, typer.Option(help="A rep's scope id, e.g. 'maven:Anna Snelling'.")] = None,
    team: Annotated[str | None, typer.Option(help="A team's scope id: its members' lines.")] = None,
    period: PeriodOption = None,
    component: Annotated[str | None, typer.Option(help="A component id of the plan.")] = None,
    kind: Annotated[
        Literal["payout", "adjustment"] | None, typer.Option(help="payout or adjustment.")
    ] = None,
    output: Output = "table",
    config: ConfigOption = None,
) -> None:
    """Payout lines per plan, period, rep and component (adjustments to closed periods too)."""
    from crm_perf_sync.incentives import repository as repo
    from crm_perf_sync.incentives.presented import LINE_COLUMNS, line_filter, line_row
    from crm_perf_sync.org import repository as org_repo

    def read(service: IncentiveService, session: Session) -> list[dict[str, Any]]:
        where = line_filter(
            service, session, plan=plan, owner=owner, team=team, period=period, component=component, kind=kind
        )
        names = org_repo.scope_names(session)
        rows: list[dict[str, Any]] = []
        after = None
        while True:
            found, after = repo.lines_page(session, where, after, 5000)
            rows += [line_row(line, names) for line in found]
            if after is None:
                return rows

    rows = _run(config, read)
    if emit(rows, LINE_COLUMNS, output):
        return
    out.print(_lines_table(rows, with_plan=plan is None))
    total = sum(row["amount"] for row in rows)
    currencies = sorted({row["currency"] for row in rows})
    if len(currencies) == 1:
        out.print(f"{len(rows)} lines, {_amount(total)} {currencies[0]}")
    if not rows:
        err.print("no payout lines: run `crm-perf-sync refresh` after a sync (the plans pay from the KPIs)")


def _lines_table(rows: list[dict[str, Any]], *, with_plan: bool = True) -> Table:
    headers = ["plan"] if with_plan else []
    headers += ["period", "rep", "component", "kind", "base", "quota", "attainment", "amount", "note"]
    table = Table(*headers)
    for row in rows:
        cells = [row["plan_id"]] if with_plan else []
        kind = row["kind"] if row["kind"] == "payout" else f"adjustment for {row['for_period_key']}"
        note = " ".join(
            part
            for part in (
                "capped" if row["capped"] else "",
                "frozen" if row["frozen"] else "",
                row["note"] or "",
            )
            if part
        )
        cells += [
            row["period_key"],
            str(row["owner_name"]),
            row["component_id"],
            kind,
            quantity(row["base"]),
            quantity(row["quota"]),
            number(row["attainment"], percent=True) if row["attainment"] is not None else "",
            _amount(row["amount"]),
            note,
        ]
        table.add_row(*cells)
    return table


@incentives_app.command("statement")
def statement(
    owner: Annotated[str, typer.Argument(help="The rep's scope id, e.g. 'maven:Darcel Schlecht'.")],
    plan: PlanOption = None,
    period: PeriodOption = None,
    output: Output = "table",
    config: ConfigOption = None,
) -> None:
    """A rep's statement: the lines of a period (default the latest), the total, the tier reached,
    what the next tier needs and, while the period runs, the payout at the current pace."""
    from crm_perf_sync.incentives import repository as repo
    from crm_perf_sync.incentives import statements
    from crm_perf_sync.incentives.presented import LINE_COLUMNS, statement_out, statement_plan
    from crm_perf_sync.kit.timeutil import utc_now
    from crm_perf_sync.org import repository as org_repo

    def read(service: IncentiveService, session: Session) -> dict[str, Any]:
        plan_id = statement_plan(session, owner, plan)
        found = statements.statement(service, session, plan_id, owner, period, utc_now())
        return statement_out(found, org_repo.scope_names(session), repo.closes(session, found.plan.id))

    body = _run(config, read)
    if output == "json":
        emit([body], (), "json")
        return
    if emit(body["lines"], LINE_COLUMNS, output):
        return
    state = f"closed {body['closed_at']:%Y-%m-%d} by {body['closed_by']}" if body["closed"] else "open"
    out.print(
        styled(
            (f"{body['owner_name']}", "bold"),
            f", {body['plan_name']} ({body['plan_id']}), {body['period_key']}: {state}",
        )
    )
    out.print(_lines_table(body["lines"], with_plan=False))
    out.print(styled(("total ", "bold"), f"{_amount(body['total'])} {body['currency']}"))
    for progress in body["progress"]:
        text = f"{progress['component_id']}: "
        text += "no quota" if progress["tier"] is None else f"tier {progress['tier']}"
        if progress["next_tier_needs"] is not None:
            text += f", tier {progress['next_tier']} needs {_amount(progress['next_tier_needs'])} more"
        if progress["projected_amount"] is not None:
            text += (
                f"; at the current pace ({progress['elapsed']:.0%} of the period passed) it pays "
                f"{_amount(progress['projected_amount'])}"
            )
        out.print(text)
    out.print(f"periods with lines: {', '.join(body['periods'])}")


@incentives_app.command("explain")
def explain(
    owner: Annotated[str, typer.Argument(help="The rep's scope id.")],
    plan: Annotated[str, typer.Option("--plan", help="A plan id.")],
    period: Annotated[str, typer.Option("--period", help="A period of the plan: its first day.")],
    component: Annotated[str, typer.Option("--component", help="A component id of the plan.")],
    output: TableOrJson = "table",
    config: ConfigOption = None,
) -> None:
    """One payout line and the records behind it: what each earned and in which tiers."""
    from crm_perf_sync.incentives import statements
    from crm_perf_sync.incentives.presented import explained_out
    from crm_perf_sync.org import repository as org_repo

    def read(service: IncentiveService, session: Session) -> dict[str, Any]:
        explained = statements.explain_line(service, session, plan, owner, period, component)
        return explained_out(explained, org_repo.scope_names(session), 0, len(explained["records"]))

    body = _run(config, read)
    if output == "json":
        body.pop("next_after")
        emit([body], (), "json")
        return
    out.print(_lines_table(body["lines"], with_plan=False))
    for line in body["lines"]:
        for band in line["detail"].get("bands", []):
            upto = "" if band["to"] is None else f" to {quantity(float(band['to']))}"
            out.print(
                f"  tier {band['tier']}: from {quantity(float(band['from']))}{upto} at {band['rate']}: "
                f"{quantity(float(band['portion']))} earned {band['amount']}"
            )
        if line["detail"].get("uncapped") is not None and line["capped"]:
            out.print(f"  before the cap: {line['detail']['uncapped']}")
        for change in line["detail"].get("changes", []):
            out.print(
                f"  {change['change']}: {change['external_id']} (was {change['was']}, now {change['now']})"
            )
    table = Table("record", "connection", "contribution", "earned", "tiers")
    for record in body["records"]:
        tiers = ", ".join(
            f"{t.get('tier', '-')}: {quantity(t['portion'])} at {t['rate']:g}"
            for t in record.get("tiers", [])
        )
        table.add_row(
            str(record["external_id"]),
            str(record["connection_id"]),
            quantity(record["contribution"]),
            _amount(record.get("earned")),
            tiers,
        )
    out.print(table)
    earned = "" if body["earned_total"] is None else f", earning {_amount(body['earned_total'])}"
    out.print(f"{body['record_count']} records adding up to {quantity(body['contribution_total'])}{earned}")


@incentives_app.command("close")
def close(
    plan: Annotated[str, typer.Argument(help="A plan id.")],
    period: Annotated[str, typer.Argument(help="The period's first day, e.g. 2017-01-01.")],
    by: Annotated[
        str | None, typer.Option("--by", help="Who closes it (default: the user running the command).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Close a plan's period: its lines are frozen; later CRM changes to it become adjustments.
    Refused while the KPIs are behind the store (run `refresh` first), for a period not yet over,
    already closed, or with an earlier one still open."""
    import getpass

    from crm_perf_sync.jobs.incentives import close_when_current
    from crm_perf_sync.kit.timeutil import utc_now

    who = by if by is not None else f"{getpass.getuser()} (cli)"
    done = _run(
        config, lambda service, session: close_when_current(service, session, plan, period, who, utc_now())
    )
    out.print(
        f"closed {done.plan_id} {done.period_key}: {done.lines} lines frozen, {_amount(done.amount)} "
        f"in all, by {done.closed_by}"
    )
