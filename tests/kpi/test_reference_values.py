"""The KPI engine against an independent reference: the example exports synced and refreshed through
the CLI, every ``kpi_value`` row compared with the same KPIs computed in plain Python from the CSV
files (tests/kpi/reference.py), in both directions: no row missing, none extra, every number equal."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, select
from typer.testing import Result

from crm_perf_sync.kit.db import create_db_engine
from tests.cli_inprocess import invoke
from tests.conftest import DATA_DIR, REPO_ROOT, built_once, create_pg_database, pg_database
from tests.kpi.reference import (
    MAVEN_KPIS,
    ZOHO_KPIS,
    Expected,
    Key,
    maven_breakdown_reference,
    maven_reference,
    maven_team_scopes,
    min_samples,
    period_bounds,
    x_education_conversions,
    zoho_reference,
    zoho_user_names,
)

pytestmark = pytest.mark.slow

REL = 1e-9
# Durations of timestamps: a store may compute days from floating-point Julian days, which carry
# ~1e-10 days of error each; 1e-6 days is 0.09 s, far below the minute resolution of the exports.
DAYS_ABS = 1e-6
DURATION_KPIS = {"sales_cycle_days_mean", "sales_cycle_days_median"}


def run_cli(*args: str, db_url: str, config: str) -> Result:
    return invoke(
        *args,
        env={
            "COLUMNS": "250",
            "CRM_DATA_DIR": str(DATA_DIR),
            "CRM_PERF_SYNC_DATABASE_URL": db_url,
            "CRM_PERF_SYNC_CONFIG": config,
        },
    )


def example_config(name: str) -> str:
    return str(REPO_ROOT / "config" / "examples" / f"{name}.yaml")


def sync_and_refresh(db_url: str, name: str) -> None:
    """Import ``config/examples/<name>.yaml`` and materialise its KPIs."""
    config = example_config(name)
    synced = run_cli("sync", "--config", config, db_url=db_url, config=config)
    assert synced.exit_code == 0, synced.stderr
    assert "skipped 0" in synced.stdout, synced.stdout
    refreshed = run_cli("refresh", "--config", config, db_url=db_url, config=config)
    assert refreshed.exit_code == 0, refreshed.stdout + refreshed.stderr


@pytest.fixture(scope="session")
def maven_sqlite(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Path:
    """The Maven example synced and refreshed into a SQLite file, once per session (the xdist
    workers share it), to copy."""

    def build(directory: Path) -> dict[str, str]:
        path = directory / "store.db"
        shutil.copyfile(sqlite_template, path)
        sync_and_refresh(f"sqlite:///{path}", "maven")
        return {"path": str(path)}

    return Path(built_once(tmp_path_factory, "reference-maven-sqlite", build)["path"])


@pytest.fixture(scope="session")
def maven_postgresql(
    tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str | None, pg_template: str | None, run_id: str
) -> str | None:
    """The same on PostgreSQL: a template database, once per session, to copy."""
    if pg_admin_url is None or pg_template is None:
        return None
    admin_url, template = pg_admin_url, pg_template

    def build(_directory: Path) -> dict[str, str]:
        # Named after the run, so the controller drops it at the end (tests/conftest.py).
        name = f"cps_maven_template_{run_id}"
        sync_and_refresh(create_pg_database(admin_url, name, template), "maven")
        return {"database": name}

    return built_once(tmp_path_factory, "reference-maven-postgresql", build)["database"]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def maven_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str | None
) -> Iterator[str]:
    """A copy of the Maven store for this module's Maven tests, which only read it. The sync and
    the refresh run once in a session; under xdist each worker running one of these tests copies it."""
    if request.param == "sqlite":
        built: Path = request.getfixturevalue("maven_sqlite")
        path = tmp_path_factory.mktemp("maven") / "store.db"
        shutil.copyfile(built, path)
        yield f"sqlite:///{path}"
        return
    template: str | None = request.getfixturevalue("maven_postgresql")
    if pg_admin_url is None or template is None:
        pytest.skip("PostgreSQL tests need CRM_PERF_SYNC_TEST_PG_URL")
    with pg_database(pg_admin_url, "cps_maven", template) as url:
        yield url


@dataclass(frozen=True)
class Stored:
    definition_hash: str
    period_start: date | None
    period_end: date | None
    value: float | None
    numerator: float
    denominator: float | None
    sample_count: int
    low_sample: bool
    computed_at: datetime | None


def stored_values(db_url: str) -> dict[Key, Stored]:
    """Every ``kpi_value`` row, keyed like the reference."""
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as conn:
            table = Table("kpi_value", MetaData(), autoload_with=conn)
            rows = conn.execute(select(table)).mappings().all()
    finally:
        engine.dispose()
    out: dict[Key, Stored] = {}
    for row in rows:
        if row["dimension"]:
            continue  # breakdowns (a funnel's stages) are checked by their own tests
        if row["sample_count"] == 0 and row["target"] is not None:
            # A rep with a target and nothing counted scores 0 against it: the row carries the
            # target (checked by the targets' own tests), no computed value.
            assert float(row["value"]) == 0.0, dict(row)
            continue
        key: Key = (
            row["kpi_id"],
            row["grain"],
            row["period_key"],
            row["scope"],
            row["scope_id"],
            row["currency"],
        )
        assert key not in out, f"duplicate kpi_value row {key}"
        out[key] = Stored(
            definition_hash=row["definition_hash"],
            period_start=row["period_start"],
            period_end=row["period_end"],
            value=None if row["value"] is None else float(row["value"]),
            numerator=float(row["numerator"]),
            denominator=None if row["denominator"] is None else float(row["denominator"]),
            sample_count=row["sample_count"],
            low_sample=bool(row["low_sample"]),
            computed_at=row["computed_at"],
        )
    return out


def _differs(actual: float | None, expected: float | None, *, days: bool = False) -> bool:
    if expected is None or actual is None:
        return actual is not expected
    return actual != pytest.approx(expected, rel=REL, abs=DAYS_ABS if days else 0.0)


def mismatches(expected: dict[Key, Expected], stored: dict[Key, Stored]) -> list[str]:
    """Every way ``stored`` differs from ``expected`` (both restricted to the same KPIs)."""
    problems: list[str] = []
    missing = sorted(expected.keys() - stored.keys())
    extra = sorted(stored.keys() - expected.keys())
    if missing:
        problems.append(f"{len(missing)} expected rows missing, e.g. {missing[:10]}")
    if extra:
        problems.append(f"{len(extra)} unexpected rows, e.g. {extra[:10]}")
    minimum = min_samples()
    hashes: dict[str, set[str]] = defaultdict(set)
    for key in sorted(expected.keys() & stored.keys()):
        want, got = expected[key], stored[key]
        days = key[0] in DURATION_KPIS
        hashes[key[0]].add(got.definition_hash)
        checks: list[tuple[str, Any, Any, bool]] = [
            ("value", want.value, got.value, _differs(got.value, want.value, days=days)),
            ("numerator", want.numerator, got.numerator, _differs(got.numerator, want.numerator, days=days)),
            ("sample_count", want.sample_count, got.sample_count, got.sample_count != want.sample_count),
            (
                "low_sample",
                want.sample_count < minimum[key[0]],
                got.low_sample,
                got.low_sample != (want.sample_count < minimum[key[0]]),
            ),
            (
                "period_start/end",
                period_bounds(key[1], key[2]),
                (got.period_start, got.period_end),
                (got.period_start, got.period_end) != period_bounds(key[1], key[2]),
            ),
            ("computed_at", "set", got.computed_at, got.computed_at is None),
        ]
        if want.check_denominator:
            checks.append(
                (
                    "denominator",
                    want.denominator,
                    got.denominator,
                    _differs(got.denominator, want.denominator),
                )
            )
        for name, wanted, actual, bad in checks:
            if bad:
                problems.append(f"{key} {name}: expected {wanted!r}, stored {actual!r}")
    for kpi, seen in sorted(hashes.items()):
        if len(seen) != 1 or not next(iter(seen)):
            problems.append(f"{kpi}: rows carry definition hashes {sorted(seen)}, expected one")
    return problems


def check_against_reference(
    expected: dict[Key, Expected], stored: dict[Key, Stored], kpis: tuple[str, ...]
) -> None:
    assert {key[0] for key in expected} == set(kpis)  # the reference covers what the test claims
    of_kpis = {key: row for key, row in stored.items() if key[0] in kpis}
    problems = mismatches(expected, of_kpis)
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:40])


def test_maven_kpis_match_an_independent_computation_from_the_csv_files(maven_url: str) -> None:
    stored = stored_values(maven_url)
    expected = maven_reference()
    check_against_reference(expected, stored, MAVEN_KPIS)

    # Spot values, worked out by hand from the files, so the reference itself is pinned down.
    company_all = stored[("win_rate", "all", "all", "company", "company", "")]
    assert (company_all.numerator, company_all.denominator, company_all.sample_count) == (4238, 6711, 6711)
    assert company_all.value == pytest.approx(4238 / 6711, rel=REL)
    # 35 agents, 5 without a deal: 30 owners; 6 managers' teams and 3 regions; closes in 2017 only.
    owners = {key[4] for key in stored if key[0] == "win_rate" and key[3] == "owner"}
    teams = {key[4] for key in stored if key[0] == "win_rate" and key[3] == "team"}
    assert len(owners) == 30
    assert owners < {scopes[0][1] for scopes in maven_team_scopes().values()}
    assert len([t for t in teams if t.startswith("maven:team:")]) == 6
    assert {t for t in teams if t.startswith("maven:region:")} == {
        "maven:region:Central",
        "maven:region:East",
        "maven:region:West",
    }
    assert {key[2] for key in stored if key[0] == "win_rate" and key[1] == "year"} == {"2017-01-01"}

    # A ratio of sums: the owners' (and the teams', and the regions') numerators and denominators
    # add up to the company's in every period; never an average of rates.
    totals: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for key, row in stored.items():
        if key[0] != "win_rate":
            continue
        level = key[3] if key[3] != "team" else key[4].split(":")[1]  # company / owner / team / region
        assert row.denominator is not None, key
        totals[(key[1], key[2], level)][0] += row.numerator
        totals[(key[1], key[2], level)][1] += row.denominator
    periods = {(grain, period) for grain, period, _ in totals}
    weeks = {period for grain, period in periods if grain == "week"}
    assert len(periods) - len(weeks) == 10 + 4 + 1 + 1  # Mar-Dec 2017, Q1-Q4, 2017, all
    assert min(weeks) == "2017-02-27"  # the Monday of the week of 1 March 2017 (a Wednesday)
    for grain, period in periods:
        company = totals[(grain, period, "company")]
        for level in ("owner", "team", "region"):
            assert totals[(grain, period, level)] == pytest.approx(company, rel=REL), (grain, period, level)

    # Nothing else of the library has data here: no leads, hence no lead conversion rows.
    assert not [key for key in stored if key[0] == "lead_conversion_rate"]


def test_maven_breakdowns_match_an_independent_computation(maven_url: str) -> None:
    engine = create_db_engine(maven_url)
    try:
        with engine.connect() as conn:
            table = Table("kpi_value", MetaData(), autoload_with=conn)
            rows = conn.execute(
                select(table).where(table.c.dimension != "", table.c.kpi_id.in_(["win_rate", "won_revenue"]))
            ).mappings()
            stored = {
                (
                    f"{r['kpi_id']}|{r['dimension']}|{r['dimension_value']}",
                    r["grain"],
                    r["period_key"],
                    r["scope"],
                    r["scope_id"],
                    r["currency"],
                ): r
                for r in rows
            }
    finally:
        engine.dispose()
    expected = maven_breakdown_reference()
    assert {key[0].split("|")[1] for key in stored} == {"product", "custom.account_sector"}
    assert set(stored) == set(expected), sorted(set(stored) ^ set(expected))[:10]
    for key, want in expected.items():
        got = stored[key]
        assert got["value"] == pytest.approx(want.value, rel=REL), key
        assert got["numerator"] == pytest.approx(want.numerator, rel=REL), key
        assert got["sample_count"] == want.sample_count, key
    # Every breakdown splits its total exactly: the products of a rep's year add up to the rep's.
    totals = stored_values(maven_url)
    for key in expected:
        kpi, dimension, _ = key[0].split("|")
        if dimension == "product" and key[1] == "year" and key[3] == "owner" and kpi == "win_rate":
            total = totals[(kpi, *key[1:])]
            parts = [
                e for k, e in expected.items() if k[1:] == key[1:] and k[0].startswith(f"{kpi}|product|")
            ]
            assert sum(e.numerator for e in parts) == pytest.approx(total.numerator, rel=REL)


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_the_values_command_prints_the_reference_values(maven_url: str) -> None:
    config = example_config("maven")
    expected = {
        key: value
        for key, value in maven_reference().items()
        if key[0] == "win_rate" and key[1] == "year" and key[3] == "owner"
    }
    assert len(expected) == 30  # every agent with a deal closed in 2017 (the only year)

    shown = run_cli(
        "values",
        "win_rate",
        "--grain",
        "year",
        "--scope",
        "owner",
        "--format",
        "csv",
        db_url=maven_url,
        config=config,
    )
    assert shown.exit_code == 0, shown.stderr
    rows = parse_csv(shown.stdout)
    columns = {
        "kpi_id",
        "grain",
        "period_key",
        "scope",
        "scope_id",
        "scope_name",
        "currency",
        "value",
        "numerator",
        "denominator",
        "sample_count",
    }
    assert rows
    assert columns <= set(rows[0]), sorted(rows[0])
    by_key = {
        ("win_rate", r["grain"], r["period_key"], r["scope"], r["scope_id"], r["currency"]): r for r in rows
    }
    assert len(by_key) == len(rows), "a row printed twice"
    assert set(by_key) == set(expected)
    for key, row in by_key.items():
        want = expected[key]
        assert row["kpi_id"] == "win_rate"
        assert row["scope_name"] == key[4].removeprefix("maven:"), row  # owners are keyed by their name
        assert want.value is not None
        assert float(row["value"]) == pytest.approx(want.value, rel=REL), row
        assert float(row["numerator"]) == pytest.approx(want.numerator, rel=REL), row
        assert want.denominator is not None
        assert float(row["denominator"]) == pytest.approx(want.denominator, rel=REL), row
        assert int(row["sample_count"]) == want.sample_count, row

    as_json = run_cli(
        "values",
        "win_rate",
        "--grain",
        "year",
        "--scope",
        "owner",
        "--format",
        "json",
        db_url=maven_url,
        config=config,
    )
    assert as_json.exit_code == 0, as_json.stderr
    objects = json.loads(as_json.stdout)
    assert isinstance(objects, list)
    assert all(isinstance(obj, dict) for obj in objects)
    assert len(objects) == len(expected)
    assert {(obj["scope_id"], obj["period_key"]) for obj in objects} == {(k[4], k[2]) for k in expected}
    for obj in objects:
        want = expected[("win_rate", "year", obj["period_key"], "owner", obj["scope_id"], "")]
        assert want.value is not None
        assert float(obj["value"]) == pytest.approx(want.value, rel=REL), obj

    company = run_cli(
        "values",
        "win_rate",
        "--grain",
        "all",
        "--scope",
        "company",
        "--format",
        "csv",
        db_url=maven_url,
        config=config,
    )
    assert company.exit_code == 0, company.stderr
    (only,) = parse_csv(company.stdout)
    assert (only["scope"], only["scope_id"], only["scope_name"], only["period_key"]) == (
        "company",
        "company",
        "Company",
        "all",
    )
    assert float(only["value"]) == pytest.approx(4238 / 6711, rel=REL)


def test_zoho_kpis_match_an_independent_computation_from_the_csv_files(db_url: str) -> None:
    sync_and_refresh(db_url, "zoho")
    stored = stored_values(db_url)
    expected = zoho_reference()
    check_against_reference(expected, stored, ZOHO_KPIS)

    # Owners are the Users.csv ids the names map to; the export has no teams.
    names = zoho_user_names()
    assert {key[4] for key in stored if key[3] == "owner"} == set(names)
    assert not [key for key in stored if key[3] == "team"]
    # Every lead has a creation time, so the month rows of the company add up to all time.
    month_rows = [
        row
        for key, row in stored.items()
        if key[:2] == ("lead_conversion_rate", "month") and key[3] == "company"
    ]
    company_all = stored[("lead_conversion_rate", "all", "all", "company", "company", "")]
    assert (company_all.numerator, company_all.denominator) == (3632, 3900)
    assert sum(row.numerator for row in month_rows) == 3632
    assert sum(row.denominator or 0 for row in month_rows) == 3900
    # Closed deals only count in win_rate: 1,425 won of 1,910 closed (open deals have no closed_at).
    win_all = stored[("win_rate", "all", "all", "company", "company", "")]
    assert (win_all.numerator, win_all.denominator) == (1425, 1910)


def test_x_education_lead_conversion_has_only_an_all_time_company_value(db_url: str) -> None:
    sync_and_refresh(db_url, "x_education")
    converted, leads = x_education_conversions()
    assert (converted, leads) == (3561, 9240)
    stored = stored_values(db_url)
    # No dates: no month, quarter or year rows; no owners or teams; no deals: no other KPI.
    assert list(stored) == [("lead_conversion_rate", "all", "all", "company", "company", "")]
    row = stored[("lead_conversion_rate", "all", "all", "company", "company", "")]
    assert row.value == pytest.approx(3561 / 9240, rel=REL)
    assert (row.numerator, row.denominator, row.sample_count) == (3561, 9240, 9240)
    assert row.low_sample is False
    assert (row.period_start, row.period_end) == (None, None)


Customers = dict[tuple[str, str, str, str, str], tuple[float | None, float, float | None]]


def maven_customers(grain: str) -> Customers:
    """``new_customers``, ``repeat_revenue_share`` and ``customer_retention_rate`` of ``grain``,
    restated from sales_pipeline.csv: ``(kpi, period, scope, scope id, currency) -> (value,
    numerator, denominator)``. An account is the deal's ``account`` text; its first won deals are
    those on its earliest close date."""
    agents = maven_team_scopes()
    with (DATA_DIR / "maven_crm_sales_opportunities" / "sales_pipeline.csv").open() as handle:
        rows = [
            r
            for r in csv.DictReader(handle)
            if r["deal_stage"] == "Won" and r["account"].strip() and r["close_date"].strip()
        ]
    first: dict[str, date] = {}
    for r in rows:
        closed = date.fromisoformat(r["close_date"])
        first[r["account"]] = min(first.get(r["account"], closed), closed)

    def period(day: date) -> str:
        months = {"month": 1, "quarter": 3, "year": 12}[grain]
        return date(day.year, (day.month - 1) // months * months + 1, 1).isoformat()

    def shift(period_key: str) -> str:
        start = date.fromisoformat(period_key)
        index = start.year * 12 + start.month - 1 + {"month": 1, "quarter": 3, "year": 12}[grain]
        return date(index // 12, index % 12 + 1, 1).isoformat()

    new: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    revenue: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    buying: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for r in rows:
        closed = date.fromisoformat(r["close_date"])
        for scope, scope_id in [("company", "company"), *agents[r["sales_agent"]]]:
            cell = (period(closed), scope, scope_id)
            if closed == first[r["account"]]:
                new[cell].add(r["account"])
            if r["close_value"].strip():
                amount = float(r["close_value"])
                revenue[cell][0] += amount if closed > first[r["account"]] else 0.0
                revenue[cell][1] += amount
            buying[cell].add(r["account"])
    out: Customers = {}
    for (p, scope, scope_id), accounts in new.items():
        out["new_customers", p, scope, scope_id, ""] = (len(accounts), len(accounts), None)
    for (p, scope, scope_id), (repeat, total) in revenue.items():
        share = repeat / total if total else None
        out["repeat_revenue_share", p, scope, scope_id, "USD"] = (share, repeat, total)
    last = max(p for p, _, _ in buying)
    for (p, scope, scope_id), accounts in buying.items():
        following = shift(p)
        if following <= last:
            kept = len(accounts & buying.get((following, scope, scope_id), set()))
            out["customer_retention_rate", following, scope, scope_id, ""] = (
                kept / len(accounts),
                kept,
                len(accounts),
            )
    return out


@pytest.mark.parametrize("grain", ["quarter", "month"])
def test_maven_customer_kpis_match_an_independent_computation(maven_url: str, grain: str) -> None:
    expected = maven_customers(grain)
    stored = {
        (key[0], key[2], key[3], key[4], key[5]): (row.value, row.numerator, row.denominator)
        for key, row in stored_values(maven_url).items()
        if key[1] == grain and key[0] in ("new_customers", "repeat_revenue_share", "customer_retention_rate")
    }
    assert set(stored) == set(expected), sorted(set(stored) ^ set(expected))[:10]
    for key, (value, numerator, denominator) in expected.items():
        got = stored[key]
        assert got[0] == (None if value is None else pytest.approx(value, rel=REL)), key
        assert got[1] == pytest.approx(numerator, rel=REL), key
        assert got[2] == (None if denominator is None else pytest.approx(denominator, rel=REL)), key
    # Every account is new exactly once for the company: the periods' new customers add up to the
    # accounts that ever won a deal. Of the 30 agents who won deals, Niesha Huffines won only
    # accounts that others had won before: 29 agents brought in new customers.
    with (DATA_DIR / "maven_crm_sales_opportunities" / "sales_pipeline.csv").open() as handle:
        won = {r["account"] for r in csv.DictReader(handle) if r["deal_stage"] == "Won"}
    company = [v[1] for k, v in expected.items() if k[0] == "new_customers" and k[2] == "company"]
    assert sum(company) == len(won) == 85
    agents = {key[3] for key in expected if key[0] == "new_customers" and key[2] == "owner"}
    assert len(agents) == 29
    assert "maven:Niesha Huffines" not in agents
    # Retention has a value from the second period on: the first has no period before it.
    assert min(k[1] for k in expected if k[0] == "customer_retention_rate") > min(
        k[1] for k in expected if k[0] == "new_customers"
    )
