"""KPI definitions as data: parsed from YAML into a discriminated union, validated before use.

A definition never contains SQL. Fields and filters name columns from an allow-list per entity
(or ``custom.<name>`` dimensions) and are compiled to parameterised SQLAlchemy Core.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, field_validator, model_validator

from crm_perf_sync.kit.canonical import digest
from crm_perf_sync.kit.schema import StrictModel
from crm_perf_sync.kit.timeutil import first_day
from crm_perf_sync.kpi.formula import formula_inputs

KpiEntity = Literal["opportunities", "leads", "activities", "accounts"]

#: Columns a definition may name, per entity, with their kind.
FIELDS: dict[str, dict[str, str]] = {
    "opportunities": {
        "amount": "money",
        "probability": "number",
        "stage": "text",
        "pipeline": "text",
        "forecast_category": "text",
        "type": "text",
        "lead_source": "text",
        "account_external_id": "text",
        "product": "text",
        "currency": "text",
        "owner_external_id": "text",
        "is_closed": "bool",
        "is_won": "bool",
        "created_at": "timestamp",
        "closed_at": "timestamp",
        "close_date": "date",
        "remote_updated_at": "timestamp",
    },
    "leads": {
        "source": "text",
        "status": "text",
        "company": "text",
        "account_external_id": "text",
        "owner_external_id": "text",
        "is_converted": "bool",
        "created_at": "timestamp",
        "converted_at": "timestamp",
        "remote_updated_at": "timestamp",
    },
    "activities": {
        "type": "text",
        "subtype": "text",
        "outcome": "text",
        "owner_external_id": "text",
        "account_external_id": "text",
        "opportunity_external_id": "text",
        "lead_external_id": "text",
        "duration_seconds": "number",
        "is_completed": "bool",
        "occurred_at": "timestamp",
        "created_at": "timestamp",
        "remote_updated_at": "timestamp",
    },
    "accounts": {
        "name": "text",
        "industry": "text",
        "segment": "text",
        "parent_external_id": "text",
        "owner_external_id": "text",
        "created_at": "timestamp",
        "remote_updated_at": "timestamp",
    },
}

Grain = Literal["week", "month", "quarter", "year", "all"]
GRAINS: tuple[Grain, ...] = ("week", "month", "quarter", "year", "all")

#: Breakdown dimensions with a name of their own: the column they read on each entity.
DIMENSION_ALIASES: dict[str, dict[str, str]] = {
    "lead_source": {"opportunities": "lead_source", "leads": "source"},
    "account": {
        "opportunities": "account_external_id",
        "leads": "account_external_id",
        "activities": "account_external_id",
    },
    "activity_type": {"activities": "type"},
    "activity_subtype": {"activities": "subtype"},
    "activity_outcome": {"activities": "outcome"},
    "industry": {"accounts": "industry"},
    "segment": {"accounts": "segment"},
    "pipeline": {"opportunities": "pipeline"},
    "product": {"opportunities": "product"},
    "stage": {"opportunities": "stage"},
    "type": {"opportunities": "type"},
    "forecast_category": {"opportunities": "forecast_category"},
    "lead_status": {"leads": "status"},
}
#: Dimensions that come from the organisation rather than the record: the owner's region.
REGION_DIMENSION = "region"


def dimension_column(entity: str, name: str) -> str | None:
    """The field a breakdown ``name`` reads on ``entity`` (``None``: it does not apply there)."""
    if name == REGION_DIMENSION or name.startswith("custom."):
        return name
    alias = DIMENSION_ALIASES.get(name, {}).get(entity)
    if alias is not None:
        return alias
    return name if FIELDS.get(entity, {}).get(name) == "text" else None


def check_dimensions(names: list[str]) -> list[str]:
    unknown = [name for name in names if not any(dimension_column(e, name) for e in FIELDS)]
    if unknown:
        known = ", ".join([*sorted(DIMENSION_ALIASES), REGION_DIMENSION, "custom.<field>"])
        raise ValueError(f"unknown dimension(s) {', '.join(map(repr, unknown))}; known: {known}")
    return names


class Filter(StrictModel):
    """One condition on a record: ``{field: is_won, op: eq, value: true}``."""

    field: str
    op: Literal["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "is_null", "not_null"] = "eq"
    value: Any = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> Self:
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"op {self.op} needs a list value")
        if self.op in ("is_null", "not_null") and self.value is not None:
            raise ValueError(f"op {self.op} takes no value")
        if self.op not in ("is_null", "not_null") and self.value is None:
            raise ValueError(f"op {self.op} needs a value (use is_null / not_null for missing values)")
        return self


class Measure(StrictModel):
    """What is counted or summed over which records, and which date places a record in a period."""

    entity: KpiEntity = "opportunities"
    filter: list[Filter] = Field(default_factory=list)
    period: str = "created_at"
    sum: str | None = None  # a money or number field; count when absent
    weight: str | None = None  # multiplies ``sum`` per record (amount * probability)

    @model_validator(mode="after")
    def _known_fields(self) -> Self:
        fields = FIELDS[self.entity]
        problems = []
        for name in [self.period, self.sum, self.weight, *(f.field for f in self.filter)]:
            if name is not None and name not in fields and not name.startswith("custom."):
                problems.append(name)
        if problems:
            names, known = ", ".join(map(repr, problems)), ", ".join(sorted(fields))
            raise ValueError(f"unknown {self.entity} field(s) {names}; known: {known}")
        if fields.get(self.period) not in ("timestamp", "date"):
            raise ValueError(f"period must be a date or timestamp field, got {self.period!r}")
        if self.sum is not None and fields.get(self.sum) not in ("money", "number"):
            raise ValueError(f"sum must be a money or number field, got {self.sum!r}")
        if self.weight is not None and (self.sum is None or fields.get(self.weight) != "number"):
            raise ValueError("weight multiplies sum and must be a number field (e.g. probability)")
        return self

    @property
    def is_money(self) -> bool:
        return self.sum is not None and FIELDS[self.entity].get(self.sum) == "money"


#: Languages a definition may name itself in besides English (its own ``name``), by locale key.
#: Adding one here lets configurations and the library use it; the API serves every locale under
#: ``i18n`` (its flat CSV column, ``name_zh``, is for Simplified Chinese alone).
LOCALES: dict[str, str] = {"zh": "Simplified Chinese"}


class Translation(StrictModel):
    """A definition's name (and optionally description) in one language."""

    name: str
    description: str = ""

    @field_validator("name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a translated name cannot be empty")
        return value


def check_locales(value: dict[str, Translation]) -> dict[str, Translation]:
    unknown = [key for key in value if key not in LOCALES]
    if unknown:
        known = ", ".join(f"{key} ({language})" for key, language in LOCALES.items())
        raise ValueError(f"unknown locale(s) {', '.join(map(repr, unknown))}; known: {known}")
    return value


#: ``i18n: {zh: {name: 赢单率, description: ...}}``: names for dashboards in other languages.
I18n = Annotated[dict[str, Translation], AfterValidator(check_locales)]

#: What the meaning of a definition does not depend on: left out of its definition hash.
_WORDING = frozenset({"name", "description", "i18n"})


class _Kpi(StrictModel):
    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    name: str
    description: str = ""
    i18n: I18n = Field(default_factory=dict)
    unit: Literal["count", "currency", "percent", "ratio", "days", "number"]
    direction: Literal["higher", "lower"] = "higher"
    min_sample: int = Field(default=1, ge=0)
    dimensions: list[str] = Field(default_factory=list)

    @field_validator("dimensions")
    @classmethod
    def _known_dimensions(cls, value: list[str]) -> list[str]:
        return check_dimensions(value)

    def measures(self) -> list[Measure]:
        """The record sets this KPI reads (empty for a derived KPI)."""
        return []

    def definition_hash(self) -> str:
        """Changes exactly when the definition's meaning changes (not its wording)."""
        payload = self.model_dump(mode="json", exclude=set(_WORDING))
        return digest(payload)


class CountKpi(_Kpi):
    """The number of records matching ``measure``."""

    type: Literal["count"]
    measure: Measure

    def measures(self) -> list[Measure]:
        return [self.measure]

    @field_validator("measure")
    @classmethod
    def _no_sum(cls, value: Measure) -> Measure:
        if value.sum is not None:
            raise ValueError("a count KPI counts records; use type: sum to add up a field")
        return value


class SumKpi(_Kpi):
    """The sum of a field over matching records (per currency for amounts)."""

    type: Literal["sum", "weighted_sum"]
    measure: Measure

    def measures(self) -> list[Measure]:
        return [self.measure]

    @model_validator(mode="after")
    def _has_sum(self) -> Self:
        if self.measure.sum is None:
            raise ValueError("measure.sum names the field to add up")
        if self.type == "weighted_sum" and self.measure.weight is None:
            raise ValueError("a weighted_sum needs measure.weight (e.g. probability)")
        return self


class RatioKpi(_Kpi):
    """Numerator over denominator, each aggregated over its own records: a ratio of sums."""

    type: Literal["ratio"]
    numerator: Measure
    denominator: Measure
    scale: float = 1.0

    def measures(self) -> list[Measure]:
        return [self.numerator, self.denominator]

    @model_validator(mode="after")
    def _same_currency_basis(self) -> Self:
        if self.denominator.is_money and not self.numerator.is_money:
            raise ValueError("a money denominator needs a money numerator (amounts are grouped by currency)")
        return self


class DurationKpi(_Kpi):
    """Days between two timestamps of each matching record: mean, median or 90th percentile."""

    type: Literal["duration"]
    measure: Measure
    start: str = "created_at"
    end: str = "closed_at"
    stat: Literal["mean", "median", "p90"] = "mean"

    def measures(self) -> list[Measure]:
        return [self.measure]

    @model_validator(mode="after")
    def _timestamps(self) -> Self:
        fields = FIELDS[self.measure.entity]
        for name in (self.start, self.end):
            if fields.get(name) not in ("timestamp", "date"):
                raise ValueError(f"{name!r} is not a date or timestamp field of {self.measure.entity}")
        return self


class FunnelKpi(_Kpi):
    """Stage-to-stage conversion along each pipeline's stage order, for deals of ``measure``.

    A deal has *reached* every open or won stage up to the furthest one it was ever in (from its
    stage history and its current stage), so a deal that skipped a stage still counts as having
    passed it. Each stage's value is reached(stage) / reached(previous stage); lost stages are not
    steps of the funnel.
    """

    type: Literal["funnel"]
    unit: Literal["count", "currency", "percent", "ratio", "days", "number"] = "percent"
    measure: Measure = Field(default_factory=Measure)
    pipeline: str | None = None  # one pipeline only; every pipeline by default

    def measures(self) -> list[Measure]:
        return [self.measure]

    @field_validator("measure")
    @classmethod
    def _deals(cls, value: Measure) -> Measure:
        if value.entity != "opportunities" or value.sum is not None:
            raise ValueError("a funnel counts opportunities (entity: opportunities, no sum)")
        return value


def _won_deals() -> Measure:
    return Measure(period="close_date", filter=[Filter(field="is_won", op="eq", value=True)])


class CustomerKpi(_Kpi):
    """Customers won, coming back and kept, from the won deals (``measure``) that name an account.

    An account's *first* won deals are those with the earliest value of ``measure.period`` (all of
    them when several share that date). ``stat``:

    - ``new``: accounts whose first won deal falls in the period. The company counts each account
      once; a rep the accounts whose first won deals they own; a team its members' accounts once.
    - ``repeat_revenue_share``: won revenue of deals whose account had a won deal strictly
      earlier, over the won revenue of all won deals with an account; per currency.
    - ``retention``: accounts with a won deal in the previous period of the grain that also have
      one in this period, over those of the previous period; a rep's (a team's) accounts are those
      of their own won deals in both periods. Periods after the last one with any won deal, and
      the ``all`` grain, have no value.
    """

    type: Literal["customers"]
    stat: Literal["new", "repeat_revenue_share", "retention"]
    measure: Measure = Field(default_factory=_won_deals)

    def measures(self) -> list[Measure]:
        return [self.measure]

    @field_validator("measure")
    @classmethod
    def _deals(cls, value: Measure) -> Measure:
        if value.entity != "opportunities" or value.sum is not None:
            raise ValueError("customer KPIs read won opportunities (entity: opportunities, no sum)")
        return value


class MeasureKpi(_Kpi):
    """A measure entered from outside the CRM (a survey score, a 360 rating, training hours) as a
    KPI, for every period and scope its entries fall in.

    A period's value combines every entry inside it (entries of the same or a finer grain; weeks
    only into weeks) for the scope: a rep's own entries; a team's own and its reps'; all of them
    for the company. ``stat``: ``mean`` of the entries, their ``sum``, or the ``last`` period's
    (the mean of that period's entries when several scopes have one).
    """

    type: Literal["measure"]
    measure_id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    stat: Literal["mean", "sum", "last"] = "mean"


class DerivedKpi(_Kpi):
    """Arithmetic over other KPIs' values (and targets) for the same period, scope and currency.

    ``formula`` names KPI ids, ``target.<kpi id>``, numbers, ``+ - * /`` and parentheses; it is
    parsed, never evaluated as code. A missing input or a division by zero gives no value.
    """

    type: Literal["derived"]
    formula: str

    @field_validator("formula")
    @classmethod
    def _parses(cls, value: str) -> str:
        formula_inputs(value)
        return value

    def inputs(self) -> set[str]:
        values, targets = formula_inputs(self.formula)
        return values | targets


Kpi = Annotated[
    CountKpi | SumKpi | RatioKpi | DurationKpi | FunnelKpi | CustomerKpi | MeasureKpi | DerivedKpi,
    Field(discriminator="type"),
]


def short_period(value: Any) -> Any:
    """A period given as a year (``2026``) or a month (``2026-04``): its first day."""
    if isinstance(value, int) and not isinstance(value, bool) and 1900 <= value <= 9999:
        return date(value, 1, 1)
    if isinstance(value, str) and len(value.strip()) in (4, 7):
        try:
            return first_day(value)
        except ValueError:
            return value  # the field's own validation reports it
    return value


class TargetConfig(StrictModel):
    """A target for one KPI, scope and period; larger periods decompose into smaller ones.

    ``period`` is any date inside the period (``2026``, ``2026-04`` or ``2026-04-01``), read at
    ``grain``. A year decomposes into quarters and months evenly or by 12 monthly ``seasonality``
    weights, a quarter into its months; a team target is split to the team's reps when
    ``split_to_reps`` is set. A more specific target (given for a smaller period or a rep) wins
    over one decomposed from a larger period or a team.
    """

    kpi: str
    scope: Literal["company", "team", "owner"] = "company"
    scope_id: str = "company"
    grain: Literal["month", "quarter", "year"] = "year"
    period: date
    value: float
    currency: str = ""
    seasonality: list[float] | None = None
    split_to_reps: bool = False

    @field_validator("period", mode="before")
    @classmethod
    def _short_dates(cls, value: Any) -> Any:
        return short_period(value)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.scope == "company") != (self.scope_id == "company"):
            raise ValueError("scope_id is 'company' exactly when scope is company")
        if self.seasonality is not None:
            if len(self.seasonality) != 12 or min(self.seasonality) < 0 or sum(self.seasonality) <= 0:
                raise ValueError("seasonality is 12 non-negative monthly weights with a positive sum")
            if self.grain != "year":
                raise ValueError("seasonality spreads a yearly target over months: the grain must be year")
        if self.split_to_reps and self.scope != "team":
            raise ValueError("split_to_reps splits a team's target; the scope must be team")
        return self


class Normalise(StrictModel):
    """How a component's value becomes a 0..1 (or 0..cap) score."""

    method: Literal["attainment", "linear"] = "attainment"
    cap: float = Field(default=1.2, gt=0)  # attainment: the most a component can score
    floor: float | None = None  # linear: scores 0 at (or beyond) floor ...
    goal: float | None = None  # ... and 1 at (or beyond) goal; floor > goal when lower is better

    @model_validator(mode="after")
    def _linear_bounds(self) -> Self:
        if self.method == "linear" and (self.floor is None or self.goal is None or self.floor == self.goal):
            raise ValueError("linear normalisation needs a floor and a goal that differ")
        return self


ScoreGrain = Literal["week", "month", "quarter", "year"]


class Perspective(StrictModel):
    """A group of components with a weight of its own: the balanced scorecard's financial,
    customer, internal process, learning and growth views, or any others."""

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
    name: str
    i18n: I18n = Field(default_factory=dict)
    weight: float = Field(gt=0, le=1)


class ScoreComponent(StrictModel):
    kpi: str
    #: The perspective the component belongs to (its weight is then within the perspective).
    perspective: str | None = None
    weight: float = Field(gt=0, le=1)
    normalise: Normalise = Field(default_factory=Normalise)
    min_sample: int | None = Field(default=None, ge=0)  # the KPI's own min_sample by default


class GradeBand(StrictModel):
    grade: str
    min: float


def _default_grades() -> list[GradeBand]:
    return [
        GradeBand(grade="A", min=0.9),
        GradeBand(grade="B", min=0.75),
        GradeBand(grade="C", min=0.5),
        GradeBand(grade="D", min=0.0),
    ]


class ScorecardConfig(StrictModel):
    """A weighted score per rep and period over KPI components, graded and ranked within teams."""

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
    name: str
    i18n: I18n = Field(default_factory=dict)
    grains: list[ScoreGrain] = Field(default_factory=lambda: list[ScoreGrain](["month"]))
    currency: str | None = None  # money components read this currency; the rep's only one by default
    components: list[ScoreComponent] = Field(min_length=1)
    #: With perspectives, every component names one, the components' weights sum to 1 within each
    #: perspective and the perspectives' weights sum to 1; without, the components' weights do.
    perspectives: list[Perspective] = Field(default_factory=list)
    grades: list[GradeBand] = Field(default_factory=_default_grades)

    @model_validator(mode="after")
    def _weights_and_bands(self) -> Self:
        if self.perspectives:
            self._check_perspectives()
        else:
            named = sorted({c.perspective for c in self.components if c.perspective is not None})
            if named:
                raise ValueError(
                    f"components name perspectives ({', '.join(named)}) but the scorecard lists none"
                )
            total = sum(c.weight for c in self.components)
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"component weights must sum to 1 (they sum to {total:g})")
        kpis = [c.kpi for c in self.components]
        if len(set(kpis)) != len(kpis):
            raise ValueError("each KPI may be a component once")
        mins = [band.min for band in self.grades]
        if mins != sorted(mins, reverse=True) or len(set(mins)) != len(mins):
            raise ValueError("grade bands are listed best first with strictly decreasing minimums")
        if not self.grades or self.grades[-1].min > 0:
            raise ValueError("the last grade band must start at 0 so every score gets a grade")
        return self

    def _check_perspectives(self) -> None:
        ids = [p.id for p in self.perspectives]
        if len(set(ids)) != len(ids):
            raise ValueError("each perspective id may be listed once")
        total = sum(p.weight for p in self.perspectives)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"perspective weights must sum to 1 (they sum to {total:g})")
        for component in self.components:
            if component.perspective is None:
                raise ValueError(f"component {component.kpi}: name its perspective (one of {', '.join(ids)})")
            if component.perspective not in ids:
                raise ValueError(
                    f"component {component.kpi}: unknown perspective {component.perspective!r} "
                    f"(listed: {', '.join(ids)})"
                )
        for perspective in self.perspectives:
            mine = [c.weight for c in self.components if c.perspective == perspective.id]
            if not mine:
                raise ValueError(f"perspective {perspective.id} has no components")
            if abs(sum(mine) - 1.0) > 1e-6:
                raise ValueError(
                    f"the weights of perspective {perspective.id}'s components must sum to 1 "
                    f"(they sum to {sum(mine):g})"
                )

    def definition_hash(self) -> str:
        payload = self.model_dump(mode="json", exclude=set(_WORDING))
        # Perspectives' names are wording too: renaming one changes no score.
        for perspective in payload.get("perspectives", []):
            for key in _WORDING:
                perspective.pop(key, None)
        return digest(payload)


def display(definition: _Kpi | ScorecardConfig, locale: str) -> tuple[str, str]:
    """A KPI's or scorecard's name and description in ``locale``, each in English where the
    definition has no translation of it (an unknown locale, or ``en``, gives the English)."""
    description = definition.description if isinstance(definition, _Kpi) else ""
    translation = definition.i18n.get(locale)
    if translation is None:
        return definition.name, description
    return translation.name, translation.description or description


class KpiSection(StrictModel):
    """``kpis:`` in the configuration: the shipped library plus a deployment's own definitions.

    A definition with the id of a library KPI replaces it. ``dimensions`` breaks every KPI down
    by these dimensions wherever they apply to its records (on top of each KPI's own).
    """

    library: Literal["default", "none"] = "default"
    definitions: list[Kpi] = Field(default_factory=list)
    dimensions: list[str] = Field(default_factory=list)
    targets: list[TargetConfig] = Field(default_factory=list)
    scorecards: list[ScorecardConfig] = Field(default_factory=list)

    @field_validator("dimensions")
    @classmethod
    def _known_dimensions(cls, value: list[str]) -> list[str]:
        return check_dimensions(value)


class BusinessConfig(StrictModel):
    """The calendar KPIs are bucketed in."""

    timezone: str = "UTC"
    fiscal_year_start_month: int = Field(default=1, ge=1, le=12)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {value!r} (e.g. UTC, Europe/Berlin)") from None
        return value

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class KpiConfig:
    """What the KPI engine reads from the configuration: the KPIs (library and own, merged), the
    ``kpis:`` section (targets, scorecards, breakdowns), the business calendar and the ids of the
    configured connections (their set is part of every value's context)."""

    kpis: Mapping[str, Kpi]
    section: KpiSection
    business: BusinessConfig
    connection_ids: tuple[str, ...]
