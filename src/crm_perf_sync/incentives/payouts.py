"""What each component of a plan pays, from numbers already read: pure arithmetic in decimals.

Money is kept exact (``Decimal``) and every payout line is rounded to the cent, half up, once,
at the end; the parts of a team pool are rounded so that they add up to the pool exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from crm_perf_sync.incentives.schemas import Commission, ScoreBonus, Tier

CENT = Decimal("0.01")
ZERO = Decimal(0)


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def money(value: float | Decimal) -> Decimal:
    """A stored sum (a float of the KPI engine) as an amount of money, to the cent."""
    return cents(value if isinstance(value, Decimal) else Decimal(repr(value)))


@dataclass(frozen=True, slots=True)
class Band:
    """One tier's part of a commission: the base between ``low`` and ``high`` (``None``: no end)
    pays ``rate``; ``portion`` of the base fell in it and earned ``amount`` (not rounded)."""

    tier: int
    low: Decimal
    high: Decimal | None
    rate: Decimal
    portion: Decimal
    amount: Decimal


@dataclass(slots=True)
class Line:
    """A component's payout to one rep for one period, with how it came about."""

    amount: Decimal = ZERO
    base: Decimal | None = None
    quota: Decimal | None = None
    attainment: Decimal | None = None
    rate: Decimal | None = None  # the rate applied (retroactive, flat) or the top band's (marginal)
    tier: int | None = None  # the tier reached (1 = first)
    units: int | None = None
    score: Decimal | None = None
    grade: str | None = None
    share: Decimal | None = None  # of a team pool
    uncapped: Decimal | None = None
    capped: bool = False
    note: str | None = None  # why it pays nothing, when it pays nothing for a reason
    bands: list[Band] = field(default_factory=list)


def commission(component: Commission, base: Decimal, quota: Decimal | None) -> Line:
    """The commission on ``base`` (a rep's value in the period) against ``quota`` (``None``: none)."""
    line = Line(base=base, quota=quota)
    if component.rate is not None and quota is None and component.quotas is None:
        line.rate = component.rate
        line.uncapped = max(base, ZERO) * component.rate
        return _capped(component, line, None)
    if quota is None or quota <= 0:
        line.note = "no quota for this period" if quota is None else "the quota is zero"
        return line
    line.attainment = base / quota
    if component.threshold is not None and line.attainment < component.threshold:
        line.note = f"below the threshold of {component.threshold:%} of quota"
        line.uncapped = ZERO
        return line
    if component.rate is not None:
        line.rate = component.rate
        line.uncapped = max(base, ZERO) * component.rate
    else:
        line.uncapped = _tiered(component, base, quota, line)
    return _capped(component, line, on_target(component, quota))


def on_target(component: Commission, quota: Decimal) -> Decimal:
    """What the commission pays at exactly 100% of quota, before any cap."""
    if component.rate is not None:
        return quota * component.rate
    return _tiered(component, quota, quota, Line())


def tier_reached(component: Commission, attainment: Decimal) -> int:
    """The index (0 = first) of the tier an attainment falls in."""
    return max(n for n, tier in enumerate(component.tiers) if tier.from_ <= attainment or n == 0)


def tier_of(component: Commission, base: Decimal | None, quota: Decimal | None) -> int | None:
    """The tier (1 = first) a commission line stands in: ``None`` without tiers, without a quota,
    or below the threshold (nothing is paid there)."""
    if not component.tiers or base is None or quota is None or quota <= 0:
        return None
    attainment = base / quota
    if component.threshold is not None and attainment < component.threshold:
        return None
    return tier_reached(component, attainment) + 1


def _tiered(component: Commission, base: Decimal, quota: Decimal, line: Line) -> Decimal:
    attainment = base / quota
    reached = tier_reached(component, attainment)
    line.tier = reached + 1
    if component.tier_mode == "retroactive":
        rate = component.tiers[reached].rate
        line.rate = rate
        whole = max(base, ZERO)
        line.bands = [_band(reached, component.tiers[reached], quota, whole, rate, whole)]
        return whole * rate
    total = ZERO
    for n, tier in enumerate(component.tiers):
        low = tier.from_ * quota
        high = None if tier.to is None else tier.to * quota
        portion = max(ZERO, (base if high is None else min(base, high)) - low)
        if portion > 0 or n == 0:
            line.bands.append(_band(n, tier, quota, portion, tier.rate, portion))
        total += portion * tier.rate
    line.rate = component.tiers[reached].rate
    return total


def _band(n: int, tier: Tier, quota: Decimal, portion: Decimal, rate: Decimal, paid_on: Decimal) -> Band:
    high = None if tier.to is None else tier.to * quota
    return Band(n + 1, tier.from_ * quota, high, rate, portion, paid_on * rate)


def _capped(component: Commission, line: Line, on_target_payout: Decimal | None) -> Line:
    assert line.uncapped is not None
    amount = line.uncapped
    cap = component.cap
    if cap is not None:
        limit = cap.amount
        if cap.on_target_multiple is not None and on_target_payout is not None:
            limit = on_target_payout * cap.on_target_multiple
        if limit is not None and amount > limit:
            amount, line.capped = limit, True
    line.amount = cents(amount)
    return line


def spiff(amount: Decimal, units: int, cap: Decimal | None) -> Line:
    line = Line(units=units, rate=amount, uncapped=amount * max(units, 0))
    paid = line.uncapped or ZERO
    if cap is not None and paid > cap:
        paid, line.capped = cap, True
    line.amount = cents(paid)
    return line


def score_bonus(component: ScoreBonus, score: Decimal | None, grade: str | None) -> Line:
    line = Line(score=score, grade=grade)
    if score is None:
        line.note = "no score for this period"
        return line
    if component.min_score is not None and score < component.min_score:
        line.note = f"score below the minimum of {component.min_score}"
        line.uncapped = ZERO
        return line
    factor = score if not component.grades else component.grades.get(grade or "", ZERO)
    line.rate = factor
    line.uncapped = component.amount * factor
    paid = line.uncapped
    if component.cap is not None and paid > component.cap:
        paid, line.capped = component.cap, True
    line.amount = cents(paid)
    return line


def pool_shares(amount: Decimal, weights: dict[str, Decimal]) -> dict[str, tuple[Decimal, Decimal]]:
    """``amount`` split in proportion to ``weights``: each member's (share, cents), the cents adding
    up to ``amount`` exactly (the cents left over by rounding down go to the largest remainders,
    ties in member order). Empty when the weights add up to nothing."""
    positive = {member: weight for member, weight in weights.items() if weight > 0}
    total = sum(positive.values(), ZERO)
    if total <= 0:
        return {}
    exact = {member: amount * weight / total for member, weight in positive.items()}
    floor = {member: value.quantize(CENT, rounding=ROUND_DOWN) for member, value in exact.items()}
    left = int((amount - sum(floor.values(), ZERO)) / CENT)
    order = sorted(positive, key=lambda m: (-(exact[m] - floor[m]), m))
    for member in order[:left]:
        floor[member] += CENT
    return {member: (positive[member] / total, floor[member]) for member in positive}
