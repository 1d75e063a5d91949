"""What goes wrong on the wire: dropped connections, expired sessions, 5xx, slowness, QUERY_TIMEOUT,
and the daily API budget. Every run goes through the real engine into a real store."""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime

import pytest
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit.timeutil import utc_now
from tests.connectors.salesforce.emulator import SalesforceEmulator
from tests.connectors.salesforce.seed import add_opportunities, minimal_org
from tests.connectors.salesforce.support import (
    Syncer,
    auth_for,
    checkpoint_of,
    last_run,
    settings_for,
    stored,
)

OPPORTUNITIES = ["opportunities"]


def _deals(emulator: SalesforceEmulator, count: int) -> list[str]:
    minimal_org(emulator.org)
    start = (emulator.org.now() - timedelta(hours=3)).replace(microsecond=0)
    return add_opportunities(emulator.org, count, start=start, step=timedelta(seconds=1))


def test_a_connection_dropped_mid_page_resumes_after_the_last_committed_page(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    ids = _deals(emulator, 4500)
    emulator.org.add_fault("query_more", kind="drop", after=1)  # page 3 is cut half-way
    syncer = Syncer(session_factory, settings_for(emulator, streams=OPPORTUNITIES), batch_size=1000)

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    stats = outcome.streams["opportunities"]
    assert (outcome.retries, stats.read, stats.inserted) == (1, 4500, 4500)
    assert set(stored(session_factory, "opportunities")) == set(ids)
    assert [entry.fault for entry in emulator.org.log if entry.route == "query_more"] == [None, "drop"]
    assert f"Id > '{ids[3999]}'" in emulator.org.queries("query")[-1]
    # The engine backed off with jitter before the retry: half a step fixed, half random.
    assert len(syncer.sleeps) == 1
    assert 1.0 <= syncer.sleeps[0] <= 2.0


@pytest.mark.parametrize("auth", ["password", "client_credentials", "jwt"])
def test_a_session_expiring_mid_query_logs_in_again_and_restarts_from_the_last_row(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session], auth: str
) -> None:
    ids = _deals(emulator, 4500)
    settings = settings_for(emulator, streams=OPPORTUNITIES, auth=auth_for(emulator, auth))
    syncer = Syncer(session_factory, settings)
    emulator.org.add_fault("query_more", kind="expire_session")

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    stats = outcome.streams["opportunities"]
    assert (outcome.retries, stats.read, stats.inserted) == (0, 4500, 4500)
    assert set(stored(session_factory, "opportunities")) == set(ids)
    assert emulator.org.logins == 2
    # Page 1's locator died with the session: the query restarted, keyed after page 1's last row.
    first, restarted = emulator.org.queries("query")
    assert "Id >" not in first
    assert f"Id > '{ids[1999]}'" in restarted
    assert [entry.status for entry in emulator.org.log if entry.route == "query_more"] == [401, 200]


def test_an_expired_session_id_fails_the_run_as_a_config_error(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    _deals(emulator, 10)
    auth = auth_for(emulator, "session")
    syncer = Syncer(session_factory, settings_for(emulator, streams=OPPORTUNITIES, auth=auth))
    emulator.org.expire_sessions()

    outcome = syncer.run()

    assert (outcome.status, outcome.error_kind) == ("failed", "config")
    assert outcome.error is not None
    assert "INVALID_SESSION_ID" in outcome.error
    assert "session_id" in outcome.error
    assert auth["session_id"] not in outcome.error


def test_server_errors_are_retried_with_backoff_honouring_retry_after(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    ids = _deals(emulator, 2500)
    emulator.org.add_fault(
        "query",
        on="Opportunity",
        status=503,
        code="SERVER_UNAVAILABLE",
        message="down",
        retry_after=7,
        times=2,
    )
    emulator.org.add_fault("query_more", status=500, code="UNKNOWN_EXCEPTION")
    syncer = Syncer(session_factory, settings_for(emulator, streams=OPPORTUNITIES))

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    assert outcome.retries == 3
    assert set(stored(session_factory, "opportunities")) == set(ids)
    assert [round(delay) >= 7 for delay in syncer.sleeps[:2]] == [True, True]  # Retry-After is a floor
    assert syncer.sleeps[2] < 7


def test_a_retry_after_given_as_an_http_date_is_honoured(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    ids = _deals(emulator, 50)
    when = format_datetime(utc_now() + timedelta(minutes=10), usegmt=True)
    emulator.org.add_fault(
        "query", on="Opportunity", status=503, code="SERVER_UNAVAILABLE", message="down", retry_after=when
    )
    syncer = Syncer(session_factory, settings_for(emulator, streams=OPPORTUNITIES))

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    assert outcome.retries == 1
    assert set(stored(session_factory, "opportunities")) == set(ids)
    # Ten minutes less the moments the run took to get there; the engine's own backoff would
    # have waited at most two seconds before this first retry.
    (delay,) = syncer.sleeps
    assert 300 < delay <= 601


def test_a_slow_response_times_out_and_is_retried(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    ids = _deals(emulator, 50)
    # Only the faulted query outlasts the timeout, however busy the machine: every other call is
    # answered well within two seconds.
    emulator.org.add_fault("query", on="Opportunity", kind="slow", delay=6.0)
    syncer = Syncer(session_factory, settings_for(emulator, streams=OPPORTUNITIES, timeout=2.0))

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    assert outcome.retries == 1
    assert set(stored(session_factory, "opportunities")) == set(ids)


def test_query_timeout_narrows_the_window_until_queries_pass(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    ids = _deals(emulator, 5000)
    emulator.org.query_timeout_above = 1500
    syncer = Syncer(session_factory, settings_for(emulator, streams=OPPORTUNITIES, bulk_threshold=None))

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    assert (outcome.retries, outcome.streams["opportunities"].read) == (0, 5000)
    assert set(stored(session_factory, "opportunities")) == set(ids)
    timeouts = [entry for entry in emulator.org.log if entry.route == "query" and entry.status == 400]
    assert len(timeouts) >= 2
    passed = [entry.soql for entry in emulator.org.log if entry.route == "query" and entry.status == 200]
    assert len([text for text in passed if text and "FROM Opportunity" in text]) >= 4

    again = syncer.run()  # the next run's window is narrow anyway
    assert again.status == "succeeded", again.error


def test_a_query_that_times_out_however_narrow_fails_as_retriable_after_the_engines_retries(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    _deals(emulator, 300)
    # Every query of the object times out, however narrow its window.
    emulator.org.add_fault("query", on="Opportunity", status=400, code="QUERY_TIMEOUT", times=10_000)
    syncer = Syncer(session_factory, settings_for(emulator, streams=OPPORTUNITIES, bulk_threshold=None))

    outcome = syncer.run()

    assert (outcome.status, outcome.error_kind) == ("failed", "retriable")
    assert outcome.error is not None
    assert "QUERY_TIMEOUT" in outcome.error


def test_the_daily_budget_share_stops_the_run_halfway_and_the_next_run_completes(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    ids = _deals(emulator, 6000)
    org = emulator.org
    org.api_limit = 60
    settings = settings_for(
        emulator, streams=OPPORTUNITIES, page_size=200, max_api_share=0.5, bulk_threshold=None
    )
    syncer = Syncer(session_factory, settings, batch_size=500)

    first = syncer.run()

    assert first.status == "deferred", first.error
    assert first.error is not None
    assert "30 of 60 daily API requests used" in first.error
    assert org.api_used == 30  # the read-ahead does not spend a request past the share
    kept = stored(session_factory, "opportunities")
    assert 0 < len(kept) < 6000
    checkpoint = checkpoint_of(session_factory, "opportunities")
    assert checkpoint is not None
    assert checkpoint["scan"]["after"][1] == max(kept)
    assert last_run(session_factory).status == "deferred"

    org.api_used = 0  # a new day
    second = syncer.run()

    assert second.status == "succeeded", second.error
    assert set(stored(session_factory, "opportunities")) == set(ids)
    assert second.streams["opportunities"].read == 6000 - len(kept)  # resumed, nothing read twice
    assert second.streams["opportunities"].inserted == 6000 - len(kept)


def test_request_limit_exceeded_defers_the_run_and_the_next_one_resumes(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    """Other integrations spent the org's budget: the 403 comes although this connection's own
    share was not reached."""
    ids = _deals(emulator, 3000)
    org = emulator.org
    org.add_fault(
        "query_more",
        status=403,
        code="REQUEST_LIMIT_EXCEEDED",
        message="TotalRequests Limit exceeded.",
        after=2,
    )
    settings = settings_for(emulator, streams=OPPORTUNITIES, page_size=200, bulk_threshold=None)
    syncer = Syncer(session_factory, settings, batch_size=200)

    first = syncer.run()

    assert first.status == "deferred", first.error
    assert first.error is not None
    assert "REQUEST_LIMIT_EXCEEDED" in first.error
    assert [entry.status for entry in org.log][-1] == 403
    partial = len(stored(session_factory, "opportunities"))
    assert partial == 600  # three pages of 200, each committed with its checkpoint

    second = syncer.run()

    assert second.status == "succeeded", second.error
    assert set(stored(session_factory, "opportunities")) == set(ids)
    assert second.streams["opportunities"].read == 3000 - partial


def test_a_spent_budget_defers_the_run_before_anything_is_read(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    _deals(emulator, 10)
    emulator.org.api_limit = 100
    emulator.org.api_used = 95
    syncer = Syncer(session_factory, settings_for(emulator, streams=OPPORTUNITIES))

    outcome = syncer.run()

    assert outcome.status == "deferred"
    assert "query" not in emulator.org.routes()
    assert stored(session_factory, "opportunities") == {}


def test_too_many_concurrent_long_requests_is_retried_not_deferred(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    ids = _deals(emulator, 10)
    emulator.org.add_fault(
        "query",
        on="Opportunity",
        status=403,
        code="REQUEST_LIMIT_EXCEEDED",
        message="ConcurrentPerOrgLongTxn Limit exceeded.",
    )
    syncer = Syncer(session_factory, settings_for(emulator, streams=OPPORTUNITIES))

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    assert outcome.retries == 1
    assert set(stored(session_factory, "opportunities")) == set(ids)


def test_an_org_unreachable_at_the_start_is_retried_like_a_read(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    """The check before the streams tells the truth (``doctor`` relies on it); a sync retries it."""
    ids = _deals(emulator, 10)
    emulator.org.add_fault("limits", status=503, code="SERVER_UNAVAILABLE", message="down", retry_after=3)
    syncer = Syncer(session_factory, settings_for(emulator, streams=OPPORTUNITIES))

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    assert outcome.retries == 1
    assert syncer.sleeps[0] >= 3
    assert [entry.status for entry in emulator.org.log if entry.route == "limits"] == [503, 200]
    assert set(stored(session_factory, "opportunities")) == set(ids)
