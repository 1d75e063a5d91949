"""The demo company's accounts and the reps' activities: deterministic, consistent with the deals,
counted into a real store, and generated in flat memory."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import ConnectionConfig
from crm_perf_sync.connector_sdk import (
    ACTIVITY_TYPES,
    AccountRecord,
    ActivityRecord,
    LeadRecord,
    OpportunityRecord,
)
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.leases import new_holder_id
from crm_perf_sync.models import Account, Activity, Opportunity
from crm_perf_sync.sync import repository as repo
from crm_perf_sync.sync.service import SyncEngine, SyncOptions
from crm_perf_sync_demo import (
    Company,
    DemoSettings,
    generate_accounts,
    generate_activities,
    generate_leads,
    generate_opportunities,
    generate_stage_changes,
)
from crm_perf_sync_demo.company import ACTIVITY_LEAD_IN, to_timestamp
from tests.connectors.demo.helpers import HISTORY_END, SMALL, by_id, make, read

SETTINGS = DemoSettings.model_validate({**SMALL, "opportunities": 2000, "leads": 6000, "accounts": 400})


@pytest.fixture(scope="module")
def records() -> dict[str, list[object]]:
    company = Company(SETTINGS)
    return {
        "accounts": list(generate_accounts(SETTINGS, company=company)),
        "activities": list(generate_activities(SETTINGS, company=company)),
        "opportunities": list(generate_opportunities(SETTINGS, company=company)),
        "leads": list(generate_leads(SETTINGS, company=company)),
    }


def _accounts(records: dict[str, list[object]]) -> dict[str, AccountRecord]:
    return {a.external_id: a for a in records["accounts"] if isinstance(a, AccountRecord)}


def _activities(records: dict[str, list[object]]) -> list[ActivityRecord]:
    return [a for a in records["activities"] if isinstance(a, ActivityRecord)]


def _deals(records: dict[str, list[object]]) -> dict[str, OpportunityRecord]:
    return {o.external_id: o for o in records["opportunities"] if isinstance(o, OpportunityRecord)}


# --- determinism --------------------------------------------------------------------------------


def test_accounts_and_activities_do_not_depend_on_the_process() -> None:
    program = (
        "from crm_perf_sync_demo import DemoSettings, generate_accounts, generate_activities\n"
        "s = DemoSettings(opportunities=80, leads=240, accounts=60)\n"
        "print([(a.external_id, a.owner_external_id, a.industry, a.segment, a.parent_external_id)"
        " for a in generate_accounts(s)])\n"
        "print([(a.external_id, a.type, a.occurred_at.isoformat(), a.owner_external_id,"
        " a.account_external_id, a.opportunity_external_id, a.duration_seconds, a.is_deleted)"
        " for a in generate_activities(s)])\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", program],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    (output,) = outputs
    assert output.count("ACC-") >= 60
    assert output.count("ACT-") > 80


def test_another_seed_gives_other_activities() -> None:
    ours = list(generate_activities(DemoSettings(opportunities=100)))
    theirs = list(generate_activities(DemoSettings(opportunities=100, seed=7)))
    assert [(a.occurred_at, a.type) for a in ours] != [(a.occurred_at, a.type) for a in theirs]


# --- accounts -------------------------------------------------------------------------------------


def test_accounts_are_as_many_as_configured_and_every_deal_and_lead_names_one(
    records: dict[str, list[object]],
) -> None:
    accounts = _accounts(records)
    assert len(accounts) == 400
    assert len(list(generate_accounts(DemoSettings(opportunities=3000)))) == 1000  # a third by default
    assert len(list(generate_accounts(DemoSettings(opportunities=30)))) == 50  # at least 50
    deals = _deals(records)
    assert {d.account_external_id for d in deals.values()} <= set(accounts)
    leads = [lead for lead in records["leads"] if isinstance(lead, LeadRecord)]
    assert {lead.account_external_id for lead in leads} <= set(accounts)
    for lead in leads:
        assert lead.account_external_id is not None
        assert lead.company == accounts[lead.account_external_id].name
    for deal in deals.values():
        assert deal.account_external_id is not None
        assert deal.name == f"{accounts[deal.account_external_id].name} - {deal.product}"


def test_a_converted_lead_works_at_the_account_of_its_deal(records: dict[str, list[object]]) -> None:
    deals = _deals(records)
    converted = [lead for lead in records["leads"] if isinstance(lead, LeadRecord) and lead.is_converted]
    assert len(converted) > 500
    for lead in converted:
        assert lead.converted_opportunity_external_id is not None
        assert deals[lead.converted_opportunity_external_id].account_external_id == lead.account_external_id


def test_accounts_have_owners_industries_segments_and_older_parents(records: dict[str, list[object]]) -> None:
    accounts = _accounts(records)
    for account in accounts.values():
        account.validate()
        assert account.owner_external_id is not None
        assert account.industry
        assert account.segment
        if account.parent_external_id is not None:
            assert account.parent_external_id < account.external_id  # an older account
            assert account.parent_external_id in accounts
    segments = Counter(a.segment for a in accounts.values())
    assert set(segments) == {"Enterprise", "Mid-Market", "SMB"}
    assert segments["SMB"] > segments["Mid-Market"] > segments["Enterprise"] > 20
    assert len({a.industry for a in accounts.values()}) >= 8
    assert 5 <= sum(a.parent_external_id is not None for a in accounts.values()) <= 40
    employees: defaultdict[str | None, list[int]] = defaultdict(list)
    for account in accounts.values():
        count = account.custom["employees"]
        assert isinstance(count, int)
        employees[account.segment].append(count)
    assert max(employees["SMB"]) <= 200 <= min(employees["Mid-Market"])
    assert max(employees["Mid-Market"]) <= 2_000 <= min(employees["Enterprise"])


def test_accounts_of_a_rep_who_leaves_go_to_reps_still_there() -> None:
    settings = DemoSettings.model_validate({**SMALL, "accounts": 300})
    early = by_id(read(make(settings, clock=datetime(2024, 2, 1, tzinfo=UTC)), "accounts").records)
    late = by_id(read(make(settings, clock=HISTORY_END), "accounts").records)
    owners = {o.external_id: o for o in read(make(settings, clock=HISTORY_END), "owners").records}
    gone = {key for key, owner in owners.items() if not getattr(owner, "active", True)}
    assert len(gone) == 2
    moved = [key for key in late if early[key] != late[key]]
    assert moved, "some accounts belonged to the reps who left"
    for key in moved:
        before, after = early[key], late[key]
        assert isinstance(before, AccountRecord)
        assert isinstance(after, AccountRecord)
        assert before.owner_external_id in gone
        assert after.owner_external_id not in gone
        assert before.remote_updated_at is not None
        assert after.remote_updated_at is not None
        assert after.remote_updated_at > before.remote_updated_at
    assert all(getattr(a, "owner_external_id", None) not in gone for a in late.values())


def test_an_incremental_account_read_brings_exactly_the_reassigned_accounts() -> None:
    settings = DemoSettings.model_validate({**SMALL, "accounts": 300, "lookback": 0})
    first = read(make(settings, clock=datetime(2024, 2, 1, tzinfo=UTC)), "accounts")
    assert len(first.records) == 300
    later = read(make(settings, clock=HISTORY_END), "accounts", first.final)
    before, after = by_id(first.records), by_id(read(make(settings, clock=HISTORY_END), "accounts").records)
    assert {getattr(r, "external_id", None) for r in later.records} == {
        key for key in after if after[key] != before[key]
    }
    # Nothing changes between the last departure and the end of the history: nothing comes.
    quiet = read(make(settings, clock=HISTORY_END + timedelta(days=30)), "accounts", later.final)
    assert quiet.records == []


# --- activities -----------------------------------------------------------------------------------


def test_every_activity_validates_and_concerns_what_exists(records: dict[str, list[object]]) -> None:
    accounts, deals = _accounts(records), _deals(records)
    leads = {lead.external_id for lead in records["leads"] if isinstance(lead, LeadRecord)}
    activities = _activities(records)
    assert len({a.external_id for a in activities}) == len(activities)
    for activity in activities:
        activity.validate()
        assert activity.type in ACTIVITY_TYPES
        assert activity.account_external_id in accounts
        assert activity.lead_external_id is None or activity.lead_external_id in leads
        assert activity.occurred_at >= datetime(2024, 1, 1, tzinfo=UTC)
        deal = deals.get(activity.opportunity_external_id or "")
        if activity.opportunity_external_id is not None:
            assert deal is not None
            # On the deal's account, by its rep, while it is open (the proposal on entering Proposal).
            assert activity.account_external_id == deal.account_external_id
            assert activity.owner_external_id == deal.owner_external_id
            assert deal.created_at is not None
            assert deal.created_at <= activity.occurred_at
            if deal.closed_at is not None:
                assert activity.occurred_at <= deal.closed_at


def test_activities_begin_before_the_deal_on_its_lead() -> None:
    settings = DemoSettings.model_validate({**SMALL, "opportunities": 1000, "leads": 3000})
    company = Company(settings)
    lead_in = 0
    for opp in company.opportunities_as_of(to_timestamp(HISTORY_END)):
        for activity in company.activities(opp):
            assert activity.occurred >= opp.created - ACTIVITY_LEAD_IN
            if activity.occurred < opp.created:
                assert activity.opportunity == -1
                assert activity.lead in (-1, opp.lead)
                lead_in += activity.lead >= 0
            else:
                assert activity.lead == -1
    assert lead_in > 100


def test_won_deals_get_more_activities_and_proposals_come_with_the_proposal_stage(
    records: dict[str, list[object]],
) -> None:
    deals = _deals(records)
    per_deal = Counter(a.opportunity_external_id for a in _activities(records) if a.type != "proposal")
    won = [per_deal[k] for k, d in deals.items() if d.is_won]
    lost = [per_deal[k] for k, d in deals.items() if d.is_closed and not d.is_won]
    assert sum(won) / len(won) > 2.5 * sum(lost) / len(lost)
    proposals = {a.opportunity_external_id or "": a for a in _activities(records) if a.type == "proposal"}
    entered = {
        c.opportunity_external_id: c.changed_at
        for c in generate_stage_changes(SETTINGS)
        if c.to_stage == "Proposal"
    }
    assert proposals.keys() <= entered.keys()
    assert len(proposals) >= 0.95 * len(entered)  # reps who left send none
    for key, proposal in proposals.items():
        assert proposal.occurred_at == entered[key]
        assert proposal.subtype == "Proposal sent"


def test_the_mean_number_per_deal_is_the_configured_one(records: dict[str, list[object]]) -> None:
    drawn = sum(1 for a in _activities(records) if a.type != "proposal")
    assert 0.9 * 4.0 <= drawn / 2000 <= 1.05 * 4.0
    few = sum(1 for a in generate_activities(DemoSettings(opportunities=2000, activities_per_deal=1.0)))
    assert 0.9 * 2000 <= few - 0.45 * 2000 <= 1.15 * 2000  # about 0.45 proposals per deal on top
    assert list(generate_activities(DemoSettings(opportunities=100, activities_per_deal=0))) == [
        a
        for a in generate_activities(DemoSettings(opportunities=100, activities_per_deal=0))
        if a.type == "proposal"
    ]


def test_kinds_durations_and_outcomes_are_plausible(records: dict[str, list[object]]) -> None:
    activities = _activities(records)
    kinds = Counter(a.type for a in activities)
    assert set(kinds) == {"call", "email", "meeting", "visit", "task", "proposal"}
    assert kinds["call"] > kinds["meeting"] > kinds["visit"] > kinds["task"]
    for activity in activities:
        if activity.type == "call":
            assert activity.duration_seconds is not None
            assert 60 <= activity.duration_seconds <= 1800
            assert activity.outcome in ("Connected", "Left voicemail", "No answer")
        elif activity.type == "visit":
            assert activity.duration_seconds is not None
            assert 3600 <= activity.duration_seconds <= 10800
        elif activity.type in ("email", "task", "proposal"):
            assert activity.duration_seconds is None
    prospecting = [a for a in activities if a.opportunity_external_id is None and a.lead_external_id is None]
    assert 0.08 * len(activities) < len(prospecting)
    assert sum(a.is_deleted for a in activities) >= 1


def test_nobody_works_after_leaving(records: dict[str, list[object]]) -> None:
    company = Company(SETTINGS)
    left = {rep.external_id: rep.left_at for rep in company.reps}
    for activity in _activities(records):
        assert to_timestamp(activity.occurred_at) < left[activity.owner_external_id or ""]


# --- into the store -------------------------------------------------------------------------------


def _sync(session_factory: sessionmaker[Session], settings: DemoSettings, clock: datetime) -> None:
    engine = SyncEngine(
        session_factory=session_factory,
        connector=make(settings, clock=clock),
        connection_id="demo",
        options=SyncOptions(batch_size=500),
        holder=new_holder_id(),
    )
    outcome = engine.run(trigger="manual", full_refresh=False)
    assert outcome.status == "succeeded", outcome.error


def test_activities_per_type_per_owner_in_the_store_match_a_plain_count(
    session_factory: sessionmaker[Session],
) -> None:
    settings = DemoSettings.model_validate({**SMALL, "increment": "PT1H", "lookback": "PT2H"})
    with session_scope(session_factory) as session:
        repo.sync_connections(
            session, [ConnectionConfig.model_validate({"id": "demo", "kind": "demo"})], utc_now()
        )
    _sync(session_factory, settings, HISTORY_END - timedelta(days=60))
    _sync(session_factory, settings, HISTORY_END)  # incremental: new, and deleted, activities
    end = Company(settings)
    expected: Counter[tuple[str | None, str]] = Counter()
    deleted = set()
    for activity in generate_activities(settings, HISTORY_END, company=end):
        if activity.is_deleted:
            deleted.add(activity.external_id)
        else:
            expected[(activity.owner_external_id, activity.type)] += 1
    deals_per_account = Counter(o.account_external_id for o in generate_opportunities(settings, HISTORY_END))
    with session_scope(session_factory) as session:
        stored = {
            (owner, kind): count
            for owner, kind, count in session.execute(
                select(Activity.owner_external_id, Activity.type, func.count())
                .where(Activity.connection_id == "demo", Activity.is_deleted.is_(False))
                .group_by(Activity.owner_external_id, Activity.type)
            ).all()
        }
        stored_deleted = set(
            session.scalars(
                select(Activity.external_id).where(
                    Activity.connection_id == "demo", Activity.is_deleted.is_(True)
                )
            )
        )
        per_account = dict(
            session.execute(
                select(Account.external_id, func.count(Opportunity.id))
                .join(
                    Opportunity,
                    (Opportunity.account_external_id == Account.external_id)
                    & (Opportunity.connection_id == Account.connection_id),
                )
                .where(Account.connection_id == "demo")
                .group_by(Account.external_id)
            ).all()
        )
    assert stored == dict(expected)
    assert stored_deleted == deleted
    assert per_account == dict(deals_per_account)


# --- memory ---------------------------------------------------------------------------------------


def _peak(function: Callable[[], Iterable[object]]) -> tuple[int, int]:
    tracemalloc.start()
    try:
        count = sum(1 for _ in function())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return count, peak


def test_activities_generate_in_flat_memory() -> None:
    """Four times the activities, in a full read and in an incremental one, take no more memory."""

    def full(opportunities: int) -> tuple[int, int]:
        settings = DemoSettings(opportunities=opportunities, leads=0, accounts=opportunities // 10)
        return _peak(lambda: generate_activities(settings))

    def incremental(days: int) -> tuple[int, int]:
        # The same pace over a longer history: more activities, the same number in flight.
        settings = DemoSettings(opportunities=days * 3, leads=0, history_days=days)
        company = Company(settings)
        as_of = to_timestamp(settings.history_end)
        return _peak(lambda: company.changed_activities(as_of, (company.start, "")))

    # First the one-off tables: names, normal quantiles, and the quarter ends of the history's days
    # (a bounded cache, filled by any large enough company).
    list(generate_activities(DemoSettings(opportunities=10)))
    sum(1 for _ in generate_opportunities(DemoSettings(opportunities=8_000, leads=0)))
    small, small_peak = full(1_000)
    large, large_peak = full(4_000)
    assert large > 3.5 * small > 15_000
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)
    assert large_peak < 1_000_000  # holding the records would take several megabytes
    small, small_peak = incremental(365)
    large, large_peak = incremental(4 * 365)
    assert large > 3.5 * small > 15_000
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)
    assert large_peak < 1_000_000
