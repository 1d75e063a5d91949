"""The synthetic company: deterministic, valid, internally consistent, realistically dirty."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from statistics import median

import pytest

from crm_perf_sync.connector_sdk import (
    LeadRecord,
    OpportunityRecord,
    OwnerRecord,
    PipelineStageRecord,
    Record,
    StageChangeRecord,
    TeamRecord,
)
from crm_perf_sync_demo import (
    Company,
    DemoSettings,
    generate_leads,
    generate_opportunities,
    generate_stage_changes,
)
from crm_perf_sync_demo.company import OPPORTUNITY_LIFETIME, STAGES
from tests.connectors.demo.helpers import HISTORY_END, SMALL, by_id, make, read

STREAMS = ("teams", "owners", "pipeline_stages", "leads", "opportunities", "stage_changes")
PINNED = {**SMALL, "as_of": HISTORY_END}


def read_everything(settings: dict[str, object]) -> dict[str, list[Record]]:
    connector = make(settings)
    return {stream: read(connector, stream).records for stream in STREAMS}


@pytest.fixture(scope="module")
def company() -> dict[str, list[Record]]:
    """The default-sized company (5,000 deals, 15,000 leads) at the end of its history."""
    return read_everything({"as_of": HISTORY_END})


def opportunities(company: dict[str, list[Record]]) -> list[OpportunityRecord]:
    return [r for r in company["opportunities"] if isinstance(r, OpportunityRecord)]


def leads(company: dict[str, list[Record]]) -> list[LeadRecord]:
    return [r for r in company["leads"] if isinstance(r, LeadRecord)]


def stage_changes(company: dict[str, list[Record]]) -> list[StageChangeRecord]:
    return [r for r in company["stage_changes"] if isinstance(r, StageChangeRecord)]


def test_same_seed_gives_identical_records() -> None:
    first = read_everything(PINNED)
    second = read_everything(PINNED)
    assert first == second
    assert len(first["opportunities"]) == 600


def test_records_do_not_depend_on_the_process() -> None:
    """No salted ``hash()`` anywhere: a fresh interpreter (another hash seed) agrees."""
    script = (
        "from datetime import UTC, datetime\n"
        "from crm_perf_sync_demo import DemoSettings, generate_opportunities\n"
        "s = DemoSettings(opportunities=50, leads=150)\n"
        "print([(o.external_id, o.owner_external_id, str(o.amount), o.stage, o.account_external_id)"
        " for o in generate_opportunities(s)])\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    expected = [
        (o.external_id, o.owner_external_id, str(o.amount), o.stage, o.account_external_id)
        for o in generate_opportunities(DemoSettings(opportunities=50, leads=150))
    ]
    assert outputs == {f"{expected}\n"}


def test_another_seed_gives_another_company() -> None:
    ours = by_id(read(make(PINNED), "opportunities").records)
    theirs = by_id(read(make({**PINNED, "seed": 7}), "opportunities").records)
    assert ours.keys() == theirs.keys()  # same size, so the same ids
    differing = [key for key in ours if ours[key] != theirs[key]]
    assert len(differing) == len(ours)
    amounts = {o.amount for o in ours.values() if isinstance(o, OpportunityRecord)}
    other_amounts = {o.amount for o in theirs.values() if isinstance(o, OpportunityRecord)}
    assert len(amounts & other_amounts) < len(amounts) // 4


def test_every_record_validates_and_has_the_stream_type(company: dict[str, list[Record]]) -> None:
    expected_type = {
        "teams": TeamRecord,
        "owners": OwnerRecord,
        "pipeline_stages": PipelineStageRecord,
        "leads": LeadRecord,
        "opportunities": OpportunityRecord,
        "stage_changes": StageChangeRecord,
    }
    for stream, records in company.items():
        assert records, stream
        for record in records:
            assert type(record) is expected_type[stream]
            record.validate()


def test_sizes_are_as_configured(company: dict[str, list[Record]]) -> None:
    assert len(company["opportunities"]) == 5000
    assert len(company["leads"]) == 15000
    assert len(company["owners"]) == 24
    assert len(company["pipeline_stages"]) == 7
    teams = [t for t in company["teams"] if isinstance(t, TeamRecord)]
    assert Counter(t.level for t in teams) == {"region": 3, "team": 6}
    regions = {t.external_id for t in teams if t.level == "region"}
    assert all(t.parent_external_id in regions for t in teams if t.level == "team")
    assert len({r.external_id for r in company["stage_changes"]}) == len(company["stage_changes"])


def test_custom_sizes_and_team_tree() -> None:
    connector = make(
        {
            "opportunities": 120,
            "leads": 40,
            "reps": 10,
            "regions": 2,
            "teams_per_region": 4,
            "as_of": HISTORY_END,
        }
    )
    assert len(read(connector, "opportunities").records) == 120
    assert sum(1 for _ in generate_opportunities(connector.settings)) == 120
    assert sum(1 for _ in generate_leads(connector.settings)) == 40
    owners = [o for o in read(connector, "owners").records if isinstance(o, OwnerRecord)]
    teams = {t.external_id for t in read(connector, "teams").records if isinstance(t, TeamRecord)}
    assert len(owners) == 10
    assert len(teams) == 2 + 2 * 4
    assert {o.team_external_id for o in owners} <= teams
    assert len({o.team_external_id for o in owners}) == 8  # round-robin reaches every team


def test_opportunities_are_consistent_with_their_stage(company: dict[str, list[Record]]) -> None:
    stages = {stage.name: stage for stage in STAGES}
    for opp in opportunities(company):
        stage = stages[opp.stage or ""]
        assert opp.probability == stage.probability
        assert opp.is_closed == stage.is_closed
        assert opp.is_won == stage.is_won
        assert not opp.is_won or opp.is_closed
        assert opp.created_at is not None
        assert opp.remote_updated_at is not None
        assert opp.created_at <= opp.remote_updated_at <= HISTORY_END
        if opp.is_closed:
            assert opp.closed_at is not None
            assert opp.created_at < opp.closed_at <= opp.remote_updated_at
            assert opp.close_date == opp.closed_at.date()
        else:
            assert opp.closed_at is None
            assert opp.close_date is not None
        if opp.amount is not None:
            assert opp.amount > 0
            assert opp.amount.as_tuple().exponent == -2
        assert opp.currency in {"USD", "EUR"}
        assert opp.type in {"New Business", "Existing Business"}
        assert opp.pipeline == "Sales"
        assert opp.owner_external_id is not None
        assert opp.owner_external_id.startswith("REP-")


def test_stage_history_walks_to_the_current_stage(company: dict[str, list[Record]]) -> None:
    history: dict[str, list[StageChangeRecord]] = {}
    for change in stage_changes(company):
        history.setdefault(change.opportunity_external_id, []).append(change)
    opps = {o.external_id: o for o in opportunities(company)}
    assert history.keys() == opps.keys()
    for key, opp in opps.items():
        steps = sorted(history[key], key=lambda change: change.changed_at)
        assert [change.external_id for change in steps] == [f"{key}-{n}" for n in range(len(steps))]
        assert steps[0].from_stage is None
        assert steps[0].to_stage == "Prospecting"
        assert steps[0].changed_at == opp.created_at
        for before, after in itertools.pairwise(steps):
            assert before.changed_at < after.changed_at
            assert after.from_stage == before.to_stage
        assert steps[-1].to_stage == opp.stage
        assert opp.remote_updated_at is not None
        assert steps[-1].changed_at <= opp.remote_updated_at
        if opp.is_won:  # a won deal walked the whole pipeline
            assert [s.to_stage for s in steps] == [stage.name for stage in STAGES[:6]]


def test_converted_leads_and_their_opportunities_point_at_each_other(
    company: dict[str, list[Record]],
) -> None:
    opps = {o.external_id: o for o in opportunities(company)}
    all_leads = {lead.external_id: lead for lead in leads(company)}
    converted = [lead for lead in all_leads.values() if lead.is_converted]
    assert 0.1 < len(converted) / len(all_leads) < 0.3
    for lead in converted:
        assert lead.status == "Converted"
        assert lead.converted_opportunity_external_id in opps
        opp = opps[lead.converted_opportunity_external_id]
        assert opp.lead_external_id == lead.external_id
        assert opp.created_at == lead.converted_at
        assert lead.created_at is not None
        assert lead.converted_at is not None
        assert lead.created_at < lead.converted_at
        assert opp.lead_source == lead.source
        assert opp.type == "New Business"
    from_leads = [o for o in opps.values() if o.lead_external_id is not None]
    assert {o.lead_external_id for o in from_leads} == {lead.external_id for lead in converted}
    for lead in all_leads.values():
        if not lead.is_converted:
            assert lead.converted_at is None
            assert lead.converted_opportunity_external_id is None


def test_win_rate_cycle_and_seasonality_are_plausible(company: dict[str, list[Record]]) -> None:
    closed = [o for o in opportunities(company) if o.is_closed]
    won = [o for o in closed if o.is_won]
    assert 0.25 <= len(won) / len(closed) <= 0.35

    per_rep: dict[str, list[bool]] = {}
    for opp in closed:
        per_rep.setdefault(opp.owner_external_id or "", []).append(opp.is_won)
    rates = sorted(sum(wins) / len(wins) for wins in per_rep.values())
    assert rates[-1] - rates[0] > 0.05  # reps differ

    cycles = [(o.closed_at - o.created_at).days for o in won if o.closed_at and o.created_at]
    assert 20 <= median(cycles) <= 120

    def in_last_week_of_quarter(day: date) -> bool:
        if day.month % 3:
            return False
        quarter_end = date(day.year + day.month // 12, day.month % 12 + 1, 1)
        return (quarter_end - day).days <= 7

    share = sum(in_last_week_of_quarter(o.close_date) for o in won if o.close_date) / len(won)
    assert share > 0.15  # about 0.077 if closes were spread evenly


def test_the_dirt_a_real_crm_has(company: dict[str, list[Record]]) -> None:
    opps = opportunities(company)
    all_leads = leads(company)
    owners = [o for o in company["owners"] if isinstance(o, OwnerRecord)]
    assert 5 <= sum(o.amount is None for o in opps) <= 50
    assert all(o.currency is not None for o in opps)
    assert 300 <= sum(o.currency == "EUR" for o in opps) <= 700
    assert sum(o.is_deleted for o in opps) >= 3
    assert sum(lead.is_deleted for lead in all_leads) >= 20
    assert sum(lead.owner_external_id is None for lead in all_leads) >= 1
    assert sum(lead.email is None for lead in all_leads) >= 50
    assert sum(o.type == "Existing Business" and o.lead_source is None for o in opps) > 1000
    inactive = [o for o in owners if not o.active]
    assert len(inactive) == 2
    inactive_ids = {o.external_id for o in inactive}
    assert sum(o.owner_external_id in inactive_ids for o in opps) > 0
    assert any(o.email and o.email != o.email.lower() for o in owners)
    stale = [o for o in opps if not o.is_closed and o.close_date and o.close_date < HISTORY_END.date()]
    assert stale  # slipped deals with a forecast in the past


def test_inactive_reps_get_no_new_deals_after_leaving() -> None:
    settings = DemoSettings(opportunities=3000)
    company = Company(settings)
    leavers = {rep.external_id: rep.left_at for rep in company.reps if rep.left_at < 2**62}
    assert len(leavers) == 2
    for opp in generate_opportunities(settings, company=company):
        left = leavers.get(opp.owner_external_id or "")
        if left is not None:
            assert opp.created_at is not None
            assert opp.created_at.timestamp() < left


def test_changes_stay_within_a_lifetime_of_creation() -> None:
    """Incremental reads rely on it: they only rescan a lifetime before the cursor."""
    for sizes in ({"opportunities": 3000, "leads": 2000}, {"opportunities": 50, "leads": 20000}):
        company = Company(DemoSettings.model_validate(sizes))
        end = int(HISTORY_END.timestamp())
        never = 2**40  # long after every path has run its course
        for opp in company.opportunities_as_of(end):
            assert company.opportunity_updated_at(opp, never) - opp.created <= OPPORTUNITY_LIFETIME
        for lead in company.leads_as_of(end):
            assert company.lead_updated_at(lead, never) - lead.created <= company.lead_lifetime


def test_the_benchmark_generators_match_the_connector() -> None:
    connector = make(PINNED)
    settings = connector.settings
    assert list(generate_opportunities(settings)) == read(connector, "opportunities").records
    assert list(generate_leads(settings)) == read(connector, "leads").records
    assert list(generate_stage_changes(settings)) == read(connector, "stage_changes").records


def test_generators_default_to_the_end_of_the_history() -> None:
    settings = DemoSettings(opportunities=80, leads=0, start=date(2020, 1, 1), history_days=100)
    opps = list(generate_opportunities(settings))
    assert len(opps) == 80
    assert max(o.created_at for o in opps if o.created_at) <= datetime(2020, 4, 10, tzinfo=UTC)
    assert all(o.lead_external_id is None for o in opps)  # no leads, none converted
    assert list(generate_leads(settings)) == []
    earlier = list(generate_opportunities(settings, datetime(2020, 2, 19, tzinfo=UTC)))
    assert 30 <= len(earlier) <= 50
    with pytest.raises(ValueError, match="timezone-aware"):
        list(generate_opportunities(settings, datetime(2020, 2, 19)))  # noqa: DTZ001


def test_amounts_are_labelled_with_their_currency() -> None:
    settings = DemoSettings(opportunities=2000, currency="GBP", currencies={"EUR": 0.2, "USD": 0.1})
    counts = Counter(o.currency for o in generate_opportunities(settings))
    assert set(counts) == {"GBP", "EUR", "USD"}
    assert 0.15 < counts["EUR"] / 2000 < 0.25
    assert 0.06 < counts["USD"] / 2000 < 0.14
    assert all(
        isinstance(o.amount, Decimal) for o in generate_opportunities(settings) if o.amount is not None
    )
