"""The dashboard in a real browser (Debian's Chromium through Playwright), on the Maven example
store and a Zoho store kept in CNY: sign-in, the numbers against the REST API, both languages,
a click through to the deals behind a number, a target edited by an admin, and on every page: no
request off the server's origin, no console error, and axe-core's WCAG 2 A/AA rules.

The browser and its pages come from tests/dashboard/browser.py. Each page is screenshotted in
both languages into the test's output; ``CRM_PERF_SYNC_SCREENSHOTS`` names a directory to write
them to as well (``docs/screenshots`` is refreshed that way).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect

from crm_perf_sync.api.app import create_app
from crm_perf_sync.apikeys import service as keys
from crm_perf_sync.config import load_config
from crm_perf_sync.jobs.refresh import RefreshJob
from crm_perf_sync.jobs.sync import SyncService
from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.sync.service import SyncOptions
from tests.api.conftest import Served
from tests.conftest import DATA_DIR, REPO_ROOT
from tests.dashboard.browser import assert_no_console_errors, assert_same_origin, axe, live_server

SCREENSHOTS_ENV = "CRM_PERF_SYNC_SCREENSHOTS"
PAGES = {
    "overview": "/dashboard?grain=quarter&period=2017-04-01",
    "leaderboard": "/dashboard/leaderboard?grain=month",
    "funnel": "/dashboard/funnel",
    "targets": "/dashboard/targets",
    "alerts": "/dashboard/alerts",
    "operations": "/dashboard/operations",
}


@pytest.fixture(scope="module")
def maven(served: Served) -> Iterator[str]:
    """The Maven store's app on a real socket (SQLite and PostgreSQL in turn)."""
    with live_server(served.client.app) as base:
        yield base


def sign_in(page: Page, base: str, key: str, language: str = "en") -> None:
    page.goto(f"{base}/dashboard/language?to={language}&next=/dashboard/sign-in")
    page.get_by_label(re.compile("API key|API 密钥")).fill(key)
    page.get_by_role("button", name=re.compile("Sign in|登录")).click()
    page.wait_for_url(f"{base}/dashboard")


def charts_drawn(page: Page) -> None:
    page.wait_for_function("document.body.dataset.chartsDrawn !== undefined")


def shoot(page: Page, name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    wanted = os.environ.get(SCREENSHOTS_ENV)
    if wanted:
        # For the README: the page's first 1,600 pixels, as a JPEG (a long table goes on below).
        height = min(1600, int(page.evaluate("document.documentElement.scrollHeight")))
        Path(wanted).mkdir(parents=True, exist_ok=True)
        page.screenshot(
            path=str(Path(wanted) / f"{name}.jpg"),
            full_page=True,
            type="jpeg",
            quality=80,
            clip={
                "x": 0,
                "y": 0,
                "width": page.viewport_size["width"] if page.viewport_size else 1280,
                "height": height,
            },
        )


def api(served: Served, url: str, **params: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = served.get(url, params=params).json()["data"]
    return rows


def test_the_overview_and_leaderboard_show_the_apis_numbers(served: Served, maven: str, page: Page) -> None:
    sign_in(page, maven, served.read_key)
    page.goto(maven + PAGES["overview"])
    charts_drawn(page)
    shown: dict[str, float] = {}
    for kpi in ("win_rate", "won_revenue"):
        (row,) = api(
            served, f"/api/v1/kpis/{kpi}/values", grain="quarter", period="2017-04-01", scope="company"
        )
        value = page.locator(f"article[data-kpi={kpi}] a.value")
        assert float(value.get_attribute("data-value") or "nan") == pytest.approx(row["value"], rel=1e-9)
        shown[kpi] = float(str(row["value"]))
    # As people read them: a percentage with one decimal, dollars with cents.
    expect(page.locator("article[data-kpi=win_rate] a.value")).to_have_text(f"{shown['win_rate']:.1%}")
    expect(page.locator("article[data-kpi=won_revenue] a.value")).to_have_text(
        f"${shown['won_revenue']:,.2f}"
    )
    page.goto(maven + PAGES["leaderboard"])
    scores = api(served, "/api/v1/scorecards/reps", grain="month", limit="1000")
    rows = page.locator("#leaderboard tbody tr")
    expect(rows).to_have_count(len(scores))
    owners = {row.get_attribute("data-owner") for row in rows.all()}
    assert owners == {s["scope_id"] for s in scores}
    scored = [s for s in scores if s["score"] is not None]
    texts = page.locator("#leaderboard td.score").all_inner_texts()
    assert sum(1 for t in texts if t != "–") == len(scored)
    assert_same_origin(page, maven)
    assert_no_console_errors(page)


def test_a_reps_win_rate_leads_to_a_known_deal(served: Served, maven: str, page: Page) -> None:
    sign_in(page, maven, served.read_key)
    page.goto(maven + PAGES["leaderboard"])
    first = page.locator("#leaderboard tbody tr").first
    owner = first.get_attribute("data-owner") or ""
    first.locator("th a").click()
    page.wait_for_url(re.compile(r"/dashboard/rep\?"))
    page.locator("#rep-kpis tr[data-kpi=win_rate] td a").last.click()
    page.wait_for_url(re.compile(r"/dashboard/explain/win_rate\?"))
    explained = served.get(
        "/api/v1/kpis/win_rate/explain",
        params={**dict(parse_qsl(urlsplit(page.url).query)), "part": "numerator"},
    ).json()
    known = explained["parts"][0]["records"][0]["external_id"]
    assert owner  # the rep clicked on
    expect(page.locator(f"table.records[data-role=numerator] tr[data-external-id='{known}']")).to_have_count(
        1
    )
    assert_same_origin(page, maven)
    assert_no_console_errors(page)


def test_an_admin_edits_a_target_and_a_read_key_cannot(
    served: Served, maven: str, browser: Browser, page: Page
) -> None:
    sign_in(page, maven, served.admin_key)
    page.goto(maven + "/dashboard/targets")
    form = page.locator("#set-target")
    form.locator("select[name=kpi]").select_option("opportunities_created")
    form.locator("input[name=period]").fill("2017")
    form.locator("input[name=value]").fill("10000")
    form.get_by_role("button").click()
    page.wait_for_url(re.compile(r"done=saved"))
    RefreshJob(served.session_factory, served.config).refresh()
    page.goto(maven + "/dashboard/targets?kpi=opportunities_created")
    first = page.locator("#targets-matrix tr[data-scope=company] .attainment").first
    before = float(first.get_attribute("data-attainment") or "nan")
    definition = page.locator("#target-definitions tr[data-definition]").filter(has_text=re.compile("2017"))
    definition.locator("input[name=value]").fill("20000")
    definition.get_by_role("button", name="Save target").click()
    page.wait_for_url(re.compile(r"done=saved"))
    RefreshJob(served.session_factory, served.config).refresh()
    page.goto(maven + "/dashboard/targets?kpi=opportunities_created")
    after = float(
        page.locator("#targets-matrix tr[data-scope=company] .attainment").first.get_attribute(
            "data-attainment"
        )
        or "nan"
    )
    assert after == pytest.approx(before / 2)
    assert_no_console_errors(page)
    # A read key sees no edit control, and a write without the session's token is refused.
    reader = browser.new_context().new_page()
    sign_in(reader, maven, served.read_key)
    reader.goto(maven + "/dashboard/targets")
    expect(reader.locator("#set-target")).to_have_count(0)
    expect(reader.locator("#target-definitions input[name=value]")).to_have_count(0)
    forged = reader.request.post(
        maven + "/dashboard/targets",
        form={"kpi": "won_deals", "grain": "year", "period": "2017", "value": "1"},
        max_redirects=0,
    )
    assert forged.status == 403
    reader.context.close()


@pytest.mark.parametrize("language", ["en", "zh"])
def test_every_page_is_accessible_stays_on_its_origin_and_is_screenshotted(
    served: Served, maven: str, page: Page, language: str, tmp_path: Path
) -> None:
    sign_in(page, maven, served.read_key, language)
    explain = page.locator("article[data-kpi=won_revenue] a.value")
    for name, url in {**PAGES, "explain": None, "rep": None}.items():
        if name == "explain":
            page.goto(maven + PAGES["overview"])
            explain.click()
            page.wait_for_url(re.compile("/dashboard/explain/"))
        elif name == "rep":
            page.goto(maven + PAGES["leaderboard"])
            page.locator("#leaderboard tbody th a").first.click()
            page.wait_for_url(re.compile("/dashboard/rep"))
        else:
            page.goto(maven + str(url))
        charts_drawn(page)
        assert page.locator("html").get_attribute("lang") == ("zh-CN" if language == "zh" else "en")
        violations = axe(page)
        assert violations == [], f"{name}: {violations}"
        shoot(page, f"{name}-{language}", tmp_path)
    # Keyboard: the first tab stop skips to the content, and the navigation is reachable.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.classList.contains('skip')")
    assert_same_origin(page, maven)
    assert_no_console_errors(page)


# --- Chinese on a Zoho store kept in CNY -----------------------------------------------------


@pytest.fixture(scope="module")
def zoho_cny(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[tuple[str, str]]:
    """The Zoho example with its amounts in CNY (as a Chinese team's export would be), served."""
    directory = tmp_path_factory.mktemp("zoho-cny")
    text = (REPO_ROOT / "config" / "examples" / "zoho.yaml").read_text(encoding="utf-8")
    text = text.replace("${CRM_DATA_DIR:-../shared/data}", str(DATA_DIR)).replace(
        "{value: USD}", "{value: CNY}"
    )
    config_path = directory / "zoho.yaml"
    config_path.write_text(text, encoding="utf-8")
    store = directory / "store.db"
    shutil.copyfile(sqlite_template, store)
    engine = create_db_engine(f"sqlite:///{store}")
    registry = ConnectorRegistry.discover()
    config = load_config(config_path, registry)
    factory = make_session_factory(engine)
    sync = SyncService(session_factory=factory, registry=registry, config=config, options=SyncOptions())
    sync.apply_config()
    assert sync.sync("zoho").status == "succeeded"
    RefreshJob(factory, config).refresh()
    with session_scope(factory) as session:
        _, key = keys.create(session, "browser", "read")
    try:
        with live_server(create_app(engine, config)) as base:
            yield base, key
    finally:
        engine.dispose()


def test_chinese_labels_and_cny_amounts_then_back_to_english(
    zoho_cny: tuple[str, str], page: Page, tmp_path: Path
) -> None:
    base, key = zoho_cny
    sign_in(page, base, key)
    page.get_by_role("link", name="中文").click()
    page.wait_for_url(f"{base}/dashboard")
    charts_drawn(page)
    expect(page.locator("h1")).to_contain_text("总览")
    expect(page.get_by_role("navigation")).to_contain_text("团队与销售")
    revenue = page.locator("article[data-kpi=won_revenue] a.value").first
    expect(revenue).to_have_text(re.compile(r"^¥[\d,]+\.\d\d$"))
    expect(page.locator("article[data-kpi=won_revenue] h2")).to_contain_text("赢单")
    page.get_by_role("link", name="大额以“万”显示").click()
    expect(page.locator("article[data-kpi=won_revenue] a.value").first).to_have_text(
        re.compile(r"^¥[\d.]+[万亿]$")
    )
    shoot(page, "overview-zh-cny", tmp_path)
    page.get_by_role("link", name="English").click()
    expect(page.locator("h1")).to_contain_text("Overview")
    expect(page.locator("article[data-kpi=won_revenue] a.value").first).to_have_text(
        re.compile(r"^CN¥[\d.]+[KMB]?$|^CN¥[\d,]+\.\d\d$")
    )
    assert_same_origin(page, base)
    assert_no_console_errors(page)
