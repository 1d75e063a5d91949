"""What a plan names must exist and fit: KPIs of the right kind, breakdowns they have, scorecards
scored at the plan's period."""

from __future__ import annotations

from collections.abc import Mapping

from crm_perf_sync.incentives.schemas import Commission, IncentiveSection, ScoreBonus, Spiff, TeamPool
from crm_perf_sync.kit.yaml_source import Loc
from crm_perf_sync.kpi.schemas import CountKpi, CustomerKpi, Kpi, KpiSection, SumKpi


def section_issues(
    section: IncentiveSection, kpis: Mapping[str, Kpi], kpi_section: KpiSection
) -> list[tuple[Loc, str]]:
    issues: list[tuple[Loc, str]] = []
    cards = {card.id: card for card in kpi_section.scorecards}
    known = ", ".join(sorted(kpis))

    def kpi_issue(here: Loc, kpi_id: str, kinds: tuple[type, ...], what: str) -> Kpi | None:
        kpi = kpis.get(kpi_id)
        if kpi is None:
            issues.append((here, f"unknown KPI {kpi_id!r} (defined: {known})"))
            return None
        if not isinstance(kpi, kinds) or (isinstance(kpi, CustomerKpi) and kpi.stat != "new"):
            issues.append((here, f"{kpi_id} is a {kpi.type} KPI; {what}"))
            return None
        return kpi

    def breakdown_issue(here: Loc, kpi: Kpi | None, breakdown: Mapping[str, str]) -> None:
        if kpi is None or not breakdown:
            return
        (dimension,) = breakdown
        available = sorted({*kpi.dimensions, *kpi_section.dimensions})
        if dimension not in available:
            issues.append(
                (
                    here,
                    f"{kpi.id} is not broken down by {dimension!r} "
                    f"(its breakdowns: {', '.join(available) or 'none'})",
                )
            )

    def card_issue(here: Loc, card_id: str, grain: str) -> None:
        card = cards.get(card_id)
        if card is None:
            issues.append(
                (here, f"unknown scorecard {card_id!r} (defined: {', '.join(sorted(cards)) or 'none'})")
            )
        elif grain not in card.grains:
            issues.append(
                (
                    here,
                    f"scorecard {card_id} is not scored per {grain} (its grains: {', '.join(card.grains)})",
                )
            )

    for p, plan in enumerate(section.plans):
        for c, component in enumerate(plan.components):
            here: Loc = ("incentives", "plans", p, "components", c)
            if isinstance(component, Commission):
                kpi = kpi_issue(
                    (*here, "base", "kpi"), component.base.kpi, (SumKpi,), "a commission's base is a sum KPI"
                )
                breakdown_issue((*here, "base", "breakdown"), kpi, component.base.breakdown)
            elif isinstance(component, Spiff):
                kpi = kpi_issue(
                    (*here, "kpi"),
                    component.kpi,
                    (CountKpi, CustomerKpi),
                    "a SPIFF pays per unit of a count KPI",
                )
                breakdown_issue((*here, "breakdown"), kpi, component.breakdown)
            elif isinstance(component, ScoreBonus):
                card_issue((*here, "scorecard"), component.scorecard, plan.period)
            elif isinstance(component, TeamPool):
                if component.scorecard is not None:
                    card_issue((*here, "scorecard"), component.scorecard, plan.period)
                if component.kpi is not None:
                    kpi_issue(
                        (*here, "kpi"), component.kpi, (SumKpi, CountKpi), "a pool splits by a sum or a count"
                    )
    return issues


#: What an alert rule can watch of each kind of component (``value``: the payout so far).
WATCHABLE = {
    "commission": ("value", "attainment", "pace", "projected_payout"),
    "spiff": ("value",),
    "score_bonus": ("value",),
    "team_pool": ("value",),
}


def alert_rule_issues(
    section: IncentiveSection, plan_id: str, component_id: str, measure: str, here: Loc
) -> list[tuple[Loc, str]]:
    """An alert rule's incentive: a plan and component that exist, and a measure it gives."""
    plans = {plan.id: plan for plan in section.plans}
    plan = plans.get(plan_id)
    if plan is None:
        known = ", ".join(sorted(plans)) or "none"
        return [((*here, "incentive", "plan"), f"unknown incentive plan {plan_id!r} (defined: {known})")]
    component = plan.component(component_id)
    if component is None:
        known = ", ".join(c.id for c in plan.components)
        return [
            (
                (*here, "incentive", "component"),
                f"plan {plan_id} has no component {component_id!r} (components: {known})",
            )
        ]
    can = WATCHABLE[component.type]
    if isinstance(component, Commission) and component.quotas is None:
        can = ("value", "projected_payout")  # a flat rate without a quota has no attainment
    if measure not in can:
        return [
            (
                (*here, "measure"),
                f"{plan_id} {component_id} is a {component.type} and gives {', '.join(can)}, not {measure}",
            )
        ]
    return []
