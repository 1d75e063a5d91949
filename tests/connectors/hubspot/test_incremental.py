"""Incremental reads through the search API: windows, lag, lookback, checkpoints, concurrent edits."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.connectors.hubspot.emulator import HubSpotEmulator, Portal, Recorded, iso, parse_instant
from tests.connectors.hubspot.support import Harness

MINUTE = 60_000


def deal_searches(emulator: HubSpotEmulator, *, history: bool = False) -> list[dict[str, Any]]:
    """Bodies of the deal searches of the opportunities stream (or of stage_changes)."""
    bodies = [
        r.body for r in emulator.requests if r.method == "POST" and r.path == "/crm/v3/objects/deals/search"
    ]
    wanted = [b for b in bodies if ("dealname" in b["properties"]) != history]
    return [b for b in wanted if _window(b) is not None]


def _window(body: dict[str, Any]) -> dict[str, str] | None:
    filters = body["filterGroups"][0]["filters"]
    ops = {f["operator"]: f["value"] for f in filters if f["propertyName"].endswith("lastmodifieddate")}
    return ops if "GTE" in ops else None


def test_searches_page_from_the_cursor_less_the_lookback_to_now_less_the_index_lag(
    hs: Harness, emulator: HubSpotEmulator, portal: Portal
) -> None:
    before = portal.now()
    hs.ok()
    after = portal.now()  # pacing waits (microseconds here) move the simulated clock a little
    first = deal_searches(emulator)
    assert len(first) == 1  # 29 deals: one page of 200
    body = first[0]
    assert body["limit"] == 200
    assert body["sorts"] == [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}]
    assert body["properties"] == [
        "dealname",
        "amount",
        "deal_currency_code",
        "dealstage",
        "pipeline",
        "closedate",
        "createdate",
        "hubspot_owner_id",
        "hs_lastmodifieddate",
    ]
    (group,) = body["filterGroups"]
    lower, upper = group["filters"]
    assert lower == {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "0"}
    assert (upper["propertyName"], upper["operator"]) == ("hs_lastmodifieddate", "LTE")
    until = int(upper["value"])
    assert before - MINUTE <= until <= after - MINUTE
    checkpoint = hs.checkpoint("opportunities")
    assert checkpoint is not None
    assert parse_instant(checkpoint["since"]) == until + 1

    emulator.requests.clear()
    hs.clock.advance(3600)
    before = portal.now()
    hs.ok()
    (second,) = deal_searches(emulator)
    window = _window(second)
    assert window is not None
    assert int(window["GTE"]) == until + 1 - 5 * MINUTE  # the stored cursor less the 5-minute lookback
    assert before - MINUTE <= int(window["LTE"]) <= portal.now() - MINUTE
    # Contacts are searched on their own modified date, among those that reached the lead stage.
    contacts = [r.body for r in emulator.requests if r.path == "/crm/v3/objects/contacts/search"]
    groups = contacts[0]["filterGroups"]
    assert [f["propertyName"] for f in groups[0]["filters"]] == [
        "lifecyclestage",
        "lastmodifieddate",
        "lastmodifieddate",
    ]
    assert groups[1]["filters"][0] == {"propertyName": "hs_v2_date_entered_lead", "operator": "HAS_PROPERTY"}


def test_a_change_the_search_index_has_not_caught_up_with_is_read_next_time(
    hs: Harness, portal: Portal
) -> None:
    # The lookback alone would also catch this; without it, only the now - lag bound does.
    hs.settings["lookback"] = "PT0S"
    hs.ok()
    portal.index_lag = timedelta(seconds=30)
    portal.update("deals", 9003, {"dealstage": "contractsent"})
    hs.clock.advance(5)
    hs.ok()  # the window ends 60 s ago: before the change, which is not searchable yet anyway
    assert hs.opportunities()["9003"]["stage"] == "presentationscheduled"
    hs.clock.advance(95)
    hs.ok()
    deal = hs.opportunities()["9003"]
    assert (deal["stage"], deal["probability"]) == ("contractsent", 0.9)


def test_the_lookback_catches_a_change_indexed_later_than_the_index_lag(hs: Harness, portal: Portal) -> None:
    hs.ok()
    portal.index_lag = timedelta(seconds=90)  # longer than the connector's 60 s
    portal.update("deals", 9003, {"dealstage": "decisionmakerboughtin"})
    hs.clock.advance(70)
    hs.ok()  # the change is in the window, but not searchable: the cursor passes it
    assert hs.opportunities()["9003"]["stage"] == "presentationscheduled"
    hs.clock.advance(130)
    hs.ok()
    assert hs.opportunities()["9003"]["stage"] == "decisionmakerboughtin"


def test_every_page_is_checkpointed_and_a_retry_resumes_from_the_last_one(
    hs: Harness, emulator: HubSpotEmulator
) -> None:
    hs.settings.update(page_size=5, max_attempts=1)
    pages: list[Recorded] = []
    emulator.on("POST", "/crm/v3/objects/deals/search", pages.append)

    def fail_after_three(item: Recorded) -> None:
        if len(pages) == 3 and item.status == 200:
            emulator.fail("/crm/v3/objects/deals/search", 503)

    emulator.on("POST", "/crm/v3/objects/deals/search", fail_after_three)
    outcome = hs.ok()
    assert outcome.retries == 1  # the engine retried the stream once, from its checkpoint
    assert len(hs.opportunities()) == 29
    searches = deal_searches(emulator)
    third, failed, resumed = searches[2], searches[3], searches[4]
    # The retry starts where the third page left off (the failed fourth page's start, no lookback),
    # not from the beginning.
    start = {
        name: (_window(body) or {})["GTE"]
        for name, body in (("third", third), ("failed", failed), ("resumed", resumed))
    }
    assert start["resumed"] == start["failed"]
    assert int(start["resumed"]) > int(start["third"]) > 0


def test_a_deal_edited_while_pages_are_read_hides_no_other_deal(
    hs: Harness, emulator: HubSpotEmulator, portal: Portal
) -> None:
    hs.settings["page_size"] = 5
    deals = portal.tables["deals"]
    oldest = min((o for o in deals.rows.values() if not o.archived), key=lambda o: o.updated)
    edited: list[int] = []

    def edit_the_first_result(_: Recorded) -> None:
        if not edited:
            # Moves the deal out of the window (its modified date is now): with offset paging,
            # every later result would slide up one place and one would never be seen.
            edited.append(oldest.id)
            portal.update("deals", oldest.id, {"dealname": "Renamed meanwhile"})

    emulator.on("POST", "/crm/v3/objects/deals/search", edit_the_first_result)
    hs.ok()
    assert len(hs.opportunities()) == 29
    hs.clock.advance(120)
    hs.ok()
    assert hs.opportunities()[str(oldest.id)]["name"] == "Renamed meanwhile"


def test_an_edit_updates_the_deal_and_adds_its_stage_change(hs: Harness, portal: Portal) -> None:
    hs.ok()
    closed_at = portal.now()
    portal.update("deals", 9003, {"dealstage": "closedwon", "closedate": iso(closed_at)})
    hs.clock.advance(120)
    outcome = hs.ok()
    assert outcome.streams["opportunities"].updated == 1
    deal = hs.opportunities()["9003"]
    assert (deal["stage"], deal["is_closed"], deal["is_won"], deal["probability"]) == (
        "closedwon",
        True,
        True,
        1.0,
    )
    assert parse_instant(deal["closed_at"].isoformat()) == closed_at
    steps = sorted(
        (c["changed_at"], c["from_stage"], c["to_stage"])
        for c in hs.stage_changes().values()
        if c["opportunity_external_id"] == "9003"
    )
    assert [s[1:] for s in steps] == [
        (None, "qualifiedtobuy"),
        ("qualifiedtobuy", "presentationscheduled"),
        ("presentationscheduled", "closedwon"),
    ]
    assert outcome.streams["stage_changes"].inserted == 1
