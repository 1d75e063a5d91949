"""Pacing, 429s, 5xx, network errors and the daily quota, on a simulated clock (no real waiting)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from crm_perf_sync_hubspot.ratelimit import TokenBucket
from tests.connectors.hubspot.emulator import HubSpotEmulator, Limits, Recorded, parse_instant
from tests.connectors.hubspot.support import Harness

SEARCH = "/crm/v3/objects/deals/search"
HUBSPOT_LIMITS = {"requests_per_interval": 100, "interval": "PT10S", "search_per_second": 5}


def test_a_bucket_paces_requests_evenly_and_refills_with_time() -> None:
    bucket = TokenBucket(5.0)
    assert [bucket.reserve(0.0) for _ in range(4)] == [0.0, 0.2, 0.4, pytest.approx(0.6)]
    assert bucket.reserve(10.0) == 0.0  # refilled, but never more than its capacity of one
    assert bucket.reserve(10.0) == pytest.approx(0.2)
    bucket.limit_to(0, 20.0)  # the server says nothing is left
    assert bucket.reserve(20.0) == pytest.approx(0.2)
    assert bucket.reserve(5.0) == pytest.approx(0.4)  # a clock that went back counts as no time
    bucket.slow_to(1.0)
    assert bucket.reserve(5.0) == pytest.approx(3.0)


def test_the_buckets_keep_a_sync_within_hubspots_limits(hs: Harness, emulator: HubSpotEmulator) -> None:
    emulator.limits = Limits(search_per_second=5, general_per_interval=100, interval=timedelta(seconds=10))
    hs.settings.update(page_size=2, rate_limits=HUBSPOT_LIMITS)
    started = hs.clock.now()
    hs.ok()
    assert emulator.served_429 == 0
    searches = (
        emulator.count("POST", "/crm/v3/objects/", status=200)
        - emulator.count("POST", "/crm/v3/objects/deals/batch")
        - emulator.count("POST", "/crm/v3/objects/contacts/batch")
    )
    assert searches > 20
    # Five searches a second at most: the simulated clock moved at least that long.
    assert (hs.clock.now() - started).total_seconds() >= (searches - 1) / 5
    assert len(hs.opportunities()) == 29

    # The same sync unpaced runs into the limits (and gets through them by backing off).
    emulator.requests.clear()
    hs.clock.advance(3600)
    hs.ok(
        full=True,
        rate_limits={"requests_per_interval": 10_000, "interval": "PT1S", "search_per_second": 10_000},
    )
    assert emulator.served_429 > 0


def test_the_server_announcing_a_lower_limit_slows_the_connection_down(
    hs: Harness, emulator: HubSpotEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.limits = Limits(general_per_interval=20, interval=timedelta(seconds=10))
    hs.settings.update(page_size=2, rate_limits=HUBSPOT_LIMITS)  # configured for 100 per 10 s
    hs.ok()
    assert emulator.served_429 == 0
    assert "HubSpot allows this app 20 requests per 10s" in caplog.text


def test_a_429_waits_as_long_as_retry_after_says(hs: Harness, emulator: HubSpotEmulator) -> None:
    emulator.fail(SEARCH, 429, times=3, retry_after=7, policy="SECONDLY")
    outcome = hs.ok()
    assert outcome.retries == 0  # retried inside the connector, not by restarting the stream
    assert [s for s in hs.clock.slept if s >= 1] == [7.0, 7.0, 7.0]
    assert emulator.count("POST", SEARCH, status=429) == 3
    assert len(hs.opportunities()) == 29


def test_a_429_without_retry_after_backs_off_exponentially_with_jitter(
    hs: Harness, emulator: HubSpotEmulator
) -> None:
    emulator.fail(SEARCH, 429, times=4, policy="TEN_SECONDLY_ROLLING")
    hs.ok()
    waits = [s for s in hs.clock.slept if s >= 0.1]
    assert len(waits) == 4
    # backoff 1 s, doubling; half of each step kept, half random
    for wait, step in zip(waits, (1.0, 2.0, 4.0, 8.0), strict=True):
        assert step / 2 <= wait <= step
    assert len(set(waits)) == 4


def test_post_search_is_retried_on_5xx_and_dropped_connections(
    hs: Harness, emulator: HubSpotEmulator
) -> None:
    emulator.fail(SEARCH, 502, times=2)
    emulator.fail(SEARCH, 0, drop=True)
    emulator.fail("/crm/v4/associations/", 503)
    outcome = hs.ok()
    assert outcome.retries == 0
    assert emulator.count("POST", SEARCH, status=502) == 2
    assert emulator.count("POST", SEARCH, status=0) == 1
    assert emulator.count("POST", "/crm/v4/associations/", status=503) == 1
    assert len(hs.opportunities()) == 29
    assert hs.opportunities()["9001"]["lead_external_id"] == "505"


def test_after_max_attempts_the_engine_resumes_from_the_last_checkpoint(
    hs: Harness, emulator: HubSpotEmulator
) -> None:
    hs.settings["max_attempts"] = 3
    emulator.fail(SEARCH, 503, times=7)
    outcome = hs.ok()
    # Three reads of the stream failed after three attempts each; the fourth got through.
    assert outcome.retries == 2
    assert len(hs.opportunities()) == 29


def test_the_daily_limit_ends_the_run_as_deferred_and_the_next_run_resumes(
    hs: Harness, emulator: HubSpotEmulator
) -> None:
    hs.settings["page_size"] = 5
    pages: list[Recorded] = []

    def spend_the_day(item: Recorded) -> None:
        pages.append(item)
        if len(pages) == 2:
            emulator.fail(SEARCH, 429, policy="DAILY")

    emulator.on("POST", SEARCH, spend_the_day)
    outcome = hs.sync()
    assert (outcome.status, outcome.error_kind) == ("deferred", "deferred")
    assert "daily" in (outcome.error or "")
    saved = hs.checkpoint("opportunities")
    assert saved is not None
    assert saved["open"] is True
    # The two pages read before the limit are kept (the second re-anchored on the first's last deal).
    assert len(hs.opportunities()) == 9
    assert hs.last_run()["status"] == "deferred"

    emulator.requests.clear()
    hs.clock.advance(12 * 3600)
    hs.ok()
    first = next(r.body for r in emulator.requests if r.path == SEARCH and "dealname" in r.body["properties"])
    # Resumed where the deferred run stopped, not from the beginning and not a lookback earlier.
    assert first["filterGroups"][0]["filters"][0] == {
        "propertyName": "hs_lastmodifieddate",
        "operator": "GTE",
        "value": str(parse_instant(saved["since"])),
    }
    assert len(hs.opportunities()) == 29


def test_a_spent_daily_allowance_stops_the_run_before_the_next_request(
    hs: Harness, emulator: HubSpotEmulator
) -> None:
    # The check (a request per scope: five), both owner lists, the pipelines, the companies'
    # search and recycle bin, the contacts' search: the twelfth request, the first page's
    # associations, spends the allowance.
    emulator.limits = Limits(daily=12)
    outcome = hs.sync()
    assert outcome.status == "deferred"
    # The headers said nothing was left: the connector never sent the request HubSpot would refuse.
    assert emulator.served_429 == 0
    assert [r.status for r in emulator.requests] == [200] * 11 + [207]
    assert emulator.requests[-1].path == "/crm/v4/associations/contacts/deals/batch/read"
