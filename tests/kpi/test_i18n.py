"""The KPI library's names in other languages: shipped for every default KPI, validated with their
lines, and shown in English wherever a translation is missing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crm_perf_sync.kit.yaml_source import ConfigIssues
from crm_perf_sync.kpi.library import default_library_path, load_library
from crm_perf_sync.kpi.schemas import ScorecardConfig, display

HAN = re.compile(r"[\u4e00-\u9fff]")


def test_every_default_kpi_has_a_chinese_name_and_description() -> None:
    kpis = load_library(default_library_path())
    assert {"win_rate", "sales_velocity", "stage_funnel"} <= {kpi.id for kpi in kpis}
    missing = [kpi.id for kpi in kpis if "zh" not in kpi.i18n]
    assert missing == [], f"default KPIs without a zh name: {missing}"
    for kpi in kpis:
        zh = kpi.i18n["zh"]
        assert HAN.search(zh.name), (kpi.id, zh.name)
        assert HAN.search(zh.description), (kpi.id, zh.description)
    names = {kpi.id: kpi.i18n["zh"].name for kpi in kpis}
    assert names["win_rate"] == "赢单率"
    assert names["lead_conversion_rate"] == "线索转化率"
    assert names["sales_cycle_days_mean"] == "销售周期（平均天数）"
    assert len(set(names.values())) == len(names), "two KPIs share a Chinese name"


def test_display_falls_back_to_english_per_field() -> None:
    kpis = {kpi.id: kpi for kpi in load_library(default_library_path())}
    win_rate = kpis["win_rate"]
    assert display(win_rate, "zh") == ("赢单率", "赢单数 / 已关闭商机数，按商机关闭所在的周期统计。")
    english = ("Win rate", "Won deals / closed deals, by the period the deal closed in.")
    assert display(win_rate, "en") == english
    assert display(win_rate, "ja") == english
    name_only = win_rate.model_copy(
        update={"i18n": {"zh": win_rate.i18n["zh"].model_copy(update={"description": ""})}}
    )
    assert display(name_only, "zh") == ("赢单率", english[1])
    card = ScorecardConfig.model_validate(
        {
            "id": "reps",
            "name": "Rep scorecard",
            "i18n": {"zh": {"name": "销售代表评分卡"}},
            "components": [{"kpi": "win_rate", "weight": 1}],
        }
    )
    assert display(card, "zh") == ("销售代表评分卡", "")
    assert display(card, "en") == ("Rep scorecard", "")


def test_translations_do_not_change_what_a_kpi_means() -> None:
    (kpi,) = [k for k in load_library(default_library_path()) if k.id == "won_revenue"]
    untranslated = kpi.model_copy(update={"i18n": {}})
    assert kpi.definition_hash() == untranslated.definition_hash()


def test_a_bad_locale_or_an_empty_name_in_a_library_is_an_issue_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "library.yaml"
    path.write_text(
        """kpis:
  - id: won_deals
    name: Won deals
    i18n:
      jp: {name: 受注件数}
    type: count
    unit: count
    measure: {period: closed_at}
  - id: lost_deals
    name: Lost deals
    i18n:
      zh:
        name: "  "
    type: count
    unit: count
    measure: {period: closed_at}
""",
        encoding="utf-8",
    )
    with pytest.raises(ConfigIssues) as caught:
        load_library(path)
    assert [issue.render() for issue in caught.value.issues] == [
        f"{path}:4: kpis[0].i18n: unknown locale(s) 'jp'; known: zh (Simplified Chinese)",
        f"{path}:13: kpis[1].i18n.zh.name: a translated name cannot be empty",
    ]
