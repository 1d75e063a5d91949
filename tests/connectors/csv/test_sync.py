"""The csv connector through the real sync engine into a real store: snapshots and re-syncs."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import ConnectionConfig
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.leases import new_holder_id
from crm_perf_sync.sync import repository as repo
from crm_perf_sync.sync.service import SyncEngine, SyncOptions
from tests.connectors.csv.support import connector, example_settings

LEADS = "id,source,converted\nL1,Web,Yes\nL2,Event,No\nL3,Web,No\n"


def _sync(session_factory: sessionmaker[Session], data_dir: Path, full: bool = False) -> dict[str, int]:
    settings = {
        "data_dir": str(data_dir),
        "streams": {
            "leads": {
                "file": "leads.csv",
                "fields": {"external_id": "id", "source": "source", "is_converted": "converted"},
            }
        },
    }
    engine = SyncEngine(
        session_factory=session_factory,
        connector=connector(settings),
        connection_id="csv-sync",
        options=SyncOptions(batch_size=500),
        holder=new_holder_id(),
    )
    outcome = engine.run(trigger="manual", full_refresh=full)
    assert outcome.status == "succeeded", outcome.error
    return {name: outcome.total(name) for name in ("read", "inserted", "updated", "deleted", "skipped")}


def _register(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        repo.sync_connections(
            session, [ConnectionConfig.model_validate({"id": "csv-sync", "kind": "csv"})], utc_now()
        )


def _live(session_factory: sessionmaker[Session]) -> set[str]:
    with session_scope(session_factory) as session:
        return set(repo.live_external_ids(session, "leads", "csv-sync"))


def test_resync_of_an_unchanged_file_reads_nothing(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    _register(session_factory)
    (tmp_path / "leads.csv").write_text(LEADS)
    assert _sync(session_factory, tmp_path) == {
        "read": 3,
        "inserted": 3,
        "updated": 0,
        "deleted": 0,
        "skipped": 0,
    }
    # The done checkpoint matches the file: nothing is even read.
    assert _sync(session_factory, tmp_path) == {
        "read": 0,
        "inserted": 0,
        "updated": 0,
        "deleted": 0,
        "skipped": 0,
    }
    assert _sync(session_factory, tmp_path, full=True) == {
        "read": 3,
        "inserted": 0,
        "updated": 0,
        "deleted": 0,
        "skipped": 0,
    }
    assert _live(session_factory) == {"L1", "L2", "L3"}


def test_full_refresh_soft_deletes_rows_the_export_no_longer_has(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    _register(session_factory)
    (tmp_path / "leads.csv").write_text(LEADS)
    _sync(session_factory, tmp_path)
    (tmp_path / "leads.csv").write_text("id,source,converted\nL1,Web,Yes\nL3,Web,Yes\n")
    assert _sync(session_factory, tmp_path, full=True) == {
        "read": 2,
        "inserted": 0,
        "updated": 1,
        "deleted": 1,
        "skipped": 0,
    }
    assert _live(session_factory) == {"L1", "L3"}


def test_a_new_export_soft_deletes_rows_it_no_longer_has(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    _register(session_factory)
    (tmp_path / "leads.csv").write_text(LEADS)
    _sync(session_factory, tmp_path)
    (tmp_path / "leads.csv").write_text("id,source,converted\nL1,Web,Yes\nL3,Web,Yes\n")
    assert _sync(session_factory, tmp_path) == {
        "read": 2,
        "inserted": 0,
        "updated": 1,
        "deleted": 1,
        "skipped": 0,
    }
    assert _live(session_factory) == {"L1", "L3"}


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        (
            "maven",
            {"teams": 9, "owners": 35, "pipeline_stages": 4, "accounts": 85, "opportunities": 8800},
        ),
        (
            "zoho",
            {"owners": 11, "pipeline_stages": 8, "accounts": 2229, "leads": 3900, "opportunities": 3632},
        ),
        ("x_education", {"leads": 9240}),
    ],
)
def test_example_datasets_sync_completely_and_then_stay_put(
    session_factory: sessionmaker[Session], example: str, expected: dict[str, int]
) -> None:
    with session_scope(session_factory) as session:
        repo.sync_connections(
            session, [ConnectionConfig.model_validate({"id": example, "kind": "csv"})], utc_now()
        )

    def run() -> dict[str, tuple[int, int, int]]:
        engine = SyncEngine(
            session_factory=session_factory,
            connector=connector(example_settings(example)),
            connection_id=example,
            options=SyncOptions(),
            holder=new_holder_id(),
        )
        outcome = engine.run(trigger="manual", full_refresh=False)
        assert outcome.status == "succeeded", outcome.error
        return {name: (s.inserted, s.skipped, s.read) for name, s in outcome.streams.items()}

    assert run() == {name: (count, 0, count) for name, count in expected.items()}
    assert run() == dict.fromkeys(expected, (0, 0, 0))
