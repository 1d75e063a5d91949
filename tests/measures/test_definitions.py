"""Measure definitions and declared values in the configuration: the shipped library, a
deployment's own, and every problem reported with its file, line and key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from crm_perf_sync.config import ConfigIssues, load_config
from crm_perf_sync.measures.schemas import Scale, digits_issue, period_of
from crm_perf_sync.plugins import ConnectorRegistry


def load(tmp_path: Path, text: str) -> tuple[Path, list[str]]:
    path = tmp_path / "crm-perf-sync.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path, ConnectorRegistry(connectors={}), {})
    except ConfigIssues as exc:
        return path, [issue.render() for issue in exc.issues]
    return path, []


def test_the_library_ships_four_measures_and_a_definition_replaces_one(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        """measures:
  definitions:
    - id: customer_satisfaction
      name: Customer satisfaction (0 to 10)
      i18n: {zh: {name: 客户满意度}}
      unit: score
      scale: {min: 0, max: 10}
      scopes: [owner]
      grains: [quarter]
    - id: nps
      name: Net promoter score
      scale: {min: -100, max: 100, step: 1}
      aggregation: last
""",
        encoding="utf-8",
    )
    loaded = load_config(path, ConnectorRegistry(connectors={}), {})
    assert sorted(loaded.measures) == [
        "bars_rating",
        "customer_satisfaction",
        "nps",
        "review_360",
        "training_hours",
    ]
    csat = loaded.measures["customer_satisfaction"]
    assert (csat.scale.min, csat.scale.max, csat.scopes, csat.display("zh")[0]) == (
        Decimal(0),
        Decimal(10),
        ["owner"],
        "客户满意度",
    )
    nps = loaded.measures["nps"]
    assert (nps.scopes, nps.grains, nps.unit) == (
        ["company", "team", "owner"],
        ["week", "month", "quarter", "year"],
        "number",
    )
    bars = loaded.measures["bars_rating"]
    scale = (bars.scale.min, bars.scale.max, bars.scale.step, bars.aggregation)
    assert scale == (Decimal(1), Decimal(7), Decimal(1), "mean")

    path.write_text("measures: {library: none}\n", encoding="utf-8")
    assert dict(load_config(path, ConnectorRegistry(connectors={}), {}).measures) == {}


def test_definitions_are_checked_with_their_lines(tmp_path: Path) -> None:
    path, issues = load(
        tmp_path,
        """measures:
  definitions:
    - id: Survey
      name: Survey
    - id: rating
      name: Rating
      scale: {min: 1, max: 6, step: 2}
      scopes: [owner, region]
""",
    )
    assert issues == [
        f"{path}:3: measures.definitions[0].id: String should match pattern '^[a-z][a-z0-9_]{{0,62}}$'",
        f"{path}:7: measures.definitions[1].scale: max (6) must be min (1) plus a whole number of steps",
        f"{path}:8: measures.definitions[1].scopes[1]: Input should be 'company', 'team' or 'owner'",
    ]


def test_declared_values_are_checked_against_their_definition_with_their_lines(tmp_path: Path) -> None:
    path, issues = load(
        tmp_path,
        """business: {fiscal_year_start_month: 4}
measures:
  definitions:
    - {id: survey, name: Survey, scale: {min: 1, max: 5}, grains: [quarter]}
    - {id: survey, name: Survey again}
  values:
    - {measure: bars_rating, scope: owner, scope_id: "crm:7", grain: quarter, period: 2026-04, value: 4.5}
    - {measure: review_360, scope: team, scope_id: "@config:emea", grain: week, period: 2026-04, value: 6}
    - {measure: nps, period: 2026, value: 1}
    - {measure: training_hours, grain: year, period: 2026-04, value: 0.1234567}
    - {measure: training_hours, grain: year, period: 2027-03-31, value: 10}
""",
    )
    assert issues == [
        f"{path}:5: measures.definitions[1].id: duplicate measure id 'survey'",
        f"{path}:7: measures.values[0].value: 4.5 is not on the scale's steps of 1 (1, 2, 3, ...)",
        f"{path}:8: measures.values[1].scope: review_360 is entered for owner, not team",
        f"{path}:8: measures.values[1].grain: review_360 is entered by quarter, year, not week",
        f"{path}:8: measures.values[1].value: 6 is above the scale's maximum 5",
        f"{path}:9: measures.values[2].measure: unknown measure 'nps' (known: bars_rating, "
        "customer_satisfaction, review_360, survey, training_hours)",
        f"{path}:10: measures.values[3].value: has more than 6 decimal places",
        # The fiscal year that starts in April 2026 ends in March 2027: the same entry.
        f"{path}:11: measures.values[4].period: the same entry (year 2026-04-01) as measures.values[3]",
    ]


@pytest.mark.parametrize(
    ("scale", "value", "says"),
    [
        (Scale(min=Decimal(1), max=Decimal(7), step=Decimal(1)), Decimal(7), None),
        (
            Scale(min=Decimal(1), max=Decimal(7), step=Decimal(1)),
            Decimal("0.999"),
            "0.999 is below the scale's minimum 1",
        ),
        (Scale(min=Decimal(1), max=Decimal(5), step=Decimal("0.5")), Decimal("3.5"), None),
        (
            Scale(min=Decimal(1), max=Decimal(5), step=Decimal("0.5")),
            Decimal("3.25"),
            "3.25 is not on the scale's steps of 0.5 (1, 1.5, 2, ...)",
        ),
        (Scale(min=Decimal(0)), Decimal("1e9"), None),
        (Scale(max=Decimal(100)), Decimal("-1e9"), None),
    ],
)
def test_a_scale_bounds_both_ends_and_counts_steps_from_its_minimum(
    scale: Scale, value: Decimal, says: str | None
) -> None:
    assert scale.issue(value) == says


def test_a_value_keeps_the_digits_a_json_number_holds() -> None:
    assert digits_issue(Decimal("123456789.123456")) is None  # 15 significant digits
    assert digits_issue(Decimal("1234567890.123456")) == "has more than 15 significant digits"
    assert digits_issue(Decimal("4.1234567")) == "has more than 6 decimal places"
    assert digits_issue(Decimal("4.1000000")) is None  # trailing zeros are no precision
    assert digits_issue(Decimal("1E+15")) == "has more than 12 digits before the decimal point"
    assert digits_issue(Decimal("999999999999.5")) is None  # the most the store's NUMERIC(18, 6) holds
    assert digits_issue(Decimal("1000000000000")) == "has more than 12 digits before the decimal point"


def test_periods_are_keyed_by_their_first_day_in_the_fiscal_calendar() -> None:
    from datetime import date

    assert period_of(date(2026, 5, 17), "quarter", 1)[:2] == ("2026-04-01", date(2026, 4, 1))
    assert period_of(date(2026, 5, 17), "quarter", 2) == ("2026-05-01", date(2026, 5, 1), date(2026, 8, 1))
    assert period_of(date(2026, 3, 31), "year", 4)[0] == "2025-04-01"
    assert period_of(date(2026, 5, 17), "week", 1) == ("2026-05-11", date(2026, 5, 11), date(2026, 5, 18))
    with pytest.raises(ValueError, match="outside the calendar"):
        period_of(date(9999, 12, 31), "week", 1)
