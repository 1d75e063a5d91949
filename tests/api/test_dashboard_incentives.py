"""The dashboard's incentive pages over the Maven example's two plans: the plan's period with
every participant, a rep's statement and one line explained down to the deals.

The numbers on the pages are checked against the stored lines, and the payouts and deals against
the independent reference of tests/incentives/test_maven_plans.py (the Maven CSV files read with
the csv module); both languages are read, and one browser walks from a rep to a deal.
"""

from __future__ import annotations

import csv
import html
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Page, expect
from sqlalchemy import select, update

from crm_perf_sync.api.app import create_app
from crm_perf_sync.api.dashboard import views
from crm_perf_sync.api.dashboard.i18n import LANGUAGES, MESSAGES, Formatter, display_name
from crm_perf_sync.api.dashboard.pages import templates
from crm_perf_sync.apikeys import service as keys
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.models import IncentiveLine, Opportunity
from tests.api.test_dashboard_browser import shoot, sign_in
from tests.dashboard.browser import assert_no_console_errors, assert_same_origin, axe, live_server
from tests.incentives import conftest as incentives_conftest
from tests.incentives.conftest import Store
from tests.incentives.test_maven_plans import MAVEN, QUARTERS, agents_2017, read_maven

# The Maven example's store with its plans paid, as the incentives tests have it.
incentives_sqlite = incentives_conftest.incentives_sqlite
incentives_postgresql = incentives_conftest.incentives_postgresql
store = incentives_conftest.store

Q2 = "2017-04-01"
#: The pages of the incentives, for the screenshots in docs/screenshots.
PAGES = {
    "incentives": f"/dashboard/incentives?plan=agents-2017&period={Q2}",
    "incentive-statement": (
        f"/dashboard/incentives/statement?plan=east-2017&owner=maven:Anna Snelling&period={Q2}"
    ),
    "incentive-explain": (
        f"/dashboard/incentives/explain?plan=agents-2017&owner=maven:Anna Snelling&period={Q2}"
        "&component=commission"
    ),
}


@dataclass
class Signed:
    store: Store
    client: TestClient
    key: str

    def page(self, url: str, language: str = "en") -> str:
        self.client.cookies.set("crm_perf_sync_lang", language)
        response = self.client.get(url, follow_redirects=False)
        assert response.status_code == 200, response.text
        return response.text


@pytest.fixture(scope="module")
def signed(store: Store) -> Iterator[Signed]:
    """The Maven store's app with a test client signed in with a read key."""
    with session_scope(store.session_factory) as session:
        _, key = keys.create(session, "pay", "read")
    client = TestClient(create_app(store.engine, store.config))
    response = client.post(
        "/dashboard/sign-in", data={"key": key, "next": "/dashboard"}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    yield Signed(store, client, key)
    client.close()


def stored_lines(store: Store, plan_id: str, period_key: str, owner: str | None = None) -> list[Any]:
    with session_scope(store.session_factory) as session:
        stmt = select(IncentiveLine).where(
            IncentiveLine.plan_id == plan_id, IncentiveLine.period_key == period_key
        )
        if owner is not None:
            stmt = stmt.where(IncentiveLine.owner_id == owner)
        rows = list(session.scalars(stmt))
        session.expunge_all()
    return rows


def board_rows(text: str) -> list[tuple[str, Decimal]]:
    """(owner, earned) of the board's rows, in the page's order."""
    found = re.findall(r'<tr data-owner="([^"]*)">.*?class="num earned" data-value="([^"]*)"', text, re.S)
    return [(html.unescape(owner), Decimal(value)) for owner, value in found]


def cells(text: str, owner: str, name: str) -> list[str]:
    row = re.search(rf'<tr data-owner="{re.escape(owner)}">(.*?)</tr>', text, re.S)
    assert row is not None, owner
    return re.findall(rf'class="num {name}"[^>]*>([^<]*)<', row.group(1))


def dollars(amount: Decimal) -> str:
    return f"${amount:,.2f}" if amount >= 0 else f"-${-amount:,.2f}"


# --- the plan's period -------------------------------------------------------------------------


@pytest.mark.parametrize("plan_id", ["agents-2017", "east-2017"])
def test_the_board_lists_every_participant_with_the_total_of_their_lines(
    signed: Signed, plan_id: str
) -> None:
    text = signed.page(f"/dashboard/incentives?plan={plan_id}&period={Q2}")
    lines = stored_lines(signed.store, plan_id, Q2)
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for line in lines:
        totals[line.owner_id] += Decimal(str(line.amount))
    shown = board_rows(text)
    assert dict(shown) == totals
    assert len(shown) == len(totals) >= 13
    assert [earned for _, earned in shown] == sorted(totals.values(), reverse=True)  # the most first
    plan_total = re.search(r'id="plan-total"><span data-currency="USD" data-value="([^"]*)">([^<]*)<', text)
    assert plan_total is not None
    assert Decimal(plan_total.group(1)) == sum(totals.values())
    assert plan_total.group(2) == dollars(sum(totals.values(), Decimal(0)))
    for owner, earned in shown:
        assert cells(text, owner, "earned") == [dollars(earned)]
    # Each rep links to their statement for this period.
    links = re.findall(r'<th scope="row"><a href="([^"]*)">', text)
    assert [parse_qs(urlsplit(html.unescape(link)).query) for link in links] == [
        {"plan": [plan_id], "owner": [owner], "period": [Q2]} for owner, _ in shown
    ]


def test_the_agents_board_pays_what_the_reference_says_with_attainment_tier_and_cap(signed: Signed) -> None:
    expected = agents_2017(read_maven())
    text = signed.page(f"/dashboard/incentives?plan=agents-2017&period={Q2}")
    shown = dict(board_rows(text))
    reference = {
        f"maven:{agent}": expected[agent, Q2, "commission"] + expected[agent, Q2, "gtk-spiff"]
        for agent, quarter, part in expected
        if quarter == Q2 and part == "commission"
    }
    assert shown == reference
    commissions = {
        line.owner_id: line
        for line in stored_lines(signed.store, "agents-2017", Q2)
        if line.component_id == "commission"
    }
    capped = 0
    for owner, line in commissions.items():
        attainment = Decimal(str(line.base)) / Decimal(str(line.quota))
        assert cells(text, owner, "attainment") == [f"{float(attainment):.1%}"]
        # Marginal tiers from 0 and from 100% of quota.
        assert cells(text, owner, "tier") == ["2" if attainment >= 1 else "1"]
        row = re.search(rf'<tr data-owner="{re.escape(owner)}">.*?<td class="capped">([^<]*)<', text, re.S)
        assert row is not None
        assert row.group(1) == ("yes" if line.capped else "no")
        capped += line.capped
    assert capped >= 1  # the quarter has a capped agent to show


def test_the_board_in_chinese(signed: Signed) -> None:
    text = signed.page(f"/dashboard/incentives?plan=east-2017&period={Q2}", "zh")
    assert '<html lang="zh-CN">' in text
    assert "激励发放 · 2017 年东区奖金方案 · 2017年第2季度" in text
    assert MESSAGES["incentives.earned"][1] in text
    assert MESSAGES["incentives.tier"][1] in text
    owner, earned = board_rows(text)[0]
    assert cells(text, owner, "earned") == [f"US${earned:,.2f}"]
    assert "Earned" not in text
    assert "Incentive payouts" not in text


def test_the_period_picker_defaults_to_the_plans_latest_period(signed: Signed) -> None:
    text = signed.page("/dashboard/incentives")
    assert '<option value="agents-2017" selected>' in text
    assert '<option value="2017-10-01" selected>' in text
    periods = re.findall(r'<option value="(2017-\d\d-01)"', text)
    assert periods == ["2017-10-01", "2017-07-01", "2017-04-01", "2017-01-01"]
    # A period that is not the plan's falls back to the latest.
    assert '<option value="2017-10-01" selected>' in signed.page(
        "/dashboard/incentives?plan=east-2017&period=1999-01-01"
    )


# --- a rep's statement ----------------------------------------------------------------------------


def statement_lines(text: str) -> list[tuple[str, str, Decimal]]:
    found = re.findall(
        r'<tr data-component="([^"]*)" data-kind="([^"]*)" data-for="[^"]*">'
        r'.*?class="num amount" data-value="([^"]*)"',
        text,
        re.S,
    )
    return [(component, kind, Decimal(value)) for component, kind, value in found]


@pytest.mark.parametrize("language", ["en", "zh"])
def test_a_statement_shows_the_reps_lines_total_and_where_the_commission_stands(
    signed: Signed, language: str
) -> None:
    owner = "maven:Anna Snelling"
    text = signed.page(f"/dashboard/incentives/statement?plan=east-2017&owner={owner}&period={Q2}", language)
    lines = {
        (line.component_id, line.kind): line for line in stored_lines(signed.store, "east-2017", Q2, owner)
    }
    shown = statement_lines(text)
    assert {(c, k): v for c, k, v in shown} == {key: Decimal(str(line.amount)) for key, line in lines.items()}
    total = sum((Decimal(str(line.amount)) for line in lines.values()), Decimal(0))
    found = re.search(r'id="statement-total" data-value="([^"]*)">([^<]*)<', text)
    assert found is not None
    assert Decimal(found.group(1)) == total
    assert found.group(2) == (dollars(total) if language == "en" else f"US${total:,.2f}")
    # The retroactive tiers: 3% below 80% of quota, 5% to 120%, 6.5% beyond.
    commission = lines["commission", "payout"]
    base, quota = Decimal(str(commission.base)), Decimal(str(commission.quota))
    reached = base / quota
    tier = 1 if reached < Decimal("0.8") else 2 if reached < Decimal("1.2") else 3
    assert re.search(rf'class="tier" data-tier="{tier}"', text)
    if tier < 3:
        needs = (Decimal("0.8") if tier == 1 else Decimal("1.2")) * quota - base
        next_tier = re.search(r'class="next-tier" data-value="([^"]*)">([^<]*)<', text)
        assert next_tier is not None
        assert Decimal(next_tier.group(1)) == needs.quantize(Decimal("0.01"))
        if language == "en":
            assert (
                next_tier.group(2) == f"Tier {tier + 1} needs {dollars(needs.quantize(Decimal('0.01')))} more"
            )
        else:
            assert f"即可达到第 {tier + 1} 档" in next_tier.group(2)
    assert 'class="projected"' not in text  # 2017 ended long ago: no pace
    heading = "Pay statement" if language == "en" else "薪酬明细"
    assert f"<h1>{heading} · " in text
    # Every line links to its explanation.
    assert set(re.findall(r'href="/dashboard/incentives/explain\?[^"]*component=([^"&]*)"', text)) == {
        component for component, _ in lines
    }


def test_while_the_period_runs_the_statement_shows_the_payout_at_the_current_pace(signed: Signed) -> None:
    """The statement page as it reads in mid-May 2017 (the page reads the server's clock; the view
    and the template take it from the caller): Q2's revenue so far, carried to the quarter's end,
    through the agents' tiers."""
    owner = "maven:Anna Snelling"
    middle = datetime(2017, 5, 16, tzinfo=UTC)
    service = signed.store.job().incentives
    with session_scope(signed.store.session_factory) as session:
        shown = views.incentive_statement(session, service, "agents-2017", owner, Q2, middle)
    fmt = Formatter("en")
    text = templates.get_template("incentive_statement.html").render(
        t=fmt.t, fmt=fmt, zone="UTC", kpi_name=lambda d: display_name(d, "en"), note_text=lambda n: n,
        viewer=None, here="/", path="/", version="test", languages=LANGUAGES, view=shown,
    )  # fmt: skip
    (line,) = [
        x for x in stored_lines(signed.store, "agents-2017", Q2, owner) if x.component_id == "commission"
    ]
    base, quota = Decimal(str(line.base)), Decimal(str(line.quota))
    elapsed = Decimal((middle - datetime(2017, 4, 1, tzinfo=UTC)).total_seconds()) / Decimal(91 * 86_400)
    projected = (base / elapsed).quantize(Decimal("0.01"))
    earned = min(projected, quota) * Decimal("0.05") + max(projected - quota, Decimal(0)) * Decimal("0.08")
    expected = min(earned, 2 * quota * Decimal("0.05")).quantize(Decimal("0.01"))
    found = re.search(r'class="projected" data-value="([^"]*)">At the current pace: <strong>([^<]*)<', text)
    assert found is not None
    assert abs(Decimal(found.group(1)) - expected) <= Decimal("0.01")
    assert found.group(2) == dollars(Decimal(found.group(1)))
    assert "Open: the payouts follow every refresh" in text


# --- a line explained -----------------------------------------------------------------------------


def won_deals(agent: str, quarter: str) -> dict[str, tuple[Decimal, str]]:
    """The agent's deals won in the quarter, from the Maven CSV: id -> (close value, product)."""
    start = date.fromisoformat(quarter)
    end = QUARTERS[QUARTERS.index(start) + 1] if start != QUARTERS[-1] else date(start.year + 1, 1, 1)
    with (MAVEN / "sales_pipeline.csv").open(encoding="utf-8") as f:
        return {
            row["opportunity_id"]: (Decimal(row["close_value"] or 0), row["product"])
            for row in csv.DictReader(f)
            if row["sales_agent"] == agent
            and row["deal_stage"] == "Won"
            and row["close_date"]
            and start <= date.fromisoformat(row["close_date"]) < end
        }


def explained_records(text: str) -> dict[str, Decimal]:
    """External id -> what the record earned, of the explanation's records table."""
    found = re.findall(
        r'<tr data-external-id="([^"]*)">.*?class="num earned" data-value="([^"]*)"', text, re.S
    )
    return {html.unescape(external_id): Decimal(earned) for external_id, earned in found}


def explain_url(plan_id: str, owner: str, period_key: str, component: str) -> str:
    return (
        f"/dashboard/incentives/explain?plan={plan_id}&owner={owner}&period={period_key}"
        f"&component={component}"
    )


def test_a_commission_is_explained_down_to_the_won_deals_and_what_each_earned(signed: Signed) -> None:
    owner = "maven:Anna Snelling"
    text = signed.page(explain_url("agents-2017", owner, Q2, "commission"))
    deals = won_deals("Anna Snelling", Q2)
    earned = explained_records(text)
    assert earned.keys() == deals.keys()
    (line,) = [
        x for x in stored_lines(signed.store, "agents-2017", Q2, owner) if x.component_id == "commission"
    ]
    quota = Decimal(str(line.quota))
    # Marginal tiers: the deals in the order they closed fill 5% up to quota, then 8%.
    order = sorted(deals, key=lambda d: (won_close_date(d), d))
    filled = Decimal(0)
    for deal in order:
        value = deals[deal][0]
        below = max(Decimal(0), min(filled + value, quota) - filled)
        assert earned[deal] == below * Decimal("0.05") + (value - below) * Decimal("0.08"), deal
        filled += value
    total = re.search(r'id="records-earned" data-value="([^"]*)"', text)
    assert total is not None
    assert Decimal(total.group(1)).quantize(Decimal("0.01")) == Decimal(line.detail["uncapped"])
    assert re.search(
        rf'class="num amount" data-value="{line.amount}">{re.escape(dollars(Decimal(str(line.amount))))}<',
        text,
    )
    assert 'id="cap-note"' not in text  # Anna's Q2 stays under the cap


def won_close_date(deal: str) -> str:
    with (MAVEN / "sales_pipeline.csv").open(encoding="utf-8") as f:
        return next(row["close_date"] for row in csv.DictReader(f) if row["opportunity_id"] == deal)


@pytest.mark.parametrize("language", ["en", "zh"])
def test_a_capped_line_says_the_cap_applied(signed: Signed, language: str) -> None:
    capped = next(
        line
        for line in stored_lines(signed.store, "agents-2017", Q2)
        if line.component_id == "commission" and line.capped
    )
    text = signed.page(explain_url("agents-2017", capped.owner_id, Q2, "commission"), language)
    note = re.search(r'<p id="cap-note" class="banner" data-uncapped="([^"]*)">([^<]*)</p>', text)
    assert note is not None
    uncapped, paid = Decimal(capped.detail["uncapped"]), Decimal(str(capped.amount))
    assert Decimal(note.group(1)) == uncapped > paid
    if language == "en":
        assert note.group(2) == (
            f"The cap applied: the records earned {dollars(uncapped)}, the line pays {dollars(paid)}."
        )
    else:
        assert note.group(2) == f"已封顶：记录合计应得 US${uncapped:,.2f}，本行发放 US${paid:,.2f}。"
    earned = sum(explained_records(text).values(), Decimal(0))
    assert earned.quantize(Decimal("0.01")) == uncapped


def test_a_spiff_is_explained_by_its_units(signed: Signed) -> None:
    agent = next(
        line.owner_id
        for line in stored_lines(signed.store, "agents-2017", Q2)
        if line.component_id == "gtk-spiff" and line.amount > 0
    )
    text = signed.page(explain_url("agents-2017", agent, Q2, "gtk-spiff"))
    gtk = {
        d for d, (_, product) in won_deals(agent.removeprefix("maven:"), Q2).items() if product == "GTK 500"
    }
    earned = explained_records(text)
    assert earned == dict.fromkeys(gtk, Decimal(500))
    (line,) = [
        x for x in stored_lines(signed.store, "agents-2017", Q2, agent) if x.component_id == "gtk-spiff"
    ]
    assert Decimal(str(line.amount)) == 500 * len(gtk)


def test_the_rep_page_links_to_every_statement_of_the_rep(signed: Signed) -> None:
    owner = "maven:Anna Snelling"
    text = signed.page(f"/dashboard/rep?owner={owner}")
    links = re.findall(r'<li><a href="([^"]*)" data-plan="([^"]*)" data-period="([^"]*)">', text)
    with session_scope(signed.store.session_factory) as session:
        rows = session.execute(
            select(IncentiveLine.plan_id, IncentiveLine.period_key).where(IncentiveLine.owner_id == owner)
        )
        expected = {(row.plan_id, row.period_key) for row in rows}
    assert {(plan, key) for _, plan, key in links} == expected
    assert len(expected) == 8  # two plans, four quarters
    for link, plan, key in links:
        query = parse_qs(urlsplit(html.unescape(link)).query)
        assert query == {"plan": [plan], "owner": [owner], "period": [key]}
    zh = signed.page(f"/dashboard/rep?owner={owner}", "zh")
    assert "2017 年东区奖金方案 · 2017年第2季度" in zh


def test_unknown_plans_reps_and_components_are_404_pages(signed: Signed) -> None:
    for url in (
        "/dashboard/incentives?plan=nope",
        "/dashboard/incentives/statement?plan=agents-2017&owner=maven:Nobody",
        explain_url("agents-2017", "maven:Anna Snelling", Q2, "nope"),
    ):
        response = signed.client.get(url, follow_redirects=False)
        assert response.status_code == 404, url
        assert "text/html" in response.headers["content-type"]


# --- in a browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(signed: Signed) -> Iterator[str]:
    with live_server(signed.client.app) as base:
        yield base


@pytest.mark.parametrize("language", ["en", "zh"])
def test_a_browser_goes_from_the_leaderboard_to_a_reps_statement_and_a_deal(
    signed: Signed, live: str, page: Page, language: str, tmp_path: Path
) -> None:
    owner = "maven:Anna Snelling"
    sign_in(page, live, signed.key, language)

    def checked(name: str) -> None:
        assert page.locator("html").get_attribute("lang") == ("zh-CN" if language == "zh" else "en")
        violations = axe(page)
        assert violations == [], f"{name}: {violations}"
        shoot(page, f"{name}-{language}", tmp_path)

    page.goto(live + PAGES["incentives"])
    checked("incentives")
    page.goto(live + "/dashboard/leaderboard")
    page.locator(f"#leaderboard tr[data-owner='{owner}'] th a").click()
    page.wait_for_url(re.compile(r"/dashboard/rep\?"))
    page.locator(f"#rep-statements a[data-plan=agents-2017][data-period='{Q2}']").click()
    page.wait_for_url(re.compile(r"/dashboard/incentives/statement\?"))
    (line,) = [
        x for x in stored_lines(signed.store, "agents-2017", Q2, owner) if x.component_id == "commission"
    ]
    amount = Decimal(str(line.amount))
    row = page.locator("#statement-lines tr[data-component=commission][data-kind=payout]")
    expect(row.locator("td.amount")).to_have_text(
        dollars(amount) if language == "en" else f"US${amount:,.2f}"
    )
    checked("incentive-statement")
    row.locator("th a").click()
    page.wait_for_url(re.compile(r"/dashboard/incentives/explain\?"))
    total = page.locator("#records-earned")
    assert Decimal(total.get_attribute("data-value") or "nan").quantize(Decimal("0.01")) == Decimal(
        line.detail["uncapped"]
    )
    deal = next(iter(won_deals("Anna Snelling", Q2)))
    expect(page.locator(f"#line-records tr[data-external-id='{deal}']")).to_have_count(1)
    checked("incentive-explain")
    assert_same_origin(page, live)
    assert_no_console_errors(page)


# --- a closed period (last: it changes the module's store) --------------------------------------


def test_a_closed_period_is_marked_and_a_later_change_is_an_adjustment_naming_the_deal(
    signed: Signed,
) -> None:
    """Close Q1 of agents-2017, then take one of an agent's Q1 won deals to nothing: the refresh
    pays the difference in Q2, and the statement says which period it corrects and which deal."""
    store = signed.store
    owner = "maven:Anna Snelling"
    job = store.job()
    with session_scope(store.session_factory) as session:
        job.incentives.close(session.connection(), "agents-2017", "2017-01-01", "payroll", utc_now())
    deal, (value, _) = next(iter(won_deals("Anna Snelling", "2017-01-01").items()))
    with session_scope(store.session_factory) as session:
        session.execute(update(Opportunity).where(Opportunity.external_id == deal).values(amount=0))
    job.refresh(full=True)
    text = signed.page(f"/dashboard/incentives/statement?plan=agents-2017&owner={owner}&period={Q2}")
    adjustment = re.search(
        r'<tr data-component="commission" data-kind="adjustment" data-for="2017-01-01">(.*?)</tr>', text, re.S
    )
    assert adjustment is not None
    assert "Adjustment · correcting 2017 Q1" in adjustment.group(1)
    assert re.search(
        rf'<li data-external-id="{deal}">{deal} <span class="muted">maven</span>: counts differently',
        adjustment.group(1),
    )
    (stored,) = [
        x
        for x in stored_lines(store, "agents-2017", Q2, owner)
        if x.component_id == "commission" and x.kind == "adjustment"
    ]
    assert Decimal(str(stored.amount)) < 0  # a clawback: the deal brought less
    assert f'data-value="{stored.amount}"' in adjustment.group(1)
    total = sum((Decimal(str(x.amount)) for x in stored_lines(store, "agents-2017", Q2, owner)), Decimal(0))
    assert re.search(rf'id="statement-total" data-value="{total}"', text)
    board = signed.page("/dashboard/incentives?plan=agents-2017&period=2017-01-01")
    assert re.search(
        r'id="period-state"><span class="badge">Closed</span> closed by <strong>payroll</strong>', board
    )
    assert value > 0
