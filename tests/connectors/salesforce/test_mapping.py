"""Salesforce rows as canonical records, checked in the store after a sync."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.models import Owner, Team, TeamMember
from tests.connectors.salesforce.emulator import SalesforceEmulator
from tests.connectors.salesforce.seed import minimal_org, opportunity_values, seed_org
from tests.connectors.salesforce.support import Syncer, live, settings_for, stored


def test_reps_roles_and_team_membership(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    made = seed_org(emulator.org, opportunities=2, leads=0, reps=4)
    syncer = Syncer(session_factory, settings_for(emulator, streams=["teams", "owners"]))

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    vp, emea, amer = made.roles
    with session_scope(session_factory) as session:
        teams = {
            team.external_id: team for team in session.scalars(select(Team).where(Team.namespace == "sfdc"))
        }
        parent_of = {key: team.parent_external_id for key, team in teams.items()}
        names = {key: team.name for key, team in teams.items()}
        members = session.execute(
            select(Owner.external_id, Team.external_id)
            .join(TeamMember, TeamMember.owner_id == Owner.id)
            .join(Team, Team.id == TeamMember.team_id)
        ).all()
    assert parent_of == {vp: None, emea: vp, amer: vp}
    assert names == {vp: "VP Sales", emea: "EMEA Sales", amer: "AMER Sales"}
    admin = emulator.org.users["admin@example.com"].user_id  # the integration user, in the VP's role
    expected = [(rep, emea if n % 2 == 0 else amer) for n, rep in enumerate(made.users)] + [(admin, vp)]
    assert sorted(members) == sorted(expected)
    owners = stored(session_factory, "owners")
    first, left = owners[made.users[0]], owners[made.users[4]]
    assert (first.name, first.email, first.active) == ("Ana Rep1", "ana.rep1@example.com", True)
    assert left.active is False  # the rep who left still owns deals


def test_reps_without_role_teams(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    made = seed_org(emulator.org, opportunities=2, leads=0)
    syncer = Syncer(
        session_factory, settings_for(emulator, streams=["teams", "owners"], teams_from_roles=False)
    )

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    assert list(outcome.streams) == ["owners"]
    assert stored(session_factory, "owners")[made.users[0]].team_external_id is None


def test_leads_and_their_conversion(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    org = emulator.org
    org.table("Lead").add_field("Segment__c", "picklist")
    made = seed_org(org, opportunities=5, leads=9)
    table = org.table("Lead")
    converted_id = made.leads[3]
    table.update(converted_id, {"Segment__c": "SMB"}, at=table.rows[converted_id]["SystemModstamp"])
    syncer = Syncer(
        session_factory,
        settings_for(emulator, streams=["leads"], custom_fields={"leads": {"segment": "segment__c"}}),
    )

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    leads = stored(session_factory, "leads")
    assert set(leads) == set(made.leads)
    lead, row = leads[converted_id], table.rows[converted_id]
    assert lead.is_converted
    assert lead.converted_opportunity_external_id == made.opportunities[1]
    # ConvertedDate is a day in the org's zone (America/Los_Angeles).
    day: date = row["ConvertedDate"]
    assert lead.converted_at == datetime.combine(day, time(0), tzinfo=ZoneInfo("America/Los_Angeles"))
    assert (lead.source, lead.status, lead.company) == (
        row["LeadSource"],
        "Closed - Converted",
        row["Company"],
    )
    assert lead.custom == {"segment": "SMB"}
    assert leads[made.leads[1]].custom == {"segment": None}
    assert not leads[made.leads[1]].is_converted


def test_a_misnamed_custom_field_is_a_config_error(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    seed_org(emulator.org, opportunities=2, leads=0)
    custom = {"opportunities": {"segment": "Segmnt__c"}}
    syncer = Syncer(session_factory, settings_for(emulator, streams=["opportunities"], custom_fields=custom))

    outcome = syncer.run()

    assert (outcome.status, outcome.error_kind) == ("failed", "config")
    assert outcome.error is not None
    assert (
        "custom_fields.opportunities.segment: the Opportunity object has no field Segmnt__c" in outcome.error
    )


def test_deals_keep_their_own_probability_and_exact_amounts(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    org = emulator.org
    minimal_org(org)
    at = (org.now() - timedelta(hours=1)).replace(microsecond=0)
    table = org.table("Opportunity")
    big = table.insert(
        opportunity_values("Proposal/Price Quote", Name="Big", Amount=1234567890123.45, Probability=35.0),
        at=at,
    )
    lost = table.insert(opportunity_values("Closed Lost", Name="Lost", CloseDate=date(2026, 7, 1)), at=at)
    syncer = Syncer(
        session_factory, settings_for(emulator, streams=["pipeline_stages", "opportunities"], currency="CHF")
    )

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    deals = stored(session_factory, "opportunities")
    assert deals[big["Id"]].amount == Decimal("1234567890123.45")  # no binary float on the way
    assert (deals[big["Id"]].probability, deals[big["Id"]].currency) == (0.35, "CHF")
    assert (deals[lost["Id"]].is_closed, deals[lost["Id"]].is_won, deals[lost["Id"]].amount) == (
        True,
        False,
        None,
    )
    # July: Los Angeles is at UTC-7.
    assert deals[lost["Id"]].closed_at == datetime(2026, 7, 1, 7, 0, tzinfo=UTC)
    assert deals[big["Id"]].pipeline == "sales"


def test_the_stage_table_and_a_removed_stage(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    minimal_org(emulator.org)
    syncer = Syncer(session_factory, settings_for(emulator, streams=["pipeline_stages"]))
    assert syncer.run().status == "succeeded"
    stages = stored(session_factory, "pipeline_stages")
    assert len(stages) == 10
    won = stages["sales/Closed Won"]
    assert (won.sort_order, won.probability, won.is_closed, won.is_won) == (9, 1.0, True, True)
    assert (stages["sales/Value Proposition"].probability, stages["sales/Value Proposition"].is_closed) == (
        0.5,
        False,
    )
    stage_table = emulator.org.table("OpportunityStage")
    (removed,) = [key for key, row in stage_table.rows.items() if row["MasterLabel"] == "Perception Analysis"]
    stage_table.hard_delete(removed)

    assert syncer.run().status == "succeeded"

    assert "sales/Perception Analysis" not in live(session_factory, "pipeline_stages")
    assert len(live(session_factory, "pipeline_stages")) == 9
