"""The incentives API's response models (next to :mod:`crm_perf_sync.api.schemas`, as flat and
stable). Amounts are JSON numbers in the plan's currency, as KPI values' sums are: each is a whole
number of cents, which a JSON number carries exactly; none is ever summed across currencies (a
plan pays in one)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from crm_perf_sync.api.schemas import TranslationOut

AMOUNT = "In the plan's currency, to the cent (a JSON number with at most 2 decimal places)"


class ComponentOut(BaseModel):
    id: str
    type: str = Field(description="commission, spiff, score_bonus or team_pool")
    name: str
    terms: str = Field(description="What it pays, in words")
    definition: dict[str, Any] = Field(description="What it pays, in numbers: the component as configured")


class ParticipantOut(BaseModel):
    owner: str | None = Field(description="A rep's scope id, or null for a team")
    team: str | None = Field(description="A team's scope id (its members and its sub-teams'), or null")
    from_: date | None = Field(alias="from", description="The first day taken part (null: the plan's)")
    to: date | None = Field(description="The last day taken part (null: the plan's)")


class PlanPeriodOut(BaseModel):
    period_key: str = Field(description="The period's first day")
    period_start: date
    period_end: date = Field(description="The day after the period's last day")
    last_day: date
    lines: int = Field(description="Statement lines paid in the period")
    amount: float = Field(description="What the period pays in all. " + AMOUNT)
    closed: bool
    closed_at: datetime | None
    closed_by: str | None = Field(description="The name of the API key (or the person) that closed it")


class PlanOut(BaseModel):
    id: str
    source: Literal["configuration", "api"] = Field(
        description="Where the plan is defined: the configuration file, or set through the API"
    )
    name: str
    description: str
    i18n: dict[str, TranslationOut] = Field(description="Its name in other languages, by locale")
    period: str = Field(description="month, quarter or year (fiscal)")
    currency: str
    starts: date = Field(description="The plan's first day")
    ends: date | None = Field(description="The plan's last day (null: open-ended)")
    participants: list[ParticipantOut]
    components: list[ComponentOut]
    periods: list[PlanPeriodOut] = Field(description="Its periods from its start up to today")


class PayoutOut(BaseModel):
    id: int
    plan_id: str
    period_key: str = Field(description="The period the line is paid in (its first day)")
    period_start: date
    period_end: date = Field(description="The day after the period's last day")
    owner_id: str = Field(description="The rep's scope id: <connection>:<owner id>")
    owner_name: str
    component_id: str
    component_type: str
    kind: str = Field(
        description="payout (the component's payout for the period) or adjustment (a change to what a "
        "closed period paid, paid in the first open period after it)"
    )
    for_period_key: str = Field(description="The period the amount is for (a closed one, for an adjustment)")
    currency: str
    amount: float = Field(description=AMOUNT)
    base: float | None = Field(description="A commission's base (e.g. won revenue). " + AMOUNT)
    quota: float | None = Field(description="A commission's quota for the period. " + AMOUNT)
    attainment: float | None = Field(description="base / quota")
    rate: float | None = Field(
        description="The rate applied (a commission's reached tier's, a SPIFF's amount)"
    )
    units: int | None = Field(description="A SPIFF's units (won deals of the product, ...)")
    score: float | None
    grade: str | None
    capped: bool = Field(description="The cap took something off")
    note: str | None = Field(description="Why the line pays nothing, or what an adjustment is for")
    detail: dict[str, Any] = Field(
        description="The tiers (`bands`: from, to, rate, portion, amount), the amount before the cap "
        "(`uncapped`), the share of the period taken part in (`participation`); for an adjustment what "
        "was paid, what is due now and the records that changed (`changes`). Amounts here are decimal text"
    )
    frozen: bool = Field(description="The period is closed: the line never changes again")
    computed_at: datetime


class ProgressOut(BaseModel):
    component_id: str
    base: float | None
    quota: float | None
    attainment: float | None
    tier: int | None = Field(description="The tier reached (1 = the first)")
    next_tier: int | None
    next_tier_needs: float | None = Field(description="How much more base reaches the next tier. " + AMOUNT)
    elapsed: float | None = Field(description="The share of the period passed, while it runs")
    projected_base: float | None = Field(description="The base at the end of the period if the pace holds")
    projected_amount: float | None = Field(description="What that base would pay. " + AMOUNT)


class StatementOut(BaseModel):
    plan_id: str
    plan_name: str
    owner_id: str
    owner_name: str
    period_key: str
    period_start: date
    period_end: date = Field(description="The day after the period's last day")
    currency: str
    closed: bool
    closed_at: datetime | None
    closed_by: str | None
    total: float = Field(description="The sum of the lines. " + AMOUNT)
    lines: list[PayoutOut]
    progress: list[ProgressOut] = Field(description="Per commission: where the rep stands")
    periods: list[str] = Field(description="Every period the rep has lines in, in this plan")


class ExplainedLineOut(BaseModel):
    plan_id: str
    owner_id: str
    owner_name: str
    period_key: str
    lines: list[PayoutOut] = Field(description="The component's lines in the period (payout, adjustments)")
    record_count: int = Field(description="The records behind the payout, on every page")
    contribution_total: float = Field(description="What the records add up to (a commission's base)")
    earned_total: float | None = Field(
        description="What the records earned before any cap, on every page (null when the component "
        "pays per record nothing that can be split, e.g. a SPIFF)"
    )
    records: list[dict[str, Any]] = Field(
        description="A page of records in the order they fell in the period: CRM id, connection, "
        "`contribution`, `crm_url` (the record's page in its CRM; null when its connector cannot say), "
        "and for a commission `earned` and the `tiers` it filled"
    )
    next: str | None = Field(description="The URL of the next page of records; null on the last one")


class CloseOut(BaseModel):
    plan_id: str
    period_key: str
    period_start: date
    period_end: date = Field(description="The day after the period's last day")
    closed_at: datetime
    closed_by: str
    lines: int = Field(description="The lines frozen")
    amount: float = Field(description="What the period pays in all. " + AMOUNT)
