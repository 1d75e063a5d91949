"""The dashboard over a demo company whose reps call, meet and visit their accounts.

The overview's customer and activity tiles and a rep's page (their activity KPIs, their latest
activities) are read as a signed-in browser reads them and checked against the REST API.
"""

from __future__ import annotations

import html
import re
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crm_perf_sync.api.app import create_app
from crm_perf_sync.apikeys import service as keys
from crm_perf_sync.config import load_config
from crm_perf_sync.jobs.refresh import RefreshJob
from crm_perf_sync.jobs.sync import SyncService
from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.sync.service import SyncOptions

CONFIG = """business: {timezone: UTC, currency: USD}
connections:
  - id: demo
    kind: demo
    settings: {seed: 7, reps: 6, opportunities: 500, accounts: 60, activities_per_deal: 1.5,
               as_of: "2026-06-30T00:00:00Z"}
"""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[TestClient]:
    """The demo company synced and refreshed into a SQLite store, served, signed in with a read key."""
    directory = tmp_path_factory.mktemp("activities")
    store = directory / "store.db"
    shutil.copyfile(sqlite_template, store)
    path = directory / "config.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    registry = ConnectorRegistry.discover()
    config = load_config(path, registry)
    engine = create_db_engine(f"sqlite:///{store}")
    factory = make_session_factory(engine)
    sync = SyncService(session_factory=factory, registry=registry, config=config, options=SyncOptions())
    sync.apply_config()
    assert sync.sync("demo").status == "succeeded"
    RefreshJob(factory, config).refresh()
    with session_scope(factory) as session:
        _, key = keys.create(session, "tests (read)", "read")
    with TestClient(create_app(engine, config)) as served:
        served.headers["Authorization"] = f"Bearer {key}"
        signed = served.post(
            "/dashboard/sign-in", data={"key": key, "next": "/dashboard"}, follow_redirects=False
        )
        assert signed.status_code == 303, signed.text
        yield served
    engine.dispose()


def page(client: TestClient, url: str, language: str = "en") -> str:
    client.cookies.set("crm_perf_sync_lang", language)
    response = client.get(url)
    assert response.status_code == 200, response.text
    return response.text


def company_value(client: TestClient, kpi: str, grain: str, period: str) -> float:
    params = {"grain": grain, "scope": "company", **({"period": period} if period != "all" else {})}
    rows = client.get(f"/api/v1/kpis/{kpi}/values", params=params).json()["data"]
    (row,) = [r for r in rows if not r.get("dimension") and r["currency"] in ("", None, "USD")]
    return float(row["value"])


def every(client: TestClient, url: str) -> list[dict[str, Any]]:
    """Every row of a paged list, following ``next``."""
    rows: list[dict[str, Any]] = []
    next_url: str | None = f"{url}?limit=1000"
    while next_url:
        body = client.get(next_url).json()
        rows += body["data"]
        next_url = body["next"]
    return rows


def test_the_overview_shows_the_customer_and_activity_numbers_of_the_api(client: TestClient) -> None:
    text = page(client, "/dashboard?grain=year&period=2026-01-01")
    for kpi in ("new_customers", "activities", "activities_per_won_deal", "repeat_revenue_share"):
        found = re.search(
            rf'<article[^>]*data-kpi="{kpi}".*?class="value"[^>]*data-value="([^"]*)"', text, re.S
        )
        assert found is not None, kpi
        assert float(html.unescape(found.group(1))) == pytest.approx(
            company_value(client, kpi, "year", "2026-01-01"), rel=1e-9
        )
    # Real activity: the demo company's reps did hundreds of things this year.
    assert company_value(client, "activities", "year", "2026-01-01") > 100


@pytest.mark.parametrize("language", ["en", "zh"])
def test_a_reps_page_lists_their_latest_activities_and_activity_kpis(
    client: TestClient, language: str
) -> None:
    activities = every(client, "/api/v1/activities")
    counts: dict[str, int] = {}
    for activity in activities:
        counts[activity["owner_id"]] = counts.get(activity["owner_id"], 0) + 1
    owner = max(counts, key=lambda o: counts[o])  # the busiest rep: more than a page's worth
    mine = [a for a in activities if a["owner_id"] == owner]
    assert len(mine) > 20
    text = page(client, f"/dashboard/rep?owner={owner}&grain=year", language)
    listed = re.findall(r'<tr data-activity="([^"]*)">', text)
    assert len(listed) == 20
    by_id = {a["external_id"]: a for a in mine}
    assert set(listed) <= by_id.keys()  # theirs, not anyone else's
    when = [datetime.fromisoformat(by_id[x]["occurred_at"]) for x in listed]
    assert when == sorted(when, reverse=True)  # newest first
    left_out = [datetime.fromisoformat(a["occurred_at"]) for a in mine if a["external_id"] not in set(listed)]
    assert max(left_out) <= when[-1]  # and none newer left out
    # Their activity KPIs are on the page, with the stored value of the year.
    for kpi in ("activities", "calls", "new_customers"):
        assert f'data-kpi="{kpi}"' in text, kpi
    title = {"en": "Recent activities", "zh": "最近活动"}[language]
    assert title in text
    kinds = {"en": ("Call", "Meeting", "Visit"), "zh": ("电话", "会议", "拜访")}[language]
    assert any(f"<td>{kind}" in text for kind in kinds)
