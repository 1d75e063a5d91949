"""An open dashboard follows the numbers: a deal won in the CRM and pushed reaches the page
without a reload.

The HubSpot emulator serves the portal and the app runs on a real socket. A deal is won in the
portal, the push HubSpot would send is posted to the ingest endpoint and the worker's inbox turn
fetches it and refreshes; the overview open in Chromium shows one more won deal, in place (the
page is the same document: a value set on ``window`` before is still there), says when it was
updated, and stays accessible. Under it, ``GET /dashboard/updates`` is a stream of server-sent
events that names the results' new version, for signed-in viewers only.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from crm_perf_sync.api.app import create_app
from crm_perf_sync.apikeys import service as keys
from crm_perf_sync.config import load_config
from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
from crm_perf_sync.kit.settings import Settings
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.runtime import Runtime
from crm_perf_sync.worker.scheduler import refresh_kpis, run_inbox
from tests.api.test_dashboard_browser import sign_in
from tests.connectors.hubspot.emulator import HubSpotEmulator
from tests.connectors.hubspot.portal import small_portal
from tests.connectors.hubspot.pushes import event, pushing_config, signed
from tests.dashboard.browser import assert_no_console_errors, assert_same_origin, axe, live_server
from tests.worker.stored import won_deals

SECRET = "hs-app-secret-live"
PORTAL = 5550002
OPEN_DEALS = (9003, 9004)  # open in the small portal
WON = "article[data-kpi=won_deals] a.value"


@dataclass
class Live:
    runtime: Runtime
    base: str
    key: str
    emulator: HubSpotEmulator

    def win_and_push(self, deal: int) -> None:
        """Win ``deal`` in the portal, push what HubSpot would, and let the worker take its turn."""
        now = utc_now().strftime("%Y-%m-%dT%H:%M:%S.000Z")
        self.emulator.portal.update("deals", deal, {"dealstage": "closedwon", "closedate": now})
        body = json.dumps(
            [event("deal.propertyChange", deal, portal=PORTAL, propertyName="dealstage")]
        ).encode()
        url = f"{self.base}/api/v1/ingest/hs"
        answer = httpx.post(url, content=body, headers=signed(body, url, secret=SECRET), timeout=30)
        assert answer.status_code == 200, answer.text
        assert run_inbox(self.runtime, threading.Event())

    def won_deals(self) -> int:
        return int(won_deals(self.runtime.session_factory))


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[Live]:
    with HubSpotEmulator(small_portal()) as emulator:
        path = pushing_config(tmp_path / "config.yaml", emulator, portal=PORTAL, secret=SECRET)
        registry = ConnectorRegistry.discover()
        loaded = load_config(path, registry)
        engine = create_db_engine(db_url)
        runtime = Runtime(Settings(), engine, make_session_factory(engine), registry, loaded)
        with session_scope(runtime.session_factory) as session:
            _, key = keys.create(session, "tests (read)", "read")
        service = runtime.sync_service()
        service.apply_config()
        assert service.sync("hs").status == "succeeded"
        refresh_kpis(runtime, threading.Event(), reason="the first load")
        app = create_app(engine, loaded)
        try:
            with live_server(app) as base:
                yield Live(runtime, base, key, emulator)
        finally:
            app.state.context.chores.shutdown(wait=True)
            engine.dispose()


def test_an_open_overview_shows_a_pushed_win_in_place(live: Live, page: Page) -> None:
    sign_in(page, live.base, live.key)
    page.goto(f"{live.base}/dashboard?grain=year")  # this year's won deals, with their trend
    page.wait_for_function("document.body.dataset.chartsDrawn !== undefined")
    drawn = "document.querySelectorAll('[data-chart][data-drawn]').length"
    charts = page.evaluate(drawn)
    assert charts > 0
    before = float(page.locator(WON).get_attribute("data-value") or 0)
    total = live.won_deals()
    expect(page.locator("#live-status")).to_be_empty()
    page.evaluate("window.sameDocument = true")

    live.win_and_push(OPEN_DEALS[0])

    assert live.won_deals() == total + 1
    expect(page.locator(WON)).to_have_attribute("data-value", str(before + 1), timeout=15_000)
    assert page.evaluate("window.sameDocument") is True  # updated in place, not reloaded
    expect(page.locator("#live-status")).to_have_text(re.compile(r"^Updated at \S"))
    # Every chart of the new content is drawn (a KPI may have gained its first point this year).
    assert page.evaluate(drawn) == page.evaluate("document.querySelectorAll('[data-chart]').length") >= charts
    # The next change arrives the same way.
    live.win_and_push(OPEN_DEALS[1])
    expect(page.locator(WON)).to_have_attribute("data-value", str(before + 2), timeout=15_000)
    assert page.evaluate("window.sameDocument") is True
    assert axe(page) == []
    assert_same_origin(page, live.base)
    assert_no_console_errors(page)


def _session_cookie(base: str, key: str) -> dict[str, str]:
    answer = httpx.post(f"{base}/dashboard/sign-in", data={"key": key, "next": "/dashboard"})
    assert answer.status_code == 303, answer.text
    return dict(answer.cookies)


def _events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    name = None
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: ") and name is not None:
            yield name, json.loads(line.removeprefix("data: "))
            name = None


def test_the_update_stream_names_each_new_version_to_signed_in_viewers_only(live: Live) -> None:
    refused = httpx.get(f"{live.base}/dashboard/updates")
    assert refused.status_code == 303
    assert refused.headers["location"].startswith("/dashboard/sign-in")

    cookies = _session_cookie(live.base, live.key)
    page = httpx.get(f"{live.base}/dashboard", cookies=cookies)
    found = re.search(r'<body data-live="([^"]*)"', page.text)
    assert found is not None
    shown = found.group(1)
    assert shown  # the first load was refreshed: a version

    with httpx.Client(base_url=live.base, cookies=cookies, timeout=15) as client:
        # A page rendered from an older version hears of the current one at once.
        with client.stream(
            "GET", "/dashboard/updates", params={"since": "2000-01-01T00:00:00+00:00"}
        ) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            assert next(_events(answer.iter_lines())) == ("refreshed", {"version": shown})
        # A page that is up to date hears nothing until a change is refreshed, then its version.
        with client.stream("GET", "/dashboard/updates", params={"since": shown}) as answer:
            live.win_and_push(OPEN_DEALS[0])
            name, data = next(_events(answer.iter_lines()))
    assert name == "refreshed"
    assert data["version"] > shown
