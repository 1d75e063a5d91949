"""A funnel's stage rows as the API and the dashboard read them: in each pipeline's order."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.connector_sdk import PipelineStageRecord
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.errors import InvalidInput, NotFound
from crm_perf_sync.kpi.funnel import funnel_kpi, stage_order, stage_values
from crm_perf_sync.kpi.library import default_library_path, load_library
from crm_perf_sync.kpi.schemas import FunnelKpi
from tests.kpi.store import OWNERS, TEAMS, T, closed, load, opp

STAGES = [
    # Stage names sort differently from their order, and the pipelines' names from each other.
    PipelineStageRecord(pipeline="sales", stage="Qualify", sort_order=0, probability=0.1),
    PipelineStageRecord(pipeline="sales", stage="Demo", sort_order=1, probability=0.5),
    PipelineStageRecord(pipeline="sales", stage="Won", sort_order=2, is_closed=True, is_won=True),
    PipelineStageRecord(pipeline="sales", stage="Lost", sort_order=3, is_closed=True),
    PipelineStageRecord(pipeline="renewal", stage="Review", sort_order=0, probability=0.4),
    PipelineStageRecord(pipeline="renewal", stage="Agreed", sort_order=1, is_closed=True, is_won=True),
]


def test_stage_values_follow_each_pipelines_order_and_name_the_pipeline(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    deals = [
        opp(1, "ana", stage="Qualify", pipeline="sales"),
        opp(2, "ana", stage="Demo", pipeline="sales"),
        closed(3, "bo", True, T, stage="Won", pipeline="sales"),
        opp(4, "bo", stage="Review", pipeline="renewal"),
        closed(5, "cy", True, T, stage="Agreed", pipeline="renewal"),
    ]
    job = load(
        tmp_path,
        session_factory,
        {"teams": TEAMS, "owners": OWNERS, "pipeline_stages": STAGES, "opportunities": deals},
    )
    job.refresh(["stage_funnel"])
    kpi = funnel_kpi(job.service.kpis, None)
    assert kpi.id == "stage_funnel"
    with session_scope(session_factory) as session:
        assert stage_order(session.connection(), kpi) == [
            ("renewal", "renewal: Review"),
            ("renewal", "renewal: Agreed"),
            ("sales", "sales: Qualify"),
            ("sales", "sales: Demo"),
            ("sales", "sales: Won"),
        ]
        found = [
            (pipeline, v.dimension_value, v.numerator)
            for pipeline, v in stage_values(session, kpi, "all", "all", "company", "company")
        ]
        rep = [
            (pipeline, v.dimension_value, v.numerator)
            for pipeline, v in stage_values(session, kpi, "all", "all", "owner", "crm:bo")
        ]
    assert found == [
        ("renewal", "renewal: Review", 2),
        ("renewal", "renewal: Agreed", 1),
        ("sales", "sales: Qualify", 3),
        ("sales", "sales: Demo", 2),
        ("sales", "sales: Won", 1),
    ]
    assert rep == [
        ("renewal", "renewal: Review", 1),
        ("sales", "sales: Qualify", 1),
        ("sales", "sales: Demo", 1),
        ("sales", "sales: Won", 1),
    ]


def test_funnel_kpi_names_what_is_wrong() -> None:
    kpis = {k.id: k for k in load_library(default_library_path())}
    assert isinstance(funnel_kpi(kpis, "stage_funnel"), FunnelKpi)
    with pytest.raises(InvalidInput, match="win_rate is a ratio KPI, not a funnel"):
        funnel_kpi(kpis, "win_rate")
    with pytest.raises(NotFound, match="no KPI 'nope'"):
        funnel_kpi(kpis, "nope")
    with pytest.raises(NotFound, match="no funnel KPI is defined"):
        funnel_kpi({}, None)
