"""The recorded HubSpot responses: the emulator replays them, and the connector syncs them."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import urllib3
from sqlalchemy.orm import Session, sessionmaker

from tests.connectors.hubspot.emulator import HubSpotEmulator, SimClock
from tests.connectors.hubspot.portal import fixture, recorded_portal
from tests.connectors.hubspot.support import Harness


def _get(emulator: HubSpotEmulator, path: str) -> Any:
    with urllib3.PoolManager() as http:
        response = http.request(
            "GET", emulator.url + path, headers={"Authorization": f"Bearer {emulator.portal.token}"}
        )
        assert response.status == 200, response.data
        return orjson.loads(response.data)


def test_the_emulator_answers_the_recorded_requests_with_the_recorded_bodies(clock: SimClock) -> None:
    with HubSpotEmulator(recorded_portal(clock.now)) as emulator:
        # The request beside hubspot_v3_deals_list__nango.json, comma-joined properties and all.
        listed = _get(
            emulator,
            "/crm/v3/objects/deals?limit=100&properties="
            "dealname,amount,closedate,dealstage,hubspot_owner_id,description,hs_lastmodifieddate",
        )
        pipelines = _get(emulator, "/crm/v3/pipelines/deals")
    recorded = fixture("v3_deals_list__nango")["results"]
    # HubSpot adds the record's app URL; the client does not read it.
    assert listed["results"] == [{k: v for k, v in item.items() if k != "url"} for item in recorded]
    assert "paging" not in listed  # 21 deals fit in one page of 100
    assert pipelines == fixture("v3_deal_pipelines__nango")


def test_the_recorded_deals_sync_with_the_recorded_pipeline(
    session_factory: sessionmaker[Session], clock: SimClock
) -> None:
    with HubSpotEmulator(recorded_portal(clock.now)) as emulator:
        hs = Harness(session_factory, emulator, clock)
        outcome = hs.ok()
        deals = hs.opportunities()
        stages = hs.stages()

    assert outcome.streams["opportunities"].inserted == 21
    assert len(deals) == 21

    # The recorded pipeline: probabilities and isClosed arrive as strings; closed + 1.0 is won.
    assert {
        key: (s["probability"], s["is_closed"], s["is_won"], s["sort_order"]) for key, s in stages.items()
    } == {
        "default/appointmentscheduled": (0.2, False, False, 0),
        "default/qualifiedtobuy": (0.4, False, False, 1),
        "default/presentationscheduled": (0.6, False, False, 2),
        "default/decisionmakerboughtin": (0.8, False, False, 3),
        "default/contractsent": (0.9, False, False, 4),
        "default/closedwon": (1.0, True, True, 5),
        "default/closedlost": (0.0, True, False, 6),
    }
    assert stages["default/closedwon"]["label"] == "Closed Won"

    # "15000", a close date, the second stage of the pipeline.
    deal = deals["493593663734"]
    assert (deal["name"], deal["amount"], deal["currency"]) == ("Updated Test Deal", Decimal("15000"), "USD")
    assert (deal["stage"], deal["probability"], deal["pipeline"]) == ("qualifiedtobuy", 0.4, "default")
    assert deal["close_date"] == date(2026, 12, 31)
    assert (deal["is_closed"], deal["is_won"], deal["closed_at"]) == (False, False, None)
    assert deal["created_at"] == datetime(2026, 3, 12, 7, 36, 6, 332000, tzinfo=UTC)
    assert deal["remote_updated_at"] == datetime(2026, 3, 12, 7, 36, 23, 415000, tzinfo=UTC)

    # "5000.00" keeps its scale; a deal listed without its pipeline gets it from its stage.
    assert deals["480202228957"]["amount"] == Decimal("5000.00")
    assert deals["481587939522"]["pipeline"] == "default"
    assert deals["481587939522"]["probability"] == 0.2
    # No stage, no amount, no owner: kept, unclassified.
    empty = deals["487463597256"]
    assert (empty["stage"], empty["probability"], empty["amount"], empty["owner_external_id"]) == (
        None,
        None,
        None,
        None,
    )
    assert sum(1 for d in deals.values() if d["stage"] == "appointmentscheduled") == 7
    assert sum(1 for d in deals.values() if d["amount"] is None) == 8
    assert sum(d["amount"] for d in deals.values() if d["amount"] is not None) == Decimal("115500.00")
