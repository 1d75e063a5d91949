"""Incentives from the command line over the Maven example: the payout lines printed are the
stored ones, a statement adds up, an explanation adds up to the line, periods close in order and
only while the KPIs are up to date."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kpi import targets_service
from crm_perf_sync.models import IncentiveLine, IncentivePeriodClose
from tests.cli_inprocess import invoke
from tests.incentives.conftest import (  # noqa: F401  (the Maven store with its plans, per backend)
    Store,
    example_config,
    incentives_postgresql,
    incentives_sqlite,
    store,
)
from tests.incentives.test_maven_plans import agents_2017, read_maven


class Cli:
    def __init__(self, maven: Store, directory: Path) -> None:
        example_config(directory)  # writes the configuration file the commands read
        self.config = str(directory / "maven.yaml")
        self.store = maven
        self.env = {"CRM_PERF_SYNC_DATABASE_URL": maven.url}

    def run(self, *args: str) -> tuple[int, str, str]:
        result = invoke("incentives", *args, "--config", self.config, env=self.env)
        return result.exit_code, result.stdout, result.stderr

    def lines(self, **where: Any) -> dict[int, IncentiveLine]:
        with session_scope(self.store.session_factory) as session:
            rows = session.scalars(select(IncentiveLine).filter_by(**where)).all()
            session.expunge_all()
        return {row.id: row for row in rows}


@pytest.fixture(scope="module")
def cli(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Cli:  # noqa: F811  (imported fixture)
    return Cli(store, tmp_path_factory.mktemp("cli-incentives"))


def test_the_payouts_printed_are_the_stored_lines(cli: Cli) -> None:
    code, printed, stderr = cli.run("payouts", "--plan", "agents-2017", "--format", "csv")
    assert code == 0, stderr
    rows = list(csv.DictReader(io.StringIO(printed)))
    stored = cli.lines(plan_id="agents-2017")
    assert len(rows) == len(stored) == 280
    assert {int(r["id"]): Decimal(r["amount"]) for r in rows} == {
        i: line.amount for i, line in stored.items()
    }
    expected = agents_2017(read_maven())
    for row in rows:
        if row["owner_name"] in ("Darcel Schlecht", "Cassey Cress"):
            assert (
                Decimal(row["amount"]) == expected[row["owner_name"], row["period_key"], row["component_id"]]
            )
    code, printed, _ = cli.run(
        "payouts", "--team", "maven:region:East", "--plan", "east-2017", "--format", "json"
    )
    east = json.loads(printed)
    assert {r["owner_id"] for r in east} == {
        line.owner_id for line in cli.lines(plan_id="east-2017").values()
    } - {"maven:Anna Snelling"}
    code, table, _ = cli.run("payouts", "--plan", "east-2017", "--period", "2017-04-01")
    assert code == 0
    total = sum(line.amount for line in cli.lines(plan_id="east-2017", period_key="2017-04-01").values())
    assert f"26 lines, {total:,.2f} USD" in table
    code, _, stderr = cli.run("payouts", "--plan", "nope")
    assert code == 1
    assert "no incentive plan 'nope' (plans: agents-2017, east-2017)" in stderr


def test_the_plans_are_described(cli: Cli) -> None:
    code, printed, stderr = cli.run("plans", "--format", "json")
    assert code == 0, stderr
    plans = json.loads(printed)
    assert [p["id"] for p in plans] == ["agents-2017", "east-2017"]
    east = plans[1]["components"][0]["terms"]
    assert "3% from 0% to 80%; 5% from 80% to 120%; 6.5% from 120% up (the reached tier's rate" in east
    assert "nothing below 50% of quota; at most 20,000.00 USD" in east
    code, table, _ = cli.run("plans")
    assert "Agent commission 2017 (agents-2017): per quarter in USD, 2017-01-01 to 2017-12-31" in table


def test_a_statement_adds_up_and_says_where_the_rep_stands(cli: Cli) -> None:
    owner = "maven:Darcel Schlecht"
    code, printed, stderr = cli.run(
        "statement", owner, "--plan", "agents-2017", "--period", "2017-04-01", "--format", "json"
    )
    assert code == 0, stderr
    (body,) = json.loads(printed)
    stored = cli.lines(plan_id="agents-2017", owner_id=owner, period_key="2017-04-01")
    assert Decimal(str(body["total"])) == sum(line.amount for line in stored.values()) > 0
    assert {line["id"] for line in body["lines"]} == set(stored)
    code, table, _ = cli.run("statement", owner, "--plan", "agents-2017", "--period", "2017-04-01")
    assert f"total {body['total']:,.2f} USD" in table
    assert f"commission: tier {body['progress'][0]['tier']}" in table
    code, _, stderr = cli.run("statement", "maven:Cassey Cress")
    assert code == 1
    assert "paid by several plans; name one of agents-2017, east-2017" in stderr


def test_an_explanation_adds_up_to_the_line(cli: Cli) -> None:
    line = next(
        line
        for line in cli.lines(plan_id="east-2017", component_id="commission").values()
        if line.amount > 0 and not line.capped
    )
    code, printed, stderr = cli.run(
        "explain",
        line.owner_id,
        "--plan",
        "east-2017",
        "--period",
        line.period_key,
        "--component",
        "commission",
        "--format",
        "json",
    )
    assert code == 0, stderr
    (body,) = json.loads(printed)
    assert len(body["records"]) == body["record_count"] > 0
    earned = sum(Decimal(str(r["earned"])) for r in body["records"])
    assert abs(earned - line.amount) <= Decimal("0.01")  # retroactive: every record at the reached rate
    assert line.rate is not None
    assert {r["tiers"][0]["rate"] for r in body["records"]} == {float(line.rate)}


def test_periods_close_in_order_and_only_with_the_kpis_up_to_date(cli: Cli) -> None:
    with session_scope(cli.store.session_factory) as session:
        target = targets_service.create(
            session,
            cli.store.job().service.kpis,
            {
                "kpi": "won_deals",
                "scope": "company",
                "scope_id": "company",
                "grain": "year",
                "period": "2015",
                "value": 9,
            },
        )
    code, _, stderr = cli.run("close", "east-2017", "2017-01-01")
    assert code == 1
    assert "the KPIs are not up to date" in stderr
    with session_scope(cli.store.session_factory) as session:
        targets_service.remove(session, target.id)

    code, printed, stderr = cli.run("close", "east-2017", "2017-01-01", "--by", "Jane Payroll")
    assert code == 0, stderr
    closed = cli.lines(plan_id="east-2017", period_key="2017-01-01")
    total = sum(line.amount for line in closed.values())
    assert (
        printed.strip()
        == f"closed east-2017 2017-01-01: {len(closed)} lines frozen, {total:,.2f} in all, by Jane Payroll"
    )
    assert all(line.frozen for line in closed.values())
    assert not any(line.frozen for line in cli.lines(plan_id="agents-2017").values())

    code, _, stderr = cli.run("close", "east-2017", "2017-01-01")
    assert code == 1
    assert "already closed" in stderr
    code, _, stderr = cli.run("close", "east-2017", "2017-07-01")
    assert code == 1
    assert "close the earlier periods of east-2017 first: 2017-04-01" in stderr
    with session_scope(cli.store.session_factory) as session:
        closes = session.scalars(select(IncentivePeriodClose)).all()
        assert [(c.plan_id, c.period_key, c.closed_by) for c in closes] == [
            ("east-2017", "2017-01-01", "Jane Payroll")
        ]
