"""Salesforce watched: the latest SystemModstamp asked for every few seconds, within the API
budget, and a sync at once when there is a newer one (Salesforce's Change Data Capture needs the
Pub/Sub API, gRPC and Avro, with no well-kept Python client: see the README).

The connector's question is checked against the emulated org's rows; the worker's job against a
real store through the real sync service, the clock of its waits driven by the test.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from sqlalchemy import select

from crm_perf_sync.config import load_config
from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
from crm_perf_sync.kit.settings import Settings
from crm_perf_sync.models import Opportunity, SyncRun
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.runtime import Runtime
from crm_perf_sync.worker.scheduler import Watch, build_scheduler, run_watch, watches
from crm_perf_sync_salesforce.settings import SalesforceSettings
from tests.connectors.salesforce.emulator import SalesforceEmulator
from tests.connectors.salesforce.seed import add_opportunities, minimal_org
from tests.connectors.salesforce.support import connector, settings_for

STREAMS = ["opportunities", "leads"]


def test_the_latest_change_is_the_newest_systemmodstamp_of_the_objects_read(
    emulator: SalesforceEmulator,
) -> None:
    org = emulator.org
    minimal_org(org)
    ids = add_opportunities(org, 5, start=org.now() - timedelta(hours=2), step=timedelta(minutes=1))
    conn = connector(settings_for(emulator, streams=STREAMS, watch="5s"))
    newest = max(row["SystemModstamp"] for row in org.table("Opportunity").rows.values())
    logged = len(org.log)

    assert conn.latest_change() == newest
    # One request per object: Opportunity and Lead.
    asked = [entry.soql or "" for entry in org.log[logged:] if entry.route == "query"]
    assert sorted(q.split(" FROM ")[1].split()[0] for q in asked) == ["Lead", "Opportunity"]
    assert all(q.endswith("ORDER BY SystemModstamp DESC LIMIT 1") for q in asked)

    moved = org.table("Opportunity").update(ids[0], {"StageName": "Closed Won"}, at=org.now())
    assert conn.latest_change() == moved["SystemModstamp"] > newest


def test_the_watch_asks_less_often_than_configured_when_the_budget_says_so(
    emulator: SalesforceEmulator,
) -> None:
    org = emulator.org
    minimal_org(org)
    conn = connector(settings_for(emulator, streams=STREAMS, watch="5s", watch_share=0.1))
    assert conn.watch_interval() == timedelta(seconds=5)  # nothing known of the budget yet
    org.api_limit = 15_000
    conn.latest_change()  # the responses say the budget
    # 2 requests a look within 10% of 15,000 a day: 1,500 requests, 750 looks, one per 116 s.
    assert conn.watch_interval() == timedelta(seconds=116)
    org.api_limit = 5_000_000
    conn.latest_change()
    assert conn.watch_interval() == timedelta(seconds=5)
    assert connector(settings_for(emulator, streams=STREAMS)).watch_interval() is None
    with pytest.raises(ValidationError, match="at most every 2 seconds"):
        SalesforceSettings.model_validate(settings_for(emulator, watch="1s"))


@dataclass
class Watched:
    runtime: Runtime
    emulator: SalesforceEmulator
    watch: Watch
    now: list[float]

    def look(self) -> bool:
        return run_watch(self.runtime, self.watch, threading.Event(), clock=lambda: self.now[0])

    def runs(self) -> list[tuple[str, str]]:
        with session_scope(self.runtime.session_factory) as session:
            rows = session.execute(select(SyncRun.trigger, SyncRun.status).order_by(SyncRun.id)).all()
        return [tuple(row) for row in rows]  # type: ignore[misc]

    def stage(self, deal: str) -> str | None:
        with session_scope(self.runtime.session_factory) as session:
            return session.execute(
                select(Opportunity.stage).where(Opportunity.external_id == deal)
            ).scalar_one()


@pytest.fixture
def watched(emulator: SalesforceEmulator, db_url: str, tmp_path: Path) -> Iterator[Watched]:
    org = emulator.org
    minimal_org(org)
    add_opportunities(org, 20, start=org.now() - timedelta(hours=3), step=timedelta(minutes=1))
    settings = settings_for(emulator, streams=STREAMS, watch="3s")
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump({"connections": [{"id": "sfdc", "kind": "salesforce", "settings": settings}]})
    )
    registry = ConnectorRegistry.discover()
    loaded = load_config(path, registry)
    engine = create_db_engine(db_url)
    runtime = Runtime(Settings(), engine, make_session_factory(engine), registry, loaded)
    runtime.sync_service().apply_config()
    (watch,) = watches(runtime)
    try:
        yield Watched(runtime, emulator, watch, [1000.0])
    finally:
        watch.close()
        engine.dispose()


def test_a_change_in_the_org_is_synced_at_the_next_look_and_a_quiet_org_costs_no_sync(
    watched: Watched,
) -> None:
    org = watched.emulator.org
    assert watched.look()  # the first look: nothing seen before it
    assert watched.runs() == [("watch", "succeeded")]
    assert not watched.look()  # at once: the interval has not passed
    watched.now[0] += 3
    assert not watched.look()  # nothing newer: no sync
    assert watched.runs() == [("watch", "succeeded")]

    deal = next(iter(org.table("Opportunity").rows))
    org.table("Opportunity").update(deal, {"StageName": "Closed Won"}, at=org.now())
    watched.now[0] += 3
    assert watched.look()
    assert watched.runs() == [("watch", "succeeded"), ("watch", "succeeded")]
    assert watched.stage(deal) == "Closed Won"


def test_the_scheduler_watches_a_watched_connection_at_its_interval(watched: Watched) -> None:
    jobs = {job.id: job for job in build_scheduler(watched.runtime, threading.Event()).get_jobs()}
    assert jobs["watch:sfdc"].trigger.interval == timedelta(seconds=3)


def test_when_the_org_cannot_answer_the_look_syncs_nothing_and_the_next_one_asks_again(
    watched: Watched,
) -> None:
    org = watched.emulator.org
    org.add_fault("query", status=503, times=100)
    assert not watched.look()
    assert watched.runs() == []
    org.faults.clear()
    watched.now[0] += 3
    assert watched.look()
    assert watched.runs() == [("watch", "succeeded")]


def test_an_org_with_nothing_yet_is_synced_at_the_first_look_only(
    emulator: SalesforceEmulator, db_url: str, tmp_path: Path
) -> None:
    minimal_org(emulator.org)  # no opportunity, no lead: no latest change
    settings = settings_for(emulator, streams=STREAMS, watch="3s")
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump({"connections": [{"id": "sfdc", "kind": "salesforce", "settings": settings}]})
    )
    registry = ConnectorRegistry.discover()
    engine = create_db_engine(db_url)
    runtime = Runtime(Settings(), engine, make_session_factory(engine), registry, load_config(path, registry))
    (watch,) = watches(runtime)
    now = [0.0]
    try:
        assert run_watch(runtime, watch, threading.Event(), clock=lambda: now[0])
        for _ in range(3):
            now[0] += 3
            assert not run_watch(runtime, watch, threading.Event(), clock=lambda: now[0])
        add_opportunities(emulator.org, 1, start=emulator.org.now() - timedelta(seconds=5))
        now[0] += 3
        assert run_watch(runtime, watch, threading.Event(), clock=lambda: now[0])
    finally:
        watch.close()
        engine.dispose()
