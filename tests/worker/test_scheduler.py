"""The worker's scheduler: one job per scheduled connection, never overlapping, really syncing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import func, select

from crm_perf_sync.config import load_config
from crm_perf_sync.connector_sdk import (
    Checkpoint,
    Connector,
    ConnectorSettings,
    Message,
    OpportunityRecord,
    StreamSpec,
)
from crm_perf_sync.incentives import repository as incentives_repo
from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
from crm_perf_sync.kit.settings import Settings
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.leases import new_holder_id, release, try_acquire
from crm_perf_sync.models import IncentiveLine, KpiValue, Opportunity, SyncRun
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.runtime import Runtime
from crm_perf_sync.worker.scheduler import build_scheduler, refresh_if_needed, refresh_kpis


class TickSettings(ConnectorSettings):
    deals: int = 3


class TickConnector(Connector[TickSettings]):
    settings_model = TickSettings

    def streams(self) -> Sequence[StreamSpec]:
        return [StreamSpec("opportunities", "opportunities")]

    def read(self, stream: StreamSpec, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:  # noqa: ARG002
        for n in range(self.settings.deals):
            yield OpportunityRecord(
                external_id=f"t{n}",
                amount=Decimal(10),
                currency="USD",
                created_at=datetime(2025, 1, 1, tzinfo=UTC),
                is_closed=True,
                is_won=True,
                closed_at=datetime(2025, 2, 1, tzinfo=UTC),
            )
        yield Checkpoint({"n": self.settings.deals})


CONFIG = """
connections:
  - {id: every-minute, kind: tick, schedule: {interval: 1m, jitter: 5s}, settings: {deals: 3}}
  - {id: nightly, kind: tick, schedule: {cron: "0 2 * * *", jitter: 30s}}
  - {id: paused, kind: tick, enabled: false, schedule: {interval: 1m}}
  - {id: manual, kind: tick}
"""


def make_runtime(tmp_path: Path, db_url: str, *, run_on_start: bool) -> Runtime:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(CONFIG)
    registry = ConnectorRegistry(connectors={"tick": TickConnector})
    settings = Settings(database_url=db_url, config=config_path, run_on_start=run_on_start)  # type: ignore[arg-type]
    engine = create_db_engine(db_url)
    return Runtime(
        settings, engine, make_session_factory(engine), registry, load_config(config_path, registry, {})
    )


def test_one_job_per_enabled_scheduled_connection(tmp_path: Path, db_url: str) -> None:
    runtime = make_runtime(tmp_path, db_url, run_on_start=False)
    try:
        scheduler = build_scheduler(runtime, threading.Event(), BackgroundScheduler(timezone="UTC"))
        scheduler.start(paused=True)
        jobs = {job.id: job for job in scheduler.get_jobs()}
        # One per scheduled connection, and the worker's own: queued syncs and KPI refreshes.
        assert set(jobs) == {"sync:every-minute", "sync:nightly", "queued-syncs", "kpi-refresh"}
        assert jobs["queued-syncs"].trigger.interval == timedelta(seconds=5)
        assert jobs["kpi-refresh"].trigger.interval == timedelta(minutes=1)
        minute, nightly = jobs["sync:every-minute"], jobs["sync:nightly"]
        assert isinstance(minute.trigger, IntervalTrigger)
        assert minute.trigger.interval == timedelta(minutes=1)
        assert minute.trigger.jitter == 5
        assert isinstance(nightly.trigger, CronTrigger)
        # A cron schedule keeps its jitter too: replicas on one schedule spread out.
        assert nightly.trigger.jitter == 30
        crontab = CronTrigger.from_crontab("0 2 * * *", timezone="UTC")
        assert [str(f) for f in nightly.trigger.fields] == [str(f) for f in crontab.fields]
        start = datetime(2026, 1, 1, tzinfo=UTC)
        fires = {nightly.trigger.get_next_fire_time(None, start) for _ in range(20)}
        two = datetime(2026, 1, 1, 2, tzinfo=UTC)
        assert all(two <= fire <= two + timedelta(seconds=30) for fire in fires)
        assert len(fires) > 1
        for job in jobs.values():
            assert job.coalesce is True
            assert job.max_instances == 1
            assert job.next_run_time is not None  # scheduled, not paused
            assert job.next_run_time > datetime.now(UTC)
        scheduler.shutdown(wait=False)
    finally:
        runtime.close()


def test_a_started_worker_syncs_at_once_and_records_the_run(tmp_path: Path, db_url: str) -> None:
    runtime = make_runtime(tmp_path, db_url, run_on_start=True)
    stop = threading.Event()
    try:
        runtime.sync_service().apply_config()
        scheduler = build_scheduler(runtime, stop, BackgroundScheduler(timezone="UTC"))
        scheduler.start()
        factory = make_session_factory(runtime.engine)
        deadline = time.monotonic() + 120
        finished: list[SyncRun] = []
        while time.monotonic() < deadline and len(finished) < 2:
            time.sleep(0.1)
            with session_scope(factory) as session:
                finished = list(session.scalars(select(SyncRun).where(SyncRun.status != "running")))
        # Each sync that changed the store refreshes the KPIs; the last one sees both connections.
        won = None
        while time.monotonic() < deadline and won != 6.0:
            time.sleep(0.1)
            with session_scope(factory) as session:
                won = session.scalar(
                    select(KpiValue.value).where(
                        KpiValue.kpi_id == "won_deals", KpiValue.grain == "all", KpiValue.scope == "company"
                    )
                )
        stop.set()
        scheduler.shutdown(wait=True)
        assert won == 6.0
        assert sorted((run.connection_id, run.trigger, run.status) for run in finished) == [
            ("every-minute", "schedule", "succeeded"),
            ("nightly", "schedule", "succeeded"),
        ]
        with session_scope(factory) as session:
            rows = session.execute(
                select(Opportunity.connection_id, func.count().label("n")).group_by(Opportunity.connection_id)
            )
            per_connection = {row.connection_id: row.n for row in rows}
        assert per_connection == {"every-minute": 3, "nightly": 3}
    finally:
        runtime.close()


def _company_won_deals(runtime: Runtime) -> float | None:
    with session_scope(runtime.session_factory) as session:
        value: float | None = session.scalar(
            select(KpiValue.value).where(
                KpiValue.kpi_id == "won_deals", KpiValue.grain == "all", KpiValue.scope == "company"
            )
        )
        return value


def test_kpis_and_alerts_wait_while_a_connection_is_on_its_first_load(tmp_path: Path, db_url: str) -> None:
    runtime = make_runtime(tmp_path, db_url, run_on_start=False)
    stop = threading.Event()
    try:
        runtime.sync_service().apply_config()
        refresh_if_needed(runtime, stop)  # an empty store: no KPI of 0 against a target, no alert
        with session_scope(runtime.session_factory) as session:
            assert session.scalar(select(func.count()).select_from(KpiValue)) == 0
        assert runtime.sync_service().sync("every-minute").status == "succeeded"
        other = new_holder_id() + "-loader"
        with session_scope(runtime.session_factory) as session:  # another worker is loading `nightly`
            assert try_acquire(session, "sync:nightly", other, timedelta(minutes=5)) is None

        refresh_kpis(runtime, stop, reason="sync of every-minute changed 3 records")
        refresh_if_needed(runtime, stop)
        assert _company_won_deals(runtime) is None  # nothing computed from half a CRM

        # A connection that finished a sync before is merely updating: its sync does not hold back.
        with session_scope(runtime.session_factory) as session:
            assert try_acquire(session, "sync:every-minute", other, timedelta(minutes=5)) is None
            release(session, "sync:nightly", other)
        refresh_if_needed(runtime, stop)
        assert _company_won_deals(runtime) == 3.0
    finally:
        runtime.close()


def test_a_plan_set_through_the_api_is_computed_by_the_next_check(tmp_path: Path, db_url: str) -> None:
    runtime = make_runtime(tmp_path, db_url, run_on_start=False)
    stop = threading.Event()
    try:
        runtime.sync_service().apply_config()
        assert runtime.sync_service().sync("every-minute").status == "succeeded"
        assert runtime.sync_service().sync("nightly").status == "succeeded"
        refresh_if_needed(runtime, stop)
        assert _company_won_deals(runtime) == 6.0
        # The KPIs are up to date; an admin sets a plan paying 5 per won deal of the company's
        # deals' rep (the tick deals have none: its line pays 0, but it is computed).
        plan = {
            "id": "per-deal",
            "name": "Per deal",
            "period": "year",
            "currency": "USD",
            "from": "2025-01-01",
            "participants": [{"owner": "every-minute:nobody"}],
            "components": [{"id": "won", "type": "spiff", "kpi": "won_deals", "amount": 5}],
        }
        with session_scope(runtime.session_factory) as session:
            incentives_repo.add_plan_definition(session, "per-deal", plan, "test admin", utc_now())
        refresh_if_needed(runtime, stop)
        with session_scope(runtime.session_factory) as session:
            lines = session.execute(select(IncentiveLine.period_key, IncentiveLine.amount)).all()
        assert lines  # one line per year of the plan up to today, each paying nothing
        assert {str(key)[5:] for key, _ in lines} == {"01-01"}
        assert all(amount == 0 for _, amount in lines)
    finally:
        runtime.close()
