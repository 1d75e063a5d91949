"""The incentives API over the Maven example as shipped: the payout lines it lists are the stored
ones (and what the independent reference says), in JSON and CSV, a page at a time, cached by
version; statements add up; explanations add up to the line; an admin closes periods in order."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from crm_perf_sync.api.app import create_app
from crm_perf_sync.api.incentive_schemas import CloseOut, ExplainedLineOut, PayoutOut, PlanOut, StatementOut
from crm_perf_sync.apikeys import service as keys
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kpi import targets_service
from crm_perf_sync.models import IncentiveLine, IncentivePeriodClose, WebhookEvent
from tests.incentives.conftest import (  # noqa: F401  (the Maven store with its plans, per backend)
    Store,
    incentives_postgresql,
    incentives_sqlite,
    store,
)
from tests.incentives.test_maven_plans import agents_2017, read_maven

API = "/api/v1/incentives"


@dataclass
class Api:
    client: TestClient
    store: Store
    read: dict[str, str]
    admin: dict[str, str]

    def get(self, url: str, **kw: Any) -> Any:
        return self.client.get(url, headers={**self.read, **kw.pop("headers", {})}, **kw)

    def lines(self, **where: Any) -> dict[int, IncentiveLine]:
        with session_scope(self.store.session_factory) as session:
            rows = session.scalars(select(IncentiveLine).filter_by(**where)).all()
            session.expunge_all()
        return {row.id: row for row in rows}


@pytest.fixture(scope="module")
def api(store: Store) -> Iterator[Api]:  # noqa: F811  (the fixture imported above)
    with session_scope(store.session_factory) as session:
        _, read_key = keys.create(session, "payroll reader", "read")
        _, admin_key = keys.create(session, "finance admin", "admin")
    with TestClient(create_app(store.engine, store.config)) as client:
        yield Api(
            client, store, {"Authorization": f"Bearer {read_key}"}, {"Authorization": f"Bearer {admin_key}"}
        )


def every_page(api: Api, url: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url is not None:
        answer = api.get(next_url)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        rows += body["data"]
        next_url = body["next"]
        assert (next_url is None) == ("Link" not in answer.headers)
    return rows


def test_the_payouts_listed_are_the_stored_lines_and_pay_what_the_reference_says(api: Api) -> None:
    listed = every_page(api, f"{API}/payouts?plan=agents-2017&limit=1000")
    stored = api.lines(plan_id="agents-2017")
    assert len(listed) == len(stored) == 35 * 4 * 2  # every agent, quarter and component
    for row in listed:
        PayoutOut.model_validate(row)  # as documented
        line = stored[row["id"]]
        assert (row["owner_id"], row["period_key"], row["component_id"]) == (
            line.owner_id,
            line.period_key,
            line.component_id,
        )
        assert Decimal(str(row["amount"])) == line.amount
        assert row["base"] == (None if line.base is None else float(line.base))
        assert row["capped"] == line.capped
        assert row["owner_name"] == line.owner_id.removeprefix("maven:")
    expected = agents_2017(read_maven())
    for agent in ("Darcel Schlecht", "Anna Snelling", "Cassey Cress", "Violet Mclelland"):
        for row in every_page(api, f"{API}/payouts?plan=agents-2017&owner=maven:{agent}"):
            assert Decimal(str(row["amount"])) == expected[agent, row["period_key"], row["component_id"]]
    # The reference pays something, and some lines are capped: the comparison above says something.
    assert any(row["capped"] for row in listed)
    assert sum(Decimal(str(row["amount"])) for row in listed) == sum(expected.values())


def test_the_csv_has_the_same_rows_as_the_json(api: Api) -> None:
    listed = every_page(api, f"{API}/payouts?plan=east-2017&limit=1000")
    answer = api.get(f"{API}/payouts?plan=east-2017&format=csv")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert len(rows) == len(listed) == 13 * 4 * 2
    by_id = {int(r["id"]): r for r in rows}
    for row in listed:
        found = by_id[row["id"]]
        assert float(found["amount"]) == row["amount"]
        assert found["owner_id"] == row["owner_id"]
        assert found["component_id"] == row["component_id"]
        assert found["capped"] == ("true" if row["capped"] else "false")
    same = api.get(f"{API}/payouts?plan=east-2017&limit=1000", headers={"Accept": "text/csv"})
    assert list(csv.DictReader(io.StringIO(same.text))) == rows


def test_paging_walks_every_line_once(api: Api) -> None:
    whole = api.lines()
    walked = every_page(api, f"{API}/payouts?limit=37")
    ids = [row["id"] for row in walked]
    assert len(ids) == len(set(ids)) == len(whole)
    assert set(ids) == set(whole)
    assert ids == sorted(ids)


def test_the_filters_narrow_to_the_lines_they_name(api: Api) -> None:
    east = every_page(api, f"{API}/payouts?team=maven:region:East&plan=agents-2017&limit=1000")
    assert {row["owner_id"] for row in east} == {
        row["owner_id"] for row in every_page(api, f"{API}/payouts?plan=east-2017&limit=1000")
    } - {"maven:Anna Snelling"}
    spiffs = every_page(api, f"{API}/payouts?plan=agents-2017&period=2017-04-01&component=gtk-spiff")
    assert len(spiffs) == 35
    assert {(r["period_key"], r["component_id"]) for r in spiffs} == {("2017-04-01", "gtk-spiff")}
    assert every_page(api, f"{API}/payouts?kind=adjustment") == []
    assert api.get(f"{API}/payouts?plan=nope").status_code == 404
    assert api.get(f"{API}/payouts?team=maven:region:Nowhere").status_code == 404
    wrong = api.get(f"{API}/payouts?plan=agents-2017&period=2017-05-01")
    assert wrong.status_code == 422
    assert "did you mean 2017-04-01" in wrong.json()["detail"]


def test_an_unchanged_listing_is_not_modified(api: Api) -> None:
    url = f"{API}/payouts?plan=agents-2017&limit=10"
    first = api.get(url)
    etag = first.headers["ETag"]
    again = api.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    other = api.get(f"{API}/payouts?plan=east-2017&limit=10", headers={"If-None-Match": etag})
    assert other.status_code == 200


def test_the_plans_say_what_they_pay_and_which_periods_they_have(api: Api) -> None:
    plans = api.get(f"{API}/plans").json()["data"]
    assert [p["id"] for p in plans] == ["agents-2017", "east-2017"]
    agents = api.get(f"{API}/plans/agents-2017").json()
    assert agents == plans[0]
    PlanOut.model_validate(agents)
    commission, spiff = agents["components"]
    assert commission["terms"].startswith(
        "On won_revenue by attainment of quota: 5% from 0% to 100%; 8% from 100%"
    )
    assert "at most 2 times the on-target payout" in commission["terms"]
    assert commission["definition"]["tiers"][1] == {"from": "1", "rate": "0.08"}
    assert spiff["terms"] == "500.00 USD per unit of won_deals (product GTK 500)."
    assert [p["period_key"] for p in agents["periods"]] == [
        "2017-01-01",
        "2017-04-01",
        "2017-07-01",
        "2017-10-01",
    ]
    stored = api.lines(plan_id="agents-2017", period_key="2017-04-01")
    second = agents["periods"][1]
    assert second["lines"] == len(stored)
    assert Decimal(str(second["amount"])) == sum(line.amount for line in stored.values())
    assert second["last_day"] == "2017-06-30"
    assert {p["team"] for p in agents["participants"]} == {
        f"maven:region:{r}" for r in ("Central", "East", "West")
    }
    assert api.get(f"{API}/plans/nope").status_code == 404


def test_a_statement_adds_up_its_lines(api: Api) -> None:
    # A rep below quota in the third quarter: the statement says what the second tier needs.
    below = next(
        line
        for line in api.lines(
            plan_id="agents-2017", period_key="2017-07-01", component_id="commission"
        ).values()
        if line.base is not None and line.quota is not None and 0 < line.base < line.quota
    )
    owner = below.owner_id
    answer = api.get(f"{API}/statements/{owner}?plan=agents-2017&period=2017-07-01")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    StatementOut.model_validate(body)
    stored = api.lines(plan_id="agents-2017", owner_id=owner, period_key="2017-07-01")
    assert {line["id"] for line in body["lines"]} == set(stored)
    assert Decimal(str(body["total"])) == sum(line.amount for line in stored.values())
    assert body["total"] > 0
    assert body["periods"] == ["2017-01-01", "2017-04-01", "2017-07-01", "2017-10-01"]
    (progress,) = body["progress"]
    assert below.quota is not None
    assert below.base is not None
    assert progress["quota"] == float(below.quota)
    assert (progress["tier"], progress["next_tier"]) == (1, 2)
    assert Decimal(str(progress["next_tier_needs"])) == below.quota - below.base
    assert progress["projected_amount"] is None  # 2017 is over: nothing to project
    rows = list(
        csv.DictReader(
            io.StringIO(api.get(f"{answer.url.path}?plan=agents-2017&period=2017-07-01&format=csv").text)
        )
    )
    assert sorted(float(r["amount"]) for r in rows) == sorted(float(line.amount) for line in stored.values())
    # Without a period, the latest; without a plan, the only one that pays the rep (or a 422).
    latest = api.get(f"{API}/statements/maven:Cecily Lampkin").json()
    assert (latest["plan_id"], latest["period_key"]) == ("agents-2017", "2017-10-01")
    both = api.get(f"{API}/statements/maven:Cassey Cress")
    assert both.status_code == 422
    assert "agents-2017, east-2017" in both.json()["detail"]
    assert api.get(f"{API}/statements/maven:Nobody").status_code == 404


def test_an_explained_commission_adds_up_to_the_line_before_its_cap(api: Api) -> None:
    capped = next(
        line for line in api.lines(plan_id="agents-2017", component_id="commission").values() if line.capped
    )
    url = (
        f"{API}/explain?plan=agents-2017&owner={capped.owner_id}&period={capped.period_key}"
        "&component=commission&limit=10"
    )
    records: list[dict[str, Any]] = []
    next_url: str | None = url
    body: dict[str, Any] = {}
    while next_url is not None:
        body = api.get(next_url).json()
        ExplainedLineOut.model_validate(body)
        records += body["records"]
        next_url = body["next"]
    assert len(records) == body["record_count"] > 10
    assert len({(r["connection_id"], r["external_id"]) for r in records}) == len(records)
    earned = sum(Decimal(str(r["earned"])) for r in records)
    uncapped = Decimal(capped.detail["uncapped"])
    assert abs(earned - uncapped) <= Decimal("0.01")
    assert Decimal(str(body["earned_total"])).quantize(Decimal("0.01")) == uncapped
    assert capped.base is not None
    assert abs(Decimal(str(body["contribution_total"])) - capped.base) <= Decimal("0.01")
    # The base crossed the quota: some record fills the first tier's end and the second's start.
    tiers = [t["tier"] for r in records for t in r["tiers"]]
    assert tiers == sorted(tiers)
    assert set(tiers) == {1, 2}
    assert body["lines"][0]["id"] == capped.id
    assert {r["crm_url"] for r in records} == {None}  # a CSV import links to no CRM page
    missing = api.get(
        f"{API}/explain?plan=agents-2017&owner={capped.owner_id}&period=2017-01-01&component=nope"
    )
    assert missing.status_code == 404


def test_an_admin_closes_the_periods_in_order(api: Api) -> None:
    close = f"{API}/plans/agents-2017/periods/2017-01-01/close"
    refused = api.client.post(close, headers=api.read)
    assert refused.status_code == 403
    # A target set since the last refresh: the KPIs are behind the store, so nothing is frozen.
    with session_scope(api.store.session_factory) as session:
        target = targets_service.create(
            session,
            api.store.job().service.kpis,
            {
                "kpi": "win_rate",
                "scope": "company",
                "scope_id": "company",
                "grain": "year",
                "period": "2016-01-01",
                "value": 0.5,
            },
        )
    behind = api.client.post(close, headers=api.admin)
    assert behind.status_code == 409
    assert "not up to date" in behind.json()["detail"]
    assert not any(line.frozen for line in api.lines().values())
    with session_scope(api.store.session_factory) as session:
        targets_service.remove(session, target.id)  # the store is as the last refresh left it again
    before = api.lines(plan_id="agents-2017", period_key="2017-01-01")
    etag = api.get(f"{API}/payouts?plan=agents-2017&limit=5").headers["ETag"]

    done = api.client.post(close, headers=api.admin)
    assert done.status_code == 201, done.text
    body = done.json()
    CloseOut.model_validate(body)
    assert (body["plan_id"], body["period_key"], body["closed_by"]) == (
        "agents-2017",
        "2017-01-01",
        "finance admin",
    )
    assert body["lines"] == len(before) == 70
    assert Decimal(str(body["amount"])) == sum(line.amount for line in before.values())
    after = api.lines(plan_id="agents-2017", period_key="2017-01-01")
    assert all(line.frozen for line in after.values())
    assert {(x.owner_id, x.component_id, x.amount) for x in after.values()} == {
        (x.owner_id, x.component_id, x.amount) for x in before.values()
    }
    assert not any(line.frozen for line in api.lines(plan_id="agents-2017", period_key="2017-04-01").values())
    listed = every_page(api, f"{API}/payouts?plan=agents-2017&period=2017-01-01&limit=1000")
    assert all(row["frozen"] for row in listed)
    # The close is a new version of the lines, and the plan shows who closed what.
    assert (
        api.get(f"{API}/payouts?plan=agents-2017&limit=5", headers={"If-None-Match": etag}).status_code == 200
    )
    first = api.get(f"{API}/plans/agents-2017").json()["periods"][0]
    assert (first["closed"], first["closed_by"]) == (True, "finance admin")
    statement = api.get(f"{API}/statements/maven:Darcel Schlecht?plan=agents-2017&period=2017-01-01").json()
    assert statement["closed"] is True

    again = api.client.post(close, headers=api.admin)
    assert again.status_code == 409
    assert "already closed" in again.json()["detail"]
    skipping = api.client.post(f"{API}/plans/agents-2017/periods/2017-07-01/close", headers=api.admin)
    assert skipping.status_code == 409
    assert "2017-04-01" in skipping.json()["detail"]
    unknown = api.client.post(f"{API}/plans/nope/periods/2017-01-01/close", headers=api.admin)
    assert unknown.status_code == 404
    with session_scope(api.store.session_factory) as session:
        closes = session.scalars(select(IncentivePeriodClose)).all()
        assert [(c.plan_id, c.period_key, c.closed_by) for c in closes] == [
            ("agents-2017", "2017-01-01", "finance admin")
        ]
        # The close went out to webhook consumers (payroll) with every frozen line, once.
        (event,) = session.scalars(
            select(WebhookEvent).where(WebhookEvent.type == "incentive.period_closed")
        ).all()
        assert event.payload["data"]["period_key"] == "2017-01-01"
        assert len(event.payload["data"]["lines"]) == 70
