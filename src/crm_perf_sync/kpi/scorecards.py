"""Scorecards: a weighted, normalised, graded score per rep and period over KPI values.

Scoring is pure: it takes the reps' KPI values and targets for one period and returns each rep's
score with every component's contribution, so a rep can see exactly why they scored what they
did. A component without a value, below its minimum sample or (for attainment) without a target
is dropped, the remaining weights are renormalised, and the result says which and why.

With perspectives, each perspective's sub-score is its kept components' weighted mean (weights
renormalised within the perspective), a perspective whose components all dropped is dropped in
turn, and the score is the kept perspectives' weighted mean. Either way each component's
``applied_weight`` is its share of the whole score, so the contributions add up to the score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crm_perf_sync.kpi.schemas import CountKpi, CustomerKpi, Kpi, ScorecardConfig, ScoreComponent, SumKpi


@dataclass(frozen=True, slots=True)
class Observed:
    """One KPI value of one rep for the period (one currency)."""

    value: float | None
    target: float | None
    sample_count: int
    currency: str


@dataclass(slots=True)
class Scored:
    scope_id: str
    score: float | None
    grade: str | None
    components: list[dict[str, Any]]
    dropped: int
    perspectives: list[dict[str, Any]] = field(default_factory=list)
    team_id: str | None = None
    rank: int | None = None
    team_rank: int | None = None


def normalise(component: ScoreComponent, kpi: Kpi, value: float, target: float | None) -> float | None:
    """The component's score for ``value``: 0..cap for attainment, 0..1 for linear."""
    norm = component.normalise
    if norm.method == "attainment":
        if target is None or target <= 0:
            return None
        if kpi.direction == "higher":
            ratio = value / target
        else:
            # Lower is better: at target scores 1, half the target scores 2 (then capped).
            ratio = target / value if value > 0 else norm.cap
        return max(0.0, min(norm.cap, ratio))
    assert norm.floor is not None
    assert norm.goal is not None
    share = (value - norm.floor) / (norm.goal - norm.floor)
    return max(0.0, min(1.0, share))


def grade_of(card: ScorecardConfig, score: float) -> str:
    for band in card.grades:
        if score >= band.min:
            return band.grade
    return card.grades[-1].grade


def score_rep(
    card: ScorecardConfig,
    kpis: Mapping[str, Kpi],
    scope_id: str,
    observed: Mapping[str, Sequence[Observed]],
) -> Scored:
    """One rep's score: ``observed`` maps each component KPI to the rep's values (per currency)."""
    components: list[dict[str, Any]] = []
    for component in card.components:
        kpi = kpis[component.kpi]
        entry: dict[str, Any] = {
            "kpi_id": component.kpi,
            "perspective": component.perspective,
            "weight": component.weight,
            "applied_weight": 0.0,
            "method": component.normalise.method,
            "value": None,
            "target": None,
            "currency": None,
            "sample_count": 0,
            "normalised": None,
            "contribution": 0.0,
            "dropped": None,
        }
        components.append(entry)
        candidates = list(observed.get(component.kpi, ()))
        if card.currency is not None:
            candidates = [c for c in candidates if c.currency in ("", card.currency)]
        if len(candidates) > 1:
            entry["dropped"] = "values in several currencies: set the scorecard's currency"
            continue
        # Nothing counted is a real zero for a count or a sum (no won deals: no revenue; no
        # first deals: no new customers).
        additive = isinstance(kpi, CountKpi | SumKpi) or (isinstance(kpi, CustomerKpi) and kpi.stat == "new")
        if candidates:
            found = candidates[0]
        elif additive:
            found = Observed(0.0, None, 0, card.currency or "")
        else:
            entry["dropped"] = "no value for this period"
            continue
        entry.update(value=found.value, target=found.target, currency=found.currency or None)
        entry["sample_count"] = found.sample_count
        minimum = component.min_sample if component.min_sample is not None else kpi.min_sample
        if found.value is None:
            entry["dropped"] = "no value for this period (nothing to divide by)"
            continue
        if not additive and found.sample_count < minimum:
            entry["dropped"] = f"sample of {found.sample_count} below the minimum of {minimum}"
            continue
        normalised = normalise(component, kpi, found.value, found.target)
        if normalised is None:
            entry["dropped"] = "no target for this period"
            continue
        entry["normalised"] = normalised
    dropped = sum(1 for c in components if c["dropped"] is not None)
    if card.perspectives:
        return _by_perspective(card, scope_id, components, dropped)
    kept_weight = sum(c["weight"] for c in components if c["dropped"] is None)
    if kept_weight <= 0:
        return Scored(scope_id, None, None, components, dropped)
    for entry in components:
        if entry["dropped"] is None:
            entry["applied_weight"] = entry["weight"] / kept_weight
            entry["contribution"] = entry["applied_weight"] * entry["normalised"]
    score = sum(c["contribution"] for c in components)
    return Scored(scope_id, score, grade_of(card, score), components, dropped)


def _by_perspective(
    card: ScorecardConfig, scope_id: str, components: list[dict[str, Any]], dropped: int
) -> Scored:
    perspectives: list[dict[str, Any]] = []
    for perspective in card.perspectives:
        mine = [c for c in components if c["perspective"] == perspective.id]
        kept = [c for c in mine if c["dropped"] is None]
        weight = sum(c["weight"] for c in kept)
        sub = sum(c["weight"] * c["normalised"] for c in kept) / weight if weight > 0 else None
        perspectives.append(
            {
                "id": perspective.id,
                "name": perspective.name,
                "weight": perspective.weight,
                "applied_weight": 0.0,
                "score": sub,
                "components": [c["kpi_id"] for c in mine],
                "dropped": None if sub is not None else "every component dropped",
            }
        )
    kept_weight = sum(p["weight"] for p in perspectives if p["dropped"] is None)
    if kept_weight <= 0:
        return Scored(scope_id, None, None, components, dropped, perspectives)
    for view in perspectives:
        if view["dropped"] is not None:
            continue
        view["applied_weight"] = view["weight"] / kept_weight
        kept = [c for c in components if c["perspective"] == view["id"] and c["dropped"] is None]
        within = sum(c["weight"] for c in kept)
        for entry in kept:
            entry["applied_weight"] = view["applied_weight"] * entry["weight"] / within
            entry["contribution"] = entry["applied_weight"] * entry["normalised"]
    score = sum(p["applied_weight"] * p["score"] for p in perspectives if p["dropped"] is None)
    return Scored(scope_id, score, grade_of(card, score), components, dropped, perspectives)


def rank(scored: Sequence[Scored], teams: Mapping[str, str]) -> None:
    """Competition ranks (1, 2, 2, 4) by score, in the company and within each rep's team."""

    def assign(group: Sequence[Scored], attr: str) -> None:
        ordered = sorted((s for s in group if s.score is not None), key=lambda s: -(s.score or 0.0))
        previous: float | None = None
        position = 0
        for i, item in enumerate(ordered, start=1):
            if item.score != previous:
                position, previous = i, item.score
            setattr(item, attr, position)

    assign(scored, "rank")
    by_team: dict[str, list[Scored]] = {}
    for item in scored:
        item.team_id = teams.get(item.scope_id)
        if item.team_id is not None:
            by_team.setdefault(item.team_id, []).append(item)
    for members in by_team.values():
        assign(members, "team_rank")
