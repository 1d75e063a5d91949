"""The contract every discovered connector keeps, built-in or third-party.

Structural checks run for all; connectors that run self-contained are also read and synced twice
through the real engine into a real store: the records are valid canonical records, checkpoints
are JSON, and a second sync from the checkpoints changes nothing. A connector runs self-contained
with its declared ``example_settings`` or, for one that talks to a CRM, with the settings that
``tests/connectors/<kind>/contract.py`` yields while it runs an emulator of that CRM.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

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
    assert {"demo", "csv", "salesforce", "hubspot"} <= set(KINDS)
    assert REGISTRY.broken == []


def emulated(kind: str) -> AbstractContextManager[dict[str, Any]] | None:
    """The test suite's emulator-backed settings for ``kind``, if it has them."""
    try:
        module = importlib.import_module(f"tests.connectors.{kind}.contract")
    except ModuleNotFoundError:
        return None
    provider: AbstractContextManager[dict[str, Any]] = module.example_settings()
    return provider


def runnable(kind: str) -> bool:
    if REGISTRY.connectors[kind].example_settings is not None:
        return True
    provider = emulated(kind)
    return provider is not None


@contextmanager
def example_settings(kind: str) -> Iterator[dict[str, Any]]:
    declared = REGISTRY.connectors[kind].example_settings
    provider = nullcontext(dict(declared)) if declared is not None else emulated(kind)
    assert provider is not None, kind
    with provider as settings:
        yield settings


def make(kind: str, raw_settings: dict[str, Any]) -> Connector:  # type: ignore[type-arg]
    cls = REGISTRY.connectors[kind]
    settings = cls.settings_model.model_validate(raw_settings)
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
    if not runnable(kind):
        pytest.skip(f"{kind} declares no example_settings and has no emulator: only checked structurally")
    with example_settings(kind) as raw:
        connector = make(kind, raw)
        try:
            streams = connector.streams()
        finally:
            connector.close()
    names = [spec.name for spec in streams]
    assert names, "a connector offers at least one stream"
    assert len(names) == len(set(names)), "stream names are unique"
    for spec in streams:
        assert spec.entity in RECORD_TYPES


@pytest.mark.parametrize("kind", [k for k in KINDS if runnable(k)])
def test_reads_are_valid_and_a_second_sync_changes_nothing(
    kind: str, session_factory: sessionmaker[Session]
) -> None:
    with example_settings(kind) as raw:
        check_reads_and_syncs(kind, raw, session_factory)


def check_reads_and_syncs(kind: str, raw: dict[str, Any], session_factory: sessionmaker[Session]) -> None:
    connector = make(kind, raw)
    try:
        for spec in connector.streams():
            expected = RECORD_TYPES[spec.entity]
            last_checkpoint = None
            for message in connector.read(spec, None):
                if isinstance(message, Checkpoint):
                    json.dumps(dict(message.state))  # checkpoints round-trip through the store as JSON
                    last_checkpoint = message
                elif isinstance(message, expected):
                    message.validate()
            assert last_checkpoint is not None, f"{kind}/{spec.name} never yielded a checkpoint"
    finally:
        connector.close()

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
            connector=make(kind, raw),
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
