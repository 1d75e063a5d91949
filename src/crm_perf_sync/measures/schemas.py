"""Measure definitions and declared values as data: parsed from YAML, validated before use.

A measure is a number that comes from outside the CRM (a customer-satisfaction survey, a 360
review, a behaviourally anchored rating, training hours) for a rep, a team or the company and a
period. Its definition says what it is called, on which scale its values lie, for which scopes
and grains it may be entered, and how a later aggregation reads it.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from crm_perf_sync.kit.columns import plain_decimal
from crm_perf_sync.kit.schema import StrictModel
from crm_perf_sync.kpi import periods
from crm_perf_sync.kpi.schemas import I18n, short_period

MeasureScope = Literal["company", "team", "owner"]
MeasureGrain = Literal["week", "month", "quarter", "year"]
SCOPES: tuple[MeasureScope, ...] = ("company", "team", "owner")
GRAINS: tuple[MeasureGrain, ...] = ("week", "month", "quarter", "year")
SOURCES = ("api", "csv", "config")
#: What a value may hold: as many digits as a JSON number (a float) keeps exactly, no finer than
#: the store's six decimal places and no more than its twelve before the point (NUMERIC(18, 6)),
#: so the number entered is the number read back.
MAX_DIGITS, MAX_PLACES, MAX_WHOLE = 15, 6, 12


def digits_issue(value: Decimal) -> str | None:
    """Why ``value`` cannot be stored exactly (``None``: it can)."""
    if not value.is_finite():
        return "must be a finite number"
    _sign, digits, exponent = value.normalize().as_tuple()
    assert isinstance(exponent, int)
    if -exponent > MAX_PLACES:
        return f"has more than {MAX_PLACES} decimal places"
    if value.adjusted() >= MAX_WHOLE:
        return f"has more than {MAX_WHOLE} digits before the decimal point"
    significant = len(digits) + max(exponent, 0)
    if significant > MAX_DIGITS:
        return f"has more than {MAX_DIGITS} significant digits"
    return None


def period_of(day: date, grain: MeasureGrain, fiscal_start_month: int) -> tuple[str, date, date]:
    """The key, first day and end (the day after the last) of ``grain``'s period holding ``day``,
    in the fiscal calendar: the same keys as KPI values. ``ValueError`` if the period reaches
    outside years 1 to 9999."""
    try:
        start, end = periods.period_bounds(
            periods.local_period_index(day, "UTC", grain, fiscal_start_month), grain
        )
    except (OverflowError, ValueError):
        raise ValueError(
            f"the {grain} holding {day} reaches outside the calendar (years 1 to 9999)"
        ) from None
    return start.isoformat(), start, end


class Scale(StrictModel):
    """The values a measure may take: ``min`` and ``max`` (both included, either open) and, if
    given, a ``step`` counted from ``min`` (or from 0): ``{min: 1, max: 7, step: 1}`` is a BARS
    level, ``{min: 0}`` any number of hours."""

    min: Decimal | None = None
    max: Decimal | None = None
    step: Decimal | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        if self.step is not None and self.min is not None and self.max is not None:
            if (self.max - self.min) % self.step != 0:
                raise ValueError(f"max ({self.max}) must be min ({self.min}) plus a whole number of steps")
        return self

    def issue(self, value: Decimal) -> str | None:
        """Why ``value`` is off this scale (``None``: it is on it)."""
        if self.min is not None and value < self.min:
            return f"{value} is below the scale's minimum {self.min}"
        if self.max is not None and value > self.max:
            return f"{value} is above the scale's maximum {self.max}"
        if self.step is not None and (value - (self.min or 0)) % self.step != 0:
            start = self.min or Decimal(0)
            steps = ", ".join(str(plain_decimal(start + n * self.step)) for n in range(3))
            return f"{value} is not on the scale's steps of {self.step} ({steps}, ...)"
        return None

    def describe(self) -> str:
        low = "" if self.min is None else str(self.min)
        high = "" if self.max is None else str(self.max)
        step = "" if self.step is None else f" by {self.step}"
        return f"{low}..{high}{step}"


class MeasureDefinition(StrictModel):
    """One measure: ``id`` is fixed (the API, uploads and later KPIs name it), the names are for
    people. ``aggregation`` says how a KPI built on it later combines several entries (a mean of
    survey scores, a sum of hours, the last rating given)."""

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    name: str
    description: str = ""
    i18n: I18n = Field(default_factory=dict)
    unit: Literal["score", "rating", "hours", "percent", "count", "number"] = "number"
    scale: Scale = Field(default_factory=Scale)
    scopes: list[MeasureScope] = Field(default_factory=lambda: list(SCOPES), min_length=1)
    grains: list[MeasureGrain] = Field(default_factory=lambda: list(GRAINS), min_length=1)
    aggregation: Literal["mean", "sum", "last"] = "mean"
    direction: Literal["higher", "lower"] = "higher"

    @field_validator("scopes", "grains")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("name each one once")
        return value

    def display(self, locale: str) -> tuple[str, str]:
        """Name and description in ``locale``, in English where there is no translation."""
        translation = self.i18n.get(locale)
        if translation is None:
            return self.name, self.description
        return translation.name, translation.description or self.description

    def issues(self, scope: str, grain: str, value: Decimal) -> list[tuple[str, str]]:
        """What keeps ``value`` from being entered for ``scope`` and ``grain``, as (field, message)."""
        found: list[tuple[str, str]] = []
        if scope not in self.scopes:
            found.append(("scope", f"{self.id} is entered for {', '.join(self.scopes)}, not {scope}"))
        if grain not in self.grains:
            found.append(("grain", f"{self.id} is entered by {', '.join(self.grains)}, not {grain}"))
        says = digits_issue(value) or self.scale.issue(value)
        if says is not None:
            found.append(("value", says))
        return found


class DeclaredValue(StrictModel):
    """A value written in the configuration (``measures.values``), for small, stable numbers.

    ``period`` is any date inside the period (``2026``, ``2026-04`` or ``2026-04-01``) read at
    ``grain``; the entry is stored under the period's first day. The configuration owns the entries
    it declares: they change when it does, and the API does not change them.
    """

    measure: str
    scope: MeasureScope = "company"
    scope_id: str = "company"
    grain: MeasureGrain = "quarter"
    period: date
    value: Decimal

    @field_validator("period", mode="before")
    @classmethod
    def _short_dates(cls, value: Any) -> Any:
        return short_period(value)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.scope == "company") != (self.scope_id == "company"):
            raise ValueError("scope_id is 'company' exactly when scope is company")
        return self


class MeasureSection(StrictModel):
    """``measures:`` in the configuration: the shipped definitions plus a deployment's own (one
    with the id of a shipped definition replaces it), and values declared in the file."""

    library: Literal["default", "none"] = "default"
    definitions: list[MeasureDefinition] = Field(default_factory=list)
    values: list[DeclaredValue] = Field(default_factory=list)
