"""Reading the KPIs: materialised values, how one value was computed, and scorecards."""

from __future__ import annotations

from typing import Annotated, Literal

import typer
from rich.table import Table

from crm_perf_sync.cli._shared import (
    ConfigOption,
    Output,
    ScopeKind,
    TableOrJson,
    _fail,
    _guard,
    opened_runtime,
)
from crm_perf_sync.cli.render import (
    cell_value,
    emit,
    err,
    json_text,
    number,
    out,
    quantity,
    styled,
)
from crm_perf_sync.kpi.schemas import Grain

app = typer.Typer()


VALUE_COLUMNS = (
    "kpi_id",
    "grain",
    "period_key",
    "period_start",
    "period_end",
    "scope",
    "scope_id",
    "scope_name",
    "currency",
    "dimension",
    "dimension_value",
    "value",
    "numerator",
    "denominator",
    "sample_count",
    "low_sample",
    "target",
    "attainment",
    "gap",
    "pace",
    "computed_at",
)


@app.command()
def values(
    kpi_id: Annotated[str, typer.Argument(help="A KPI id, e.g. win_rate.")],
    grain: Annotated[Grain | None, typer.Option(help="week, month, quarter, year or all.")] = None,
    scope: Annotated[ScopeKind | None, typer.Option(help="company, team or owner.")] = None,
    scope_id: Annotated[str | None, typer.Option("--scope-id", help="One team or owner.")] = None,
    period: Annotated[str | None, typer.Option(help="A period key: its start date, e.g. 2017-01-01.")] = None,
    by: Annotated[
        str | None, typer.Option("--by", help="A breakdown dimension, e.g. lead_source (stage for a funnel).")
    ] = None,
    output: Output = "table",
    config: ConfigOption = None,
) -> None:
    """Print a KPI's materialised values (run `refresh` first); `*` marks a value below min sample."""
    from crm_perf_sync.kit.db import session_scope
    from crm_perf_sync.kit.timeutil import utc_now
    from crm_perf_sync.kpi import repository as kpi_repo
    from crm_perf_sync.kpi.values import presented
    from crm_perf_sync.org import repository as org_repo

    with opened_runtime(config) as runtime:
        kpi = runtime.config.kpis.get(kpi_id)
        if kpi is None:
            raise _fail(f"no KPI {kpi_id!r} (defined: {', '.join(sorted(runtime.config.kpis))})")
        zone = runtime.config.app.business.timezone
        now = utc_now()
        with session_scope(runtime.session_factory) as session:
            names = org_repo.scope_names(session)
            found = kpi_repo.values(
                session,
                kpi_id,
                grain=grain,
                scope=scope,
                period_key=period,
                scope_id=scope_id,
                dimension=by or "",
            )
            rows = [
                {column: row[column] for column in VALUE_COLUMNS}
                for row in (presented(v, names, now, zone) for v in found)
            ]
    if emit(rows, VALUE_COLUMNS, output):
        return
    percent = kpi.unit == "percent"
    with_targets = any(row["target"] is not None for row in rows)
    headers = ["grain", "period", "scope", "name", "currency"]
    if by:
        headers.append(by)
    headers += ["value", "numerator", "denominator", "n"]
    if with_targets:
        headers += ["target", "attainment", "pace"]
    table = Table(*headers)
    for row in rows:
        cells = [row["grain"], row["period_key"], row["scope"], str(row["scope_name"]), row["currency"]]
        if by:
            cells.append(row["dimension_value"] or "(none)")
        cells += [
            number(row["value"], bool(row["low_sample"]), percent),
            quantity(row["numerator"]),
            quantity(row["denominator"]),
            str(row["sample_count"]),
        ]
        if with_targets:
            cells += [
                number(row["target"], percent=percent),
                number(row["attainment"], percent=True),
                number(row["pace"], percent=True),
            ]
        table.add_row(*cells)
    out.print(table)
    if not rows:
        err.print(f"no values for {kpi_id}: run `crm-perf-sync refresh` after a sync")


@app.command()
def explain(
    kpi_id: Annotated[str, typer.Argument(help="A KPI id, e.g. win_rate.")],
    grain: Annotated[Grain, typer.Option(help="week, month, quarter, year or all.")] = "all",
    period: Annotated[str, typer.Option(help="The period key (its start date), or all.")] = "all",
    scope: Annotated[ScopeKind, typer.Option(help="company, team or owner.")] = "company",
    scope_id: Annotated[str, typer.Option("--scope-id", help="The team or owner id.")] = "company",
    currency: Annotated[str, typer.Option(help="The currency of an amount KPI's value.")] = "",
    by: Annotated[str, typer.Option("--by", help="The breakdown dimension of the value.")] = "",
    value_of: Annotated[str, typer.Option("--value", help="The breakdown value (with --by).")] = "",
    role: Annotated[
        str | None, typer.Option("--part", help="Only this side's records: numerator, denominator.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Records per page (at most 500).")] = 50,
    after: Annotated[int | None, typer.Option(help="The next page: the id printed as next.")] = None,
    output: TableOrJson = "table",
    config: ConfigOption = None,
) -> None:
    """Show how one KPI value was computed: formula, filters, and the records it came from."""
    from dataclasses import asdict

    from crm_perf_sync.kpi.explain import ValueRef
    from crm_perf_sync.kpi.explain import explain as explain_value
    from crm_perf_sync.kpi.service import KpiService
    from crm_perf_sync.org import repository as org_repo

    if (scope == "company") != (scope_id == "company"):
        raise _fail("--scope-id names the team or owner (it is 'company' exactly for --scope company)", 2)
    with opened_runtime(config) as runtime:
        service = KpiService(runtime.config.kpi_config())
        kpi = _guard(lambda: service.kpi(kpi_id))
        ref = ValueRef(kpi_id, grain, period, scope, scope_id, currency, by, value_of)
        with runtime.session_factory() as session:
            calendar = service.calendar(session)
            membership = org_repo.load_membership(session)
            result = _guard(
                lambda: explain_value(
                    session, kpi, ref, calendar, membership, role=role, after=after, limit=limit
                )
            )
    if output == "json":
        emit([asdict(result)], (), "json")
        return
    out.print(
        styled(
            (result.name, "bold"),
            f" ({result.kpi_id}, {result.type}, {result.unit}, {result.direction} is better)",
        )
    )
    out.print(f"formula: {result.formula}")
    if result.value is None:
        err.print("no stored value for this period and scope (nothing counted, or not refreshed yet)")
    else:
        v = result.value
        out.print(
            f"value {number(v['value'])} = numerator {v['numerator']:,.2f}"
            + ("" if v["denominator"] is None else f" / denominator {v['denominator']:,.2f}")
            + f"; sample {v['sample_count']}"
            + (" (below the minimum sample)" if v["low_sample"] else "")
            + (
                ""
                if v["target"] is None
                else f"; target {number(v['target'])}, attainment {number(v['attainment'], percent=True)}"
            )
        )
    for used in result.inputs:
        out.print(
            f"  {' and '.join(used['used_as'])} = {number(used['value'])}"
            + ("" if used["target"] is None else f" (target {number(used['target'])})")
            + ("  [not stored for this period and scope]" if used["currency"] is None else "")
            + f"  -> crm-perf-sync explain {used['kpi_id']} --grain {grain} --period {period}"
            + f" --scope {scope} --scope-id '{scope_id}'"
        )
    for part in result.parts:
        out.print(
            styled(
                "\n",
                (part.role, "bold"),
                f": {part.entity} placed by {part.period_field}; each adds {part.contributes}",
            )
        )
        out.print("  where " + " and ".join(part.filters))
        if not part.records:
            continue
        wanted = [
            "external_id",
            "owner_external_id",
            "owners",
            part.period_field,
            "stage",
            "status",
            "type",
            "account_external_id",
            "account_first_won",
            "amount",
            "currency",
            "entered_by",
        ]
        columns = [c for c in dict.fromkeys(wanted) if c in part.records[0]]
        table = Table(*columns, "adds")
        for record in part.records:
            table.add_row(*(str(cell_value(record[c])) for c in columns), number(record["contribution"]))
        out.print(table)
        if part.next_after is not None:
            out.print(f"  more: --after {part.next_after}")


SCORE_COLUMNS = (
    "scorecard_id",
    "grain",
    "period_key",
    "period_start",
    "period_end",
    "scope_id",
    "owner_name",
    "team_id",
    "team_name",
    "score",
    "grade",
    "rank",
    "team_rank",
    "dropped_components",
    "components",
    "perspectives",
    "computed_at",
)


@app.command()
def scores(
    scorecard_id: Annotated[str, typer.Argument(help="A scorecard id from the configuration.")],
    grain: Annotated[
        Literal["week", "month", "quarter", "year"] | None, typer.Option(help="week, month, quarter or year.")
    ] = None,
    period: Annotated[
        str | None,
        typer.Option(help="A period key (its start date) or all; default the latest (all with --owner)."),
    ] = None,
    owner: Annotated[str | None, typer.Option(help="One rep's scope id (connection:owner id).")] = None,
    output: Output = "table",
    config: ConfigOption = None,
) -> None:
    """Print a scorecard's ranked reps per period; with --owner, each component's breakdown."""
    from crm_perf_sync.kit.db import session_scope
    from crm_perf_sync.kpi import scores_repository as scores_repo
    from crm_perf_sync.kpi.service import KpiService
    from crm_perf_sync.org import repository as org_repo

    with opened_runtime(config) as runtime:
        card = _guard(lambda: KpiService(runtime.config.kpi_config()).scorecard(scorecard_id))
        with session_scope(runtime.session_factory) as session:
            names = org_repo.scope_names(session)
            rows = []
            key = None if period == "all" else period
            for s in scores_repo.scores(session, card.id, grain=grain, period_key=key, scope_id=owner):
                row = {column: getattr(s, column, None) for column in SCORE_COLUMNS}
                row["owner_name"] = names.get(("owner", s.scope_id), s.scope_id)
                row["team_name"] = names.get(("team", s.team_id), s.team_id) if s.team_id else ""
                rows.append(row)
    if period is None and owner is None:
        latest: dict[str, str] = {}
        for row in rows:
            grain_of, key_of = str(row["grain"]), str(row["period_key"])
            latest[grain_of] = max(latest.get(grain_of, ""), key_of)
        rows = [row for row in rows if row["period_key"] == latest[str(row["grain"])]]
    if output == "csv":
        for row in rows:
            row["components"] = json_text(row["components"])
            row["perspectives"] = json_text(row["perspectives"] or [])
    if emit(rows, SCORE_COLUMNS, output):
        return
    table = Table("grain", "period", "rank", "rep", "team", "team rank", "score", "grade", "dropped")
    for row in rows:
        table.add_row(
            row["grain"],
            row["period_key"],
            str(row["rank"] or "-"),
            str(row["owner_name"]),
            str(row["team_name"] or ""),
            str(row["team_rank"] or "-"),
            number(row["score"]),
            row["grade"] or "-",
            str(row["dropped_components"]),
        )
    out.print(table)
    if owner is not None:
        for row in rows:
            detail = Table(
                "component", "weight", "applied", "value", "target", "normalised", "dropped because"
            )
            for c in row["components"] or []:
                detail.add_row(
                    c["kpi_id"],
                    f"{c['weight']:.2f}",
                    f"{c['applied_weight']:.2f}",
                    number(c["value"]),
                    number(c["target"]),
                    number(c["normalised"]),
                    c["dropped"] or "",
                )
            out.print(f"\n{row['period_key']} ({row['grain']}): score {number(row['score'])}")
            if row["perspectives"]:
                views = Table(
                    "perspective", "weight", "applied", "sub-score", "components", "dropped because"
                )
                for p in row["perspectives"]:
                    views.add_row(
                        p["name"],
                        f"{p['weight']:.2f}",
                        f"{p['applied_weight']:.2f}",
                        number(p["score"]),
                        ", ".join(p["components"]),
                        p["dropped"] or "",
                    )
                out.print(views)
            out.print(detail)
            out.print(
                f"  each component's deals: crm-perf-sync explain KPI --grain {row['grain']} "
                f"--period {row['period_key']} --scope owner --scope-id '{row['scope_id']}'"
            )
    if not rows:
        err.print(f"no scores for {scorecard_id}: run `crm-perf-sync refresh` after a sync")
