"""Customer KPIs on a handful of deals worked out by hand: first won deals (ties included),
repeat revenue per currency, retention between periods, per rep and team, and explanations that
list the accounts and deals behind each value."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.connector_sdk import OpportunityRecord
from crm_perf_sync.jobs.refresh import RefreshJob
from crm_perf_sync.kpi.explain import ValueRef, explain
from crm_perf_sync.org import repository as org_repo
from tests.kpi.store import OWNERS, TEAMS, closed, load, values

JAN, FEB, MAR = (datetime(2024, month, 10, tzinfo=UTC) for month in (1, 2, 3))


def won(
    n: int, owner: str | None, at: datetime, account: str | None, amount: int, currency: str = "USD"
) -> OpportunityRecord:
    return closed(n, owner, True, at, account_external_id=account, amount=Decimal(amount), currency=currency)


DEALS = [
    won(1, "ana", JAN, "acme", 100),
    won(2, "bo", JAN, "acme", 300),  # the same first date: both are first deals of acme
    won(3, "ana", FEB, "acme", 50),  # acme again: repeat revenue
    won(4, "cy", FEB, "globex", 200),
    won(5, "cy", MAR, "globex", 70, "EUR"),  # repeat, in euros
    won(6, "bo", MAR, "initech", 400),
    won(7, "ana", MAR, None, 999),  # no account: in no customer KPI
    closed(8, "ana", False, JAN, account_external_id="umbrella"),  # lost: not a customer
    won(9, "di", MAR, "acme", 10),  # Di is in no team
]


@pytest.fixture(scope="module")
def job(
    tmp_path_factory: pytest.TempPathFactory, module_session_factory: sessionmaker[Session]
) -> RefreshJob:
    """The deals loaded and refreshed once per module and backend: the tests only read them."""
    job = load(
        tmp_path_factory.mktemp("customers"),
        module_session_factory,
        {"teams": TEAMS, "owners": OWNERS, "opportunities": DEALS},
    )
    job.refresh()
    return job


def by_cell(
    factory: sessionmaker[Session], kpi_id: str, grain: str = "month"
) -> dict[tuple[str, str, str], tuple]:  # type: ignore[type-arg]
    out = {}
    for scope in ("company", "team", "owner"):
        for (period, scope_id, currency, _), row in values(factory, kpi_id, grain, scope).items():
            out[period[:7], scope_id, currency] = (row.value, row.numerator, row.denominator)
    return out


@pytest.mark.usefixtures("job")
def test_new_customers_count_accounts_on_their_first_won_date_once_per_scope(
    module_session_factory: sessionmaker[Session],
) -> None:
    new = {key: value[0] for key, value in by_cell(module_session_factory, "new_customers").items()}
    assert new == {
        ("2024-01", "company", ""): 1,  # acme, once, although two deals were first
        ("2024-01", "crm:ana", ""): 1,
        ("2024-01", "crm:bo", ""): 1,  # both reps own one of acme's first deals
        ("2024-01", "crm:dach", ""): 1,  # the team counts acme once
        ("2024-01", "crm:emea", ""): 1,
        ("2024-02", "company", ""): 1,  # globex
        ("2024-02", "crm:cy", ""): 1,
        ("2024-02", "crm:nordics", ""): 1,
        ("2024-02", "crm:emea", ""): 1,
        ("2024-03", "company", ""): 1,  # initech
        ("2024-03", "crm:bo", ""): 1,
        ("2024-03", "crm:dach", ""): 1,
        ("2024-03", "crm:emea", ""): 1,
    }
    (all_time,) = values(module_session_factory, "new_customers", "all", "company").values()
    assert all_time.value == 3


@pytest.mark.usefixtures("job")
def test_repeat_revenue_share_is_per_currency_and_only_after_the_first_date(
    module_session_factory: sessionmaker[Session],
) -> None:
    share = by_cell(module_session_factory, "repeat_revenue_share")
    assert share[("2024-01", "company", "USD")] == (0.0, 0.0, 400.0)  # both first: no repeat
    assert share[("2024-02", "company", "USD")] == (pytest.approx(50 / 250), 50.0, 250.0)
    assert share[("2024-03", "company", "USD")] == (pytest.approx(10 / 410), 10.0, 410.0)
    assert share[("2024-03", "company", "EUR")] == (1.0, 70.0, 70.0)
    assert share[("2024-03", "crm:di", "USD")] == (1.0, 10.0, 10.0)
    assert not [key for key in share if key[1] == "crm:ana" and key[0] == "2024-03"]  # no account
    (quarter,) = [
        v
        for k, v in by_cell(module_session_factory, "repeat_revenue_share", "quarter").items()
        if k == ("2024-01", "company", "USD")
    ]
    assert quarter == (pytest.approx(60 / 1060), 60.0, 1060.0)


@pytest.mark.usefixtures("job")
def test_retention_compares_each_period_with_the_one_before(
    module_session_factory: sessionmaker[Session],
) -> None:
    kept = by_cell(module_session_factory, "customer_retention_rate")
    # January: acme. February: acme, globex. March: globex (EUR), initech, acme (Di).
    assert kept[("2024-02", "company", "")] == (1.0, 1.0, 1.0)
    assert kept[("2024-03", "company", "")] == (1.0, 2.0, 2.0)
    assert ("2024-01", "company", "") not in kept  # no period before the first
    assert ("2024-04", "company", "") not in kept  # after the last period with a won deal
    assert kept[("2024-02", "crm:bo", "")] == (0.0, 0.0, 1.0)  # Bo's acme did not buy from Bo again
    assert kept[("2024-03", "crm:ana", "")] == (0.0, 0.0, 1.0)
    assert values(module_session_factory, "customer_retention_rate", "all", "company") == {}


def test_explanations_list_the_accounts_and_deals_behind_the_value(
    module_session_factory: sessionmaker[Session], job: RefreshJob
) -> None:
    with module_session_factory() as session:
        calendar, membership = job.service.calendar(session), org_repo.load_membership(session)
        new = explain(
            session,
            job.service.kpi("new_customers"),
            ValueRef("new_customers", "month", "2024-01-01", "team", "crm:dach"),
            calendar,
            membership,
        )
        share = explain(
            session,
            job.service.kpi("repeat_revenue_share"),
            ValueRef("repeat_revenue_share", "month", "2024-03-01", "company", "company", "USD"),
            calendar,
            membership,
        )
        kept = explain(
            session,
            job.service.kpi("customer_retention_rate"),
            ValueRef("customer_retention_rate", "month", "2024-03-01", "company", "company"),
            calendar,
            membership,
            role="numerator",
        )
    (accounts,) = new.parts
    assert [(r["account_external_id"], r["deals"], r["owners"]) for r in accounts.records] == [
        ("acme", ["o1", "o2"], ["ana", "bo"])
    ]
    # Each record reads like any explained record: its id, connection and what it adds.
    assert [(r["external_id"], r["connection_id"], r["contribution"]) for r in accounts.records] == [
        ("acme", "crm", 1.0)
    ]
    assert accounts.entity == "accounts"
    assert new.value is not None
    assert new.value["value"] == 1
    numerator, denominator = share.parts
    assert [r["external_id"] for r in numerator.records] == ["o9"]
    assert [r["contribution"] for r in numerator.records] == [10.0]
    assert sorted(r["external_id"] for r in denominator.records) == ["o6", "o9"]
    assert numerator.records[0]["account_first_won"] == JAN.date()
    retained, previous = kept.parts
    assert [r["account_external_id"] for r in retained.records] == ["acme", "globex"]
    assert previous.records == []  # only the numerator was asked for
