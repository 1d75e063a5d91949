"""Incentive plans as configured (``incentives.plans`` in the YAML), validated like the KPIs.

A plan pays its participants per period (a fiscal month, quarter or year) in one currency. Its
components read what the KPI engine already keeps per rep and period, so a payout is exactly as
correct, incremental and explainable as the numbers it is made of:

- ``commission``: a rate (or a table of tiers on the attainment of a quota) applied to a rep's
  value of a sum KPI (``won_revenue`` by default; a breakdown value narrows it to a product, a
  deal type, ...). A marginal tier's rate applies to the part of the base inside the tier, a
  retroactive tier's rate to the whole base once the tier is reached. Nothing is paid below the
  ``threshold``; a ``cap`` limits the commission to an amount or to a multiple of the on-target
  payout (what the tiers pay at exactly 100% of quota).
- ``spiff``: a fixed amount per unit of a count KPI (a won deal of one product, a new customer,
  a deal above a size, a visit), capped per period if asked.
- ``score_bonus``: an amount scaled by the rep's score on a scorecard, or paid by grade.
- ``team_pool``: an amount per period for a team, split among its members in the plan by their
  scores or by their share of a KPI.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, field_validator, model_validator

from crm_perf_sync.kit.schema import StrictModel
from crm_perf_sync.kpi.schemas import I18n, short_period

PlanGrain = Literal["month", "quarter", "year"]
Money = Annotated[Decimal, Field(ge=0, max_digits=15, decimal_places=2)]
Rate = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=6)]
ComponentId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]


class Tier(StrictModel):
    """Attainment (1 = 100% of quota) from ``from`` up to ``to`` (open when absent) pays ``rate``."""

    model_config = ConfigDict(populate_by_name=True)

    from_: Decimal = Field(alias="from", ge=0, max_digits=12, decimal_places=6)
    to: Decimal | None = Field(default=None, max_digits=12, decimal_places=6)
    rate: Rate

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.to is not None and self.to <= self.from_:
            raise ValueError(f"a tier ends above where it starts (from {self.from_}, to {self.to})")
        return self


class Cap(StrictModel):
    """At most ``amount``, or at most ``on_target_multiple`` times the on-target payout."""

    amount: Money | None = None
    on_target_multiple: Decimal | None = Field(default=None, gt=0, max_digits=8, decimal_places=4)

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.amount is None) == (self.on_target_multiple is None):
            raise ValueError("a cap is either an amount or an on_target_multiple")
        return self


class Base(StrictModel):
    """A rep's value of ``kpi`` in the period; with ``breakdown``, of one value of one of its
    breakdowns (``{product: GTK 500}``)."""

    kpi: str = "won_revenue"
    breakdown: dict[str, str] = Field(default_factory=dict)

    @field_validator("breakdown")
    @classmethod
    def _one_breakdown(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 1:
            raise ValueError("a base narrows by one breakdown value at most")
        return value

    @property
    def dimension(self) -> tuple[str, str]:
        """(dimension, value); ('', '') for the whole KPI."""
        return next(iter(self.breakdown.items()), ("", ""))


class Quota(StrictModel):
    """The quota a rep's attainment is measured against, per period of the plan.

    ``source: targets`` reads the targets of the base KPI (decomposed from years and teams like
    every target); ``amount`` gives one per period, ``owners`` overrides it per rep.
    """

    source: Literal["targets", "plan"] = "targets"
    amount: Money | None = None
    owners: dict[str, Money] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.source == "targets" and (self.amount is not None or self.owners):
            raise ValueError("a quota from targets takes no amount or owners; use source: plan")
        if self.source == "plan" and self.amount is None and not self.owners:
            raise ValueError("a quota given in the plan needs an amount or owners")
        return self


class _Component(StrictModel):
    id: ComponentId
    name: str = ""
    i18n: I18n = Field(default_factory=dict)


class Commission(_Component):
    type: Literal["commission"]
    base: Base = Field(default_factory=Base)
    rate: Rate | None = None  # a flat rate on the whole base: no tiers, no quota needed
    tiers: list[Tier] = Field(default_factory=list)
    tier_mode: Literal["marginal", "retroactive"] = "marginal"
    quota: Quota | None = None
    threshold: Decimal | None = Field(default=None, ge=0, max_digits=12, decimal_places=6)
    cap: Cap | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.rate is None) == (not self.tiers):
            raise ValueError("a commission has either a flat rate or tiers")
        if self.tiers:
            if self.tiers[0].from_ != 0:
                raise ValueError("the first tier starts at 0 (attainment of 0%)")
            for n, (tier, after) in enumerate(zip(self.tiers, self.tiers[1:], strict=False)):
                if tier.to is None or tier.to != after.from_:
                    raise ValueError(
                        f"tiers are contiguous: tier {n + 1} ends at {tier.to}, tier {n + 2} starts at "
                        f"{after.from_}"
                    )
            if self.tiers[-1].to is not None:
                raise ValueError("the last tier has no upper end (omit its 'to')")
        on_target_cap = self.cap is not None and self.cap.on_target_multiple is not None
        relative = self.threshold is not None or on_target_cap
        if relative and self.quotas is None:
            raise ValueError("a threshold or a cap on the on-target payout is relative to a quota: give one")
        return self

    @property
    def quotas(self) -> Quota | None:
        """Where the quota comes from: tiers need one (the base KPI's targets unless given)."""
        return self.quota if self.quota is not None or not self.tiers else Quota()


class Spiff(_Component):
    """``amount`` per unit of a count KPI (a won deal of a product, a new customer, a visit)."""

    type: Literal["spiff"]
    kpi: str
    breakdown: dict[str, str] = Field(default_factory=dict)
    amount: Money
    cap: Money | None = None

    @field_validator("breakdown")
    @classmethod
    def _one_breakdown(cls, value: dict[str, str]) -> dict[str, str]:
        return Base._one_breakdown(value)

    @property
    def dimension(self) -> tuple[str, str]:
        return next(iter(self.breakdown.items()), ("", ""))


class ScoreBonus(_Component):
    """``amount`` times the rep's score (0..1) on ``scorecard``, or ``amount`` times the factor of
    their grade (``grades: {A: 1, B: 0.5}``; a grade not listed pays nothing). Nothing is paid
    below ``min_score``."""

    type: Literal["score_bonus"]
    scorecard: str
    amount: Money
    grades: dict[str, Annotated[Decimal, Field(ge=0, max_digits=8, decimal_places=4)]] = Field(
        default_factory=dict
    )
    min_score: Decimal | None = Field(default=None, ge=0, max_digits=8, decimal_places=6)
    cap: Money | None = None


class TeamPool(_Component):
    """``amount`` per period for ``team``, split among its members in the plan: by their scores on
    ``scorecard`` (``split: score``) or by their shares of ``kpi`` (``split: contribution``)."""

    type: Literal["team_pool"]
    team: str
    amount: Money
    split: Literal["score", "contribution"]
    scorecard: str | None = None
    kpi: str | None = None

    @model_validator(mode="after")
    def _split_source(self) -> Self:
        if self.split == "score" and (self.scorecard is None or self.kpi is not None):
            raise ValueError("a pool split by score names a scorecard (and no kpi)")
        if self.split == "contribution" and (self.kpi is None or self.scorecard is not None):
            raise ValueError("a pool split by contribution names a kpi (and no scorecard)")
        return self


Component = Annotated[Commission | Spiff | ScoreBonus | TeamPool, Field(discriminator="type")]


class Participant(StrictModel):
    """A rep (``owner``: a scope id such as ``maven:Anna Snelling``) or every member of a team and
    its sub-teams, from ``from`` until ``to`` (both days included; open when absent)."""

    model_config = ConfigDict(populate_by_name=True)

    owner: str | None = None
    team: str | None = None
    from_: date | None = Field(default=None, alias="from")
    to: date | None = None

    @field_validator("from_", "to", mode="before")
    @classmethod
    def _short_dates(cls, value: Any) -> Any:
        return short_period(value)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.owner is None) == (self.team is None):
            raise ValueError("a participant is an owner or a team")
        if self.from_ is not None and self.to is not None and self.to < self.from_:
            raise ValueError(f"a participation ends ({self.to}) before it starts ({self.from_})")
        return self


class Plan(StrictModel):
    """One incentive plan: who takes part, from when, per which period, in which currency, for what."""

    model_config = ConfigDict(populate_by_name=True)

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
    name: str
    description: str = ""
    i18n: I18n = Field(default_factory=dict)
    period: PlanGrain = "quarter"
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    from_: date = Field(alias="from")
    to: date | None = None
    participants: list[Participant] = Field(min_length=1)
    components: list[Component] = Field(min_length=1)

    @field_validator("from_", "to", mode="before")
    @classmethod
    def _short_dates(cls, value: Any) -> Any:
        return short_period(value)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        ids = [c.id for c in self.components]
        if len(set(ids)) != len(ids):
            raise ValueError("each component id may be used once in a plan")
        if self.to is not None and self.to < self.from_:
            raise ValueError(f"the plan ends ({self.to}) before it starts ({self.from_})")
        return self

    def component(self, component_id: str) -> Component | None:
        return next((c for c in self.components if c.id == component_id), None)


class IncentiveSection(StrictModel):
    """``incentives:`` in the configuration."""

    plans: list[Plan] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        ids = [p.id for p in self.plans]
        if len(set(ids)) != len(ids):
            raise ValueError("each plan id may be used once")
        return self
