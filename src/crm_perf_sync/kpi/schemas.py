"""KPI definitions as data: parsed from YAML into a discriminated union, validated before use.

A definition never contains SQL. Fields and filters name columns from an allow-list per entity
(or ``custom.<name>`` dimensions) and are compiled to parameterised SQLAlchemy Core.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KpiEntity = Literal["opportunities", "leads"]

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
        "account": "text",
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
        "owner_external_id": "text",
        "is_converted": "bool",
        "created_at": "timestamp",
        "converted_at": "timestamp",
        "remote_updated_at": "timestamp",
    },
}

Grain = Literal["month", "quarter", "year", "all"]
GRAINS: tuple[Grain, ...] = ("month", "quarter", "year", "all")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Filter(_Model):
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


class Measure(_Model):
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


class _Kpi(_Model):
    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    name: str
    description: str = ""
    unit: Literal["count", "currency", "percent", "ratio", "days", "number"]
    direction: Literal["higher", "lower"] = "higher"
    min_sample: int = Field(default=1, ge=0)
    dimensions: list[str] = Field(default_factory=list)

    def definition_hash(self) -> str:
        """Changes exactly when the definition's meaning changes (not its description)."""
        payload = self.model_dump(mode="json", exclude={"name", "description"})
        return hashlib.blake2b(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()


class CountKpi(_Kpi):
    """The number of records matching ``measure``."""

    type: Literal["count"]
    measure: Measure

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

    @model_validator(mode="after")
    def _timestamps(self) -> Self:
        fields = FIELDS[self.measure.entity]
        for name in (self.start, self.end):
            if fields.get(name) not in ("timestamp", "date"):
                raise ValueError(f"{name!r} is not a date or timestamp field of {self.measure.entity}")
        return self


Kpi = Annotated[CountKpi | SumKpi | RatioKpi | DurationKpi, Field(discriminator="type")]


class KpiSection(_Model):
    """``kpis:`` in the configuration: the shipped library plus a deployment's own definitions.

    A definition with the id of a library KPI replaces it.
    """

    library: Literal["default", "none"] = "default"
    definitions: list[Kpi] = Field(default_factory=list)
