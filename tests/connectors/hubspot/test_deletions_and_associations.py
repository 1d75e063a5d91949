"""Deletions (search never returns archived records) and associations (they never bump a date)."""

from __future__ import annotations

from datetime import UTC, datetime

from crm_perf_sync.connector_sdk import Tombstone
from tests.connectors.hubspot.emulator import HubSpotEmulator, Portal
from tests.connectors.hubspot.support import Harness, read

HOUR = 3600


def test_archived_deals_and_contacts_become_deleted(hs: Harness, portal: Portal) -> None:
    hs.ok()
    assert hs.opportunities()["9002"]["is_deleted"] is False
    archived_at = portal.now()
    portal.archive("deals", 9002)
    portal.archive("contacts", 505)
    hs.clock.advance(HOUR)
    outcome = hs.ok()
    assert outcome.streams["opportunities"].deleted == 1
    assert outcome.streams["leads"].deleted == 1
    deal = hs.opportunities()["9002"]
    assert deal["is_deleted"] is True
    assert deal["deleted_at"] == datetime.fromtimestamp(archived_at / 1000, tz=UTC)
    assert hs.leads()["505"]["is_deleted"] is True
    assert hs.opportunities()["9001"]["is_deleted"] is False


def test_only_records_archived_since_the_last_poll_are_reported_again(hs: Harness, portal: Portal) -> None:
    hs.ok()
    first = hs.checkpoint("opportunities")
    assert first is not None
    conn = hs.connector()
    # The portal's recycle bin holds 9099 (archived long ago): the first poll reported it, the
    # next ones do not, so a run does not rewrite every deletion of the last 90 days.
    assert [m.external_id for m in read(conn, "opportunities") if isinstance(m, Tombstone)] == ["9099"]
    assert [m for m in read(conn, "opportunities", first) if isinstance(m, Tombstone)] == []
    portal.archive("deals", 9003)
    assert [m.external_id for m in read(conn, "opportunities", first) if isinstance(m, Tombstone)] == ["9003"]
    conn.close()


def test_associations_of_open_deals_are_reread_periodically(
    hs: Harness, emulator: HubSpotEmulator, portal: Portal
) -> None:
    hs.ok()
    assert hs.opportunities()["9003"]["lead_external_id"] == "504"
    assert hs.leads()["503"]["is_converted"] is False
    # Contact 503 joins open deal 9003, and 502 joins closed deal 9002: no modified date moves.
    portal.associate("deals", 9003, "contacts", 503)
    portal.associate("deals", 9002, "contacts", 502)

    hs.clock.advance(HOUR)
    hs.ok()
    assert hs.opportunities()["9003"]["lead_external_id"] == "504"  # not due yet (every 24 h)

    emulator.requests.clear()
    hs.clock.advance(24 * HOUR)
    outcome = hs.ok()
    deal = hs.opportunities()["9003"]
    assert deal["lead_external_id"] == "503"  # the earliest associated contact
    assert deal["raw"]["contacts"] == ["503", "504"]
    lead = hs.leads()["503"]
    assert (lead["is_converted"], lead["converted_opportunity_external_id"]) == (True, "9003")
    # The refresh re-reads open deals only (closed ones are done), by id.
    refresh = [
        r.body
        for r in emulator.requests
        if r.path == "/crm/v3/objects/deals/search"
        and r.body["filterGroups"][0]["filters"][0]["propertyName"] == "dealstage"
    ]
    assert refresh[0]["filterGroups"][0]["filters"][0]["operator"] == "IN"
    assert "closedwon" not in refresh[0]["filterGroups"][0]["filters"][0]["values"]
    # A closed deal is not re-read (its lead is settled); the unconverted lead it now has is.
    assert hs.opportunities()["9002"]["lead_external_id"] is None
    assert hs.leads()["502"]["converted_opportunity_external_id"] == "9002"
    # Only what changed is rewritten: 9003 among the open deals, 502 and 503 among the leads.
    assert outcome.streams["opportunities"].updated == 1
    assert outcome.streams["leads"].updated == 2


def test_association_refresh_every_run_when_configured_so(hs: Harness, portal: Portal) -> None:
    hs.settings["association_refresh"] = "PT0S"
    hs.ok()
    portal.associate("deals", 9006, "contacts", 502)
    hs.clock.advance(60)
    hs.ok()
    assert hs.opportunities()["9006"]["lead_external_id"] == "502"
    assert hs.leads()["502"]["converted_opportunity_external_id"] == "9006"


def test_archiving_most_deals_deletes_nothing_until_confirmed(hs: Harness, portal: Portal) -> None:
    """A bulk archive in HubSpot (by mistake, or an app's cleanup run wild) reaches the store as a
    sweep of tombstones: above the mass-deletion limit none is applied until confirmed."""
    hs.ok()
    deals = {key for key, row in hs.opportunities().items() if not row["is_deleted"]}
    assert len(deals) == 29
    keep = sorted(deals)[:4]
    for key in sorted(deals)[4:]:
        portal.archive("deals", int(key))
    hs.clock.advance(HOUR)

    refused = hs.sync()

    assert (refused.status, refused.error_kind) == ("failed", "mass_delete")
    assert refused.error is not None
    assert "opportunities: this sync would soft-delete 25 of the 29 live opportunities (86%)" in refused.error
    assert refused.streams["leads"].status == "succeeded"
    assert {key for key, row in hs.opportunities().items() if not row["is_deleted"]} == deals

    confirmed = hs.sync(allow_mass_delete=True)

    assert confirmed.status == "succeeded", confirmed.error
    assert confirmed.streams["opportunities"].deleted == 25
    assert {key for key, row in hs.opportunities().items() if not row["is_deleted"]} == set(keep)
