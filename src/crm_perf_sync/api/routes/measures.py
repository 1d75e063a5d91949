"""Measures: numbers from outside the CRM, entered one at a time or uploaded as CSV (editor or
admin keys), listed and audited (any key)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from crm_perf_sync.api import listing
from crm_perf_sync.api.deps import ContextDep, Editor, ListerDep, Reader, SessionDep
from crm_perf_sync.api.listing import Version, json_response
from crm_perf_sync.api.params import ScopeParam
from crm_perf_sync.api.problems import collection, documented
from crm_perf_sync.api.schemas import (
    Day,
    MeasureChangeOut,
    MeasureDefinitionOut,
    MeasureOut,
    MeasureValueIn,
    Page,
    UploadOut,
    columns,
)
from crm_perf_sync.kit.errors import AppError, InvalidInput
from crm_perf_sync.kit.timeutil import first_day, utc_now
from crm_perf_sync.measures import repository as repo
from crm_perf_sync.measures import service as measures
from crm_perf_sync.measures.schemas import MeasureDefinition, MeasureGrain, period_of
from crm_perf_sync.models import MeasureEntry
from crm_perf_sync.org import repository as org_repo

router = APIRouter(tags=["measures"])

MeasureGrainParam = MeasureGrain
PERIOD_HELP = (
    "A period: any date in it (2026-04-01, 2026-04 or 2026), read at `grain`; entries are kept "
    "under the period's first day (fiscal quarters and years)."
)
CSV_TYPES = ("text/csv", "application/csv", "text/plain")


class UnsupportedMediaType(AppError):
    status = 415
    code = "unsupported-media-type"


def _definition_out(definition: MeasureDefinition) -> dict[str, Any]:
    scale = definition.scale
    return {
        "id": definition.id,
        "name": definition.name,
        "description": definition.description,
        "unit": definition.unit,
        "scale": {
            "min": None if scale.min is None else float(scale.min),
            "max": None if scale.max is None else float(scale.max),
            "step": None if scale.step is None else float(scale.step),
        },
        "scopes": list(definition.scopes),
        "grains": list(definition.grains),
        "aggregation": definition.aggregation,
        "direction": definition.direction,
        "i18n": {locale: t.model_dump(mode="json") for locale, t in definition.i18n.items()},
        "name_zh": definition.display("zh")[0],
    }


@router.get(
    "/measures/definitions",
    summary="Every measure that may be entered: its scale, scopes and grains",
    response_model=Page[MeasureDefinitionOut],
    responses=collection(400, 401, 422),
)
def list_definitions(ctx: ContextDep, _key: Reader, page: ListerDep) -> Response:
    catalog = ctx.measures()
    rows = [_definition_out(d) for d in sorted(catalog.definitions.values(), key=lambda d: d.id)]
    return page("measure-definitions", MeasureDefinitionOut, fetch=listing.in_memory(rows, "id"))


def _period(period: str | None) -> date | None:
    if period is None:
        return None
    try:
        return first_day(period)
    except ValueError:
        raise InvalidInput(f"period {period!r} is not a date (YYYY-MM-DD, YYYY-MM or YYYY)") from None


def _period_key(period: str | None, grain: MeasureGrain | None, catalog: measures.Catalog) -> str | None:
    """A period parameter as the key entries are kept under."""
    day = _period(period)
    if day is None:
        return None
    if grain is None:
        raise InvalidInput("period needs grain: the same day starts a month, a quarter and a year")
    try:
        return period_of(day, grain, catalog.fiscal_start_month)[0]
    except ValueError as exc:
        raise InvalidInput(f"period: {exc}") from None


def _as_numbers(row: dict[str, Any], *names: str) -> dict[str, Any]:
    """Exact decimals as JSON numbers (values keep at most 15 digits: a float holds them exactly)."""
    return {k: (float(v) if k in names and v is not None else v) for k, v in row.items()}


def _version(session: Any) -> Version:
    return Version(repo.changed_at(session))


@router.get(
    "/measures",
    summary="Measure entries: one value per measure, scope and period",
    description=(
        "`team` gives the team's own entries and those of every rep who counts in it. `from` and "
        "`to` are days, both included: the periods that start on or after `from` and end on or "
        "before `to`. Carries an ETag that changes with any entry."
    ),
    response_model=Page[MeasureOut],
    responses=collection(400, 401, 409, 422, cached=True),
)
def list_entries(
    session: SessionDep,
    ctx: ContextDep,
    _key: Reader,
    page: ListerDep,
    measure: Annotated[str | None, Query(max_length=63, description="A measure id")] = None,
    grain: Annotated[MeasureGrainParam | None, Query()] = None,
    period: Annotated[str | None, Query(description=PERIOD_HELP, max_length=20)] = None,
    period_from: Annotated[
        Day | None, Query(alias="from", description="The first day: periods that start on this day or later")
    ] = None,
    period_to: Annotated[
        Day | None,
        Query(alias="to", description="The last day: periods whose last day is this day or earlier"),
    ] = None,
    scope: Annotated[ScopeParam | None, Query()] = None,
    scope_id: Annotated[str | None, Query(max_length=600)] = None,
    team: Annotated[str | None, Query(max_length=600, description="A team's scope id")] = None,
    owner: Annotated[str | None, Query(max_length=600, description="A rep's scope id")] = None,
    source: Annotated[Literal["api", "csv", "cli", "config"] | None, Query()] = None,
) -> Response:
    if period_from is not None and period_to is not None and period_from > period_to:
        raise InvalidInput(f"from ({period_from}) is after to ({period_to}): both days are included")
    catalog = ctx.measures()
    key = _period_key(period, grain, catalog)
    where = repo.EntryFilter(
        measure_id=measure,
        scope=scope,
        scope_id=scope_id,
        owner=owner,
        team=team,
        grain=grain,
        period_key=key,
        period_from=period_from,
        period_to=period_to,
        source=source,
    )

    def fetch(s: Any, after: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        rows, next_key = repo.entries_page(s, where, after, limit)
        shown = measures.presented(rows, catalog, org_repo.scope_names(s) if rows else {})
        return [_as_numbers({k: r[k] for k in columns(MeasureOut)}, "value") for r in shown], next_key

    return page("measures", MeasureOut, fetch=fetch, version=_version(session))


async def entry_given(
    measure: Annotated[str, Query(min_length=1, max_length=63, description="A measure id")],
    grain: Annotated[MeasureGrainParam, Query()],
    period: Annotated[str, Query(description=PERIOD_HELP, min_length=4, max_length=20)],
    scope: Annotated[ScopeParam, Query()] = "company",
    scope_id: Annotated[str, Query(min_length=1, max_length=600)] = "company",
) -> measures.Named:
    """The entry the query names (the value is the body's, where there is one)."""
    day = _period(period)
    assert day is not None
    return measures.Named(measure, scope, scope_id, grain, day)


EntryParams = Annotated[measures.Named, Depends(entry_given)]


def _entry_out(session: Any, catalog: measures.Catalog, row: MeasureEntry) -> dict[str, Any]:
    (shown,) = measures.presented([repo.entry_row(row)], catalog, org_repo.scope_names(session))
    return _as_numbers({k: shown[k] for k in columns(MeasureOut)}, "value")


@router.get(
    "/measures/entry",
    summary="One entry, named by measure, scope, grain and period",
    response_model=MeasureOut,
    responses=documented(401, 404, 422),
)
def get_entry(given: EntryParams, session: SessionDep, ctx: ContextDep, _key: Reader) -> Response:
    catalog = ctx.measures()
    return json_response(_entry_out(session, catalog, measures.find(session, catalog, given)))


@router.put(
    "/measures/entry",
    summary="Enter a value (editor or admin)",
    description=(
        "Creates the entry (201) or changes its value (200); the old value is kept in "
        "`/measures/history`. The value must lie on the measure's scale, for a scope and grain "
        "the measure allows, and a team or rep the store knows. Entries declared in the "
        "configuration change only there (409)."
    ),
    response_model=MeasureOut,
    responses=documented(400, 401, 403, 404, 409, 413, 422),
)
def put_entry(
    given: EntryParams,
    body: MeasureValueIn,
    session: SessionDep,
    ctx: ContextDep,
    key: Editor,
) -> Response:
    catalog = ctx.measures()
    entry = measures.Given(
        given.measure_id, given.scope, given.scope_id, given.grain, given.period, body.value
    )
    row, outcome = measures.set_entry(session, catalog, entry, source="api", by=key.name, now=utc_now())
    return json_response(_entry_out(session, catalog, row), status=201 if outcome == "created" else 200)


@router.delete(
    "/measures/entry",
    status_code=204,
    summary="Remove an entry (editor or admin)",
    description="Its history stays, with the removal and the value it had.",
    responses=documented(401, 403, 404, 409, 422),
)
def delete_entry(given: EntryParams, session: SessionDep, ctx: ContextDep, key: Editor) -> Response:
    measures.remove_entry(session, ctx.measures(), given, source="api", by=key.name, now=utc_now())
    return Response(status_code=204)


async def csv_text(request: Request) -> str:
    """The request body as CSV text (UTF-8, with or without the BOM spreadsheets write)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in CSV_TYPES:
        raise UnsupportedMediaType(f"send the file as text/csv, not {media or 'no content type'}")
    body = await request.body()
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the file is not UTF-8 text: save it as CSV UTF-8") from None


@router.post(
    "/measures/upload",
    summary="Enter many values from a CSV file, all or none (editor or admin)",
    description=(
        "A header row and one row per entry with the columns `measure_id`, `scope`, `scope_id`, "
        "`grain`, `period_key` (any date in the period) and `value`; the other columns of this "
        "API's own CSV are read past, so a downloaded file uploads as it is. Every row is "
        "checked before any is written: one bad row writes nothing, and the problem's `errors` "
        "name each bad `row` (the header is row 1) and `field`."
    ),
    response_model=UploadOut,
    responses=documented(400, 401, 403, 409, 413, 415, 422),
    openapi_extra={
        "requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}
    },
)
def upload(
    text: Annotated[str, Depends(csv_text)], session: SessionDep, ctx: ContextDep, key: Editor
) -> Response:
    done = measures.upload(session, ctx.measures(), text, source="csv", by=key.name, now=utc_now())
    return json_response(
        {"rows": done.rows, "created": done.created, "updated": done.updated, "unchanged": done.unchanged}
    )


@router.get(
    "/measures/history",
    summary="Every change to the entries, newest first: old and new value, who, when, how",
    response_model=Page[MeasureChangeOut],
    responses=collection(400, 401, 409, 422, cached=True),
)
def history(
    session: SessionDep,
    ctx: ContextDep,
    _key: Reader,
    page: ListerDep,
    measure: Annotated[str | None, Query(max_length=63, description="A measure id")] = None,
    grain: Annotated[MeasureGrainParam | None, Query()] = None,
    period: Annotated[str | None, Query(description=PERIOD_HELP, max_length=20)] = None,
    scope: Annotated[ScopeParam | None, Query()] = None,
    scope_id: Annotated[str | None, Query(max_length=600)] = None,
    team: Annotated[str | None, Query(max_length=600, description="A team's scope id")] = None,
    owner: Annotated[str | None, Query(max_length=600, description="A rep's scope id")] = None,
) -> Response:
    key = _period_key(period, grain, ctx.measures())
    where = repo.EntryFilter(
        measure_id=measure,
        scope=scope,
        scope_id=scope_id,
        owner=owner,
        team=team,
        grain=grain,
        period_key=key,
    )

    def fetch(s: Any, after: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        rows, next_key = repo.history_page(s, where, after, limit)
        return [_as_numbers(r, "old_value", "new_value") for r in rows], next_key

    return page("measure-history", MeasureChangeOut, fetch=fetch, version=_version(session))
