"""Values declared in the configuration reach the store with it, and once a sync brings in the rep
they name."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import load_config
from crm_perf_sync.jobs.sync import SyncService
from crm_perf_sync.measures import repository as repo
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.sync.service import SyncOptions

CONFIG = """
connections:
  - id: demo
    kind: demo
    settings: {seed: 7, reps: 4, opportunities: 40, leads: 40}
teams:
  - {id: emea, name: EMEA}
measures:
  values:
    - {measure: training_hours, scope: team, scope_id: "@config:emea", grain: year, period: 2026, value: 40}
    - {measure: review_360, scope: owner, scope_id: "demo:REP-001", grain: year, period: 2026-06, value: 4.5}
"""


def entries(factory: sessionmaker[Session]) -> set[tuple[str, str, str, str, str, str]]:
    with factory() as session:
        rows, _ = repo.entries_page(session, repo.EntryFilter(), None, 100)
    return {
        (r["measure_id"], r["scope_id"], r["period_key"], str(r["value"]), r["source"], r["entered_by"])
        for r in rows
    }


def test_declared_values_are_applied_with_the_configuration_and_after_a_sync(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    path = tmp_path / "crm-perf-sync.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    registry = ConnectorRegistry.discover()
    service = SyncService(
        session_factory=session_factory,
        registry=registry,
        config=load_config(path, registry, {}),
        options=SyncOptions(),
    )
    team = ("training_hours", "@config:emea", "2026-01-01", "40", "config", "config")
    rep = ("review_360", "demo:REP-001", "2026-01-01", "4.5", "config", "config")

    service.apply_config()
    assert entries(session_factory) == {team}  # the rep is not in the store yet
    assert service.sync("demo").status == "succeeded"
    assert entries(session_factory) == {team, rep}

    service.apply_config()  # again: nothing changes, nothing is added to the history
    with session_factory() as session:
        history, _ = repo.history_page(session, repo.EntryFilter(), None, 100)
    assert sorted((h["action"], h["scope_id"]) for h in history) == [
        ("create", "@config:emea"),
        ("create", "demo:REP-001"),
    ]
