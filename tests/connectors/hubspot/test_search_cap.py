"""The 10,000-result cap and records sharing one millisecond: never loop, never skip."""

from __future__ import annotations

import pytest

from tests.connectors.hubspot.emulator import HubSpotEmulator, Portal, Recorded
from tests.connectors.hubspot.support import Harness


def _add_deals(portal: Portal, count: int, *, at: int | None = None, first_id: int = 50_000) -> None:
    base = portal.now() - 86_400_000
    for n in range(count):
        stamp = at if at is not None else base + n * 1000
        portal.create(
            "deals",
            {
                "dealname": f"Bulk {n}",
                "dealstage": "appointmentscheduled",
                "pipeline": "default",
                "amount": "100",
            },
            id=first_id + n,
            created=stamp,
            at=stamp,
        )


def _stop_a_loop(emulator: HubSpotEmulator, *, after: int) -> None:
    """Refuse every search after ``after`` of them: a looping read fails fast instead of hanging."""
    seen: list[Recorded] = []

    def guard(item: Recorded) -> None:
        seen.append(item)
        if len(seen) == after:
            emulator.fail("/crm/v3/objects/deals/search", 400, times=1_000_000)

    emulator.on("POST", "/crm/v3/objects/deals/search", guard)


def _searches(emulator: HubSpotEmulator) -> int:
    return emulator.count("POST", "/crm/v3/objects/deals/search")


def test_a_window_larger_than_the_cap_is_read_whole_without_paging_past_it(
    hs: Harness, emulator: HubSpotEmulator, portal: Portal
) -> None:
    portal.search_cap = 300  # HubSpot's is 10,000: the same rule, a smaller portal
    _add_deals(portal, 700)
    _stop_a_loop(emulator, after=40)
    hs.ok()
    assert len(hs.opportunities()) == 29 + 700
    assert emulator.count("POST", "/crm/v3/objects/deals/search", status=400) == 0
    assert emulator.count("POST", "/crm/v3/objects/deals/search", status=200) == _searches(emulator)
    # Each page re-anchors: 729 deals in pages of 200 are four queries per stream, not a loop.
    assert _searches(emulator) <= 2 * 5
    # The stage history of every changed deal, 50 deals a request at most.
    history = [
        r.body
        for r in emulator.requests
        if r.path == "/crm/v3/objects/deals/batch/read" and r.body.get("propertiesWithHistory")
    ]
    assert {tuple(b["propertiesWithHistory"]) for b in history} == {("dealstage",)}
    assert max(len(b["inputs"]) for b in history) == 50
    assert len({i["id"] for b in history for i in b["inputs"]}) == 729


def test_more_deals_in_one_millisecond_than_a_page_are_read_by_id_keyset(
    hs: Harness, emulator: HubSpotEmulator, portal: Portal
) -> None:
    hs.settings["page_size"] = 50
    stamp = portal.now() - 3_600_000
    _add_deals(portal, 260, at=stamp)
    _stop_a_loop(emulator, after=40)
    hs.ok()
    deals = hs.opportunities()
    assert len(deals) == 29 + 260
    assert all(str(50_000 + n) in deals for n in range(260))
    keyset = [
        r.body
        for r in emulator.requests
        if r.path == "/crm/v3/objects/deals/search"
        and any(f["operator"] == "EQ" for f in r.body["filterGroups"][0]["filters"])
    ]
    # Within the millisecond: EQ on it, GT the last id, sorted by id; 260 in pages of 50, per stream.
    assert len(keyset) == 2 * 6
    assert keyset[0]["sorts"] == [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]
    assert keyset[0]["filterGroups"][0]["filters"] == [
        {"propertyName": "hs_lastmodifieddate", "operator": "EQ", "value": str(stamp)},
        {"propertyName": "hs_object_id", "operator": "GT", "value": "0"},
    ]
    assert keyset[1]["filterGroups"][0]["filters"][1] == {
        "propertyName": "hs_object_id",
        "operator": "GT",
        "value": str(50_049),
    }
    # And the deals after that millisecond still come.
    assert "9008" in deals


@pytest.mark.slow
def test_more_than_ten_thousand_deals_in_one_millisecond(
    hs: Harness, emulator: HubSpotEmulator, portal: Portal
) -> None:
    stamp = portal.now() - 3_600_000
    _add_deals(portal, 10_050, at=stamp)
    hs.settings["history_batch_size"] = 50
    hs.batch_size = 5000
    outcome = hs.ok()
    assert outcome.streams["opportunities"].inserted == 29 + 10_050
    assert emulator.count("POST", "/crm/v3/objects/deals/search", status=400) == 0
    assert len(hs.opportunities()) == 29 + 10_050
