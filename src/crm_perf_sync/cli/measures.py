"""Measures from the command line: list the entries, enter or remove one, upload a CSV file, and
read the history of changes."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from rich.table import Table

from crm_perf_sync.cli._shared import ConfigOption, Output, ScopeKind, _fail, _guard, opened_runtime
from crm_perf_sync.cli.render import emit, err, out, styled

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session

    from crm_perf_sync.measures.service import Catalog
    from crm_perf_sync.runtime import Runtime

T = TypeVar("T")
measures_app = typer.Typer(
    help="Numbers from outside the CRM (survey scores, review ratings, training hours).", no_args_is_help=True
)

MeasureGrain = Literal["week", "month", "quarter", "year"]
#: The columns of `list --format csv`, the same as the API's: the file uploads back as it is.
ENTRY_COLUMNS = (
    "measure_id",
    "measure_name",
    "scope",
    "scope_id",
    "scope_name",
    "grain",
    "period_key",
    "period_start",
    "period_end",
    "value",
    "source",
    "entered_by",
    "entered_at",
)
CHANGE_COLUMNS = (
    "id",
    "measure_id",
    "scope",
    "scope_id",
    "grain",
    "period_key",
    "action",
    "old_value",
    "new_value",
    "source",
    "changed_by",
    "changed_at",
)
PAGE = 1000

MeasureOption = Annotated[str | None, typer.Option("--measure", help="A measure id, e.g. bars_rating.")]
GrainOption = Annotated[MeasureGrain | None, typer.Option(help="week, month, quarter or year.")]
ScopeOption = Annotated[ScopeKind | None, typer.Option(help="company, team or owner.")]
ScopeIdOption = Annotated[str | None, typer.Option("--scope-id", help="One team or owner.")]
OwnerOption = Annotated[str | None, typer.Option(help="A rep's scope id: only their entries.")]
TeamOption = Annotated[str | None, typer.Option(help="A team's scope id: its entries and its reps'.")]
PeriodOption = Annotated[
    str | None, typer.Option(help="Any date in the period (2026-04-01, 2026-04 or 2026); needs --grain.")
]
ByOption = Annotated[
    str | None,
    typer.Option("--by", help="Who enters the values, for the history (default: cli and your login)."),
]


def _who(by: str | None) -> str:
    if by is not None and by.strip():
        return by.strip()
    try:
        return f"cli ({getpass.getuser()})"
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "cli"


def _catalog(runtime: Runtime) -> Catalog:
    from crm_perf_sync.measures.service import Catalog

    return Catalog(runtime.config.measures, runtime.config.app.business.fiscal_year_start_month)


def _in_session(runtime: Runtime, action: Callable[[Session], T]) -> T:
    from crm_perf_sync.kit.db import session_scope

    def run() -> T:
        with session_scope(runtime.session_factory) as session:
            return action(session)

    return _guard(run)


def _day(period: str) -> Any:
    from crm_perf_sync.kit.timeutil import first_day

    try:
        return first_day(period)
    except ValueError:
        raise _fail(f"--period {period!r} is not a date (2026-04-01, 2026-04 or 2026)", 2) from None


def _filter(
    catalog: Catalog,
    measure: str | None,
    grain: MeasureGrain | None,
    scope: str | None,
    scope_id: str | None,
    owner: str | None,
    team: str | None,
    period: str | None,
) -> Any:
    from crm_perf_sync.measures.repository import EntryFilter
    from crm_perf_sync.measures.schemas import period_of

    key = None
    if period is not None:
        if grain is None:
            raise _fail("--period needs --grain: the same day starts a month, a quarter and a year", 2)
        day, chosen = _day(period), grain
        key = _guard(lambda: period_of(day, chosen, catalog.fiscal_start_month)[0])
    return EntryFilter(
        measure_id=measure,
        scope=scope,
        scope_id=scope_id,
        owner=owner,
        team=team,
        grain=grain,
        period_key=key,
    )


def _all(
    fetch: Callable[[Session, Any, int], tuple[list[dict[str, Any]], Any]], session: Session
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    after = None
    while True:
        page, after = fetch(session, after, PAGE)
        rows += page
        if after is None:
            return rows


@measures_app.command("list")
def list_entries(
    measure: MeasureOption = None,
    grain: GrainOption = None,
    scope: ScopeOption = None,
    scope_id: ScopeIdOption = None,
    owner: OwnerOption = None,
    team: TeamOption = None,
    period: PeriodOption = None,
    output: Output = "table",
    config: ConfigOption = None,
) -> None:
    """List the measure entries (`--format csv` writes a file `measures upload` reads back)."""
    from crm_perf_sync.measures import repository as repo
    from crm_perf_sync.measures.service import presented
    from crm_perf_sync.org import repository as org_repo

    with opened_runtime(config) as runtime:
        catalog = _catalog(runtime)
        where = _filter(catalog, measure, grain, scope, scope_id, owner, team, period)

        def read(session: Session) -> list[dict[str, Any]]:
            rows = _all(lambda s, after, limit: repo.entries_page(s, where, after, limit), session)
            return presented(rows, catalog, org_repo.scope_names(session) if rows else {})

        rows = _in_session(runtime, read)
    if emit(rows, ENTRY_COLUMNS, output):
        return
    table = Table("measure", "scope", "grain", "period", "value", "source", "entered by", "entered")
    for r in rows:
        table.add_row(
            str(r["measure_id"]),
            str(r["scope_name"]) if r["scope"] != "company" else "company",
            str(r["grain"]),
            str(r["period_key"]),
            str(r["value"]),
            str(r["source"]),
            str(r["entered_by"]),
            f"{r['entered_at']:%Y-%m-%d %H:%M}",
        )
    out.print(table)


@measures_app.command("set")
def set_value(
    measure: Annotated[str, typer.Argument(help="A measure id, e.g. customer_satisfaction.")],
    value: Annotated[str, typer.Argument(help="The value, e.g. 4.5 (on the measure's scale).")],
    grain: Annotated[MeasureGrain, typer.Option(help="week, month, quarter or year.")],
    period: Annotated[str, typer.Option(help="Any date in the period: 2026-04-01, 2026-04 or 2026.")],
    scope: Annotated[ScopeKind, typer.Option(help="company, team or owner.")] = "company",
    scope_id: Annotated[
        str, typer.Option("--scope-id", help="The team or owner (company for the company).")
    ] = ("company"),
    by: ByOption = None,
    config: ConfigOption = None,
) -> None:
    """Enter one value (creating the entry or changing it; the old value stays in the history)."""
    from decimal import Decimal, InvalidOperation

    from crm_perf_sync.kit.timeutil import utc_now
    from crm_perf_sync.measures import service

    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        raise _fail(f"value {value!r} is not a number (decimals with a dot: 4.5)", 2) from None
    given = service.Given(measure, scope, scope_id, grain, _day(period), number)
    with opened_runtime(config) as runtime:
        catalog = _catalog(runtime)
        row, outcome = _in_session(
            runtime,
            lambda session: service.set_entry(
                session, catalog, given, source="cli", by=_who(by), now=utc_now()
            ),
        )
    out.print(f"{outcome}: {measure} {scope} {scope_id} {grain} {row.period_key} = {row.value}")


@measures_app.command("delete")
def delete_value(
    measure: Annotated[str, typer.Argument(help="A measure id.")],
    grain: Annotated[MeasureGrain, typer.Option(help="week, month, quarter or year.")],
    period: Annotated[str, typer.Option(help="Any date in the period: 2026-04-01, 2026-04 or 2026.")],
    scope: Annotated[ScopeKind, typer.Option(help="company, team or owner.")] = "company",
    scope_id: Annotated[str, typer.Option("--scope-id", help="The team or owner.")] = "company",
    by: ByOption = None,
    config: ConfigOption = None,
) -> None:
    """Remove one entry (its history stays, with the removal)."""
    from crm_perf_sync.kit.timeutil import utc_now
    from crm_perf_sync.measures import service

    given = service.Named(measure, scope, scope_id, grain, _day(period))
    with opened_runtime(config) as runtime:
        catalog = _catalog(runtime)
        _in_session(
            runtime,
            lambda session: service.remove_entry(
                session, catalog, given, source="cli", by=_who(by), now=utc_now()
            ),
        )
    out.print(f"removed: {measure} {scope} {scope_id} {grain} {period}")


@measures_app.command("upload")
def upload_file(
    path: Annotated[
        Path, typer.Argument(help="A CSV file (UTF-8) with a header row.", exists=True, dir_okay=False)
    ],
    by: ByOption = None,
    config: ConfigOption = None,
) -> None:
    """Enter every row of a CSV file, or none if any row is wrong (each bad row and field is listed).

    Columns: measure_id, scope, scope_id, grain, period_key (any date in the period) and value;
    the other columns `measures list --format csv` writes are read past.
    """
    from crm_perf_sync.kit.errors import InvalidRows
    from crm_perf_sync.kit.timeutil import utc_now
    from crm_perf_sync.measures import service

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _fail(f"{path} is not UTF-8 text: save it as CSV UTF-8", 2) from None
    with opened_runtime(config) as runtime:
        catalog = _catalog(runtime)

        def run(session: Session) -> service.UploadOutcome:
            try:
                return service.upload(session, catalog, text, source="csv", by=_who(by), now=utc_now())
            except InvalidRows as exc:  # every bad row and field, not only the first few
                for error in exc.errors:
                    err.print(f"{path}: {error['where']}: {error['message']}", soft_wrap=True)
                count = f"{len(exc.errors)} problem{'s' if len(exc.errors) != 1 else ''}"
                raise _fail(f"{count} in {path}: nothing was saved") from None

        done = _in_session(runtime, run)
    counts = f"{done.created} created, {done.updated} updated, {done.unchanged} unchanged"
    out.print(f"{path}: {done.rows} rows: {counts}")


@measures_app.command("history")
def history(
    measure: MeasureOption = None,
    grain: GrainOption = None,
    scope: ScopeOption = None,
    scope_id: ScopeIdOption = None,
    owner: OwnerOption = None,
    team: TeamOption = None,
    period: PeriodOption = None,
    output: Output = "table",
    config: ConfigOption = None,
) -> None:
    """Every change to the entries, newest first: old and new value, who, when and how."""
    from crm_perf_sync.measures import repository as repo

    with opened_runtime(config) as runtime:
        where = _filter(_catalog(runtime), measure, grain, scope, scope_id, owner, team, period)
        rows = _in_session(
            runtime,
            lambda session: _all(lambda s, after, limit: repo.history_page(s, where, after, limit), session),
        )
    if emit(rows, CHANGE_COLUMNS, output):
        return
    table = Table("when", "measure", "scope", "grain", "period", "change", "by", "source")
    for r in rows:
        old = "" if r["old_value"] is None else str(r["old_value"])
        new = "(removed)" if r["new_value"] is None else str(r["new_value"])
        table.add_row(
            f"{r['changed_at']:%Y-%m-%d %H:%M}",
            str(r["measure_id"]),
            str(r["scope_id"]),
            str(r["grain"]),
            str(r["period_key"]),
            f"{old} → {new}" if old else new,
            str(r["changed_by"]),
            str(r["source"]),
        )
    out.print(table)
    if not rows:
        err.print(styled(("no changes", "yellow"), " match"))
