"""The dashboard's funnel, alerts and operations pages over the served Maven store.

Each page is read as a signed-in browser reads it and its numbers are checked against the API's
answers, the stored KPI values and an independent computation from the Maven CSV files.
"""

from __future__ import annotations

import html
import math
import re
import statistics
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import update

from crm_perf_sync.api.dashboard.i18n import MESSAGES
from crm_perf_sync.api.dashboard.pages import EXPLAIN_PAGE
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kpi import repository as kpi_repo
from crm_perf_sync.kpi.cycle import BUCKETS, cycle_times
from crm_perf_sync.kpi.explain import ValueRef
from crm_perf_sync.kpi.schemas import DurationKpi
from crm_perf_sync.models import Owner
from crm_perf_sync.org import repository as org_repo
from tests.api.conftest import Served
from tests.kpi.reference import maven_cycle_days

#: Cells the pages are read in: (grain, period, scope, scope id).
CELLS = [
    ("all", "all", "company", "company"),
    ("quarter", "2017-04-01", "company", "company"),
    ("month", "2017-06-01", "team", "maven:region:Central"),
    ("year", "2017", "owner", "maven:Anna Snelling"),
]


@pytest.fixture(scope="module")
def signed(served: Served) -> Iterator[Served]:
    """The served store with the test client signed in (a session cookie) with the read key."""
    response = served.client.post(
        "/dashboard/sign-in", data={"key": served.read_key, "next": "/dashboard"}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    yield served
    served.client.cookies.clear()


def page(served: Served, url: str, language: str = "en") -> str:
    served.client.cookies.set("crm_perf_sync_lang", language)
    response = served.client.get(url, follow_redirects=False)
    assert response.status_code == 200, response.text
    assert "text/html" in response.headers["content-type"]
    return response.text


def scope_query(scope: str, scope_id: str) -> str:
    return {"company": "", "team": f"&team={scope_id}", "owner": f"&owner={scope_id}"}[scope]


def data_value(text: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*data-value="([^"]*)"', text)
    assert found is not None, element_id
    return html.unescape(found.group(1))


def funnel_rows(text: str) -> dict[str, tuple[int, str]]:
    """Stage -> (reached, the explanation link) of the funnel table."""
    rows = re.findall(
        r'<tr data-stage="([^"]*)">.*?<a href="([^"]*)" class="reached" data-value="(\d+)">', text, re.S
    )
    return {html.unescape(stage): (int(reached), html.unescape(link)) for stage, link, reached in rows}


def stored(served: Served, kpi_id: str, grain: str, period_key: str, scope: str, scope_id: str) -> Any:
    with session_scope(served.session_factory) as session:
        found = kpi_repo.values(
            session, kpi_id, grain=grain, scope=scope, period_key=period_key, scope_id=scope_id
        )
        assert len(found) == 1, (kpi_id, grain, period_key, scope, scope_id)
        session.expunge_all()
        return found[0]


def period_key(period: str) -> str:
    return "2017-01-01" if period == "2017" else period


def bucket_counts(days: list[float]) -> list[int]:
    counts = [0] * len(BUCKETS)
    for d in days:
        counts[next((n for n, (_, last) in enumerate(BUCKETS) if last is not None and d <= last), -1)] += 1
    return counts


def p90(days: list[float]) -> float:
    return sorted(days)[math.ceil(0.9 * len(days)) - 1]


# --- funnel -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("grain", "period", "scope", "scope_id"), CELLS)
def test_funnel_reached_counts_are_the_apis_and_link_to_their_explanation(
    signed: Served, grain: str, period: str, scope: str, scope_id: str
) -> None:
    text = page(signed, f"/dashboard/funnel?grain={grain}&period={period}{scope_query(scope, scope_id)}")
    api = signed.get(
        "/api/v1/funnel", params={"grain": grain, "period": period, "scope": scope, "scope_id": scope_id}
    ).json()["data"]
    shown = funnel_rows(text)
    assert api, "the Maven store has funnel values in every tested cell"
    assert list(shown) == [row["stage"] for row in api]  # the API's stage order
    assert {stage: reached for stage, (reached, _) in shown.items()} == {
        row["stage"]: row["reached"] for row in api
    }
    for stage, (_, link) in shown.items():
        parts = urlsplit(link)
        assert parts.path == "/dashboard/explain/stage_funnel"
        assert parse_qs(parts.query) == {
            "grain": [grain],
            "period": [period_key(period)],
            "scope": [scope],
            "scope_id": [scope_id],
            "dimension": ["stage"],
            "dimension_value": [stage],
        }
    # No stage is reached by more deals than the one before it.
    reached = [count for count, _ in shown.values()]
    assert reached == sorted(reached, reverse=True)


def test_funnel_page_names_the_chosen_rep_and_keeps_the_scope_selected(signed: Served) -> None:
    text = page(signed, "/dashboard/funnel?grain=all&owner=maven:Anna Snelling")
    assert re.search(r'<option value="maven:Anna Snelling" selected>Anna Snelling</option>', text)
    assert "<h1>Funnel and cycle · All time · Anna Snelling</h1>" in text


def test_funnel_page_refuses_an_unknown_rep(signed: Served) -> None:
    response = signed.client.get("/dashboard/funnel?owner=maven:Nobody", follow_redirects=False)
    assert response.status_code == 404
    assert "maven:Nobody" in response.text


# --- cycle times --------------------------------------------------------------------------------


@pytest.mark.parametrize(("grain", "period", "scope", "scope_id"), CELLS)
def test_cycle_times_on_the_page_match_the_stored_kpis_and_the_csv(
    signed: Served, grain: str, period: str, scope: str, scope_id: str
) -> None:
    text = page(signed, f"/dashboard/funnel?grain={grain}&period={period}{scope_query(scope, scope_id)}")
    key = period_key(period)
    mean = stored(signed, "sales_cycle_days_mean", grain, key, scope, scope_id)
    median = stored(signed, "sales_cycle_days_median", grain, key, scope, scope_id)
    days = maven_cycle_days()[(grain, key, scope, scope_id)]

    deals = int(data_value(text, "cycle-deals"))
    counts = [int(v) for v in re.findall(r'class="num bucket" data-value="(\d+)"', text)]
    assert deals == mean.sample_count == len(days)
    assert counts == bucket_counts(days)
    assert sum(counts) == deals
    assert float(data_value(text, "cycle-mean")) == pytest.approx(mean.value, rel=1e-12)
    assert float(data_value(text, "cycle-median")) == pytest.approx(median.value, rel=1e-12)
    assert float(data_value(text, "cycle-mean")) == pytest.approx(statistics.fmean(days), rel=1e-12)
    assert float(data_value(text, "cycle-median")) == statistics.median(days)
    assert float(data_value(text, "cycle-p90")) == p90(days)


def test_cycle_times_of_every_quarter_and_scope_match_the_csv(signed: Served) -> None:
    """The domain function over every all-time and quarterly cell (company, teams, reps)."""
    service = signed.client.app.state.context.kpi_service()  # type: ignore[attr-defined]
    kpi = service.kpis["sales_cycle_days_mean"]
    assert isinstance(kpi, DurationKpi)
    reference = maven_cycle_days()
    cells = [cell for cell in reference if cell[0] in ("all", "quarter")]
    assert len(cells) > 100
    with session_scope(signed.session_factory) as session:
        calendar = service.calendar(session)
        membership = org_repo.load_membership(session)
        for grain, key, scope, scope_id in cells:
            days = reference[(grain, key, scope, scope_id)]
            ref = ValueRef(kpi.id, grain, key, scope, scope_id)  # type: ignore[arg-type]
            found = cycle_times(session, kpi, ref, calendar, membership)
            assert found.records == len(days), (grain, key, scope, scope_id)
            assert list(found.counts) == bucket_counts(days), (grain, key, scope, scope_id)
            assert found.mean == pytest.approx(statistics.fmean(days), rel=1e-12)
            assert found.median == statistics.median(days)
            assert found.p90 == p90(days)
        # A cell without won deals: an empty histogram and no statistics.
        empty = cycle_times(
            session, kpi, ValueRef(kpi.id, "month", "2030-01-01", "company", "company"), calendar, membership
        )
        assert (empty.records, set(empty.counts), empty.mean, empty.median, empty.p90) == (
            0,
            {0},
            None,
            None,
            None,
        )


# --- alerts -------------------------------------------------------------------------------------


def test_alerts_page_lists_the_firing_alerts_of_the_maven_rule(signed: Served) -> None:
    text = page(signed, "/dashboard/alerts")
    api = signed.get("/api/v1/alerts", params={"state": "firing"}).json()["data"]
    assert api, "rep-win-rate fires for some Maven reps"
    firing = text[text.index('id="firing"') : text.index('id="history"')]
    rows = re.findall(r'<tr data-rule="([^"]*)" data-scope-id="([^"]*)">', firing)
    assert rows == [(a["rule_id"], html.escape(a["scope_id"])) for a in api]
    assert {rule for rule, _ in rows} == {"rep-win-rate"}
    assert "A rep&#39;s all-time win rate below 62%" in firing
    # The value against the threshold, as percentages: one firing rep's row.
    first = api[0]
    name = first["scope_id"].split(":", 1)[1]
    row = re.search(
        rf"<tr data-rule=\"rep-win-rate\" data-scope-id=\"maven:{name}\">(.*?)</tr>", firing, re.S
    )
    assert row is not None
    cells = re.findall(r'<td class="num">([^<]*)</td>', row.group(1))
    assert cells == [f"{first['value'] * 100:.1f}%", "62.0%"]
    assert name in row.group(1)


def test_alerts_history_is_newest_first_and_pages_with_after(signed: Served) -> None:
    text = page(signed, "/dashboard/alerts")
    api = signed.get("/api/v1/alerts/history").json()["data"]
    ids = [int(i) for i in re.findall(r'<tr data-id="(\d+)"', text)]
    assert ids == [row["id"] for row in api]
    assert ids == sorted(ids, reverse=True)
    assert len(ids) >= 3
    after = ids[1]
    later = page(signed, f"/dashboard/alerts?after={after}")
    assert [int(i) for i in re.findall(r'<tr data-id="(\d+)"', later)] == ids[2:]
    assert 'id="history-newest"' in later
    assert 'id="history-newest"' not in text


def test_alerts_page_in_chinese(signed: Served) -> None:
    text = page(signed, "/dashboard/alerts", "zh")
    assert '<h2 id="firing-title">触发中</h2>' in text
    assert "正常 → 触发中" in text


# --- operations ---------------------------------------------------------------------------------


def test_operations_page_shows_the_maven_connection_runs_and_refresh(signed: Served) -> None:
    text = page(signed, "/dashboard/operations")
    assert '<tr data-connection="maven" data-status="succeeded">' in text
    runs = signed.get("/api/v1/sync-runs").json()["data"]
    shown = re.findall(r'<tr data-run="(\d+)" data-status="([a-z]+)">.*?data-value="(\d*)"', text, re.S)
    assert shown == [(str(r["id"]), r["status"], str(r["records_read"])) for r in runs]
    assert runs[0]["records_read"] > 8000  # the Maven pipeline, accounts, products and agents
    assert '<dd data-status="succeeded">' in text  # the last KPI refresh
    assert data_value(text, "deliveries-waiting") == "0"
    assert data_value(text, "deliveries-failed") == "0"


def test_every_page_renders_in_both_languages_with_known_words(signed: Served) -> None:
    for url in ("/dashboard/funnel", "/dashboard/alerts", "/dashboard/operations"):
        english, chinese = page(signed, url), page(signed, url, "zh")
        assert english != chinese
        assert '<html lang="zh-CN">' in chinese
    assert all(en and zh for en, zh in MESSAGES.values())


# --- escaping (last: it renames a rep in this module's store) -----------------------------------


def test_a_crm_name_with_markup_is_shown_escaped(signed: Served) -> None:
    firing = signed.get("/api/v1/alerts", params={"state": "firing"}).json()["data"]
    owner_id = firing[0]["scope_id"].split(":", 1)[1]
    evil = "<script>alert(1)</script>"
    with session_scope(signed.session_factory) as session:
        session.execute(update(Owner).where(Owner.external_id == owner_id).values(name=evil))
    escaped = html.escape(evil)
    alerts = page(signed, "/dashboard/alerts")
    funnel = page(signed, f"/dashboard/funnel?grain=all&owner=maven:{owner_id}")
    for text in (alerts, funnel):
        assert evil not in text
        assert escaped in text
    assert f"· {escaped}</h1>" in funnel


@pytest.mark.parametrize("language", ["en", "zh"])
def test_a_customer_kpi_explains_to_its_accounts_and_deals_on_the_page(signed: Served, language: str) -> None:
    new = stored(signed, "new_customers", "quarter", "2017-04-01", "company", "company")
    text = page(
        signed,
        "/dashboard/explain/new_customers?grain=quarter&period=2017-04-01&scope=company&scope_id=company",
        language,
    )
    accounts = re.findall(r'<tr data-external-id="([^"]*)">', text)
    assert len(accounts) == new.value > 0
    assert len(set(accounts)) == len(accounts)  # each account once
    share = stored(signed, "repeat_revenue_share", "quarter", "2017-04-01", "company", "company")
    text = page(
        signed,
        "/dashboard/explain/repeat_revenue_share?grain=quarter&period=2017-04-01&scope=company"
        "&scope_id=company&currency=USD&part=denominator",
        language,
    )
    deals = re.findall(r'<tr data-external-id="([^"]*)">', text)
    assert len(deals) == min(share.sample_count, EXPLAIN_PAGE)  # a page of the won deals with an account
