"""The API's response and request models: flat, snake_case, stable (BI tools bind to them).

Collection endpoints answer ``{"data": [<row>...], "next": <url or null>}`` (see
:mod:`crm_perf_sync.api.listing`); the row models below are also the CSV columns, in order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
    model_validator,
)

from crm_perf_sync.kit.timeutil import ensure_utc
from crm_perf_sync.kpi.schemas import short_period

Row = TypeVar("Row", bound=BaseModel)


class Page(BaseModel, Generic[Row]):
    data: list[Row]
    next: str | None = Field(description="The URL of the next page; null on the last one.")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class InputModel(BaseModel):
    """A request body: no text in it may hold a NUL character (no store keeps one)."""

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if _has_nul(value):
            raise ValueError("text may not contain a NUL character (\\u0000)")
        return value


_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}.*)?")


def _iso_text(pattern: re.Pattern[str], example: str) -> Callable[[Any], Any]:
    """Only ISO 8601 text: pydantic would also read a number (``0.5``, ``1700000000``) as a Unix
    time, which the documented format does not allow and no client means."""

    def check(value: Any) -> Any:
        if isinstance(value, date):  # already parsed (a default, or a model built in code)
            return value
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(f"give an ISO 8601 {'date-time' if 'T' in example else 'date'}, e.g. {example}")
        return value

    return check


def _instant(value: datetime) -> datetime:
    try:
        return ensure_utc(value)
    except OverflowError:
        # Year 1 with a positive offset, or 9999 with a negative one, has no UTC date.
        raise ValueError(
            f"{value.isoformat()} is outside the calendar once converted to UTC (years 1 to 9999)"
        ) from None


#: An instant given in a request (a parameter or a body field): ISO 8601, without a zone UTC,
#: converted to aware UTC where it is parsed, so an instant with no UTC date is a 422 naming it.
Instant = Annotated[
    datetime, BeforeValidator(_iso_text(_ISO_INSTANT, "2026-03-31T12:00:00Z")), AfterValidator(_instant)
]
#: A day given in a request: ISO 8601 (YYYY-MM-DD).
Day = Annotated[date, BeforeValidator(_iso_text(_ISO_DAY, "2026-03-31"))]


def _period_text(value: Any) -> Any:
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _PERIOD.fullmatch(value):
        return short_period(value)
    raise ValueError("give the period as a year, a month or a day: 2026, 2026-04 or 2026-04-17")


_PERIOD = re.compile(r"\d{4}(-\d{2}){0,2}")
#: A period in a request body: a year, a month or a day, as text.
PeriodText = Annotated[
    date,
    BeforeValidator(_period_text),
    WithJsonSchema({"type": "string", "pattern": f"^{_PERIOD.pattern}$"}, mode="validation"),
]


def columns(model: type[BaseModel]) -> tuple[str, ...]:
    """A row model's fields: the CSV header, in order."""
    return tuple(model.model_fields)


class TranslationOut(BaseModel):
    name: str
    description: str = Field(description="Empty when only the name is translated")


class KpiOut(BaseModel):
    id: str
    name: str
    description: str
    type: str = Field(description="count, sum, weighted_sum, ratio, duration, funnel or derived")
    unit: str
    direction: str = Field(description="higher or lower: which way is better")
    min_sample: int
    stat: str | None = Field(description="mean, median or p90 for a duration; null otherwise")
    formula: str | None = Field(description="A derived KPI's formula; null otherwise")
    dimensions: list[str] = Field(description="The breakdowns its values are materialised by")
    definition_hash: str
    definition: dict[str, Any] = Field(description="The whole definition, as configured")
    i18n: dict[str, TranslationOut] = Field(
        description="Its name and description in other languages, by locale (zh: Simplified Chinese)"
    )
    name_zh: str = Field(description="Its Simplified Chinese name (the English one where it has none)")


class ValueOut(BaseModel):
    kpi_id: str
    grain: str
    period_key: str = Field(description="The period's first day (ISO), or `all`")
    period_start: date | None
    period_end: date | None = Field(description="The day after the period's last day")
    scope: str = Field(description="company, team or owner")
    scope_id: str
    scope_name: str
    currency: str = Field(description="The amount's currency; empty for counts and rates")
    dimension: str = Field(description="The breakdown dimension; empty for the total")
    dimension_value: str
    value: float | None = Field(description="null when the denominator is zero")
    numerator: float
    denominator: float | None
    sample_count: int
    low_sample: bool = Field(description="Fewer records than the KPI's min_sample")
    target: float | None
    attainment: float | None
    gap: float | None
    pace: float | None = Field(description="Attainment ÷ the elapsed share of the period (now)")
    computed_at: datetime


class TargetOut(BaseModel):
    kpi_id: str
    grain: str
    period_key: str
    period_start: date
    period_end: date
    scope: str
    scope_id: str
    currency: str
    value: float
    origin: str = Field(description="set (given for this period and scope), period or team (decomposed)")
    source: str = Field(description="config or api")


class TargetIn(InputModel):
    """A target, as the configuration's `kpis.targets` entries are written."""

    model_config = ConfigDict(extra="forbid")

    kpi: str = Field(min_length=1, max_length=63)
    scope: str = Field(default="company", pattern="^(company|team|owner)$")
    scope_id: str = Field(default="company", min_length=1, max_length=600)
    grain: str = Field(default="year", pattern="^(month|quarter|year)$")
    period: PeriodText = Field(
        description="Any date in the period (its start is used): 2026, 2026-04 or 2026-04-17"
    )
    value: float = Field(allow_inf_nan=False, strict=True)
    currency: str = Field(default="", pattern="^([A-Z]{3})?$")
    seasonality: list[Annotated[float, Field(strict=True)]] | None = Field(
        default=None, min_length=12, max_length=12
    )
    split_to_reps: StrictBool = False


class TargetDefinitionOut(BaseModel):
    id: int
    definition: TargetIn
    created_at: datetime
    updated_at: datetime
    applies: str = Field(description="When the values reflect it")


class ScoreOut(BaseModel):
    scorecard_id: str
    grain: str
    period_key: str
    period_start: date
    period_end: date
    scope_id: str
    owner_name: str
    team_id: str | None
    score: float | None
    grade: str | None
    rank: int | None
    team_rank: int | None
    dropped_components: int
    components: list[dict[str, Any]]
    perspectives: list[dict[str, Any]] = Field(
        description="Per perspective (when the scorecard groups its components): id, name, weight, "
        "applied_weight, sub-score and why it was dropped"
    )
    computed_at: datetime


class ScorecardOut(BaseModel):
    id: str
    name: str
    grains: list[str]
    currency: str | None
    components: list[dict[str, Any]]
    perspectives: list[dict[str, Any]]
    grades: list[dict[str, Any]]
    i18n: dict[str, TranslationOut] = Field(
        description="Its name in other languages, by locale (zh: Simplified Chinese)"
    )
    name_zh: str = Field(description="Its Simplified Chinese name (the English one where it has none)")


class FunnelStepOut(BaseModel):
    kpi_id: str
    grain: str
    period_key: str
    scope: str
    scope_id: str
    stage: str
    reached: int = Field(description="Deals that reached this stage")
    previous: int = Field(description="Deals that reached the stage before it")
    conversion: float | None = Field(description="reached / previous")


class OwnerOut(BaseModel):
    id: str = Field(description="The owner's scope id: <connection>:<owner id>")
    connection_id: str
    external_id: str
    name: str | None
    email: str | None
    active: bool
    teams: list[str]


class TeamOut(BaseModel):
    id: str = Field(description="The team's scope id: <namespace>:<team id>")
    namespace: str
    external_id: str
    name: str
    level: str | None
    parent_id: str | None
    members: int


class LeadOut(BaseModel):
    id: int
    connection_id: str
    external_id: str
    owner_id: str | None
    name: str | None
    company: str | None
    account_external_id: str | None
    source: str | None
    status: str | None
    created_at: datetime | None
    is_converted: bool
    converted_at: datetime | None
    converted_opportunity_external_id: str | None
    is_deleted: bool
    remote_updated_at: datetime | None
    synced_at: datetime


class OpportunityOut(BaseModel):
    id: int
    connection_id: str
    external_id: str
    owner_id: str | None
    name: str | None
    amount: float | None
    currency: str | None
    stage: str | None
    probability: float | None
    pipeline: str | None
    type: str | None
    lead_source: str | None
    account_external_id: str | None
    product: str | None
    created_at: datetime | None
    close_date: date | None
    closed_at: datetime | None
    is_closed: bool
    is_won: bool
    is_deleted: bool
    remote_updated_at: datetime | None
    synced_at: datetime


class AccountOut(BaseModel):
    id: int
    connection_id: str
    external_id: str
    owner_id: str | None
    name: str | None
    industry: str | None
    segment: str | None
    parent_external_id: str | None
    created_at: datetime | None
    is_deleted: bool
    remote_updated_at: datetime | None
    synced_at: datetime


class ActivityOut(BaseModel):
    id: int
    connection_id: str
    external_id: str
    type: str = Field(description="call, meeting, visit, email, task, proposal, note, or a configured kind")
    subtype: str | None = Field(description="The CRM's own kind of activity, when it has one")
    owner_id: str | None
    subject: str | None
    occurred_at: datetime
    duration_seconds: int | None
    outcome: str | None
    is_completed: bool
    account_external_id: str | None
    opportunity_external_id: str | None
    lead_external_id: str | None
    is_deleted: bool
    remote_updated_at: datetime | None
    synced_at: datetime


class IngestOut(BaseModel):
    """What a push announced and what of it was new (stored in the inbox) or received before."""

    connection: str
    changes: int = Field(description="Changes the push announced, of the records the connection reads.")
    accepted: int = Field(description="Changes new to the inbox: their records will be fetched from the CRM.")
    duplicates: int = Field(description="Changes received before (the CRM delivered them again): dropped.")


class ConnectionOut(BaseModel):
    id: str
    kind: str
    enabled: bool
    schedule: str | None
    last_run_id: int | None
    last_status: str | None
    last_finished_at: datetime | None
    last_success_at: datetime | None
    push_last_received_at: datetime | None = Field(
        description="When the CRM last pushed changes to /ingest/{connection} (null: never)."
    )
    push_waiting: int = Field(description="Pushed changes waiting in the connection's inbox.")
    push_parked: int = Field(description="Pushed changes that could not be processed after retries.")


class SyncRunOut(BaseModel):
    id: int
    connection_id: str
    trigger: str
    full_refresh: bool
    allow_mass_delete: bool = Field(description="Confirmed to delete more than the mass-deletion limit")
    status: str = Field(description="queued, running, succeeded, failed, deferred, interrupted or abandoned")
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    records_read: int
    inserted: int
    updated: int
    unchanged: int
    deleted: int
    skipped: int = Field(description="bad records: not stored, each kept with the run with its reason")
    warnings: int = Field(description="records stored with a change the run records (e.g. text cleaned)")
    error_kind: str | None
    error: str | None
    url: str


class SyncRequestIn(InputModel):
    model_config = ConfigDict(extra="forbid")

    full_refresh: StrictBool = Field(default=False, description="Re-read everything instead of the changes")
    allow_mass_delete: StrictBool = Field(
        default=False,
        description=(
            "Confirm deletions above the mass-deletion limit (a share of a stream's live records, "
            "never all of them) for this run, as `crm-perf-sync sync --allow-mass-delete` does"
        ),
    )


class ScaleOut(BaseModel):
    min: float | None = Field(description="The lowest value allowed (included); null: no lower bound")
    max: float | None = Field(description="The highest value allowed (included); null: no upper bound")
    step: float | None = Field(description="Values are min plus whole steps (1: whole levels); null: any")


class MeasureDefinitionOut(BaseModel):
    id: str
    name: str
    description: str
    unit: str = Field(description="score, rating, hours, percent, count or number")
    scale: ScaleOut
    scopes: list[str] = Field(description="The scopes it is entered for: company, team, owner")
    grains: list[str] = Field(description="The grains it is entered by: week, month, quarter, year")
    aggregation: str = Field(description="How a KPI on it combines entries: mean, sum or last")
    direction: str = Field(description="higher or lower: which way is better")
    i18n: dict[str, TranslationOut] = Field(
        description="Its name and description in other languages, by locale (zh: Simplified Chinese)"
    )
    name_zh: str


class MeasureOut(BaseModel):
    measure_id: str
    measure_name: str
    scope: str
    scope_id: str
    scope_name: str
    grain: str
    period_key: str = Field(description="The period's first day (fiscal quarters and years), as KPI values")
    period_start: date
    period_end: date = Field(description="The day after the period's last day")
    value: float
    source: str = Field(description="api, csv (an upload), cli or config (declared in the configuration)")
    entered_by: str = Field(description="The name of the API key that entered it, or config")
    entered_at: datetime


class MeasureChangeOut(BaseModel):
    id: int
    measure_id: str
    scope: str
    scope_id: str
    grain: str
    period_key: str
    action: str = Field(description="create, update or delete")
    old_value: float | None = Field(description="null when the entry was created")
    new_value: float | None = Field(description="null when the entry was removed")
    source: str
    changed_by: str
    changed_at: datetime


class MeasureValueIn(InputModel):
    """The value of one entry (the entry is named by the URL's parameters)."""

    model_config = ConfigDict(extra="forbid")

    value: Annotated[Decimal, Field(allow_inf_nan=False)] = Field(
        description='A number on the measure\'s scale, as a JSON number or as decimal text ("4.5")'
    )

    @model_validator(mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("value"), bool):
            raise ValueError("value must be a number, not true or false")
        return value


class UploadOut(BaseModel):
    rows: int = Field(description="Rows read (the header not counted)")
    created: int
    updated: int
    unchanged: int = Field(description="Rows whose entry already had this value: nothing written")
