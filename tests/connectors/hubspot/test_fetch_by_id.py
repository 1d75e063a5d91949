"""A targeted sync of what a push announced: the records fetched by id, written as a read's are.

After a full sync, the portal changes (a deal is won with a new amount, another deleted, a
contact becomes a lead, a new deal appears); a sync that fetches only those ids leaves the store
exactly as a complete re-read would, moves no cursor, and touches no other record.
"""

from __future__ import annotations

from typing import Any

from crm_perf_sync.leases import new_holder_id
from crm_perf_sync.models import SyncCheckpoint
from crm_perf_sync.sync.service import SyncEngine, SyncOptions
from tests.connectors.hubspot.emulator import HubSpotEmulator, SimClock
from tests.connectors.hubspot.support import Harness

#: Columns a re-write sets anew whatever the record says (when it was written).
VOLATILE = ("id", "synced_at", "first_synced_at", "content_hash", "updated_at", "created_in_store_at")


def stable(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {key: {k: v for k, v in row.items() if k not in VOLATILE} for key, row in rows.items()}


def targeted(hs: Harness, targets: dict[str, list[str]]) -> Any:
    engine = SyncEngine(
        session_factory=hs.session_factory,
        connector=hs.connector(),
        connection_id=hs.connection_id,
        options=SyncOptions(batch_size=hs.batch_size, retry_base_seconds=0.01),
        holder=new_holder_id(),
        sleep=hs.clock.sleep,
    )
    return engine.run(trigger="push", full_refresh=False, targets=targets)


def checkpoints(hs: Harness) -> dict[str, Any]:
    with hs.session_factory() as session:
        return {row.stream: dict(row.state) for row in session.query(SyncCheckpoint).all()}


def test_fetching_the_pushed_ids_equals_a_complete_reread(
    hs: Harness, emulator: HubSpotEmulator, clock: SimClock
) -> None:
    hs.ok()
    portal = emulator.portal
    before_opps, before_leads = hs.opportunities(), hs.leads()
    before_cursors = checkpoints(hs)
    assert {"9003", "9002"} <= set(before_opps)

    clock.advance(seconds=3600)
    portal.update("deals", 9003, {"dealstage": "closedwon", "amount": "9100.00"})
    portal.archive("deals", 9002)
    new = portal.create("deals", {"dealname": "Pushed deal", "dealstage": "qualifiedtobuy", "amount": "777"})
    subscriber = next(
        key
        for key, obj in portal.tables["contacts"].rows.items()
        if not obj.archived and str(key) not in before_leads
    )
    portal.update("contacts", subscriber, {"lifecyclestage": "lead"})

    deals = ["9003", "9002", str(new.id)]
    outcome = targeted(hs, {"opportunities": deals, "stage_changes": deals, "leads": [str(subscriber)]})
    assert outcome.status == "succeeded", outcome.summary()
    assert outcome.streams["opportunities"].updated == 1
    assert outcome.streams["opportunities"].inserted == 1
    assert outcome.streams["opportunities"].deleted == 1
    assert outcome.streams["leads"].inserted == 1
    assert checkpoints(hs) == before_cursors  # no cursor moved
    assert hs.last_run()["trigger"] == "push"

    after_opps = hs.opportunities()
    assert after_opps["9003"]["amount"] == 9100.0
    assert after_opps["9003"]["is_won"] is True
    assert after_opps["9002"]["is_deleted"] is True
    assert str(new.id) in after_opps
    untouched = set(before_opps) - {"9003", "9002"}
    assert {k: after_opps[k]["synced_at"] for k in untouched} == {
        k: before_opps[k]["synced_at"] for k in untouched
    }
    pushed = (hs.opportunities(), hs.leads(), hs.stage_changes())

    # A complete re-read of the same portal finds nothing more to write, and the same records.
    clock.advance(seconds=120)
    reread = hs.ok(full=True)
    assert sum(s.inserted + s.updated + s.deleted for s in reread.streams.values()) == 0, reread.summary()
    assert stable(hs.opportunities()) == stable(pushed[0])
    assert stable(hs.leads()) == stable(pushed[1])
    assert stable(hs.stage_changes()) == stable(pushed[2])


def test_a_fetch_of_ids_the_portal_never_had_deletes_nothing_and_writes_nothing(hs: Harness) -> None:
    hs.ok()
    before = hs.opportunities()
    outcome = targeted(hs, {"opportunities": ["424242", "not-a-number"]})
    assert outcome.status == "succeeded", outcome.summary()
    assert hs.opportunities() == before


def test_a_batch_read_holds_what_the_clients_own_models_hold(hs: Harness, emulator: HubSpotEmulator) -> None:
    """The objects of a batch read are read from its JSON, not by the client's models (whose
    dateutil timestamps cost a push's fetch most of its time): the same ids, properties,
    history and instants as the models give for the same request."""
    api = hs.connector().api
    deals = emulator.portal.tables["deals"].rows
    ids = sorted(str(key) for key, obj in deals.items() if not obj.archived)[:20]
    assert len(ids) == 20
    properties = ["dealname", "amount", "dealstage", "closedate", "hs_lastmodifieddate"]
    fetched = api.batch_read("deals", ids, properties=properties, with_history=["dealstage"])
    body = {"inputs": [{"id": i} for i in ids], "properties": properties}
    body["propertiesWithHistory"] = ["dealstage"]
    models = api._batch["deals"].read(batch_read_input_simple_public_object_id=body, archived=False).results

    def stamped(entries: Any) -> list[tuple[Any, Any]]:
        return [(e.value, e.timestamp) for e in entries or []]

    def by_id(objects: list[Any]) -> list[Any]:
        return sorted(objects, key=lambda o: str(o.id))

    assert len(fetched) == len(models) == 20
    for ours, theirs in zip(by_id(fetched), by_id(models), strict=True):
        assert (ours.id, ours.properties, ours.archived) == (theirs.id, theirs.properties, theirs.archived)
        assert (ours.created_at, ours.updated_at) == (theirs.created_at, theirs.updated_at)
        assert ours.created_at is not None
        assert ours.created_at.utcoffset() is not None
        history = (ours.properties_with_history or {})["dealstage"]
        assert stamped(history) == stamped(theirs.properties_with_history["dealstage"])
    entries = [e for o in fetched for e in (o.properties_with_history or {})["dealstage"]]
    assert len(entries) >= 5  # the comparison covered histories
    assert all(e.timestamp is not None and e.timestamp.utcoffset() is not None for e in entries)
