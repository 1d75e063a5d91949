"""Large scans through Bulk API 2.0: chosen by ``SELECT COUNT()``, CSV pages by ``Sforce-Locator``,
and records identical to what REST gives."""

from __future__ import annotations

import random
import time
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.connector_sdk import Checkpoint, OpportunityRecord
from tests.connectors.salesforce.emulator import Org, SalesforceEmulator
from tests.connectors.salesforce.seed import seed_org
from tests.connectors.salesforce.support import (
    Syncer,
    comparable,
    connector,
    live,
    settings_for,
    spec,
    stored,
)

CUSTOM = {
    "segment": "Segment__c",
    "score": "Score__c",
    "renewal": "Renewal_Date__c",
    "strategic": "Strategic__c",
    "last_touch": "Last_Touch__c",
}


def _org(org: Org, opportunities: int = 2500) -> list[str]:
    """A multi-currency org whose deals carry custom fields of every type, some of them empty."""
    org.enable_multi_currency()
    table = org.table("Opportunity")
    for name, ftype in (
        ("Segment__c", "picklist"),
        ("Score__c", "double"),
        ("Renewal_Date__c", "date"),
        ("Strategic__c", "boolean"),
        ("Last_Touch__c", "datetime"),
    ):
        table.add_field(name, ftype)
    made = seed_org(org, opportunities=opportunities, leads=30, history=False)
    rng = random.Random(5)
    for number, record_id in enumerate(made.opportunities):
        row = table.rows[record_id]
        table.update(
            record_id,
            {
                "CurrencyIsoCode": "EUR" if number % 4 == 0 else "USD",
                "Segment__c": rng.choice(["SMB", "Mid-Market", "Enterprise", None]),
                "Score__c": rng.choice([None, 12.5, 80.0, 3.25]),
                "Renewal_Date__c": row["CloseDate"] + timedelta(days=365) if number % 3 else None,
                "Strategic__c": number % 5 == 0,
                "Last_Touch__c": row["CreatedDate"] + timedelta(hours=number % 48),
                # A name with a comma, a quote and a line break: CSV must carry it intact.
                "Name": f'Deal {number}, "phase {number % 3}"\nrenewal' if number % 50 == 0 else row["Name"],
            },
            at=row["SystemModstamp"],
        )
    return made.opportunities


def test_a_large_scan_goes_through_bulk_and_gives_the_same_records_as_rest(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    ids = _org(emulator.org)
    org = emulator.org
    common = {"streams": ["leads", "opportunities"], "custom_fields": {"opportunities": CUSTOM}}
    bulk = Syncer(
        session_factory,
        settings_for(emulator, bulk_threshold=1000, bulk_page_size=1000, **common),
        connection_id="bulk",
    )
    rest = Syncer(
        session_factory, settings_for(emulator, bulk_threshold=None, **common), connection_id="rest"
    )

    through_bulk = bulk.run()

    assert through_bulk.status == "succeeded", through_bulk.error
    assert through_bulk.streams["opportunities"].inserted == 2500
    created = [entry.soql for entry in org.log if entry.route == "bulk_create"]
    assert len(created) == 1  # the 30 leads stay below the threshold: REST
    assert created[0] is not None
    assert created[0].startswith("SELECT Id, OwnerId, Name")
    assert "FROM Opportunity" in created[0]
    assert "ORDER BY" not in created[0]
    assert [entry.route for entry in org.log].count("bulk_results") == 3  # 1,000 + 1,000 + 500
    assert org.queries("count", "Opportunity")
    assert not org.queries("query", "Opportunity")

    through_rest = rest.run()

    assert through_rest.status == "succeeded", through_rest.error
    assert len(org.queries("query", "Opportunity")) == 1  # one query, two pages (2,000 + 500)
    assert org.routes().count("query_more") == 1
    for entity in ("opportunities", "leads"):
        assert comparable(session_factory, entity, "bulk") == comparable(session_factory, entity, "rest")
    deals = stored(session_factory, "opportunities", "bulk")
    assert set(deals) == set(ids)
    sample = deals[ids[0]]
    assert sample.currency == "EUR"
    assert sample.custom["strategic"] is True
    assert sample.name == 'Deal 0, "phase 0"\nrenewal'
    assert {deal.custom["segment"] for deal in deals.values()} == {"SMB", "Mid-Market", "Enterprise", None}
    assert {deal.custom["score"] for deal in deals.values()} == {None, 12.5, 80.0, 3.25}

    # The same rows read over REST by the connection that used Bulk change nothing.
    refreshed = bulk.run(full=True, bulk_threshold=None)
    assert refreshed.status == "succeeded", refreshed.error
    assert (refreshed.total("inserted"), refreshed.total("updated")) == (0, 0)


def test_the_next_bulk_page_is_fetched_while_the_caller_works_on_this_one(
    emulator: SalesforceEmulator,
) -> None:
    """Bulk CSV pages take seconds to arrive from a real org: the next one is asked for as soon as
    this one is handed over, so the mapping and storing of a page overlap the wait for the next."""
    ids = _org(emulator.org)
    org = emulator.org
    conn = connector(
        settings_for(emulator, streams=["opportunities"], bulk_threshold=1000, bulk_page_size=1000)
    )
    conn.check()
    messages = conn.read(spec(conn, "opportunities"), None)
    first: list[str] = []
    for message in messages:
        if isinstance(message, OpportunityRecord):
            first.append(message.external_id)
        elif isinstance(message, Checkpoint) and first:
            break
    assert len(first) == 1000

    # The caller holds the first page's checkpoint and asks for nothing more; the second page is
    # requested all the same (waited for, not timed).
    deadline = time.monotonic() + 20
    while org.routes().count("bulk_results") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert org.routes().count("bulk_results") == 2

    rest = [m.external_id for m in messages if isinstance(m, OpportunityRecord)]
    conn.close()
    assert sorted(first + rest) == sorted(ids)  # every deal once, none lost to the read-ahead
    assert org.routes().count("bulk_results") == 3  # read ahead, never twice
    assert "bulk_delete" in org.routes()


def test_a_bulk_read_cut_mid_page_resumes_from_its_locator(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    ids = _org(emulator.org)
    org = emulator.org
    org.add_fault("bulk_results", kind="drop", after=1)
    syncer = Syncer(
        session_factory,
        settings_for(emulator, streams=["opportunities"], bulk_threshold=1000, bulk_page_size=1000),
        batch_size=500,
    )

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    stats = outcome.streams["opportunities"]
    assert (outcome.retries, stats.read, stats.inserted) == (1, 2500, 2500)
    assert set(stored(session_factory, "opportunities")) == set(ids)
    assert [entry.route for entry in org.log].count("bulk_create") == 1  # the same job, resumed
    results = [entry for entry in org.log if entry.route == "bulk_results"]
    assert [entry.fault for entry in results] == [None, "drop", None, None]
    assert "bulk_delete" in org.routes()


def test_a_failed_bulk_job_falls_back_to_rest(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    ids = _org(emulator.org, opportunities=1200)
    emulator.org.bulk_failure = "InvalidBatch : Failed to process query: too complicated"
    syncer = Syncer(session_factory, settings_for(emulator, streams=["opportunities"], bulk_threshold=1000))

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    assert set(stored(session_factory, "opportunities")) == set(ids)
    assert len(emulator.org.queries("query", "Opportunity")) == 1

    # The reconciliation of a full refresh falls back the same way, and still sees a hard delete.
    emulator.org.table("Opportunity").hard_delete(ids[0])
    refreshed = syncer.run(full=True)
    assert refreshed.status == "succeeded", refreshed.error
    assert refreshed.streams["opportunities_reconcile"].deleted == 1
    assert live(session_factory, "opportunities") == set(ids) - {ids[0]}


def test_reconciliation_of_a_large_object_uses_bulk(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    ids = _org(emulator.org, opportunities=1200)
    settings = settings_for(emulator, streams=["opportunities"], bulk_threshold=1000)
    syncer = Syncer(session_factory, settings)
    assert syncer.run().status == "succeeded"
    emulator.org.table("Opportunity").hard_delete(ids[7])

    outcome = syncer.run(full=True)

    assert outcome.status == "succeeded", outcome.error
    assert outcome.streams["opportunities_reconcile"].deleted == 1
    assert live(session_factory, "opportunities") == set(ids) - {ids[7]}
    jobs = [entry.soql for entry in emulator.org.log if entry.route == "bulk_create"]
    assert len(jobs) == 3  # the first scan, the full refresh's scan, the reconciliation
