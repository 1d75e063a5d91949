"""The contract every discovered connector keeps, built-in or third-party.

Structural checks run for all; connectors that declare ``example_settings`` are also read and
synced twice through the real engine into a real store: the records are valid canonical records,
checkpoints are JSON, and a second sync from the checkpoints changes nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import AppConfig
from crm_perf_sync.connector_sdk import Checkpoint, Connector, ConnectorContext, ConnectorSettings
from crm_perf_sync.connector_sdk.records import RECORD_TYPES
from crm_perf_sync.connectors.registry import ConnectorRegistry
from crm_perf_sync.db import session_scope
from crm_perf_sync.leases import new_holder_id
from crm_perf_sync.sync import repository as repo
from crm_perf_sync.sync.service import SyncEngine, SyncOptions
from crm_perf_sync.timeutil import utc_now

REGISTRY = ConnectorRegistry.discover()
KINDS = REGISTRY.kinds()
REPO = Path(__file__).resolve().parents[2]


def test_discovery_found_the_built_in_connectors_and_nothing_broken() -> None:
    assert {"demo", "csv"} <= set(KINDS)
    assert REGISTRY.broken == []


def make(kind: str) -> Connector:  # type: ignore[type-arg]
    cls = REGISTRY.connectors[kind]
    assert cls.example_settings is not None
    settings = cls.settings_model.model_validate(cls.example_settings)
    context = ConnectorContext(
        connection_id=f"contract-{kind}", base_dir=REPO, logger=logging.getLogger(kind)
    )
    return cls(settings, context)


@pytest.mark.parametrize("kind", KINDS)
def test_structure(kind: str) -> None:
    cls = REGISTRY.connectors[kind]
    assert issubclass(cls.settings_model, ConnectorSettings)
    assert cls.settings_model.model_config.get("extra") == "forbid", "unknown settings keys must be errors"
    assert cls.description, "a one-line description for `connectors list`"
    if cls.example_settings is None:
        pytest.skip(f"{kind} declares no example_settings: only checked structurally")
    connector = make(kind)
    streams = connector.streams()
    names = [spec.name for spec in streams]
    assert names, "a connector offers at least one stream"
    assert len(names) == len(set(names)), "stream names are unique"
    for spec in streams:
        assert spec.entity in RECORD_TYPES


@pytest.mark.parametrize("kind", [k for k in KINDS if REGISTRY.connectors[k].example_settings is not None])
def test_reads_are_valid_and_a_second_sync_changes_nothing(
    kind: str, session_factory: sessionmaker[Session]
) -> None:
    connector = make(kind)
    for spec in connector.streams():
        expected = RECORD_TYPES[spec.entity]
        last_checkpoint = None
        records = 0
        for message in connector.read(spec, None):
            if isinstance(message, Checkpoint):
                json.dumps(dict(message.state))  # checkpoints round-trip through the store as JSON
                last_checkpoint = message
            elif isinstance(message, expected):
                message.validate()
                records += 1
        assert last_checkpoint is not None, f"{kind}/{spec.name} never yielded a checkpoint"

    connection_id = f"contract-{kind}"
    with session_scope(session_factory) as session:
        repo.sync_connections(
            session,
            AppConfig.model_validate({"connections": [{"id": connection_id, "kind": kind}]}),
            utc_now(),
        )

    def sync(full: bool) -> tuple[str, int, int, int]:
        engine = SyncEngine(
            session_factory=session_factory,
            connector=make(kind),
            connection_id=connection_id,
            options=SyncOptions(batch_size=500),
            holder=new_holder_id(),
        )
        outcome = engine.run(trigger="manual", full_refresh=full)
        return outcome.status, outcome.total("inserted"), outcome.total("updated"), outcome.total("read")

    status, inserted, _updated, _read = sync(full=False)
    assert status == "succeeded"
    assert inserted > 0
    again = sync(full=False)
    assert again[0] == "succeeded"
    assert again[1:3] == (0, 0), f"a second sync of {kind} changed the store: {again}"
    refreshed = sync(full=True)
    assert refreshed[1:3] == (0, 0), f"a full re-read of {kind} changed the store: {refreshed}"
