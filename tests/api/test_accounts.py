"""``GET /api/v1/accounts`` on the Maven store: the rows of accounts.csv, in JSON and CSV, paged
and filtered; checked against the file, read here in plain Python."""

from __future__ import annotations

import csv
from collections import Counter
from typing import Any

from tests.api.conftest import Served
from tests.api.test_read import all_pages, csv_rows
from tests.conftest import DATA_DIR

MAVEN = DATA_DIR / "maven_crm_sales_opportunities"


def accounts_file() -> list[dict[str, str]]:
    with (MAVEN / "accounts.csv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def industry(row: dict[str, str]) -> str:
    return "technology" if row["sector"] == "technolgy" else row["sector"]


def test_accounts_page_by_page_are_the_file_rows(served: Served) -> None:
    rows = all_pages(served, "/api/v1/accounts?limit=10")
    expected = {row["account"]: row for row in accounts_file()}
    assert len(rows) == len(expected) == 85
    assert len({r["external_id"] for r in rows}) == 85
    by_id: dict[str, dict[str, Any]] = {r["external_id"]: r for r in rows}
    assert set(by_id) == set(expected)
    for name, row in expected.items():
        account = by_id[name]
        assert account["connection_id"] == "maven"
        assert account["name"] == name
        assert account["industry"] == industry(row)
        assert account["parent_external_id"] == (row["subsidiary_of"] or None)
        assert (account["owner_id"], account["segment"], account["is_deleted"]) == (None, None, False)


def test_accounts_as_csv_are_the_same_rows_in_the_same_order(served: Served) -> None:
    pages = all_pages(served, "/api/v1/accounts?limit=7")
    response = served.get("/api/v1/accounts?format=csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    streamed = csv_rows(response.text)
    assert [r["external_id"] for r in streamed] == [r["external_id"] for r in pages]
    assert {r["external_id"]: r["industry"] for r in streamed} == {
        row["account"]: industry(row) for row in accounts_file()
    }
    assert {r["external_id"]: r["parent_external_id"] for r in streamed} == {
        row["account"]: row["subsidiary_of"] for row in accounts_file()
    }


def test_accounts_by_industry_and_parent(served: Served) -> None:
    sectors = Counter(industry(row) for row in accounts_file())
    for sector, count in sectors.items():
        found = all_pages(served, f"/api/v1/accounts?industry={sector}&limit=5")
        assert len(found) == count, sector
        assert {r["industry"] for r in found} == {sector}
    assert len(all_pages(served, "/api/v1/accounts?industry=technology")) == 12
    assert all_pages(served, "/api/v1/accounts?industry=technolgy") == []  # the typo is not stored
    acme = all_pages(served, "/api/v1/accounts?parent=Acme%20Corporation")
    assert sorted(r["external_id"] for r in acme) == sorted(
        row["account"] for row in accounts_file() if row["subsidiary_of"] == "Acme Corporation"
    )
    assert len(acme) == 4


def test_maven_accounts_have_no_owner_so_an_owner_filter_finds_none(served: Served) -> None:
    # accounts.csv names no rep: the agents own deals, not accounts.
    agent = "maven:Darcel%20Schlecht"
    assert served.get(f"/api/v1/opportunities?owner={agent}&limit=1").json()["data"]
    assert served.get(f"/api/v1/accounts?owner={agent}").json() == {"data": [], "next": None}


def test_every_deal_with_an_account_names_a_listed_account(served: Served) -> None:
    accounts = {r["external_id"] for r in all_pages(served, "/api/v1/accounts")}
    deals = all_pages(served, "/api/v1/opportunities?limit=1000")
    named = Counter(d["account_external_id"] for d in deals)
    assert named[None] == 1425
    assert set(named) - {None} == accounts
