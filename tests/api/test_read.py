"""Reading the API as a BI tool does: every resource, JSON and CSV, pages, caching, errors.

The store is the Maven example (8,800 deals, 35 agents), so the numbers are checked against the
CSV files themselves, counted here in plain Python.
"""

from __future__ import annotations

import csv
import io
import time
from collections import Counter, defaultdict
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crm_perf_sync.api.app import create_app
from crm_perf_sync.api.cache import VERSION_SECONDS
from crm_perf_sync.kpi import repository as kpi_repo
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync_csv.connector import CsvConnector
from tests.api.conftest import Served
from tests.conftest import DATA_DIR

MAVEN = DATA_DIR / "maven_crm_sales_opportunities"
LIBRARY = {
    "lead_conversion_rate",
    "win_rate",
    "sales_cycle_days_mean",
    "sales_cycle_days_median",
    "won_revenue",
    "won_deals",
    "average_deal_size",
    "weighted_pipeline",
    "pipeline_coverage",
    "sales_velocity",
    "stage_funnel",
}


def pipeline() -> list[dict[str, str]]:
    with (MAVEN / "sales_pipeline.csv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def win_rates_by_agent_and_year() -> dict[tuple[str, str], tuple[int, int]]:
    """(scope id, year start) -> (won, closed), from the file."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for row in pipeline():
        if row["deal_stage"] not in ("Won", "Lost"):
            continue
        key = (f"maven:{row['sales_agent']}", f"{row['close_date'][:4]}-01-01")
        counts[key][1] += 1
        counts[key][0] += row["deal_stage"] == "Won"
    return {k: (v[0], v[1]) for k, v in counts.items()}


def all_pages(served: Served, url: str) -> list[dict[str, Any]]:
    """Every row of a collection, following ``next`` (and checking the Link header agrees)."""
    rows: list[dict[str, Any]] = []
    next_url: str | None = url
    pages = 0
    while next_url is not None:
        response = served.get(next_url)
        assert response.status_code == 200, response.text
        body = response.json()
        rows += body["data"]
        link = response.headers.get("link")
        assert (link is None) == (body["next"] is None)
        if link is not None:
            assert link == f'<{body["next"]}>; rel="next"'
        next_url = body["next"]
        pages += 1
        assert pages < 10_000
    return rows


def csv_rows(text: str) -> list[dict[str, str]]:
    assert not text.startswith("\ufeff"), "no byte-order mark"
    return list(csv.DictReader(io.StringIO(text)))


def as_csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


# --- auth -----------------------------------------------------------------------------------------


def test_a_key_is_needed_and_a_bad_one_is_refused(served: Served) -> None:
    missing = served.client.get("/api/v1/kpis")
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["type"].endswith("/unauthenticated")
    wrong = served.client.get("/api/v1/kpis", headers={"Authorization": "Bearer cps_not-a-key"})
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "unknown API key"
    scheme = served.client.get("/api/v1/kpis", headers={"Authorization": f"Basic {served.read_key}"})
    assert scheme.status_code == 401
    assert served.get("/api/v1/kpis").status_code == 200
    # The health endpoints need none.
    assert served.client.get("/healthz").status_code == 200
    assert served.client.get("/readyz").json()["status"] == "ready"


def test_a_read_key_cannot_write(served: Served) -> None:
    body = {"kpi": "won_deals", "period": "2017-01-01", "value": 10}
    refused = served.client.post("/api/v1/targets", json=body, headers=served.read)
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/forbidden")
    assert served.client.post("/api/v1/connections/maven/sync", headers=served.read).status_code == 403


# --- KPIs and values ------------------------------------------------------------------------------


def test_the_kpi_list_has_the_library_and_csv_agrees(served: Served) -> None:
    rows = all_pages(served, "/api/v1/kpis?limit=4")
    assert LIBRARY <= {row["id"] for row in rows}
    assert len(rows) == len({row["id"] for row in rows})
    win_rate = next(row for row in rows if row["id"] == "win_rate")
    assert (win_rate["type"], win_rate["unit"], win_rate["direction"]) == ("ratio", "percent", "higher")
    assert win_rate["dimensions"] == ["product"]
    assert served.get("/api/v1/kpis/sales_cycle_days_median").json()["stat"] == "median"
    assert served.get("/api/v1/kpis/sales_velocity").json()["formula"].startswith("opportunities_created")
    text = served.get("/api/v1/kpis?format=csv").text
    assert [r["id"] for r in csv_rows(text)] == [r["id"] for r in rows]


def test_kpis_are_served_with_their_chinese_names_in_json_and_csv(served: Served) -> None:
    rows = all_pages(served, "/api/v1/kpis?limit=5")
    assert all(set(row["i18n"]) == {"zh"} for row in rows), "every library KPI has a zh name"
    win_rate = served.get("/api/v1/kpis/win_rate").json()
    assert win_rate["name"] == "Win rate"
    assert win_rate["i18n"] == {
        "zh": {"name": "赢单率", "description": "赢单数 / 已关闭商机数，按商机关闭所在的周期统计。"}
    }
    assert win_rate["name_zh"] == "赢单率"
    assert served.get("/api/v1/kpis/weighted_pipeline").json()["name_zh"] == "加权管道"
    response = served.get("/api/v1/kpis?format=csv")
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    text = response.content.decode("utf-8")
    header = text.splitlines()[0].split(",")
    assert header == [
        "id", "name", "description", "type", "unit", "direction", "min_sample", "stat", "formula",
        "dimensions", "definition_hash", "definition", "i18n", "name_zh",
    ]  # fmt: skip
    by_id = {r["id"]: r for r in csv_rows(text)}
    assert by_id["sales_cycle_days_mean"]["name_zh"] == "销售周期（平均天数）"
    assert by_id["lead_conversion_rate"]["name_zh"] == "线索转化率"
    assert {r["id"]: r["name_zh"] for r in by_id.values()} == {r["id"]: r["name_zh"] for r in rows}


def test_every_agents_win_rate_per_year_matches_the_file(served: Served) -> None:
    rows = all_pages(served, "/api/v1/kpis/win_rate/values?grain=year&scope=owner&limit=7")
    got = {(r["scope_id"], r["period_key"]): r for r in rows}
    expected = win_rates_by_agent_and_year()
    assert set(got) == set(expected)
    for key, (won, closed) in expected.items():
        row = got[key]
        assert (row["numerator"], row["denominator"], row["sample_count"]) == (won, closed, closed)
        assert row["value"] == pytest.approx(won / closed)
        assert row["scope_name"] == key[0].removeprefix("maven:")
        assert row["period_end"] == f"{int(key[1][:4]) + 1}-01-01"


def test_csv_and_json_agree_row_for_row(served: Served) -> None:
    url = "/api/v1/kpis/won_revenue/values?grain=month"
    rows = all_pages(served, url + "&limit=50")
    response = served.get(url, headers={"Accept": "text/csv"})  # no limit: the whole collection streams
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    table = csv_rows(response.text)
    assert len(table) == len(rows) > 0
    assert list(table[0]) == list(rows[0])  # the same columns, in the model's order
    for from_csv, from_json in zip(table, rows, strict=True):
        assert from_csv == {k: as_csv_cell(v) for k, v in from_json.items()}


def test_values_filters(served: Served) -> None:
    team = "maven:team:Dustin Brinkmann"
    rows = all_pages(served, f"/api/v1/kpis/won_deals/values?grain=all&team={team}")
    assert {r["scope"] for r in rows} == {"team", "owner"}
    members = {o["id"] for o in all_pages(served, "/api/v1/owners") if team in o["teams"]}
    assert {r["scope_id"] for r in rows if r["scope"] == "owner"} <= members
    team_total = next(r for r in rows if r["scope"] == "team")["value"]
    assert team_total == sum(r["value"] for r in rows if r["scope"] == "owner") > 0
    # Any date in the period with its grain, or the period key.
    by_date = served.get("/api/v1/kpis/won_deals/values?grain=quarter&period=2017-05-17&scope=company").json()
    by_key = served.get("/api/v1/kpis/won_deals/values?grain=quarter&period=2017-04-01&scope=company").json()
    assert by_date["data"] == by_key["data"]
    assert len(by_key["data"]) == 1
    closed_q2 = sum(
        1 for r in pipeline() if r["deal_stage"] == "Won" and "2017-04-01" <= r["close_date"] < "2017-07-01"
    )
    assert by_key["data"][0]["value"] == closed_q2
    products = all_pages(served, "/api/v1/kpis/won_deals/values?grain=all&scope=company&dimension=product")
    expected = Counter(
        r["product"].replace("GTXPro", "GTX Pro") for r in pipeline() if r["deal_stage"] == "Won"
    )
    assert {r["dimension_value"]: r["value"] for r in products} == expected


def test_from_and_to_are_inclusive_days(served: Served) -> None:
    def months(query: str) -> list[str]:
        url = f"/api/v1/kpis/won_deals/values?grain=month&scope=company&{query}"
        return sorted(r["period_key"] for r in all_pages(served, url))

    # A quarter asked for by its first and last day is the quarter's three months.
    assert months("from=2017-04-01&to=2017-06-30") == ["2017-04-01", "2017-05-01", "2017-06-01"]
    # A month counts once its last day is within `to`, not before.
    assert months("from=2017-04-01&to=2017-06-29") == ["2017-04-01", "2017-05-01"]
    assert months("from=2017-04-02&to=2017-06-30") == ["2017-05-01", "2017-06-01"]
    everything = months("")
    assert months("to=9999-12-31") == everything
    assert months("from=0001-01-01") == everything
    backwards = served.get("/api/v1/kpis/won_deals/values?from=2017-06-30&to=2017-04-01")
    assert backwards.status_code == 422
    assert "from" in backwards.json()["detail"]


def test_targets_attainment_and_pace_come_with_the_values(served: Served) -> None:
    year = served.get("/api/v1/kpis/won_revenue/values?grain=year&period=2017&scope=company").json()["data"]
    assert len(year) == 1
    won = sum(
        float(r["close_value"]) for r in pipeline() if r["deal_stage"] == "Won" and r["close_date"] < "2018"
    )
    assert year[0]["value"] == pytest.approx(won)
    assert year[0]["target"] == 12_000_000
    assert year[0]["attainment"] == pytest.approx(won / 12_000_000)
    assert year[0]["gap"] == pytest.approx(12_000_000 - won)
    assert year[0]["pace"] == pytest.approx(year[0]["attainment"])  # 2017 is over: the elapsed share is 1
    march = served.get("/api/v1/kpis/won_revenue/values?grain=month&period=2017-03&scope=company").json()[
        "data"
    ]
    assert march[0]["target"] == pytest.approx(1_000_000)
    targets = all_pages(served, "/api/v1/targets?kpi=won_revenue&grain=quarter")
    assert {(t["period_key"], t["value"], t["origin"], t["source"]) for t in targets} == {
        (f"2017-{m:02d}-01", 3_000_000, "period", "config") for m in (1, 4, 7, 10)
    }


def test_explain_lists_the_deals_behind_a_value(served: Served) -> None:
    agent = "maven:Darcel Schlecht"
    url = (
        "/api/v1/kpis/win_rate/explain?grain=year&period=2017-01-01&scope=owner"
        f"&scope_id={agent}&part=numerator&limit=40"
    )
    won: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url is not None:
        body = served.get(next_url).json()
        (part,) = [p for p in body["parts"] if p["role"] == "numerator"]
        won += part["records"]
        next_url = part["next"]
    expected = {
        r["opportunity_id"]
        for r in pipeline()
        if r["sales_agent"] == "Darcel Schlecht" and r["deal_stage"] == "Won"
    }
    assert {r["external_id"] for r in won} == expected
    assert body["value"]["numerator"] == len(expected)
    assert "is_won = True" in " ".join(part["filters"])
    # A CSV export has no record pages to link to.
    assert {r["crm_url"] for r in won} == {None}


class _LinkingCsv(CsvConnector):
    """The Maven export as if its CRM had record pages (the shipped CSV connector has none)."""

    def record_url(self, entity: str, external_id: str) -> str | None:
        return f"https://crm.example/{self.context.connection_id}/{entity}/{external_id}"


def test_explain_links_each_record_to_its_crm_page(served: Served) -> None:
    registry = ConnectorRegistry({**ConnectorRegistry.discover().connectors, "csv": _LinkingCsv})
    client = TestClient(create_app(served.engine, served.config, registry=registry))
    url = "/api/v1/kpis/win_rate/explain?grain=year&period=2017-01-01&limit=25"

    body = client.get(url, headers=served.read).json()

    records = {part["role"]: part["records"] for part in body["parts"]}
    assert set(records) == {"numerator", "denominator"}
    for role in ("numerator", "denominator"):
        assert len(records[role]) == 25
        assert [r["crm_url"] for r in records[role]] == [
            f"https://crm.example/maven/opportunities/{r['external_id']}" for r in records[role]
        ]


def test_the_funnel_follows_the_stage_order(served: Served) -> None:
    steps = served.get("/api/v1/funnel").json()["data"]
    stages = Counter(r["deal_stage"] for r in pipeline())
    # Lost is not a step, and the export has no stage history: a lost deal is in no step at all.
    entered = len(pipeline()) - stages["Lost"]
    engaged = stages["Engaging"] + stages["Won"]
    assert [(s["stage"], s["reached"], s["previous"]) for s in steps] == [
        ("Prospecting", entered, entered),
        ("Engaging", engaged, entered),
        ("Won", stages["Won"], engaged),
    ]
    assert steps[-1]["conversion"] == pytest.approx(stages["Won"] / engaged)


# --- records --------------------------------------------------------------------------------------


def test_paging_through_opportunities_covers_every_deal_once(served: Served) -> None:
    rows = all_pages(served, "/api/v1/opportunities?limit=999")
    ids = [r["external_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 8800
    assert set(ids) == {r["opportunity_id"] for r in pipeline()}
    streamed = csv_rows(served.get("/api/v1/opportunities?format=csv").text)
    assert [r["external_id"] for r in streamed] == ids


def test_opportunity_filters(served: Served) -> None:
    rows = pipeline()
    won = all_pages(served, "/api/v1/opportunities?is_won=true&limit=1000")
    assert len(won) == sum(r["deal_stage"] == "Won" for r in rows)
    open_deals = all_pages(served, "/api/v1/opportunities?is_closed=false&limit=1000")
    assert len(open_deals) == sum(r["deal_stage"] in ("Prospecting", "Engaging") for r in rows)
    mine = all_pages(served, "/api/v1/opportunities?owner=maven:Darcel%20Schlecht&limit=1000")
    assert len(mine) == sum(r["sales_agent"] == "Darcel Schlecht" for r in rows)
    q1 = all_pages(
        served, "/api/v1/opportunities?closed_from=2017-01-01T00:00:00Z&closed_to=2017-04-01T00:00:00Z"
    )
    assert len(q1) == sum(
        bool(r["close_date"]) and "2017-01-01" <= r["close_date"] < "2017-04-01" for r in rows
    )
    later = served.get("/api/v1/opportunities?updated_since=2999-01-01T00:00:00Z").json()
    assert later == {"data": [], "next": None}


def test_owners_and_teams(served: Served) -> None:
    owners = all_pages(served, "/api/v1/owners?limit=10")
    with (MAVEN / "sales_teams.csv").open(encoding="utf-8") as handle:
        agents = list(csv.DictReader(handle))
    assert {o["id"] for o in owners} == {f"maven:{a['sales_agent']}" for a in agents}
    first = next(o for o in owners if o["external_id"] == agents[0]["sales_agent"])
    assert first["teams"] == [f"maven:team:{agents[0]['manager']}"]
    teams = {t["id"]: t for t in all_pages(served, "/api/v1/teams")}
    regions = {a["regional_office"] for a in agents}
    assert {t["id"] for t in teams.values() if t["level"] == "region"} == {
        f"maven:region:{r}" for r in regions
    }
    for region in regions:
        assert teams[f"maven:region:{region}"]["members"] == sum(
            a["regional_office"] == region for a in agents
        )


def test_connections_and_sync_runs(served: Served) -> None:
    (maven,) = served.get("/api/v1/connections").json()["data"]
    assert (maven["id"], maven["kind"], maven["last_status"]) == ("maven", "csv", "succeeded")
    runs = served.get("/api/v1/sync-runs?connection=maven").json()["data"]
    # deals, agents, accounts, stages, regions, managers
    assert runs[0]["inserted"] == 8800 + 35 + 85 + 4 + 3 + 6
    assert served.get(runs[0]["url"]).json() == runs[0]


# --- caching --------------------------------------------------------------------------------------


def test_values_are_cached_by_version(served: Served) -> None:
    url = "/api/v1/kpis/win_rate/values?grain=year"
    first = served.get(url)
    etag = first.headers["etag"]
    assert first.headers["last-modified"]
    again = served.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    since = served.get(url, headers={"If-Modified-Since": first.headers["last-modified"]})
    assert since.status_code == 304
    other = served.get(url + "&scope=owner", headers={"If-None-Match": etag})
    assert other.status_code == 200  # another query is another representation
    with served.session_factory() as session:
        version = kpi_repo.values_version(session, "win_rate")
    assert version is not None
    served.service().refresh(kpi_ids=["win_rate"])  # recomputed: a new version
    time.sleep(VERSION_SECONDS)  # which a replica sees within a quarter of a second
    fresh = served.get(url, headers={"If-None-Match": etag})
    assert fresh.status_code == 200
    assert fresh.headers["etag"] != etag
    # Not the page rendered for the old version: the values were computed again.
    assert {r["computed_at"] for r in fresh.json()["data"]} != {
        r["computed_at"] for r in first.json()["data"]
    }
    # A cursor issued before the recompute is refused rather than skipping or repeating rows.
    stale_cursor = first.json()["next"]
    if stale_cursor is not None:
        assert served.get(stale_cursor).status_code == 409


def test_a_cached_page_is_the_same_page_gzipped_or_not(served: Served) -> None:
    url = "/api/v1/scorecards/reps?grain=month&period=2017-06&limit=50"
    plain = served.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    zipped = served.get(url, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.json() == plain.json()
    assert zipped.headers["etag"] == plain.headers["etag"]
    assert served.get(url + "&format=csv").text.splitlines()[0].startswith("scorecard_id,grain")


def test_scorecards_are_cached_by_version(served: Served) -> None:
    url = "/api/v1/scorecards/reps?grain=month&period=2017-06"
    first = served.get(url)
    assert served.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304


# --- scorecards -----------------------------------------------------------------------------------


def test_a_scorecard_ranks_a_periods_reps(served: Served) -> None:
    (card,) = served.get("/api/v1/scorecards").json()["data"]
    assert card["id"] == "reps"
    assert (card["name"], card["name_zh"]) == ("Rep scorecard", "销售代表评分卡")
    assert card["i18n"] == {"zh": {"name": "销售代表评分卡", "description": ""}}
    (csv_card,) = csv_rows(served.get("/api/v1/scorecards?format=csv").text)
    assert csv_card["name_zh"] == "销售代表评分卡"
    assert [c["kpi"] for c in card["components"]] == ["won_deals", "win_rate", "sales_cycle_days_median"]
    rows = all_pages(served, "/api/v1/scorecards/reps?grain=month&period=2017-06-01&limit=7")
    ranked = [r for r in rows if r["rank"] is not None]
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    for row in ranked:  # competition ranking: one more than the reps who scored higher
        assert row["rank"] == 1 + sum(other["score"] > row["score"] for other in ranked)
    assert {r["period_key"] for r in rows} == {"2017-06-01"}
    june_won = Counter(
        f"maven:{r['sales_agent']}"
        for r in pipeline()
        if r["deal_stage"] == "Won" and r["close_date"][:7] == "2017-06"
    )
    for row in ranked:
        (won_deals,) = [c for c in row["components"] if c["kpi_id"] == "won_deals"]
        assert won_deals["value"] == june_won[row["scope_id"]]
        assert won_deals["normalised"] == pytest.approx(min(june_won[row["scope_id"]] / 40, 1.0))
    latest = served.get("/api/v1/scorecards/reps").json()["data"]
    assert {r["period_key"] for r in latest} == {"2017-12-01"}  # the latest month by default
    history = all_pages(served, "/api/v1/scorecards/reps/owners/maven:Darcel%20Schlecht?grain=month")
    assert {r["scope_id"] for r in history} == {"maven:Darcel Schlecht"}
    assert "2017-06-01" in {r["period_key"] for r in history}


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "status", "where"),
    [
        ("/api/v1/kpis/no_such_kpi/values", 404, None),
        ("/api/v1/kpis/win_rate/values?grain=fortnight", 422, "query.grain"),
        ("/api/v1/kpis/win_rate/values?period=last-tuesday", 422, None),
        ("/api/v1/kpis/win_rate/values?dimension=colour", 422, None),
        ("/api/v1/kpis/win_rate/values?limit=0", 422, "query.limit"),
        ("/api/v1/kpis/win_rate/values?limit=100000", 422, "query.limit"),
        ("/api/v1/kpis/win_rate/values?cursor=not-a-cursor", 400, None),
        ("/api/v1/kpis/win_rate/values?from=yesterday", 422, "query.from"),
        ("/api/v1/opportunities?closed_from=soon", 422, "query.closed_from"),
        # Datetimes at the ends of the calendar: with their offset they fall outside it in UTC.
        ("/api/v1/opportunities?created_from=0001-01-01T00:00:00%2B05:00", 422, "query.created_from"),
        ("/api/v1/opportunities?closed_to=9999-12-31T23:59:59-05:00", 422, "query.closed_to"),
        ("/api/v1/leads?updated_since=0001-01-01T00:00:00%2B01:00", 422, "query.updated_since"),
        ("/api/v1/alerts/history?since=0001-01-01T00:00:00%2B01:00", 422, "query.since"),
        ("/api/v1/alerts/history?since=9999-12-31T23:59:59-01:00", 422, "query.since"),
        ("/api/v1/kpis/win_rate/values?grain=week&period=9999-12-31", 422, "period"),
        ("/api/v1/kpis/win_rate/explain?grain=week&period=9999-12-31", 422, "period"),
        ("/api/v1/kpis/win_rate/explain?dimension=foo", 422, "dimension"),
        # Numbers are not dates: the documented format is ISO 8601, not a Unix time.
        ("/api/v1/kpis/win_rate/values?to=0", 422, "query.to"),
        ("/api/v1/kpis/win_rate/values?from=1700000000", 422, "query.from"),
        ("/api/v1/alerts/history?since=0.5", 422, "query.since"),
        ("/api/v1/leads?updated_since=1700000000", 422, "query.updated_since"),
        ("/api/v1/kpis/win_rate/explain?part=", 422, "query.part"),
        # A parameter given twice is ambiguous: neither value is silently dropped.
        ("/api/v1/opportunities?owner=maven:A&owner=maven:B", 422, "query.owner"),
        ("/api/v1/alerts?rule=a&limit=5&rule=", 422, "query.rule"),
        ("/api/v1/scorecards/nope", 404, None),
        ("/api/v1/scorecards/reps?grain=year", 422, None),
        ("/api/v1/scorecards/reps/owners/maven:Nobody", 404, None),
        ("/api/v1/sync-runs/999999", 404, None),
        ("/api/v1/nothing-here", 404, None),
    ],
)
def test_bad_requests_get_a_problem_not_a_500(
    served: Served, url: str, status: int, where: str | None
) -> None:
    response = served.get(url)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["detail"]
    assert body["instance"] == url.split("?")[0]
    assert body["request_id"] == response.headers["x-request-id"]
    if where is not None:  # the parameter is named: in `errors`, or first in the detail
        named = {e["where"] for e in body.get("errors") or []}
        assert where in named or body["detail"].startswith(f"{where}: "), body


def test_a_parameter_repeated_with_the_same_value_is_the_parameter(served: Served) -> None:
    once = served.get("/api/v1/kpis?format=csv")
    twice = served.get("/api/v1/kpis?format=csv&format=csv")
    assert (twice.status_code, twice.text) == (200, once.text)


def test_a_cursor_of_another_query_is_refused(served: Served) -> None:
    cursor = served.get("/api/v1/opportunities?limit=2").json()["next"].split("cursor=")[1]
    assert served.get(f"/api/v1/leads?cursor={cursor}").status_code == 400
    assert served.get(f"/api/v1/opportunities?is_won=true&cursor={cursor}").status_code == 400


def test_wrong_method_and_oversized_bodies(served: Served) -> None:
    assert served.client.delete("/api/v1/kpis", headers=served.read).status_code == 405
    # A 405 names every method the path serves, whichever route serves it.
    for method, url, allowed in [
        ("DELETE", "/api/v1/kpis", "GET"),
        ("PATCH", "/api/v1/targets", "GET, POST"),
        ("POST", "/api/v1/targets/definitions/1", "GET, PUT, DELETE"),
    ]:
        refused = served.client.request(method, url, headers=served.admin)
        assert (refused.status_code, refused.headers["allow"]) == (405, allowed), url
    big = {"kpi": "won_deals", "period": "2017-01-01", "value": 1, "scope_id": "x" * 100_000}
    response = served.client.post("/api/v1/targets", json=big, headers=served.admin)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == response.json()["request_id"]


def test_a_nul_character_is_refused_on_either_store(served: Served) -> None:
    # PostgreSQL cannot hold one: without the check, the query would fail as a 500 there.
    for url in ("/api/v1/opportunities?stage=%00", "/api/v1/kpis/win%00rate/values"):
        response = served.get(url)
        assert response.status_code == 400, url
        assert "NUL" in response.json()["detail"]
        assert response.headers["x-request-id"] == response.json()["request_id"]
    target = {"kpi": "won_deals", "period": "2017-01-01", "value": 1, "scope_id": "company\u0000"}
    response = served.client.post("/api/v1/targets", json=target, headers=served.admin)
    assert response.status_code == 422
    assert "NUL character" in response.json()["detail"]


def test_metrics_report_requests_and_syncs(served: Served) -> None:
    served.get("/api/v1/kpis")
    text = served.client.get("/metrics").text
    assert 'crm_perf_sync_http_requests_total{method="GET",route="/api/v1/kpis",status="200"}' in text
    assert 'crm_perf_sync_sync_runs_total{connection="maven",status="succeeded"} 1.0' in text
    assert 'crm_perf_sync_records_synced_total{action="inserted",connection="maven"}' in text
    assert 'crm_perf_sync_kpi_refreshes_total{kind="full",status="succeeded"}' in text
    assert "crm_perf_sync_last_successful_sync_timestamp_seconds" in text
