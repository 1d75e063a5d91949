"""A change 简道云 pushes reaches the numbers: verified, kept in the inbox, fetched by id, refreshed.

The 简道云 emulator serves a 商机 form; a deal is won there and the 数据推送 简道云 would send is
posted, signed (tests/connectors/rest/jiandaoyun_pushes.py), to the ingest endpoint. The worker's
inbox job fetches that deal (and only it) through the spec's fetch request and refreshes the KPIs:
the company's won deals move by one with no scheduled sync. A delivery sent again is a duplicate;
a removed deal leaves the numbers at the next turn; a push not signed with the secret is refused.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select

from crm_perf_sync.api.app import create_app
from crm_perf_sync.config import load_config
from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
from crm_perf_sync.kit.settings import Settings
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.models import IngestEvent, Opportunity
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.runtime import Runtime
from crm_perf_sync.worker.scheduler import refresh_kpis, run_inbox
from tests.connectors.rest.emulators.jiandaoyun import JiandaoyunEmulator
from tests.connectors.rest.emulators.jiandaoyun_data import synthetic
from tests.connectors.rest.jiandaoyun_pushes import Delivery, delivery
from tests.connectors.rest.support import jiandaoyun_settings
from tests.worker.stored import sync_runs, won_deals

SECRET = "jdy-push-secret-worker"


@dataclass
class Pushed:
    runtime: Runtime
    client: TestClient
    emulator: JiandaoyunEmulator

    def post(self, sent: Delivery) -> Any:
        path = sent.url.removeprefix("http://testserver")
        return self.client.post(path, content=sent.body, headers=sent.headers)

    def push(self, op: str, data_id: str, **kwargs: Any) -> Any:
        sent = delivery(op, self.emulator.get_record(data_id), secret=SECRET, at=utc_now(), **kwargs)
        answer = self.post(sent)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def won_deals(self) -> float:
        return won_deals(self.runtime.session_factory)

    def inbox(self) -> list[tuple[str, str, str]]:
        with session_scope(self.runtime.session_factory) as session:
            rows = session.execute(
                select(IngestEvent.stream, IngestEvent.external_id, IngestEvent.status).order_by(
                    IngestEvent.id
                )
            ).all()
        return [tuple(row) for row in rows]  # type: ignore[misc]

    def runs(self) -> list[tuple[str, str]]:
        return sync_runs(self.runtime.session_factory)

    def deal(self, data_id: str) -> tuple[str | None, bool]:
        with session_scope(self.runtime.session_factory) as session:
            row = session.execute(
                select(Opportunity.stage, Opportunity.is_deleted).where(Opportunity.external_id == data_id)
            ).one()
        return row[0], bool(row[1])


@pytest.fixture
def pushed(db_url: str, tmp_path: Path) -> Iterator[Pushed]:
    with JiandaoyunEmulator(synthetic(120)) as emulator:
        settings = jiandaoyun_settings(emulator, requests_per_second=0)
        settings["inputs"]["push_secret"] = SECRET
        path = tmp_path / "config.yaml"
        config = {"connections": [{"id": "jdy", "kind": "rest", "settings": settings}]}
        path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        registry = ConnectorRegistry.discover()
        loaded = load_config(path, registry)
        engine = create_db_engine(db_url)
        runtime = Runtime(Settings(), engine, make_session_factory(engine), registry, loaded)
        service = runtime.sync_service()
        service.apply_config()
        assert service.sync("jdy").status == "succeeded"
        refresh_kpis(runtime, threading.Event(), reason="the first load")
        client = TestClient(create_app(engine, loaded))
        try:
            yield Pushed(runtime, client, emulator)
        finally:
            client.app.state.context.chores.shutdown(wait=True)  # type: ignore[attr-defined]
            engine.dispose()


def open_deal(emulator: JiandaoyunEmulator) -> str:
    """A deal of the form that is neither won nor lost."""
    for record in emulator.records():
        if record[emulator.widget("销售阶段").name] in ("初步接洽", "需求沟通"):
            return str(record["_id"])
    raise AssertionError("the form has no open deal")


def test_a_deal_won_in_jiandaoyun_moves_the_numbers_through_the_push_alone(pushed: Pushed) -> None:
    before = pushed.won_deals()
    runs_before = pushed.runs()
    deal = open_deal(pushed.emulator)
    pushed.emulator.update(deal, {"销售阶段": "赢单", "金额": 5800, "成交日期": utc_now()})

    receipt = pushed.push("data_update", deal, deliver_id="sha1=win-1")
    assert (receipt["changes"], receipt["accepted"], receipt["duplicates"]) == (1, 1, 0)
    assert pushed.won_deals() == before  # not before the worker fetched it
    # 简道云 retries a delivery it saw no answer to: the same delivery id is a duplicate.
    again = pushed.push("data_update", deal, deliver_id="sha1=win-1")
    assert (again["accepted"], again["duplicates"]) == (0, 1)

    run_inbox(pushed.runtime, threading.Event())

    assert pushed.won_deals() == before + 1
    assert pushed.deal(deal) == ("赢单", False)
    assert pushed.inbox() == [("opportunities", deal, "done")]
    assert pushed.runs()[len(runs_before) :] == [("push", "succeeded")]


def test_a_deal_removed_in_jiandaoyun_leaves_the_numbers_at_the_next_turn(pushed: Pushed) -> None:
    deal = open_deal(pushed.emulator)
    pushed.emulator.update(deal, {"销售阶段": "赢单", "金额": 5800, "成交日期": utc_now()})
    pushed.push("data_update", deal)
    run_inbox(pushed.runtime, threading.Event())
    won = pushed.won_deals()

    record = pushed.emulator.get_record(deal)
    pushed.emulator.delete(deal)
    answer = pushed.post(delivery("data_remove", record, secret=SECRET, at=utc_now()))
    assert answer.status_code == 200, answer.text
    run_inbox(pushed.runtime, threading.Event())

    assert pushed.deal(deal) == ("赢单", True)
    assert pushed.won_deals() == won - 1


def test_a_push_not_signed_with_the_connections_secret_never_reaches_the_inbox(pushed: Pushed) -> None:
    deal = open_deal(pushed.emulator)
    forged = delivery("data_update", pushed.emulator.get_record(deal), secret="not-the-secret", at=utc_now())
    answer = pushed.post(forged)
    assert answer.status_code == 401
    assert "does not match" in answer.json()["detail"]
    stale = delivery(
        "data_update", pushed.emulator.get_record(deal), secret=SECRET, at=utc_now().replace(year=2020)
    )
    assert pushed.post(stale).status_code == 401
    assert pushed.inbox() == []
