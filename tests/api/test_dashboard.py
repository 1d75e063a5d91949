"""The dashboard over HTTP, on the Maven store and both backends: sign-in and sessions, CSRF,
escaping, the numbers each page shows against what the REST API returns for the same cell, and
both languages. (A real browser drives it in tests/dashboard.)"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from crm_perf_sync.api.dashboard.auth import SESSION_COOKIE
from crm_perf_sync.api.dashboard.i18n import MESSAGES
from crm_perf_sync.apikeys import service as keys
from crm_perf_sync.kit.db import WRITE_LOCK, session_scope
from tests.api.conftest import Served

TEMPLATES = Path(__file__).parents[2] / "src" / "crm_perf_sync" / "api" / "dashboard" / "templates"


class Page(HTMLParser):
    """The parts of a page the tests read: elements by id and data attributes, scripts, links."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[dict[str, str]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        self.elements.append((tag, found))
        if tag == "script":
            self.scripts.append(found)

    def find(self, tag: str | None = None, **attrs: str) -> list[dict[str, str]]:
        return [
            a
            for t, a in self.elements
            if (tag is None or t == tag) and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]


def browser(served: Served, **kw: Any) -> TestClient:
    """A client of its own (its own cookie jar), as a browser would be."""
    return TestClient(served.client.app, follow_redirects=False, **kw)


def sign_in(client: TestClient, key: str) -> TestClient:
    answer = client.post("/dashboard/sign-in", data={"key": key, "next": "/dashboard"})
    assert answer.status_code == 303, answer.text
    return client


@pytest.fixture
def reader(served: Served) -> Iterator[TestClient]:
    with browser(served) as client:
        yield sign_in(client, served.read_key)


@pytest.fixture
def admin(served: Served) -> Iterator[TestClient]:
    with browser(served) as client:
        yield sign_in(client, served.admin_key)


def csrf(client: TestClient, url: str = "/dashboard/targets") -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get(url).text)
    assert found is not None
    return found.group(1)


def api_value(served: Served, kpi: str, **query: str) -> dict[str, Any]:
    rows = served.get(f"/api/v1/kpis/{kpi}/values", params=query).json()["data"]
    assert len(rows) == 1, rows
    found: dict[str, Any] = rows[0]
    return found


# --- sessions ----------------------------------------------------------------------------------


def test_the_root_leads_to_the_dashboard_and_a_page_without_a_session_to_sign_in(served: Served) -> None:
    client = browser(served)
    assert client.get("/").headers["location"] == "/dashboard"
    assert client.get("/ui").headers["location"] == "/dashboard"
    answer = client.get("/dashboard/leaderboard?grain=month")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dashboard/sign-in?next=/dashboard/leaderboard%3Fgrain%3Dmonth"
    form = client.get(answer.headers["location"])
    assert form.status_code == 200
    assert 'value="/dashboard/leaderboard?grain=month"' in form.text


def test_signing_in_gives_a_strict_http_only_session_cookie_and_never_keeps_the_key(served: Served) -> None:
    client = browser(served)
    wrong = client.post("/dashboard/sign-in", data={"key": "cps_not-a-key", "next": "/dashboard"})
    assert wrong.status_code == 401
    assert "unknown API key" in wrong.text
    answer = client.post("/dashboard/sign-in", data={"key": served.read_key, "next": "//evil.example/x"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dashboard"  # never off this server
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/" in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    token = client.cookies[SESSION_COOKIE]
    assert served.read_key not in cookie
    with session_scope(served.session_factory) as session:
        stored = session.execute(text("SELECT token_hash FROM dashboard_session")).scalars().all()
    assert keys.hash_key(token) in stored
    assert token not in stored
    with TestClient(served.client.app, base_url="https://testserver", follow_redirects=False) as secure:
        over_https = secure.post("/dashboard/sign-in", data={"key": served.read_key, "next": "/dashboard"})
        assert "Secure" in over_https.headers["set-cookie"]


def test_signing_out_ends_the_session_for_every_copy_of_the_cookie(
    served: Served, reader: TestClient
) -> None:
    token = reader.cookies[SESSION_COOKIE]
    assert reader.get("/dashboard").status_code == 200
    answer = reader.post("/dashboard/sign-out", data={"csrf_token": csrf(reader, "/dashboard")})
    assert answer.status_code == 303
    with browser(served) as copy:
        copy.cookies.set(SESSION_COOKIE, token)
        assert copy.get("/dashboard").status_code == 303


def test_revoking_the_key_ends_its_sessions(served: Served) -> None:
    with session_scope(served.session_factory) as session:
        row, key = keys.create(session, "soon revoked", "read")
    with browser(served) as client:
        sign_in(client, key)
        assert client.get("/dashboard").status_code == 200
        with session_scope(served.session_factory) as session:
            # Read, then write: the write lock first (as the product's writes take it), since the
            # request above records the key's use in the background meanwhile.
            session.connection(execution_options={WRITE_LOCK: True})
            keys.revoke(session, row.id)
        # A session is checked against the store at most once a second: within that, it holds.
        deadline = time.monotonic() + 30
        while client.get("/dashboard").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.get("/dashboard").status_code == 303


def test_every_page_is_served_under_a_strict_content_security_policy(reader: TestClient) -> None:
    for url in ("/dashboard", "/dashboard/leaderboard", "/dashboard/targets", "/dashboard/sign-in"):
        answer = reader.get(url)
        assert answer.status_code == 200, url
        policy = answer.headers["content-security-policy"]
        assert "default-src 'self'" in policy
        assert "script-src 'self';" in policy
        assert "unsafe-inline" not in policy
        page = Page(answer.text)
        for script in page.scripts:  # no inline script: each one is a file of ours or inert data
            assert (
                script.get("src", "").startswith("/dashboard/static/")
                or script.get("type") == "application/json"
            )
        assert " style=" not in answer.text
        assert "http://" not in answer.text
        assert "https://" not in answer.text


# --- the numbers -------------------------------------------------------------------------------


def test_the_overview_shows_the_company_numbers_the_api_returns(served: Served, reader: TestClient) -> None:
    page = Page(reader.get("/dashboard?grain=quarter&period=2017-04-01").text)
    win_rate = api_value(served, "win_rate", grain="quarter", period="2017-04-01", scope="company")
    revenue = api_value(served, "won_revenue", grain="quarter", period="2017-04-01", scope="company")
    shown = {a["data-kpi"]: a for a in page.find("article") if "data-kpi" in a}
    assert set(shown) >= {
        "win_rate",
        "won_revenue",
        "won_deals",
        "sales_cycle_days_median",
        "weighted_pipeline",
    }
    values = [a for a in page.find("a") if a.get("class") == "value"]
    by_link = {urlsplit(a["href"]).path.rsplit("/", 1)[1]: a for a in values}
    assert float(by_link["win_rate"]["data-value"]) == pytest.approx(win_rate["value"], rel=1e-9)
    assert float(by_link["won_revenue"]["data-value"]) == pytest.approx(revenue["value"], rel=1e-9)
    html = reader.get("/dashboard?grain=quarter&period=2017-04-01").text
    assert f"{win_rate['value']:.1%}" in html  # the quarter's 60% target: attainment shown
    assert f"{win_rate['attainment']:.1%}" in html


def test_the_leaderboard_lists_every_scored_rep_with_the_apis_scores(
    served: Served, reader: TestClient
) -> None:
    scores = served.get("/api/v1/scorecards/reps", params={"grain": "month", "limit": 1000}).json()["data"]
    assert len(scores) > 20
    page = Page(reader.get("/dashboard/leaderboard?grain=month").text)
    rows = {a["data-owner"] for a in page.find("tr") if "data-owner" in a}
    assert rows == {s["scope_id"] for s in scores}
    html = reader.get("/dashboard/leaderboard?grain=month").text
    best = min((s for s in scores if s["rank"] is not None), key=lambda s: s["rank"])
    assert f"{best['score'] * 100:,.1f}" in html


def test_a_reps_win_rate_leads_to_the_deals_behind_it(served: Served, reader: TestClient) -> None:
    page = Page(reader.get("/dashboard/leaderboard?grain=month").text)
    owner = next(a["data-owner"] for a in page.find("tr") if "data-owner" in a)
    rep = reader.get("/dashboard/rep", params={"owner": owner, "grain": "month"})
    assert rep.status_code == 200
    link = next(
        a["href"]
        for a in Page(rep.text).find("a")
        if a.get("href", "").startswith("/dashboard/explain/win_rate?")
    )
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    assert query["scope"] == "owner"
    assert query["scope_id"] == owner
    explained = reader.get(link)
    assert explained.status_code == 200
    api = served.get(
        "/api/v1/kpis/win_rate/explain", params={**query, "part": "numerator", "limit": 100}
    ).json()
    expected = {r["external_id"] for r in api["parts"][0]["records"]}
    assert expected
    shown = Page(explained.text)
    numerator = {a["data-external-id"] for a in shown.find("tr") if "data-external-id" in a}
    assert expected <= numerator
    assert float(shown.find(id="explained-value")[0]["data-value"]) == pytest.approx(api["value"]["value"])


def test_an_unknown_rep_or_kpi_is_an_html_error_page(reader: TestClient) -> None:
    missing = reader.get("/dashboard/rep", params={"owner": "maven:nobody"})
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert "maven:nobody" in missing.text
    bad = reader.get("/dashboard/explain/win_rate?grain=month&period=nonsense")
    assert bad.status_code == 400 or bad.status_code == 422
    assert bad.headers["content-type"].startswith("text/html")


# --- writes ------------------------------------------------------------------------------------


def test_a_read_key_sees_no_edit_control_and_its_forged_post_is_refused(
    served: Served, reader: TestClient
) -> None:
    before = served.get("/api/v1/targets/definitions").json()["data"]
    page = reader.get("/dashboard/targets").text
    assert 'id="set-target"' not in page
    assert 'method="post" action="/dashboard/targets' not in page
    form = {
        "csrf_token": csrf(reader),
        "kpi": "won_deals",
        "grain": "year",
        "period": "2017",
        "value": "100",
    }
    assert reader.post("/dashboard/targets", data=form).status_code == 403
    assert (
        reader.post("/dashboard/targets/1/delete", data={"csrf_token": form["csrf_token"]}).status_code == 403
    )
    assert served.get("/api/v1/targets/definitions").json()["data"] == before


def test_an_admin_write_needs_the_sessions_csrf_token_and_this_origin(admin: TestClient) -> None:
    form = {"kpi": "won_deals", "grain": "year", "period": "2017", "value": "5"}
    assert admin.post("/dashboard/targets", data=form).status_code == 403
    assert admin.post("/dashboard/targets", data={**form, "csrf_token": "forged"}).status_code == 403
    token = csrf(admin)
    elsewhere = admin.post(
        "/dashboard/targets", data={**form, "csrf_token": token}, headers={"Origin": "https://evil.example"}
    )
    assert elsewhere.status_code == 403


def test_an_admin_sets_a_target_and_sees_attainment_after_the_refresh(
    served: Served, admin: TestClient
) -> None:
    form = {
        "csrf_token": csrf(admin),
        "kpi": "won_deals",
        "scope": "company",
        "grain": "year",
        "period": "2017",
        "value": "4000",
    }
    answer = admin.post("/dashboard/targets", data=form, headers={"Origin": "http://testserver"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dashboard/targets?kpi=won_deals&done=saved"
    stored = [
        d
        for d in served.get("/api/v1/targets/definitions").json()["data"]
        if d["definition"]["kpi"] == "won_deals"
    ]
    assert len(stored) == 1
    assert stored[0]["definition"]["value"] == 4000
    served.service().refresh()
    year = api_value(served, "won_deals", grain="year", period="2017-01-01", scope="company")
    page = Page(admin.get("/dashboard/targets?kpi=won_deals").text)
    shown = [a for a in page.find("span") if "data-attainment" in a]
    assert float(shown[0]["data-attainment"]) == pytest.approx(year["value"] / 4000)
    # The value changes; the attainment moves after the next refresh.
    changed = {**form, "id": str(stored[0]["id"]), "value": "8000", "csrf_token": csrf(admin)}
    assert admin.post("/dashboard/targets", data=changed).status_code == 303
    served.service().refresh()
    page = Page(admin.get("/dashboard/targets?kpi=won_deals").text)
    shown = [a for a in page.find("span") if "data-attainment" in a]
    assert float(shown[0]["data-attainment"]) == pytest.approx(year["value"] / 8000)
    removed = admin.post(f"/dashboard/targets/{stored[0]['id']}/delete", data={"csrf_token": csrf(admin)})
    assert removed.status_code == 303
    assert [
        d
        for d in served.get("/api/v1/targets/definitions").json()["data"]
        if d["definition"]["kpi"] == "won_deals"
    ] == []


def test_a_bad_target_is_shown_back_naming_the_field(admin: TestClient) -> None:
    form = {
        "csrf_token": csrf(admin),
        "kpi": "won_revenue",
        "grain": "year",
        "period": "2017",
        "value": "lots",
    }
    answer = admin.post("/dashboard/targets", data=form)
    assert answer.status_code == 422
    assert "value: &#39;lots&#39; is not a number" in answer.text
    no_currency = {**form, "value": "10"}
    answer = admin.post("/dashboard/targets", data=no_currency)
    assert answer.status_code == 422
    assert "give the target&#39;s currency" in answer.text


# --- text from the CRM, languages --------------------------------------------------------------


def test_crm_text_is_shown_verbatim_never_as_markup(served: Served, reader: TestClient) -> None:
    page = Page(reader.get("/dashboard/leaderboard?grain=month").text)
    owner = next(a["data-owner"] for a in page.find("tr") if "data-owner" in a)
    connection, external = owner.split(":", 1)
    hostile = "<script>alert(1)</script>"
    with served.engine.begin() as conn:
        before = conn.execute(
            text("SELECT name FROM owner WHERE connection_id = :c AND external_id = :e"),
            {"c": connection, "e": external},
        ).scalar_one()
        conn.execute(
            text("UPDATE owner SET name = :n WHERE connection_id = :c AND external_id = :e"),
            {"n": hostile, "c": connection, "e": external},
        )
    try:
        for url in ("/dashboard/leaderboard?grain=month", f"/dashboard/rep?owner={owner}"):
            html = reader.get(url).text
            assert hostile not in html
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    finally:
        with served.engine.begin() as conn:
            conn.execute(
                text("UPDATE owner SET name = :n WHERE connection_id = :c AND external_id = :e"),
                {"n": before, "c": connection, "e": external},
            )


def test_chinese_is_chosen_by_accept_language_and_by_the_switch(served: Served) -> None:
    with browser(served, headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}) as client:
        sign_in(client, served.read_key)
        html = client.get("/dashboard?grain=quarter&period=2017-04-01").text
        assert '<html lang="zh-CN">' in html
        assert "总览" in html
        assert "达成率" in html
        assert "2017年第2季度" in html
        back = client.get("/dashboard/language", params={"to": "en", "next": "/dashboard"})
        assert back.status_code == 303
        assert back.headers["location"] == "/dashboard"
        html = client.get("/dashboard?grain=quarter&period=2017-04-01").text
        assert '<html lang="en">' in html
        assert "Overview" in html
        assert "2017 Q2" in html
        assert (
            client.get("/dashboard/language", params={"to": "zh", "next": "https://evil.example"}).headers[
                "location"
            ]
            == "/dashboard"
        )


def test_every_word_a_template_uses_exists_in_both_languages() -> None:
    used: set[str] = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"\bt\('([a-z_.]+)'\)", template.read_text(encoding="utf-8")))
    assert used, "no t('…') found: the pattern is wrong"
    missing = {key for key in used if key not in MESSAGES}
    assert missing == set()
    for key, (english, chinese) in MESSAGES.items():
        assert english.strip(), key
        assert chinese.strip(), key
        # Every Chinese text is Chinese (the switch back to English names English).
        assert re.search(r"[\u4e00-\u9fff]", chinese) or key == "language.switch", key
