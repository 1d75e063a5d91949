"""Sessions end when the org says so, also between two streams: every call renews an expired
session once and carries on, with no retry of the stream and no storm of calls with a dead token."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.connectors.salesforce.emulator import Logged, SalesforceEmulator
from tests.connectors.salesforce.seed import seed_org
from tests.connectors.salesforce.support import Syncer, auth_for, settings_for, stored

STREAMS = ["owners", "leads", "opportunities"]

#: Where the session ends: the route of the call that meets the 401, and the fault's options.
WHERE: dict[str, tuple[str, dict[str, Any]]] = {
    "the /limits/ call": ("limits", {}),
    "the Organization query": ("query", {"on": "Organization"}),
    "the second stream's describe": ("describe", {"on": "Lead"}),
    "the third stream's describe": ("describe", {"on": "Opportunity"}),
    "a stream's count": ("count", {"on": "Opportunity"}),
    "a stream's first query page": ("query", {"on": "Lead"}),
    "a Bulk job's creation": ("bulk_create", {"on": "Opportunity"}),
    "a Bulk job's status": ("bulk_status", {}),
    "a Bulk job's results": ("bulk_results", {}),
}


def _expired(log: list[Logged]) -> tuple[Logged, Logged]:
    """The call that met the expired session, and the same call made again right after."""
    (index,) = [i for i, entry in enumerate(log) if entry.fault == "expire_session"]
    failed = log[index]
    again = next(e for e in log[index + 1 :] if (e.route, e.path) == (failed.route, failed.path))
    return failed, again


@pytest.mark.parametrize("where", list(WHERE))
def test_a_session_ending_before_any_call_is_renewed_once_and_the_run_succeeds(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session], where: str
) -> None:
    org = emulator.org
    made = seed_org(org, opportunities=30, leads=20)
    org.table("Organization").update(org.organization_id, {"DefaultCurrencyIsoCode": "EUR"})
    route, options = WHERE[where]
    org.add_fault(route, kind="expire_session", **options)
    # Bulk for the opportunities (30 rows), REST for the leads (fewer than 25 live in the span).
    settings = settings_for(emulator, streams=STREAMS, bulk_threshold=25)
    syncer = Syncer(session_factory, settings)

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    assert outcome.retries == 0
    assert org.logins == 2  # the first session, and the one that replaced it
    failed, again = _expired(org.log)
    assert (failed.route, failed.status, again.status) == (route, 401, 200)
    assert again.token != failed.token
    assert [entry.status for entry in org.log].count(401) == 1
    assert set(stored(session_factory, "opportunities")) == set(made.opportunities)
    assert set(stored(session_factory, "leads")) == set(made.leads)
    # The Organization was read (its currency is on every deal), not skipped for a fallback.
    assert {row.currency for row in stored(session_factory, "opportunities").values()} == {"EUR"}


def test_a_session_ending_before_the_deleted_records_feed_is_renewed_once(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    org = emulator.org
    made = seed_org(org, opportunities=10, leads=0)
    syncer = Syncer(session_factory, settings_for(emulator, streams=["owners", "opportunities"]))
    assert syncer.run().status == "succeeded"
    gone = made.opportunities[0]
    org.table("Opportunity").soft_delete(gone, at=org.now() - timedelta(minutes=5))
    org.add_fault("deleted", kind="expire_session", on="Opportunity")

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    assert outcome.retries == 0
    failed, again = _expired(org.log)
    assert (failed.route, failed.status, again.status) == ("deleted", 401, 200)
    assert stored(session_factory, "opportunities")[gone].is_deleted


@pytest.mark.parametrize(
    ("route", "on", "what"),
    [("describe", "Lead", "the describe of Lead"), ("query", "Organization", "the query")],
)
def test_a_session_refused_right_after_it_was_issued_fails_the_run_without_retrying(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session], route: str, on: str, what: str
) -> None:
    """An org that ends every session at once (sessions locked to another IP address, say) is
    told once, not asked again and again; nor is the Organization then taken as unreadable."""
    org = emulator.org
    seed_org(org, opportunities=5, leads=5)
    org.add_fault(route, kind="expire_session", on=on, times=2)
    syncer = Syncer(session_factory, settings_for(emulator, streams=STREAMS))

    outcome = syncer.run()

    assert (outcome.status, outcome.error_kind) == ("failed", "fatal")
    assert outcome.retries == 0
    assert outcome.error is not None
    assert f"{what}: INVALID_SESSION_ID" in outcome.error
    assert "again right after logging in" in outcome.error
    assert org.logins == 2
    assert [entry.status for entry in org.log if entry.fault is not None] == [401, 401]
    assert stored(session_factory, "opportunities") == {}


def test_a_given_session_id_ending_between_two_streams_is_a_config_error(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    org = emulator.org
    seed_org(org, opportunities=5, leads=5)
    auth = auth_for(emulator, "session")
    org.add_fault("describe", kind="expire_session", on="Lead")
    syncer = Syncer(session_factory, settings_for(emulator, streams=STREAMS, auth=auth))

    outcome = syncer.run()

    assert (outcome.status, outcome.error_kind) == ("failed", "config")
    assert outcome.retries == 0
    assert outcome.error is not None
    assert "auth.session_id" in outcome.error
    assert auth["session_id"] not in outcome.error
    assert [entry.status for entry in org.log].count(401) == 1
