"""Every stream of a small realistic portal, synced through the engine into the store."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import select

from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.models import Owner, Team, TeamMember
from tests.connectors.hubspot.emulator import Portal
from tests.connectors.hubspot.support import Harness


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_owners_teams_and_membership(hs: Harness) -> None:
    hs.ok()
    owners = hs.owners()
    assert {k: (o["name"], o["email"], o["active"], o["team_external_id"]) for k, o in owners.items()} == {
        "101": ("Ana Lopez", "ana.lopez@example.com", True, "7"),
        # Two teams: the one HubSpot marks primary is the membership.
        "102": ("Ben Okafor", "ben.okafor@example.com", True, "8"),
        "103": ("Chen Wu", "chen.wu@example.com", True, "8"),
        # A deactivated user (archived owner) stays, inactive: old deals still point at them.
        "104": ("Dora Ilic", "dora.ilic@example.com", False, "7"),
    }
    assert {k: (t["name"], t["level"]) for k, t in hs.teams().items()} == {
        "7": ("EMEA", "team"),
        "8": ("Americas", "team"),
    }
    with session_scope(hs.session_factory) as session:
        members = session.execute(
            select(Team.external_id, Owner.external_id)
            .join(TeamMember, TeamMember.team_id == Team.id)
            .join(Owner, Owner.id == TeamMember.owner_id)
            .where(Owner.connection_id == "hs")
        ).all()
    assert sorted(members) == [("7", "101"), ("7", "104"), ("8", "102"), ("8", "103")]


def test_pipeline_stages_classify_deals_by_metadata_not_by_label(hs: Harness) -> None:
    hs.ok()
    stages = hs.stages()
    assert len(stages) == 11
    # The enterprise pipeline calls its won stage "Signed": closed at probability 1.0 makes it won.
    signed = stages["enterprise/ent_won"]
    assert (signed["label"], signed["is_closed"], signed["is_won"], signed["probability"]) == (
        "Signed",
        True,
        True,
        1.0,
    )
    lost = stages["enterprise/ent_lost"]
    assert (lost["is_closed"], lost["is_won"], lost["probability"]) == (True, False, 0.0)

    deals = hs.opportunities()
    won = deals["9004"]
    assert (won["stage"], won["pipeline"], won["is_closed"], won["is_won"], won["probability"]) == (
        "ent_won",
        "enterprise",
        True,
        True,
        1.0,
    )
    assert (won["amount"], won["currency"]) == (Decimal("150000"), "EUR")
    assert won["closed_at"] == at("2025-07-03T10:00:00")
    assert won["owner_external_id"] == "102"
    lost_deal = deals["9005"]
    assert (lost_deal["is_closed"], lost_deal["is_won"], lost_deal["probability"]) == (True, False, 0.0)
    # An open deal: probability from its stage (weighted pipeline), the close date a forecast only.
    open_deal = deals["9003"]
    assert (open_deal["is_closed"], open_deal["probability"], open_deal["closed_at"]) == (False, 0.6, None)
    assert open_deal["close_date"] == date(2025, 8, 15)
    assert open_deal["amount"] == Decimal("8500.50")


def test_stage_history_from_properties_with_history(hs: Harness) -> None:
    hs.ok()
    changes = [c for c in hs.stage_changes().values() if c["opportunity_external_id"] == "9001"]
    assert sorted((c["changed_at"], c["from_stage"], c["to_stage"], c["source"]) for c in changes) == [
        (at("2025-06-02T10:00:00"), None, "appointmentscheduled", "crm"),
        (at("2025-06-07T10:00:00"), "appointmentscheduled", "contractsent", "crm"),
        (at("2025-06-12T10:00:00"), "contractsent", "closedwon", "crm"),
    ]
    # Recorded deals with a stage: one step each; the ones without a stage have no history.
    recorded = {c["opportunity_external_id"] for c in hs.stage_changes().values()}
    assert "479475667160" in recorded
    assert "487463597256" not in recorded
    # 8 recorded deals with a stage, and the 17 steps of the portal's own eight deals.
    assert len(hs.stage_changes()) == 8 + 17


def test_contacts_become_leads_when_they_reach_the_lead_stage(hs: Harness) -> None:
    hs.ok()
    leads = hs.leads()
    # A subscriber, and "other" that never entered the lead stage, are not leads.
    assert sorted(leads) == ["502", "503", "504", "505", "506", "507"]
    summary = {
        key: (
            lead["status"],
            lead["is_converted"],
            lead["converted_at"],
            lead["converted_opportunity_external_id"],
        )
        for key, lead in leads.items()
    }
    assert summary == {
        "502": ("lead", False, None, None),
        "503": ("marketingqualifiedlead", False, None, None),
        # Associated with a deal before its lifecycle stage moved: converted when the deal was created.
        "504": ("salesqualifiedlead", True, at("2025-06-16T09:00:00"), "9003"),
        # Converted when it entered the opportunity stage.
        "505": ("opportunity", True, at("2025-06-18T09:00:00"), "9001"),
        "506": ("customer", True, at("2025-06-21T09:00:00"), "9004"),
        "507": ("lead", True, at("2025-07-21T09:00:00"), "9008"),
    }
    lead = leads["505"]
    assert (lead["name"], lead["email"], lead["company"], lead["owner_external_id"], lead["source"]) == (
        "Contact505 Example",
        "contact505@example.org",
        "Sample Inc",
        "102",
        "ORGANIC_SEARCH",
    )
    assert lead["created_at"] == at("2025-06-14T09:00:00")
    # A deal points at its lead (the earliest associated contact).
    assert hs.opportunities()["9001"]["lead_external_id"] == "505"


def test_a_second_sync_and_a_full_refresh_change_nothing(hs: Harness) -> None:
    first = hs.ok()
    assert first.total("inserted") > 0
    again = hs.ok()
    assert (again.total("inserted"), again.total("updated")) == (0, 0)
    refreshed = hs.ok(full=True)
    assert (refreshed.total("inserted"), refreshed.total("updated")) == (0, 0)


def test_custom_properties_become_custom_dimensions(hs: Harness, portal: Portal) -> None:
    hs.settings["deal_properties"] = {"deal_type": "dealtype"}
    hs.ok()
    deals = hs.opportunities()
    assert deals["9001"]["custom"] == {"deal_type": "newbusiness"}
    assert deals["9002"]["custom"] == {"deal_type": "existingbusiness"}
    assert deals["479475667160"]["custom"] == {"deal_type": None}
    assert portal.tables["deals"].rows[9001].props["dealtype"] == "newbusiness"


def test_an_unparseable_amount_is_a_bad_record_and_the_rest_syncs(hs: Harness, portal: Portal) -> None:
    portal.update("deals", 9002, {"amount": "4,000 USD"}, at=portal.now() - 3_600_000)
    outcome = hs.ok()
    assert outcome.streams["opportunities"].skipped == 1
    deals = hs.opportunities()
    assert "9002" not in deals
    assert "9001" in deals


def test_the_lead_and_converted_stages_are_configurable(hs: Harness) -> None:
    hs.settings.update(lead_stage="marketingqualifiedlead", converted_stage="salesqualifiedlead")
    hs.ok()
    leads = hs.leads()
    # 502 and 507 never went past "lead": not leads under these settings.
    assert sorted(leads) == ["503", "504", "505", "506"]
    # 504 entered salesqualifiedlead on its fourth day: converted then, not when its deal came.
    assert (leads["504"]["is_converted"], leads["504"]["converted_at"]) == (True, at("2025-06-14T09:00:00"))
    assert leads["503"]["is_converted"] is False
