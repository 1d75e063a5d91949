"""The activity KPIs agree with a plain-Python count of generated activities, for every grain and
scope, with the business's time zone placing each activity in its local period."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.connector_sdk import ActivityRecord, OpportunityRecord
from tests.kpi.store import OWNERS, TEAMS, load, values

ZONE = ZoneInfo("America/New_York")
START = datetime(2024, 1, 1, tzinfo=UTC)
REPS = ["ana", "bo", "cy", "di", None]
KINDS = ["call", "call", "email", "meeting", "visit", "proposal", "task", "site_survey"]
#: Team scope ids and their reps (EMEA is the region above both teams; Di is in no team).
TEAM_REPS = {"crm:dach": {"ana", "bo"}, "crm:nordics": {"cy"}, "crm:emea": {"ana", "bo", "cy"}}
CONFIG = "business: {timezone: America/New_York, fiscal_year_start_month: 1}\n"
SINGLE_TYPE = {"calls": "call", "meetings": "meeting", "visits": "visit", "proposals_sent": "proposal"}


def activity(rng: random.Random, n: int) -> ActivityRecord:
    return ActivityRecord(
        external_id=f"a{n}",
        type=rng.choice(KINDS),
        # Around month and year ends, so the local (New York) date decides the period.
        occurred_at=START + timedelta(minutes=rng.randrange(0, 60 * 24 * 400)),
        owner_external_id=rng.choice(REPS),
        duration_seconds=rng.choice([None, 300, 1800]),
        is_completed=rng.random() < 0.8,
        is_deleted=rng.random() < 0.05,
    )


def won_deal(rng: random.Random, n: int) -> OpportunityRecord:
    closed = START + timedelta(hours=rng.randrange(0, 24 * 400))
    return OpportunityRecord(
        external_id=f"o{n}",
        owner_external_id=rng.choice(REPS),
        created_at=closed - timedelta(days=20),
        closed_at=closed,
        close_date=closed.date(),
        is_closed=True,
        is_won=True,
    )


def period_key(moment: datetime, grain: str) -> str:
    local = moment.astimezone(ZONE).date()
    if grain == "month":
        return local.replace(day=1).isoformat()
    if grain == "quarter":
        return date(local.year, 3 * ((local.month - 1) // 3) + 1, 1).isoformat()
    return date(local.year, 1, 1).isoformat()


def scopes_of(owner: str | None) -> list[tuple[str, str]]:
    found = [("company", "company")]
    if owner is not None:
        found.append(("owner", f"crm:{owner}"))
        found += [("team", team) for team, reps in TEAM_REPS.items() if owner in reps]
    return found


def expected_counts(
    records: list[ActivityRecord], grain: str, kind: str | None = None, by_type: bool = False
) -> Counter[tuple[str, str, str, str]]:
    """(scope, scope id, period key, type or '') -> completed, undeleted activities."""
    counts: Counter[tuple[str, str, str, str]] = Counter()
    for record in records:
        if record.is_deleted or not record.is_completed or (kind is not None and record.type != kind):
            continue
        kind_key = record.type if by_type else ""
        for scope, scope_id in scopes_of(record.owner_external_id):
            counts[scope, scope_id, period_key(record.occurred_at, grain), kind_key] += 1
    return counts


def stored_counts(
    factory: sessionmaker[Session], kpi_id: str, grain: str, dimension: str = ""
) -> Counter[tuple[str, str, str, str]]:
    counts: Counter[tuple[str, str, str, str]] = Counter()
    for scope in ("company", "team", "owner"):
        for (period, scope_id, _currency, dimension_value), row in values(
            factory, kpi_id, grain, scope, dimension
        ).items():
            assert row.value == row.numerator
            if row.value:
                counts[scope, scope_id, period, dimension_value] = int(row.value)
    return counts


@pytest.fixture(scope="module")
def generated(
    tmp_path_factory: pytest.TempPathFactory, module_session_factory: sessionmaker[Session]
) -> tuple[list[ActivityRecord], list[OpportunityRecord]]:
    """Activities and won deals loaded and refreshed once per module and backend: the tests only
    read them."""
    rng = random.Random(21)
    records = [activity(rng, n) for n in range(1500)]
    deals = [won_deal(rng, n) for n in range(120)]
    job = load(
        tmp_path_factory.mktemp("activities"),
        module_session_factory,
        {"teams": TEAMS, "owners": OWNERS, "activities": records, "opportunities": deals},
        CONFIG,
    )
    job.refresh()
    return records, deals


def test_activity_counts_match_an_independent_count_by_type_grain_and_scope(
    module_session_factory: sessionmaker[Session],
    generated: tuple[list[ActivityRecord], list[OpportunityRecord]],
) -> None:
    records, _ = generated
    for grain in ("month", "quarter", "year"):
        assert stored_counts(module_session_factory, "activities", grain) == expected_counts(
            records, grain
        ), grain
        by_type = stored_counts(module_session_factory, "activities", grain, "activity_type")
        assert by_type == expected_counts(records, grain, by_type=True), grain
        assert {key[3] for key in by_type} == set(KINDS)  # a configured kind is a type like any other
        for kpi_id, kind in SINGLE_TYPE.items():
            expected = expected_counts(records, grain, kind)
            assert stored_counts(module_session_factory, kpi_id, grain) == expected, (kpi_id, grain)


def test_activities_per_won_deal_is_the_ratio_of_the_two_counts_in_each_period_and_scope(
    module_session_factory: sessionmaker[Session],
    generated: tuple[list[ActivityRecord], list[OpportunityRecord]],
) -> None:
    records, deals = generated
    activities = expected_counts(records, "quarter")
    won: Counter[tuple[str, str, str, str]] = Counter()
    for deal in deals:
        assert deal.closed_at is not None
        for scope, scope_id in scopes_of(deal.owner_external_id):
            won[scope, scope_id, period_key(deal.closed_at, "quarter"), ""] += 1
    expected = {key: activities[key] / won[key] for key in activities.keys() & won.keys()}
    stored = {}
    for scope in ("company", "team", "owner"):
        for (period, scope_id, _c, _d), row in values(
            module_session_factory, "activities_per_won_deal", "quarter", scope
        ).items():
            if row.value is not None:
                stored[scope, scope_id, period, ""] = row.value
    assert stored.keys() == expected.keys()
    for key, ratio in expected.items():
        assert stored[key] == pytest.approx(ratio, rel=1e-12), key
