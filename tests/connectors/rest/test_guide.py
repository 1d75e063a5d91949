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
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, MetaData, create_engine, select

from tests.cli_inprocess import invoke
from tests.conftest import REPO_ROOT
from tests.connectors.rest.guide_acme import BERLIN, AcmeEmulator
# KESTREL from tests.connectors.rest.guide_kestrel import KestrelEmulator

GUIDE = REPO_ROOT / "docs" / "connectors" / "rest.md"
KESTREL_SPEC = Path(__file__).with_name("kestrel.yaml")
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


def write_acme(store: Setup, acme: AcmeEmulator, *, spec: str | None = None, connection: str | None = None) -> None:
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
        assert as_utc(stored["remote_updated_at"]) == deal.updated, deal.id


def test_acme_as_the_guide_writes_it(store: Setup, acme: AcmeEmulator) -> None:
    write_acme(store, acme)

    code, out = store.run("config", "check")
    assert code == 0, out

    code, out = store.run("sync", "acme")
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
    assert second[0].query["updated_after"]  # an increment, not a full read
    check_acme_store(store, acme)

    code, out = store.run("refresh")
    assert code == 0, out


def test_acme_a_broken_spec_is_reported_by_file_and_line(store: Setup, acme: AcmeEmulator) -> None:
    spec = guide_block("name: acme")
    broken = spec.replace("pagination: {kind: cursor, next: meta.next_cursor, page_size: 100}", "pagination: {kind: cursor, page_size: 100}")
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
    assert re.search(r"config\.yaml:\d+: connections\[0\]\.settings\.inputs: api_key: required by spec acme", out), out
