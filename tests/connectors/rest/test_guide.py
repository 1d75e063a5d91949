"""The rest connector's guide (docs/connectors/rest.md), followed as a new user would.

The Acme spec and its connection are read from the guide itself, so a change to the guide that
breaks them fails here; Kestrel CRM is a CRM of our own whose spec (kestrel.yaml) was written from
the guide alone. Each runs through the command line into a fresh store and is checked against the
emulator's data, computed here independently.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, create_engine, select

from tests.cli_inprocess import invoke
from tests.conftest import REPO_ROOT
from tests.connectors.rest.guide_acme import BERLIN, AcmeEmulator
from tests.connectors.rest.guide_kestrel import STAGES, KestrelEmulator

GUIDE = REPO_ROOT / "docs" / "connectors" / "rest.md"
KESTREL_SPEC = Path(__file__).with_name("kestrel.yaml")
LOOKBACK = timedelta(minutes=5)
ACME_PROBABILITY = {"lead": 0.1, "proposal": 0.5, "won": 1.0, "lost": 0.0}
ACME_STAGES = {"lead": (False, False), "proposal": (False, False), "won": (True, True), "lost": (True, False)}


def yaml_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", markdown, flags=re.DOTALL | re.MULTILINE)


def guide_block(starts: str) -> str:
    """The one YAML block of the guide that contains ``starts`` at the start of a line."""
    found = [b for b in yaml_blocks(GUIDE.read_text(encoding="utf-8")) if re.search(f"^{starts}", b, re.M)]
    assert len(found) == 1, f"the guide should have one YAML block with {starts!r}, it has {len(found)}"
    return found[0]


@dataclass
class Setup:
    directory: Path
    db_url: str
    env: dict[str, str]

    def run(self, *args: str) -> tuple[int, str]:
        result = invoke(*args, env=self.env)
        return result.exit_code, result.stdout + result.stderr

    def engine(self) -> Engine:
        return create_engine(self.db_url)


def rows(engine: Engine, table: str, connection: str) -> dict[str, dict[str, Any]]:
    metadata = MetaData()
    metadata.reflect(engine, only=[table])
    t = metadata.tables[table]
    with engine.connect() as conn:
        found = conn.execute(select(t).where(t.c.connection_id == connection)).mappings().all()
    return {r["external_id"]: dict(r) for r in found}


def as_utc(value: Any) -> datetime | None:
    """A stored date-time (SQLite keeps them as naive UTC) as an aware UTC datetime."""
    if value is None:
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def as_date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


@pytest.fixture
def store(tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    """A fresh store and a working directory holding the configuration (the service runs there)."""
    path = tmp_path / "store.db"
    shutil.copyfile(sqlite_template, path)
    monkeypatch.chdir(tmp_path)  # "a path, relative to where the service runs"
    env = {
        "CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{path}",
        "CRM_PERF_SYNC_CONFIG": str(tmp_path / "config.yaml"),
    }
    return Setup(tmp_path, env["CRM_PERF_SYNC_DATABASE_URL"], env)


# -- Acme CRM, from the guide's Part 2 -------------------------------------------------------------


@pytest.fixture
def acme() -> Iterator[AcmeEmulator]:
    with AcmeEmulator() as emulator:
        yield emulator


def write_acme(
    store: Setup, acme: AcmeEmulator, *, spec: str | None = None, connection: str | None = None
) -> None:
    """The guide's acme.yaml and connection, as a user would save them; the connection's ``base_url``
    points at the emulator, and ``ACME_KEY`` holds its key."""
    spec = guide_block("name: acme") if spec is None else spec
    connection = guide_block("  - id: acme") if connection is None else connection
    (store.directory / "acme.yaml").write_text(spec, encoding="utf-8")
    spec_line = re.search(r"^( *)spec: \./acme\.yaml\n", connection, flags=re.M)
    assert spec_line is not None
    connection = connection.replace(
        spec_line.group(0), f"{spec_line.group(0)}{spec_line.group(1)}base_url: {acme.url}\n"
    )
    (store.directory / "config.yaml").write_text(connection, encoding="utf-8")
    store.env["ACME_KEY"] = acme.api_key


def check_acme_store(store: Setup, acme: AcmeEmulator) -> None:
    engine = store.engine()
    try:
        owners = rows(engine, "owner", "acme")
        opportunities = rows(engine, "opportunity", "acme")
    finally:
        engine.dispose()
    assert {k: (o["name"], o["email"]) for k, o in owners.items()} == {
        str(u.id): (u.full_name, u.mail) for u in acme.users
    }
    live = {k for k, o in opportunities.items() if not o["is_deleted"]}
    assert live == {str(d.id) for d in acme.deals.values() if not d.deleted}
    for deal in acme.deals.values():
        if deal.deleted:
            continue
        stored = opportunities[str(deal.id)]
        is_closed, is_won = ACME_STAGES[deal.stage]
        assert (
            stored["name"],
            Decimal(str(stored["amount"])),
            stored["currency"],
            stored["stage"],
            bool(stored["is_closed"]),
            bool(stored["is_won"]),
            stored["owner_external_id"],
            stored["pipeline"],
        ) == (
            deal.title,
            deal.amount,
            deal.currency,
            deal.stage,
            is_closed,
            is_won,
            None if deal.owner_id is None else str(deal.owner_id),
            "acme",
        ), deal.id
        assert as_utc(stored["created_at"]) == deal.created, deal.id  # Berlin wall time, read as such
        assert as_date(stored["close_date"]) == deal.closed_on, deal.id
        # closed_on is a date: a closed deal's closed_at is its midnight in the spec's zone; an open
        # deal has none, whatever closed_on says.
        closed_at = datetime.combine(deal.closed_on, datetime.min.time(), BERLIN).astimezone(UTC)
        assert as_utc(stored["closed_at"]) == (closed_at if is_closed else None), deal.id
        assert stored["probability"] == ACME_PROBABILITY[deal.stage], deal.id
        assert as_utc(stored["remote_updated_at"]) == deal.updated, deal.id


def test_acme_as_the_guide_writes_it(store: Setup, acme: AcmeEmulator) -> None:
    write_acme(store, acme)

    code, out = store.run("config", "check")
    assert code == 0, out

    started = datetime.now(UTC)
    code, out = store.run("sync", "acme")
    ended = datetime.now(UTC)
    assert code == 0, out
    check_acme_store(store, acme)
    assert acme.count("/v2/deals") >= 2  # a few dozen deals at 25 a page: the cursor was followed
    first = [r for r in acme.requests if r.path == "/v2/deals"]
    assert all(r.headers["x-acme-key"] == acme.api_key for r in acme.requests)
    assert "updated_after" not in first[0].query  # null on a first read: left out

    # Changes in the CRM: a deal won, another deleted, one moved to another owner.
    acme.change(101, stage="won")
    acme.change(102, owner_id=4, amount=Decimal("1234567.89"))
    acme.delete(103)
    before = len(acme.requests)
    code, out = store.run("sync", "acme")
    assert code == 0, out
    second = [r for r in acme.requests[before:] if r.path == "/v2/deals"]
    assert second
    # An increment from where the last read ended, 5 minutes back, written as the iso filter says.
    (since,) = second[0].query["updated_after"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", since), since
    assert started - LOOKBACK - timedelta(seconds=1) <= datetime.fromisoformat(since) <= ended - LOOKBACK
    check_acme_store(store, acme)

    code, out = store.run("refresh")
    assert code == 0, out


def test_acme_errors_as_the_spec_classifies_them(store: Setup, acme: AcmeEmulator) -> None:
    write_acme(store, acme)
    # rate_limited (429): retried, here as soon as Retry-After allows.
    acme.fail(
        "/v2/deals",
        429,
        body={"error": {"code": "rate_limited", "message": "slow"}},
        headers={"Retry-After": "0"},
    )
    code, out = store.run("sync", "acme")
    assert code == 0, out
    assert acme.count("/v2/deals", status=429) == 1
    check_acme_store(store, acme)

    # A value that cannot be read: a bad record, with its id, field and value; the rest goes on.
    acme.change(104, raw={"amount": "about 5k"})
    code, out = store.run("sync", "acme")
    assert code == 65, out
    assert "opportunities: record 104: amount: 'about 5k' is not an amount" in out, out
    # And the run's stored errors keep it, with the stream and the field.
    engine = store.engine()
    try:
        errors = MetaData()
        errors.reflect(engine, only=["sync_record_error"])
        t = errors.tables["sync_record_error"]
        with engine.connect() as conn:
            found = conn.execute(select(t.c.stream, t.c.record_key, t.c.field)).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in found] == [("opportunities", "104", "amount")]

    # bad_key (401): fatal, with the spec's message.
    store.env["ACME_KEY"] = "not-the-key"
    code, out = store.run("sync", "acme")
    assert code == 1, out
    assert all(part in out for part in ("bad_key", "check api_key")), out
    assert "not-the-key" not in out


def test_acme_a_broken_spec_is_reported_by_file_and_line(store: Setup, acme: AcmeEmulator) -> None:
    spec = guide_block("name: acme")
    broken = spec.replace(
        "pagination: {kind: cursor, next: meta.next_cursor, page_size: 100}",
        "pagination: {kind: cursor, page_size: 100}",
    )
    assert broken != spec
    write_acme(store, acme, spec=broken)
    code, out = store.run("config", "check")
    assert code == 2, out
    line = 1 + broken[: broken.index("pagination:")].count("\n")
    assert re.search(rf"acme\.yaml:{line}: streams\.opportunities\.pagination: ", out), out


def test_acme_a_missing_input_is_reported(store: Setup, acme: AcmeEmulator) -> None:
    connection = guide_block("  - id: acme").replace('inputs: {api_key: "${ACME_KEY}"}', "inputs: {}")
    write_acme(store, acme, connection=connection)
    code, out = store.run("config", "check")
    assert code == 2, out
    assert re.search(
        r"config\.yaml:\d+: connections\[0\]\.settings\.inputs: api_key: required by spec acme", out
    ), out


# -- Kestrel CRM, a spec written from the guide alone ----------------------------------------------


@pytest.fixture
def kestrel() -> Iterator[KestrelEmulator]:
    with KestrelEmulator() as emulator:
        yield emulator


def write_kestrel(store: Setup, kestrel: KestrelEmulator) -> None:
    (store.directory / "config.yaml").write_text(
        f"""\
business: {{timezone: UTC}}
connections:
  - id: kestrel
    kind: rest
    settings:
      spec: {KESTREL_SPEC}
      base_url: {kestrel.url}/api/v3
      requests_per_second: 0
      inputs:
        region: cn
        account: {kestrel.account}
        api_token: ${{KESTREL_TOKEN}}
""",
        encoding="utf-8",
    )
    store.env["KESTREL_TOKEN"] = kestrel.token


def kpi_rows(store: Setup, kpi: str) -> list[dict[str, str]]:
    """The company's all-time values of ``kpi``, from ``values --format csv``."""
    code, out = store.run("values", kpi, "--grain", "all", "--scope", "company", "--format", "csv")
    assert code == 0, out
    return list(csv.DictReader(io.StringIO(out)))


def kpi_values(store: Setup, kpi: str) -> dict[str, Decimal]:
    """The company's all-time values of ``kpi`` by currency (empty for none)."""
    return {r["currency"]: Decimal(r["value"]) for r in kpi_rows(store, kpi)}


def check_kestrel_store(store: Setup, kestrel: KestrelEmulator) -> None:
    engine = store.engine()
    try:
        owners = rows(engine, "owner", "kestrel")
        leads = rows(engine, "lead", "kestrel")
        opportunities = rows(engine, "opportunity", "kestrel")
    finally:
        engine.dispose()
    assert {k: (o["name"], o["email"], bool(o["active"])) for k, o in owners.items()} == {
        u.uid: (u.name, u.email, u.enabled) for u in kestrel.users
    }
    assert {
        k: (x["name"], x["email"], x["company"], x["source"], x["status"], x["owner_external_id"])
        for k, x in leads.items()
    } == {x.lead_id: (x.contact, x.email, x.org, x.channel, x.status, x.uid) for x in kestrel.leads.values()}
    for lead in kestrel.leads.values():
        stored = leads[lead.lead_id]
        assert as_utc(stored["created_at"]) == lead.created, lead.lead_id
        assert (bool(stored["is_converted"]), as_utc(stored["converted_at"])) == (
            lead.converted_at is not None,
            lead.converted_at,
        ), lead.lead_id
        expected_deal = None if lead.deal_id is None else str(lead.deal_id)
        assert stored["converted_opportunity_external_id"] == expected_deal, lead.lead_id
    live = {k for k, o in opportunities.items() if not o["is_deleted"]}
    assert live == {str(d) for d in kestrel.deals}
    for deal in kestrel.deals.values():
        stored = opportunities[str(deal.deal_id)]
        stage, is_closed, is_won = STAGES[deal.stage_id]
        assert (
            stored["name"],
            Decimal(str(stored["amount"])),
            stored["currency"],
            stored["stage"],
            bool(stored["is_closed"]),
            bool(stored["is_won"]),
            stored["owner_external_id"],
            stored["lead_external_id"],
        ) == (
            deal.subject,
            deal.value,
            deal.currency_code,
            stage,
            is_closed,
            is_won,
            deal.uid,
            deal.lead_id,
        ), deal.deal_id
        assert as_utc(stored["created_at"]) == deal.created, deal.deal_id
        assert as_date(stored["close_date"]) == deal.close.date(), deal.deal_id
        assert as_utc(stored["closed_at"]) == (deal.close if is_closed else None), deal.deal_id
        assert as_utc(stored["remote_updated_at"]) == deal.modified, deal.deal_id


def test_kestrel_through_the_command_line(store: Setup, kestrel: KestrelEmulator) -> None:
    write_kestrel(store, kestrel)
    code, out = store.run("config", "check")
    assert code == 0, out

    kestrel.throttle("/api/v3/deals", times=2)  # "too many requests" under HTTP 200: retried
    code, out = store.run("sync", "kestrel")
    assert code == 0, out
    check_kestrel_store(store, kestrel)
    deal_pages = [r for r in kestrel.requests if r.path == "/api/v3/deals" and r.status == 200]
    assert len(deal_pages) == 2 + -(-len(kestrel.deals) // 15)  # the throttled two, then every page
    assert [r.query["page"] for r in deal_pages[2:]] == [[str(n)] for n in range(1, len(deal_pages) - 1)]
    assert all(r.headers["authorization"].startswith("Basic ") for r in kestrel.requests)
    # 30 leads at 10 a page: the third page is full, and its has_more false ends the read.
    lead_pages = [r.query["page"] for r in kestrel.requests if r.path == "/api/v3/leads"]
    assert lead_pages == [["1"], ["2"], ["3"]]

    # Changes: a deal won, another deleted (listed by /deleted), a lead converted.
    kestrel.change_deal(5002, stage_id=14)
    kestrel.delete_deal(5003)
    kestrel.change_lead("L-901", converted_at=kestrel.now(), deal_id=5002, status="converted")
    before = len(kestrel.requests)
    code, out = store.run("sync", "kestrel")
    assert code == 0, out
    assert all("modified_from" in r.query for r in kestrel.requests[before:] if r.path == "/api/v3/deals")
    check_kestrel_store(store, kestrel)
    engine = store.engine()
    try:
        gone = rows(engine, "opportunity", "kestrel")["5003"]
    finally:
        engine.dispose()
    assert as_utc(gone["deleted_at"]) == kestrel.deleted[-1][2]  # deleted_ms, read as epoch ms

    code, out = store.run("refresh")
    assert code == 0, out
    won = [d for d in kestrel.deals.values() if STAGES[d.stage_id][2]]
    assert kpi_values(store, "won_deals") == {"": Decimal(len(won))}
    revenue: dict[str, Decimal] = {}
    for deal in won:
        revenue[deal.currency_code] = revenue.get(deal.currency_code, Decimal(0)) + deal.value
    assert kpi_values(store, "won_revenue") == revenue
    converted = sum(1 for x in kestrel.leads.values() if x.converted_at is not None)
    rate = kpi_rows(store, "lead_conversion_rate")
    assert [(r["currency"], Decimal(r["numerator"]), Decimal(r["denominator"])) for r in rate] == [
        ("", Decimal(converted), Decimal(len(kestrel.leads)))
    ]
    assert Decimal(rate[0]["value"]) == pytest.approx(Decimal(converted) / len(kestrel.leads))


def test_kestrel_an_error_code_under_http_200_stops_the_run(store: Setup, kestrel: KestrelEmulator) -> None:
    write_kestrel(store, kestrel)
    store.env["KESTREL_TOKEN"] = "not-the-token"
    code, out = store.run("sync", "kestrel")
    assert code == 1, out
    assert "check account and api_token" in out, out
    assert "not-the-token" not in out
