"""The operational endpoints of the API: liveness and readiness."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from crm_perf_sync.api.app import create_app
from crm_perf_sync.kit import migrate
from crm_perf_sync.kit.db import create_db_engine


def test_healthz_and_readyz_follow_the_schema(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        client = TestClient(create_app(engine))
        assert client.get("/healthz").json() == {"status": "ok"}

        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.headers["content-type"] == "application/problem+json"
        body = not_ready.json()
        assert body["status"] == 503
        assert "run migrate" in body["detail"]

        migrate.upgrade(engine)
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "schema": migrate.head_revision()}
    finally:
        engine.dispose()


def test_readyz_reports_an_unreachable_database() -> None:
    engine = create_db_engine("postgresql+psycopg://nobody@127.0.0.1:9/crm?connect_timeout=2")
    try:
        response = TestClient(create_app(engine)).get("/readyz")
        assert response.status_code == 503
        assert "is unreachable" in response.json()["detail"]
        assert response.json()["type"].endswith("/database-unavailable")
    finally:
        engine.dispose()
