"""Recorded responses of real orgs (../shared/data/fixtures), replayed byte for byte by the emulator."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.models import SyncRecordError
from tests.conftest import DATA_DIR
from tests.connectors.salesforce.emulator import Org, SalesforceEmulator
from tests.connectors.salesforce.seed import add_standard_stages
from tests.connectors.salesforce.support import Syncer, settings_for, stored

FIXTURES = DATA_DIR / "fixtures"
NANGO = FIXTURES / "salesforce_opportunities_query_v59__nango.json"
PAGE1 = FIXTURES / "salesforce_query_paginated_page1__restforce.json"
PAGE2 = FIXTURES / "salesforce_query_paginated_page2__restforce.json"


def _org_with_stages(org: Org) -> None:
    add_standard_stages(org, datetime(2024, 1, 1, tzinfo=UTC))
    org.add_user("admin@example.com", "admin-password", "TOKEN")


def _bytes(path: Path) -> bytes:
    assert path.is_file(), f"fixture {path} missing; set CRM_DATA_DIR to the shared data folder"
    return path.read_bytes()


def test_the_31_recorded_opportunities(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    _org_with_stages(emulator.org)
    emulator.org.replay_query("Opportunity", _bytes(NANGO))
    syncer = Syncer(session_factory, settings_for(emulator, streams=["pipeline_stages", "opportunities"]))

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    assert outcome.streams["opportunities"].inserted == 31
    deals = stored(session_factory, "opportunities")
    recorded = json.loads(NANGO.read_text())["records"]
    assert set(deals) == {row["Id"] for row in recorded}
    for row in recorded:
        deal = deals[row["Id"]]
        assert (deal.name, deal.amount, deal.stage, deal.close_date, deal.owner_external_id) == (
            row["Name"],
            Decimal(row["Amount"]),
            row["StageName"],
            date.fromisoformat(row["CloseDate"]),
            row["OwnerId"],
        )
    # The recorded query selected neither IsClosed, IsWon nor Probability: the stage metadata
    # (OpportunityStage) classifies every deal.
    won = [deal for deal in deals.values() if deal.is_won]
    assert len(won) == 18
    assert all(deal.is_closed and deal.probability == 1.0 for deal in won)
    assert sum(deal.amount for deal in won) == Decimal(3_645_000)
    assert sum(deal.amount for deal in deals.values()) == Decimal(5_760_000)
    assert not any(deal.is_closed for deal in deals.values() if not deal.is_won)

    express = deals["006dM00000Mw7VvQAJ"]
    assert express.name == "Express Logistics Standby Generator"
    assert (express.amount, express.currency) == (Decimal(220000), "USD")  # the org's default currency
    # A close date is a day in the org's zone (America/Los_Angeles): midnight there, 08:00 UTC.
    assert express.closed_at == datetime(2026, 1, 20, 8, 0, tzinfo=UTC)
    assert express.remote_updated_at == datetime(2026, 5, 1, 7, 25, 37, tzinfo=UTC)
    assert express.raw["SystemModstamp"] == "2026-05-01T07:25:37.000+0000"
    qualification = deals["006dM00000Mw7VtQAJ"]
    assert (qualification.stage, qualification.is_closed, qualification.probability) == (
        "Qualification",
        False,
        0.1,
    )
    assert qualification.closed_at is None
    negotiation = deals["006dM00000Mw7VuQAJ"]
    assert (negotiation.probability, negotiation.amount) == (0.9, Decimal(125000))

    again = syncer.run()
    assert again.status == "succeeded", again.error
    assert again.streams["opportunities"].read == 31
    assert (again.total("inserted"), again.total("updated")) == (0, 0)


def test_the_recorded_two_page_query(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    """Page 1 says ``done: false`` with a server-relative ``nextRecordsUrl`` of another API version;
    the connector follows it verbatim, reads page 2, and reports both rows (Whizbang records
    without an Id are no opportunities) as skipped, with their payloads."""
    _org_with_stages(emulator.org)
    next_url = json.loads(_bytes(PAGE1))["nextRecordsUrl"]
    assert next_url == "/services/data/v26.0/query/01gD"
    emulator.org.replay_query("Opportunity", _bytes(PAGE1), {next_url: _bytes(PAGE2)})
    syncer = Syncer(session_factory, settings_for(emulator, streams=["opportunities"]))

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    stats = outcome.streams["opportunities"]
    assert (stats.read, stats.skipped, stats.inserted) == (2, 2, 0)
    assert [entry.path for entry in emulator.org.log if entry.route == "query_more"] == [next_url]
    with session_scope(session_factory) as session:
        errors = session.scalars(select(SyncRecordError).order_by(SyncRecordError.id)).all()
        reported = [(error.stream, error.message, (error.raw or {}).get("Text_Label")) for error in errors]
    assert reported == [
        ("opportunities", "a Whizbang record without an Id", "First Page"),
        ("opportunities", "a Whizbang record without an Id", "Last Page"),
    ]
