"""Asking for a sync through the API, and confirming a mass deletion there (admin keys only)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from crm_perf_sync.api.app import create_app
from crm_perf_sync.apikeys import service as keys
from crm_perf_sync.config import load_config
from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
from crm_perf_sync.kit.settings import Settings
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.runtime import Runtime
from crm_perf_sync.worker.scheduler import run_queued_syncs

LEADS = [f"L{n:02d}" for n in range(40)]


@dataclass
class Store:
    client: TestClient
    runtime: Runtime
    leads: Path
    admin: dict[str, str]
    read: dict[str, str]

    def export(self, keys_: list[str]) -> None:
        self.leads.write_text("id,source\n" + "".join(f"{key},Web\n" for key in keys_), encoding="utf-8")

    def request(self, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Any:
        return self.client.post("/api/v1/connections/leads/sync", json=body, headers=headers or self.admin)

    def work(self) -> None:
        run_queued_syncs(self.runtime, threading.Event())

    def run(self, url: str) -> dict[str, Any]:
        response = self.client.get(url, headers=self.read)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[Store]:
    config = {
        "connections": [
            {
                "id": "leads",
                "kind": "csv",
                "settings": {
                    "data_dir": str(tmp_path),
                    "streams": {
                        "leads": {"file": "leads.csv", "fields": {"external_id": "id", "source": "source"}}
                    },
                },
            }
        ]
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    registry = ConnectorRegistry.discover()
    loaded = load_config(path, registry)
    engine = create_db_engine(db_url)
    runtime = Runtime(Settings(), engine, make_session_factory(engine), registry, loaded)
    with session_scope(runtime.session_factory) as session:
        _, admin = keys.create(session, "tests (admin)", "admin")
        _, read = keys.create(session, "tests (read)", "read")
    found = Store(
        TestClient(create_app(engine, loaded)),
        runtime,
        tmp_path / "leads.csv",
        {"Authorization": f"Bearer {admin}"},
        {"Authorization": f"Bearer {read}"},
    )
    found.export(LEADS)
    service = runtime.sync_service()
    service.apply_config()
    assert service.sync("leads").status == "succeeded"
    yield found
    # Each request records its key's use on a background thread: let it finish before the pool goes.
    found.client.app.state.context.chores.shutdown(wait=True)  # type: ignore[attr-defined]
    engine.dispose()


def test_a_mass_deletion_is_confirmed_through_the_api(store: Store) -> None:
    store.export(LEADS[:4])  # 36 of 40 leads gone from the export

    plain = store.request()
    assert plain.status_code == 202, plain.text
    assert plain.json()["allow_mass_delete"] is False
    store.work()
    refused = store.run(plain.json()["url"])
    assert (refused["status"], refused["error_kind"], refused["deleted"]) == ("failed", "mass_delete", 0)
    assert "would soft-delete 36 of the 40 live leads (90%)" in refused["error"]
    assert '{"allow_mass_delete": true}' in refused["error"]

    assert store.request({"allow_mass_delete": True}, headers=store.read).status_code == 403
    queued = store.request()
    confirmed = store.request({"allow_mass_delete": True})
    assert confirmed.status_code == 202, confirmed.text
    # The run already queued is the one confirmed, not a second one.
    assert confirmed.json()["id"] == queued.json()["id"]
    assert confirmed.json()["allow_mass_delete"] is True
    store.work()

    done = store.run(confirmed.json()["url"])
    assert (done["status"], done["deleted"], done["allow_mass_delete"]) == ("succeeded", 36, True)
    leads = store.client.get("/api/v1/leads?limit=100", headers=store.read).json()["data"]
    assert sorted(lead["external_id"] for lead in leads if not lead["is_deleted"]) == LEADS[:4]


def test_the_sync_run_shows_rejected_records(store: Store) -> None:
    store.leads.write_text("id,source\nL00,Web\n,Web\nL01,Web\n", encoding="utf-8")  # a row without an id

    response = store.request({"allow_mass_delete": True})
    store.work()

    run = store.run(response.json()["url"])
    assert (run["status"], run["skipped"]) == ("succeeded", 1)
