"""Alert rules as configured (``alerts.rules`` in the YAML), validated like the KPIs."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Annotated, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from crm_perf_sync.kit.canonical import digest
from crm_perf_sync.kit.schema import StrictModel
from crm_perf_sync.webhooks.events import Severity

Comparator = Literal["<", "<=", ">", ">="]
COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class Threshold(StrictModel):
    """``value op threshold`` is a breach (``when``) or a recovery (``recover``)."""

    op: Comparator
    value: float = Field(allow_inf_nan=False)

    def holds(self, value: float) -> bool:
        return COMPARE[self.op](value, self.value)


class IncentiveRef(StrictModel):
    """A component of an incentive plan, watched per rep in the plan's current period."""

    plan: str
    component: str


class AlertRule(StrictModel):
    """One alert: what to watch, where, when it breaches and when it has recovered.

    ``kpi`` (its ``value``, or the ``attainment`` or ``pace`` against its target),
    ``scorecard`` (a rep's score) or ``incentive`` (a component of a plan, per rep: its payout so
    far as ``value``, a commission's ``attainment`` of quota, its ``pace`` or its
    ``projected_payout`` at that pace) in ``scope`` (every company, team or owner value, or only
    the ``scope_ids`` listed; ``level`` keeps teams of one level, e.g. ``region``) at ``grain``
    (an incentive's is its plan's period), in the ``current`` or ``previous`` period. It breaches
    when ``when`` holds for ``for`` evaluations in a row and recovers when ``recover`` holds (by
    default when ``when`` no longer does; a separate recovery threshold keeps a value hovering at
    the line from flapping). A value from fewer than ``min_sample`` records counts as no data;
    ``no_data`` says what no data means: ``keep`` the state, treat it as ``clear`` or as a
    ``breach``. With ``days_left``, the rule judges only while the days left in the period
    (today included) meet it, and counts as clear outside (a reminder for the last weeks).
    """

    # ``for_`` is written ``for`` in the configuration and may be given by name in code.
    model_config = ConfigDict(populate_by_name=True)

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
    name: str = ""
    kpi: str | None = None
    scorecard: str | None = None
    incentive: IncentiveRef | None = None
    measure: Literal["value", "attainment", "pace", "projected_payout"] = "value"
    scope: Literal["company", "team", "owner"] = "company"
    scope_ids: list[str] | None = None
    level: str | None = None
    grain: Literal["week", "month", "quarter", "year", "all"] = "month"
    period: Literal["current", "previous"] = "current"
    currency: str = Field(default="", pattern=r"^([A-Z]{3})?$")
    when: Threshold
    recover: Threshold | None = None
    for_: int = Field(default=1, ge=1, le=1000, alias="for")
    min_sample: int = Field(default=0, ge=0)
    no_data: Literal["keep", "clear", "breach"] = "keep"
    severity: Severity = "warning"
    days_left: Threshold | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if sum(x is not None for x in (self.kpi, self.scorecard, self.incentive)) != 1:
            raise ValueError("name exactly one of kpi, scorecard or incentive")
        if self.incentive is not None:
            self._incentive_consistent()
        elif self.measure == "projected_payout":
            raise ValueError("projected_payout is an incentive's: it needs incentive")
        if self.scorecard is not None:
            if self.measure != "value":
                raise ValueError("a scorecard rule watches the score: measure must be value")
            if self.scope != "owner":
                raise ValueError("scores are per rep: a scorecard rule's scope must be owner")
        if self.level is not None and self.scope != "team":
            raise ValueError("level narrows teams: it needs scope team")
        if self.grain == "all" and self.period != "current":
            raise ValueError("the grain all has one period: period must be current")
        if self.grain == "all" and self.days_left is not None:
            raise ValueError("the grain all has no end: days_left needs another grain")
        recover = self.recover
        if recover is not None:
            below = self.when.op in ("<", "<=")
            if (recover.op in ("<", "<=")) == below:
                raise ValueError(
                    "recover must point the other way from when (e.g. when < 0.2, recover >= 0.25)"
                )
            if (below and recover.value < self.when.value) or (not below and recover.value > self.when.value):
                raise ValueError("the recovery threshold must be at or beyond the breach threshold")
        return self

    def _incentive_consistent(self) -> None:
        if self.scope != "owner":
            raise ValueError("payouts are per rep: an incentive rule's scope must be owner")
        if "grain" in self.model_fields_set:
            raise ValueError("an incentive rule watches its plan's periods: leave grain out")
        if self.period != "current":
            raise ValueError("an incentive rule watches the plan's current period: period must be current")
        if self.currency or self.min_sample:
            raise ValueError("an incentive rule takes its plan's currency and no min_sample")

    def definition_hash(self) -> str:
        """Changes when the rule's meaning changes (a changed rule counts its breaches again)."""
        payload = self.model_dump(mode="json", exclude={"name", "severity"})
        for later in ("incentive", "days_left"):
            # Fields added later count only when given: the rules written before keep their hash.
            if payload[later] is None:
                del payload[later]
        return digest(payload)

    def recovered(self, value: float) -> bool:
        if self.recover is not None:
            return self.recover.holds(value)
        return not self.when.holds(value)


class AlertSection(StrictModel):
    """The ``alerts`` section: the rules, evaluated after every KPI refresh and every minute."""

    rules: list[AlertRule] = Field(default_factory=list)
