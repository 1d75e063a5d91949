"""The payout arithmetic on its own: tiers, thresholds, caps, SPIFFs, bonuses and pools, against
numbers worked out by hand; and plans that the configuration refuses, with where and why."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from crm_perf_sync.config import load_config
from crm_perf_sync.incentives import payouts
from crm_perf_sync.incentives.schemas import Commission, ScoreBonus
from crm_perf_sync.kit.yaml_source import ConfigIssues
from crm_perf_sync.plugins import ConnectorRegistry

D = Decimal


def commission(**spec: Any) -> Commission:
    return Commission.model_validate({"id": "c", "type": "commission", **spec})


TIERS = [{"from": 0, "to": 1, "rate": 0.04}, {"from": 1, "to": 1.5, "rate": 0.06}, {"from": 1.5, "rate": 0.1}]


@pytest.mark.parametrize(
    ("base", "marginal", "retroactive"),
    [
        # quota 100,000: 4% to 100k, 6% to 150k, 10% beyond.
        (D(50_000), D("2000.00"), D("2000.00")),
        (D(100_000), D("4000.00"), D("6000.00")),  # retroactive: at 100% the second tier's rate applies
        (D(120_000), D("5200.00"), D("7200.00")),  # 4000 + 20000*6%  |  120000*6%
        (D(180_000), D("10000.00"), D("18000.00")),  # 4000 + 3000 + 30000*10%  |  180000*10%
        (D("99999.99"), D("4000.00"), D("4000.00")),  # 99999.99*4% = 3999.9996 -> 4000.00
        (D(0), D("0.00"), D("0.00")),
        (D(-500), D("0.00"), D("0.00")),  # a negative base (credits) earns nothing, not a debt
    ],
)
def test_marginal_and_retroactive_tiers(base: Decimal, marginal: Decimal, retroactive: Decimal) -> None:
    quota = D(100_000)
    assert payouts.commission(commission(tiers=TIERS), base, quota).amount == marginal
    assert (
        payouts.commission(commission(tiers=TIERS, tier_mode="retroactive"), base, quota).amount
        == retroactive
    )


def test_bands_say_which_part_of_the_base_fell_in_which_tier() -> None:
    line = payouts.commission(commission(tiers=TIERS), D(180_000), D(100_000))
    assert [(b.tier, b.low, b.high, b.portion, b.amount) for b in line.bands] == [
        (1, D(0), D(100_000), D(100_000), D(4000)),
        (2, D(100_000), D(150_000), D(50_000), D(3000)),
        (3, D(150_000), None, D(30_000), D(3000)),
    ]
    assert (line.tier, line.attainment) == (3, D("1.8"))


def test_threshold_cap_and_on_target_multiple() -> None:
    below = payouts.commission(commission(tiers=TIERS, threshold=0.6), D(59_999), D(100_000))
    assert below.amount == 0
    assert below.note is not None
    assert "threshold" in below.note
    at = payouts.commission(commission(tiers=TIERS, threshold=0.6), D(60_000), D(100_000))
    assert at.amount == D("2400.00")
    # On target: 4,000 at 100%; capped at 1.5x = 6,000 (uncapped 10,000 at 180k).
    capped = payouts.commission(
        commission(tiers=TIERS, cap={"on_target_multiple": 1.5}), D(180_000), D(100_000)
    )
    assert (capped.amount, capped.capped, capped.uncapped) == (D("6000.00"), True, D(10_000))
    flat = payouts.commission(commission(rate=0.1, cap={"amount": 500}), D(4_000), None)
    assert (flat.amount, flat.capped) == (D("400.00"), False)
    assert payouts.commission(commission(rate=0.1, cap={"amount": 500}), D(9_000), None).amount == D("500.00")


def test_no_quota_pays_nothing_and_says_so() -> None:
    line = payouts.commission(commission(tiers=TIERS), D(50_000), None)
    assert line.amount == 0
    assert line.note == "no quota for this period"


def test_spiff_and_score_bonus() -> None:
    assert payouts.spiff(D(250), 3, None).amount == D("750.00")
    capped = payouts.spiff(D(250), 5, D(1000))
    assert (capped.amount, capped.capped) == (D("1000.00"), True)
    bonus = ScoreBonus.model_validate(
        {"id": "b", "type": "score_bonus", "scorecard": "s", "amount": 1500, "min_score": 0.5}
    )
    assert payouts.score_bonus(bonus, D("0.7333"), "B").amount == D("1099.95")
    assert payouts.score_bonus(bonus, D("0.49"), "C").amount == 0
    assert payouts.score_bonus(bonus, None, None).note == "no score for this period"
    graded = ScoreBonus.model_validate(
        {"id": "b", "type": "score_bonus", "scorecard": "s", "amount": 1000, "grades": {"A": 1, "B": 0.5}}
    )
    assert [payouts.score_bonus(graded, D("0.9"), g).amount for g in ("A", "B", "C")] == [
        D(1000),
        D(500),
        D(0),
    ]


def test_a_pool_splits_to_the_cent_and_adds_up() -> None:
    shares = payouts.pool_shares(D(1000), {"a": D(1), "b": D(1), "c": D(1)})
    assert sorted(amount for _, amount in shares.values()) == [D("333.33"), D("333.33"), D("333.34")]
    assert sum(amount for _, amount in shares.values()) == D(1000)
    weighted = payouts.pool_shares(D("100.00"), {"a": D(3), "b": D(1), "c": D(0)})
    assert {m: a for m, (_, a) in weighted.items()} == {"a": D("75.00"), "b": D("25.00")}
    assert payouts.pool_shares(D(100), {"a": D(0)}) == {}


@pytest.mark.parametrize(
    ("component", "message"),
    [
        (
            {"tiers": [{"from": 0, "to": 1, "rate": 0.05}, {"from": 1.1, "rate": 0.08}]},
            "tiers are contiguous",
        ),
        ({"tiers": [{"from": 0.5, "rate": 0.05}]}, "the first tier starts at 0"),
        ({"tiers": [{"from": 0, "to": 1, "rate": 0.05}]}, "the last tier has no upper end"),
        ({"tiers": [{"from": 0, "rate": -0.05}]}, "greater than or equal to 0"),
        ({"rate": 0.05, "tiers": [{"from": 0, "rate": 0.05}]}, "either a flat rate or tiers"),
        ({"rate": 0.05, "cap": {"on_target_multiple": 2}}, "relative to a quota"),
        (
            {"rate": 0.05, "cap": {"amount": 10, "on_target_multiple": 2}},
            "either an amount or an on_target_multiple",
        ),
    ],
)
def test_a_malformed_commission_is_refused(component: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        commission(**component)


PLAN = {
    "id": "p",
    "name": "P",
    "currency": "USD",
    "from": "2017-01",
    "participants": [{"owner": "crm:ana"}],
    "components": [{"id": "c", "type": "commission", "base": {"kpi": "won_revenue"}, "rate": 0.05}],
}


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        ({"components": [{"id": "c", "type": "commission", "base": {"kpi": "win_rate"}, "rate": 0.05}]},
         ".components[0].base.kpi", "win_rate is a ratio KPI; a commission's base is a sum KPI"),
        ({"components": [{"id": "c", "type": "commission", "base": {"kpi": "nope"}, "rate": 0.05}]},
         ".components[0].base.kpi", "unknown KPI 'nope'"),
        ({"components": [{"id": "s", "type": "spiff", "kpi": "won_deals", "breakdown": {"colour": "red"},
                          "amount": 5}]},
         ".components[0].breakdown", "won_deals is not broken down by 'colour'"),
        ({"components": [{"id": "b", "type": "score_bonus", "scorecard": "none", "amount": 5}]},
         ".components[0].scorecard", "unknown scorecard 'none'"),
        ({"currency": "usd"}, ".currency", "should match pattern"),
        ({"participants": [{"owner": "crm:ana", "team": "crm:t"}]}, ".participants[0]", "an owner or a team"),
        ({"to": "2016-12-31"}, "", "ends (2016-12-31) before it starts"),
    ],
)  # fmt: skip
def test_a_plan_the_configuration_cannot_pay_is_refused_with_where_and_why(
    tmp_path: Path, change: dict[str, Any], where: str, message: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"incentives": {"plans": [{**PLAN, **change}]}}, sort_keys=False))
    with pytest.raises(ConfigIssues) as caught:
        load_config(path, ConnectorRegistry(connectors={}), {})
    # The file and line, the key, and what is wrong.
    assert re.search(
        rf"config\.yaml:\d+: incentives\.plans\[0\]{re.escape(where)}: [^\n]*{re.escape(message)}",
        str(caught.value),
    )
