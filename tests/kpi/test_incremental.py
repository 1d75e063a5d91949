"""Incremental refresh: applying the store's change log gives exactly what a full recompute gives."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.connector_sdk import (
    ActivityRecord,
    LeadRecord,
    Message,
    OpportunityRecord,
    PipelineStageRecord,
    StageChangeRecord,
    StreamSpec,
    Tombstone,
)
from crm_perf_sync.jobs.refresh import RefreshJob
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kpi.schemas import DerivedKpi
from crm_perf_sync.leases import new_holder_id
from crm_perf_sync.models import PRIOR_TABLES, ChangeBatch, KpiValue, ScorecardValue
from crm_perf_sync.sync.service import SyncEngine, SyncOptions
from tests.kpi.store import OWNERS, TEAMS, load
from tests.sync.scripted import Script, scripted

START = datetime(2023, 11, 1, tzinfo=UTC)
REPS = ["ana", "bo", "cy", "di", None]
SOURCES = ["Web", "Partner", "Event", None]

CONFIG = """business: {timezone: Europe/Berlin, fiscal_year_start_month: 2}
kpis:
  dimensions: [lead_source, region]
  targets:
    - {kpi: won_revenue, period: 2024-02, value: 120000, currency: USD}
    - {kpi: won_deals, scope: team, scope_id: "crm:dach", grain: quarter, period: 2024-02, value: 9,
       split_to_reps: true}
  scorecards:
    - id: reps
      name: Reps
      grains: [month, quarter]
      currency: USD
      components:
        - {kpi: won_deals, weight: 0.6}
        - {kpi: win_rate, weight: 0.4, normalise: {method: linear, floor: 0.1, goal: 0.5}, min_sample: 1}
"""


#: Two pipelines, so the funnel's steps (and labels) are per pipeline.
OPEN_STAGES = {"sales": ["Lead", "Proposal", "Negotiation"], "renewals": ["Proposal", "Negotiation"]}
STAGES = [
    PipelineStageRecord(pipeline=pipeline, stage=stage, sort_order=n, probability=0.2 * (n + 1))
    for pipeline, names in OPEN_STAGES.items()
    for n, stage in enumerate(names)
] + [
    PipelineStageRecord(
        pipeline=pipeline, stage=stage, sort_order=10 + n, is_closed=True, is_won=stage == "Won"
    )
    for pipeline in OPEN_STAGES
    for n, stage in enumerate(["Won", "Lost"])
]


def history(rng: random.Random, record: OpportunityRecord, tag: str) -> list[StageChangeRecord]:
    """Some of the open stages a deal went through (skipping some, going back sometimes)."""
    assert record.pipeline is not None
    assert record.created_at is not None
    names = OPEN_STAGES[record.pipeline]
    return [
        StageChangeRecord(
            opportunity_external_id=record.external_id,
            to_stage=rng.choice(names),
            changed_at=record.created_at + timedelta(hours=step + 1),
            external_id=f"{record.external_id}-{tag}-{step}",
        )
        for step in range(rng.randrange(0, 3))
    ]


def deal(rng: random.Random, n: int) -> OpportunityRecord:
    created = START + timedelta(hours=rng.randrange(0, 24 * 200))
    outcome = rng.choice(["open", "won", "lost"])
    pipeline = rng.choice(list(OPEN_STAGES))
    closed_at = created + timedelta(hours=rng.randrange(1, 24 * 90)) if outcome != "open" else None
    return OpportunityRecord(
        external_id=f"o{n}",
        owner_external_id=rng.choice(REPS),
        amount=None if rng.random() < 0.1 else Decimal(rng.randrange(100, 50_000)),
        currency=rng.choice(["USD", "USD", "EUR"]),
        stage={"open": rng.choice(OPEN_STAGES[pipeline]), "won": "Won", "lost": "Lost"}[outcome],
        pipeline=pipeline,
        probability=rng.choice([0.1, 0.4, 0.8]),
        lead_source=rng.choice(SOURCES),
        account_external_id=rng.choice([None, *(f"c{k}" for k in range(15))]),
        created_at=created,
        closed_at=closed_at,
        close_date=(closed_at or created + timedelta(days=30)).date(),
        is_closed=outcome != "open",
        is_won=outcome == "won",
    )


def lead(rng: random.Random, n: int) -> LeadRecord:
    created = START + timedelta(hours=rng.randrange(0, 24 * 200))
    converted = rng.random() < 0.4
    return LeadRecord(
        external_id=f"l{n}",
        owner_external_id=rng.choice(REPS),
        source=rng.choice(SOURCES),
        created_at=created,
        is_converted=converted,
        converted_at=created + timedelta(days=3) if converted else None,
    )


def activity(rng: random.Random, n: int) -> ActivityRecord:
    return ActivityRecord(
        external_id=f"a{n}",
        type=rng.choice(["call", "meeting", "visit", "email", "proposal", "demo"]),
        occurred_at=START + timedelta(hours=rng.randrange(0, 24 * 200)),
        owner_external_id=rng.choice(REPS),
        is_completed=rng.random() < 0.8,
        opportunity_external_id=f"o{rng.randrange(120)}",
    )


def company(
    tmp_path: Path, session_factory: sessionmaker[Session], rng: random.Random
) -> tuple[RefreshJob, list[OpportunityRecord], list[LeadRecord], list[ActivityRecord]]:
    """The test company loaded with :data:`CONFIG`: 120 deals with stage history, 60 leads and
    150 activities, drawn from ``rng``."""
    deals = [deal(rng, n) for n in range(120)]
    leads = [lead(rng, n) for n in range(60)]
    activities = [activity(rng, n) for n in range(150)]
    job = load(
        tmp_path,
        session_factory,
        {
            "teams": TEAMS,
            "owners": OWNERS,
            "pipeline_stages": STAGES,
            "opportunities": deals,
            "stage_changes": [step for d in deals for step in history(rng, d, "a")],
            "leads": leads,
            "activities": activities,
        },
        CONFIG,
    )
    return job, deals, leads, activities


def snapshot(
    factory: sessionmaker[Session], table: Any, skip: set[str]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Every stored row keyed by its natural key, without ids and timestamps."""
    with session_scope(factory) as session:
        rows = session.execute(select(table)).mappings().all()
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        data = {k: v for k, v in row.items() if k not in skip}
        if data.get("grain", "all") != "all":
            # A period's median keeps the rank state its last incremental move left, where a full
            # refresh keeps state for all-time values only: bookkeeping, not a value, and checked
            # against recounts where it is moved (test_incremental_ranks).
            for name in ("rank_pivot", "rank_below", "rank_equal"):
                data.pop(name, None)
        if "kpi_id" in data:
            key = tuple(data[k] for k in ("kpi_id", "grain", "period_key", "scope", "scope_id", "currency"))
            key += (data["dimension"], data["dimension_value"])
        else:
            key = (data["scorecard_id"], data["grain"], data["period_key"], data["scope_id"])
        assert key not in out
        out[key] = data
    return out


def same(
    left: dict[tuple[Any, ...], dict[str, Any]], right: dict[tuple[Any, ...], dict[str, Any]]
) -> list[str]:
    problems = [
        f"only after the incremental refresh: {k}" for k in sorted(left.keys() - right.keys(), key=str)
    ]
    problems += [f"only after the full refresh: {k}" for k in sorted(right.keys() - left.keys(), key=str)]
    for key in left.keys() & right.keys():
        a, b = left[key], right[key]
        for column, value in a.items():
            other = b[column]
            if isinstance(value, float) and isinstance(other, float):
                if other != pytest.approx(value, rel=1e-9, abs=1e-6):
                    problems.append(f"{key} {column}: {value} != {other}")
            elif column == "components":
                for x, y in zip(value, other, strict=True):
                    for field, item in x.items():
                        if isinstance(item, float):
                            if y[field] != pytest.approx(item, rel=1e-9, abs=1e-9):
                                problems.append(f"{key} {field}: {item} != {y[field]}")
                        elif item != y[field]:
                            problems.append(f"{key} {field}: {item} != {y[field]}")
            elif value != other:
                problems.append(f"{key} {column}: {value!r} != {other!r}")
    return problems


def sync_more(factory: sessionmaker[Session], pages: Mapping[str, Sequence[Sequence[Message]]]) -> None:
    """A second sync of connection ``crm``: the first read one page per stream (page 0)."""
    streams = [StreamSpec(name, name) for name in pages]  # type: ignore[arg-type]
    script = Script(streams=streams, pages={name: [[], *more] for name, more in pages.items()})
    engine = SyncEngine(
        session_factory=factory,
        connector=scripted(script),
        connection_id="crm",
        options=SyncOptions(),
        holder=new_holder_id(),
    )
    assert engine.run(trigger="manual", full_refresh=False).status == "succeeded"


CUSTOMER_KPIS = {"new_customers", "repeat_revenue_share", "customer_retention_rate"}


def log_size(factory: sessionmaker[Session]) -> int:
    with session_scope(factory) as session:
        tables: list[Table] = list(PRIOR_TABLES.values())
        count = session.scalar(select(func.count()).select_from(ChangeBatch)) or 0
        return count + sum(session.scalar(select(func.count()).select_from(t)) or 0 for t in tables)


@pytest.mark.parametrize("seed", [7, 2024])
def test_applying_the_change_log_equals_recomputing_everything(
    tmp_path: Path, session_factory: sessionmaker[Session], seed: int
) -> None:
    rng = random.Random(seed)
    job, deals, leads, activities = company(tmp_path, session_factory, rng)
    first = job.refresh()
    assert set(first.recomputed) == set(job.service.kpis)  # nothing stored yet: every KPI whole
    assert log_size(session_factory) == 0  # the first load's log was consumed

    # The CRM changes: deals move owner, period, outcome, amount and currency; some are deleted,
    # some come back, new ones appear, and a few change twice (in two batches of one sync).
    def changed(record: OpportunityRecord) -> OpportunityRecord:
        fresh = deal(rng, int(record.external_id[1:]))
        return fresh

    touched = rng.sample(deals, 30)
    page_a: list[Message] = [changed(d) for d in touched[:20]]
    page_a += [Tombstone(d.external_id) for d in touched[20:26]]
    page_a += [deal(rng, n) for n in range(120, 135)]
    page_b: list[Message] = [changed(d) for d in touched[:5]]  # again, in a later batch
    page_b += [changed(d) for d in touched[20:22]]  # deleted, then back
    page_b += [deal(rng, 121)]  # new in page a, changed in page b
    lead_page: list[Message] = [lead(rng, int(x.external_id[1:])) for x in rng.sample(leads, 10)]
    lead_page += [Tombstone("l1"), Tombstone("l2")]
    # New history: for deals that changed and for some whose row did not (a late history sync).
    later = [d for d in deals if d not in touched][:25] + [
        m for m in page_a if isinstance(m, OpportunityRecord)
    ]
    history_page: list[Message] = [step for d in later for step in history(rng, d, "b")]
    # Activities move owner, kind, period and completion; some are deleted, new ones appear.
    moved = rng.sample(activities, 40)
    activity_a: list[Message] = [activity(rng, int(a.external_id[1:])) for a in moved[:30]]
    activity_a += [Tombstone(a.external_id) for a in moved[30:]]
    activity_a += [activity(rng, n) for n in range(150, 170)]
    activity_b: list[Message] = [activity(rng, int(a.external_id[1:])) for a in moved[:6]]
    sync_more(
        session_factory,
        {
            "opportunities": [page_a, page_b],
            "leads": [lead_page],
            "stage_changes": [history_page],
            "activities": [activity_a, activity_b],
        },
    )
    assert log_size(session_factory) > 0

    second = job.refresh()
    additive = {"win_rate", "won_deals", "won_revenue", "lead_conversion_rate", "average_deal_size"}
    additive |= {"activities", "calls", "meetings", "visits", "proposals_sent", "activities_per_won_deal"}
    additive |= CUSTOMER_KPIS  # by the accounts the changes touched
    # Updated by parts, not recomputed (medians and derived KPIs in the periods the changes touch).
    by_parts = additive | {"stage_funnel", "sales_cycle_days_median", "sales_velocity", "pipeline_coverage"}
    assert by_parts <= set(second.updated)
    assert second.recomputed == []
    assert all(second.rows[kpi] > 0 for kpi in CUSTOMER_KPIS)
    assert log_size(session_factory) == 0
    skip = {"id", "computed_at"}
    incremental = snapshot(session_factory, KpiValue.__table__, skip)
    scores = snapshot(session_factory, ScorecardValue.__table__, skip)

    third = job.refresh(full=True)
    assert set(third.recomputed) == set(job.service.kpis)
    problems = same(incremental, snapshot(session_factory, KpiValue.__table__, skip))
    problems += same(scores, snapshot(session_factory, ScorecardValue.__table__, skip))
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:30])
    assert len(incremental) > 1_000  # the comparison covered real data
    funnel = [v for k, v in incremental.items() if k[0] == "stage_funnel" and k[6] == "stage"]
    assert {v["dimension_value"] for v in funnel} >= {"sales: Lead", "renewals: Negotiation"}
    kinds = {k[7] for k in incremental if k[0] == "activities" and k[6] == "activity_type"}
    assert kinds == {"call", "meeting", "visit", "email", "proposal", "demo"}

    # Nothing changed since: a refresh has nothing to do.
    idle = job.refresh()
    assert idle.rows == {}
    assert idle.summary().startswith("KPIs already up to date")


def test_a_changed_definition_or_team_recomputes_whole(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    rng = random.Random(1)
    deals = [deal(rng, n) for n in range(20)]
    job = load(tmp_path, session_factory, {"teams": TEAMS, "owners": OWNERS, "opportunities": deals})
    job.refresh()
    sync_more(session_factory, {"opportunities": [[deal(rng, 3)]]})
    (tmp_path / "config.yaml").write_text(
        (tmp_path / "config.yaml").read_text()
        + "kpis:\n  definitions:\n"
        + "    - {id: won_deals, name: Won deals, type: count, unit: count,"
        + " measure: {period: created_at, filter: [{field: is_won, op: eq, value: true}]}}\n"
    )
    from crm_perf_sync.config import load_config
    from crm_perf_sync.plugins import ConnectorRegistry
    from tests.sync.scripted import ScriptedConnector

    changed = RefreshJob(
        session_factory,
        load_config(
            tmp_path / "config.yaml", ConnectorRegistry(connectors={"scripted": ScriptedConnector}), {}
        ),
    )
    outcome = changed.refresh()
    assert "won_deals" in outcome.recomputed  # its definition changed: whole
    assert "win_rate" in outcome.updated  # unchanged definition: by the change log
    with session_scope(session_factory) as session:
        hashes = set(session.scalars(select(KpiValue.definition_hash).where(KpiValue.kpi_id == "won_deals")))
    assert hashes == {changed.service.definition_hash(changed.service.kpi("won_deals"))}


def test_a_reopened_deal_counts_as_what_it_is_now(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    closed_at = datetime(2024, 1, 15, tzinfo=UTC)
    won = OpportunityRecord(
        external_id="o1",
        owner_external_id="ana",
        amount=Decimal(500),
        currency="USD",
        created_at=closed_at - timedelta(days=20),
        closed_at=closed_at,
        close_date=closed_at.date(),
        is_closed=True,
        is_won=True,
    )
    lost = OpportunityRecord(
        external_id="o2",
        owner_external_id="ana",
        currency="USD",
        created_at=closed_at - timedelta(days=20),
        closed_at=closed_at,
        close_date=closed_at.date(),
        is_closed=True,
    )
    job = load(tmp_path, session_factory, {"owners": OWNERS, "opportunities": [won, lost]})
    job.refresh()
    before = values_of(session_factory, "win_rate", "month")
    assert before == {"2024-01-01": (1.0, 2.0)}
    # The won deal is reopened in the CRM: open again, expected to close in March.
    reopened = OpportunityRecord(
        external_id="o1",
        owner_external_id="ana",
        amount=Decimal(500),
        currency="USD",
        created_at=closed_at - timedelta(days=20),
        close_date=datetime(2024, 3, 31, tzinfo=UTC).date(),
    )
    sync_more(session_factory, {"opportunities": [[reopened]]})
    outcome = job.refresh()
    assert {"win_rate", "won_deals", "open_pipeline"} <= set(outcome.updated)
    assert values_of(session_factory, "win_rate", "month") == {"2024-01-01": (0.0, 1.0)}
    assert values_of(session_factory, "won_deals", "month") == {}
    assert values_of(session_factory, "open_pipeline", "month") == {"2024-03-01": (500.0, None)}


def values_of(
    factory: sessionmaker[Session], kpi_id: str, grain: str
) -> dict[str, tuple[float, float | None]]:
    """Company values of a KPI: ``{period_key: (numerator, denominator)}``."""
    with session_scope(factory) as session:
        rows = session.scalars(
            select(KpiValue).where(
                KpiValue.kpi_id == kpi_id,
                KpiValue.grain == grain,
                KpiValue.scope == "company",
                KpiValue.dimension == "",
            )
        )
        return {row.period_key: (row.numerator, row.denominator) for row in rows}


def test_stage_history_alone_updates_the_funnel(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    from crm_perf_sync.connector_sdk import PipelineStageRecord, StageChangeRecord

    stages = [
        PipelineStageRecord(pipeline="sales", stage=name, sort_order=n)
        for n, name in enumerate(["P", "Q", "N"])
    ]
    deal_in_p = OpportunityRecord(
        external_id="o1", owner_external_id="ana", stage="P", pipeline="sales", created_at=START
    )
    job = load(
        tmp_path,
        session_factory,
        {"owners": OWNERS, "pipeline_stages": stages, "opportunities": [deal_in_p], "stage_changes": []},
    )
    job.refresh()
    # The CRM's history, synced later on its own: the deal was in N once (and moved back).
    history = [
        StageChangeRecord(opportunity_external_id="o1", to_stage="N", changed_at=START + timedelta(days=1))
    ]
    sync_more(session_factory, {"stage_changes": [history]})
    assert "stage_funnel" in job.refresh().updated  # by the change log, not recomputed
    with session_scope(session_factory) as session:
        reached = {
            row.dimension_value: row.numerator
            for row in session.scalars(
                select(KpiValue).where(
                    KpiValue.kpi_id == "stage_funnel",
                    KpiValue.grain == "all",
                    KpiValue.scope == "company",
                    KpiValue.dimension == "stage",
                )
            )
        }
    assert reached == {"P": 1, "Q": 1, "N": 1}


CONVERSIONS = """kpis:
  library: none
  definitions:
    - id: conversions_per_new_lead
      name: Conversions per new lead
      type: ratio
      unit: ratio
      numerator: {entity: leads, period: converted_at, filter: [{field: is_converted, op: eq, value: true}]}
      denominator: {entity: leads, period: created_at}
"""


def test_a_numerator_without_denominator_records_survives_updates(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    january = datetime(2024, 1, 10, tzinfo=UTC)
    february = datetime(2024, 2, 10, tzinfo=UTC)
    leads = [LeadRecord(external_id=f"l{n}", owner_external_id="ana", created_at=january) for n in range(3)]
    job = load(tmp_path, session_factory, {"owners": OWNERS, "leads": leads}, CONVERSIONS)
    job.refresh()
    converted = [
        LeadRecord(
            external_id=f"l{n}",
            owner_external_id="ana",
            created_at=january,
            is_converted=True,
            converted_at=february,
        )
        for n in range(2)
    ]
    sync_more(session_factory, {"leads": [converted]})
    job.refresh()
    # February: 2 conversions, no lead created yet (no value, but the numerator is kept).
    assert values_of(session_factory, "conversions_per_new_lead", "month") == {
        "2024-01-01": (0.0, 3.0),
        "2024-02-01": (2.0, 0.0),
    }
    new_lead = LeadRecord(external_id="l9", owner_external_id="ana", created_at=february)
    sync_more(session_factory, {"leads": [[], [new_lead]]})
    job.refresh()
    incremental = values_of(session_factory, "conversions_per_new_lead", "month")
    job.refresh(full=True)
    assert incremental == values_of(session_factory, "conversions_per_new_lead", "month")
    assert incremental["2024-02-01"] == (2.0, 1.0)


@pytest.mark.parametrize("move", ["later", "earlier", "none_left"])
def test_customer_kpis_follow_the_last_period_with_a_won_deal_when_it_moves(
    tmp_path: Path, session_factory: sessionmaker[Session], move: str
) -> None:
    """Retention has values up to the last period with any won deal: when a change moves that
    period, values appear or go for every account, not only the changed ones."""
    rng = random.Random(11)
    deals = [deal(rng, n) for n in range(90)]
    job = load(tmp_path, session_factory, {"teams": TEAMS, "owners": OWNERS, "opportunities": deals}, CONFIG)
    job.refresh()
    skip = {"id", "computed_at"}
    weeks_before = retention_weeks(snapshot(session_factory, KpiValue.__table__, skip))
    won = sorted((d for d in deals if d.is_won and d.account_external_id), key=lambda d: str(d.close_date))
    last = won[-1].closed_at
    assert last is not None
    page: list[Message]
    if move == "later":
        # An account's first deal closes again, two months after the last one; a new account too.
        later = last + timedelta(days=62)
        page = [
            replace(won[0], closed_at=later, close_date=later.date()),
            replace(
                won[-1],
                external_id="o900",
                account_external_id="c99",
                closed_at=later,
                close_date=later.date(),
            ),
        ]
    elif move == "earlier":
        # The deals of the last five weeks are lost after all.
        page = [
            replace(d, is_won=False, stage="Lost")
            for d in won
            if d.closed_at is not None and d.closed_at > last - timedelta(days=35)
        ]
    else:
        page = [replace(d, is_won=False, stage="Lost") for d in won]  # every won deal is lost
    sync_more(session_factory, {"opportunities": [page]})

    second = job.refresh()
    if move == "none_left":
        # Nothing is left to count: no last period to keep, so retention is computed whole.
        assert "customer_retention_rate" in second.recomputed
    else:
        assert CUSTOMER_KPIS <= set(second.updated)
    incremental = snapshot(session_factory, KpiValue.__table__, skip)
    job.refresh(full=True)
    full = snapshot(session_factory, KpiValue.__table__, skip)
    problems = same(incremental, full)
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:30])
    # The values really moved: the last week with a retention value is another one (or none).
    weeks = retention_weeks(full)
    if move == "none_left":
        assert weeks == []
    elif move == "later":
        assert weeks[-1] > weeks_before[-1]
    else:
        assert weeks[-1] < weeks_before[-1]


def retention_weeks(values: Mapping[tuple[Any, ...], Any]) -> list[str]:
    return sorted({k[2] for k in values if k[0] == "customer_retention_rate" and k[1] == "week"})


#: The tables that grow with the CRM: an incremental refresh after a few changes must not read
#: any of them whole (at a million deals one such scan costs a push its second).
GROWING = ("opportunity", "lead", "activity", "account", "stage_change", "kpi_sample", "kpi_value")


#: The statements whose plans are read.
PLANNED = ("SELECT", "DELETE", "UPDATE", "INSERT", "WITH")


def reads_whole(step: str) -> bool:
    """Whether a step of a SQLite plan reads a growing table whole: a scan, or a search of a KPI's
    samples by nothing narrower than the KPI (``month>?`` is every month)."""
    words = step.split()
    if len(words) > 1 and words[0] == "SCAN" and words[1] in GROWING:
        return True
    return words[:2] == ["SEARCH", "kpi_sample"] and step.endswith(
        ("(kpi_id=? AND dimension=?)", "(kpi_id=? AND dimension=? AND month>?)")
    )


def test_a_refresh_after_a_few_changes_reads_no_growing_table_whole(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    """What a push costs: the plans of every statement of an incremental refresh after three deals
    were won and a lead converted. SQLite plans without statistics, so its plans here are the
    plans at any size; the values must still equal a full recompute's on both databases."""
    job, deals, leads, _ = company(tmp_path, session_factory, random.Random(5))
    job.refresh()
    skip = {"id", "computed_at"}
    open_deals = [d for d in deals if not d.is_closed and d.account_external_id][:3]
    assert len(open_deals) == 3
    won_at = max(d.created_at for d in deals if d.created_at) + timedelta(days=3)
    page: list[Message] = [
        replace(d, stage="Won", is_closed=True, is_won=True, closed_at=won_at, close_date=won_at.date())
        for d in open_deals
    ]
    unconverted = next(x for x in leads if not x.is_converted)
    lead_page: list[Message] = [replace(unconverted, is_converted=True, converted_at=won_at)]
    sync_more(session_factory, {"opportunities": [page], "leads": [lead_page]})

    engine = session_factory.kw["bind"]
    scans: dict[str, str] = {}
    planned: list[str] = []

    def plan(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:  # noqa: ARG001
        if many or not statement.lstrip().upper().startswith(PLANNED):
            return
        planned.append(statement)
        for row in cursor.connection.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall():
            if reads_whole(str(row[-1])):
                scans.setdefault(" ".join(statement.split())[:300], str(row[-1]))

    sqlite = engine.dialect.name == "sqlite"
    if sqlite:
        event.listen(engine, "after_cursor_execute", plan)
    try:
        second = job.refresh()
    finally:
        if sqlite:
            event.remove(engine, "after_cursor_execute", plan)
    assert second.recomputed == []
    assert {"won_deals", "new_customers", "customer_retention_rate", "sales_cycle_days_median"} <= set(
        second.updated
    )
    assert len(planned) > 100 or not sqlite  # every KPI's statements were read
    assert not scans, "\n".join(f"{step}: {statement}" for statement, step in scans.items())
    incremental = snapshot(session_factory, KpiValue.__table__, skip)
    job.refresh(full=True)
    problems = same(incremental, snapshot(session_factory, KpiValue.__table__, skip))
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:30])


def test_a_change_no_kpi_reads_rewrites_no_value_and_touches_no_period(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    """Deals renamed: every KPI over deals reads them again, finds each cell as it was, and
    leaves it (and the derived KPIs and scorecards over it) alone."""
    rng = random.Random(3)
    deals = [deal(rng, n) for n in range(80)]
    job = load(tmp_path, session_factory, {"teams": TEAMS, "owners": OWNERS, "opportunities": deals}, CONFIG)
    job.refresh()
    skip = {"id"}
    before = snapshot(session_factory, KpiValue.__table__, skip)
    renamed: list[Message] = [replace(d, name=f"renamed {d.external_id}") for d in deals[:10]]
    sync_more(session_factory, {"opportunities": [renamed]})

    second = job.refresh()
    assert second.recomputed == []
    assert {"won_deals", "win_rate", "won_revenue", "sales_cycle_days_median"} <= set(second.updated)
    assert sum(second.rows.values()) == 0, {k: v for k, v in second.rows.items() if v}
    assert all(not periods for periods in second.touched.values()), second.touched
    assert second.scorecards == {}
    assert snapshot(session_factory, KpiValue.__table__, skip) == before  # computed_at too


def test_a_change_rewrites_the_derived_kpis_in_the_scopes_it_touched_only(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    """One rep's deal won: a derived KPI is recomputed for that rep, the teams above them and the
    company, not for every scope of the periods the win fell in, and equals a full refresh."""
    job, deals, _, _ = company(tmp_path, session_factory, random.Random(11))
    job.refresh()
    derived = {kpi_id for kpi_id, kpi in job.service.kpis.items() if isinstance(kpi, DerivedKpi)}
    assert derived

    def stored() -> dict[tuple[Any, ...], tuple[Any, ...]]:
        with session_scope(session_factory) as session:
            rows = session.execute(select(KpiValue).where(KpiValue.kpi_id.in_(derived))).scalars().all()
            return {
                (r.kpi_id, r.grain, r.period_key, r.scope, r.scope_id, r.currency): (r.id, r.computed_at)
                for r in rows
            }

    before = stored()
    target = next(d for d in deals if d.owner_external_id == "cy" and not d.is_closed)
    closed = datetime.now(UTC).replace(microsecond=0)
    won = replace(
        target, stage="Won", is_closed=True, is_won=True, closed_at=closed, close_date=closed.date()
    )
    sync_more(session_factory, {"opportunities": [[won]]})

    second = job.refresh()

    assert derived <= set(second.updated)
    after = stored()
    rewritten = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    assert rewritten, "the win changed no derived value"
    assert {(key[3], key[4]) for key in rewritten} <= {
        ("owner", "crm:cy"),
        ("team", "crm:nordics"),
        ("team", "crm:emea"),
        ("company", "company"),
    }
    skip = {"id", "computed_at"}
    incremental = {
        k: v for k, v in snapshot(session_factory, KpiValue.__table__, skip).items() if k[0] in derived
    }
    job.refresh(full=True)
    recomputed = {
        k: v for k, v in snapshot(session_factory, KpiValue.__table__, skip).items() if k[0] in derived
    }
    problems = same(incremental, recomputed)
    assert not problems, "\n".join(problems[:30])
