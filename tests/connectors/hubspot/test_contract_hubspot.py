"""The checks of the shared contract suite (tests/connectors/test_contract.py), on this connector.

The shared suite reads ``example_settings`` from the connector class; the hubspot connector needs
a running emulator for that, which :func:`tests.connectors.hubspot.contract.example_settings`
provides. These are the same checks, run against it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import AppConfig
from crm_perf_sync.connector_sdk import Checkpoint, ConnectorContext, ConnectorSettings
from crm_perf_sync.connector_sdk.records import RECORD_TYPES
from crm_perf_sync.connectors.registry import ConnectorRegistry
from crm_perf_sync.db import session_scope
from crm_perf_sync.leases import new_holder_id
from crm_perf_sync.sync import repository as repo
from crm_perf_sync.sync.service import SyncEngine, SyncOptions
from crm_perf_sync.timeutil import utc_now
from crm_perf_sync_hubspot import HubSpotConnector, HubSpotSettings
from tests.connectors.hubspot.contract import example_settings

REPO = Path(__file__).resolve().parents[3]


def _make(settings: dict[str, object]) -> HubSpotConnector:
    context = ConnectorContext(
        connection_id="contract-hubspot", base_dir=REPO, logger=logging.getLogger("hubspot")
    )
    return HubSpotConnector(HubSpotSettings.model_validate(settings), context)


def test_the_entry_point_is_discovered_and_structurally_sound() -> None:
    registry = ConnectorRegistry.discover()
    assert registry.connectors.get("hubspot") is HubSpotConnector
    assert registry.broken == []
    assert issubclass(HubSpotConnector.settings_model, ConnectorSettings)
    assert HubSpotConnector.settings_model.model_config.get("extra") == "forbid"
    assert HubSpotConnector.description
    with example_settings() as settings:
        connector = _make(settings)
        names = [spec.name for spec in connector.streams()]
        connector.close()
    assert names == ["teams", "owners", "pipelines", "leads", "opportunities", "stage_changes"]
    assert all(spec.entity in RECORD_TYPES for spec in connector.streams())


def test_reads_are_valid_and_a_second_sync_changes_nothing(session_factory: sessionmaker[Session]) -> None:
    with example_settings() as settings:
        connector = _make(settings)
        for spec in connector.streams():
            expected = RECORD_TYPES[spec.entity]
            last_checkpoint = None
            records = 0
            for message in connector.read(spec, None):
                if isinstance(message, Checkpoint):
                    json.dumps(dict(message.state))
                    last_checkpoint = message
                elif isinstance(message, expected):
                    message.validate()
                    records += 1
            assert last_checkpoint is not None, f"hubspot/{spec.name} never yielded a checkpoint"
            assert records > 0, spec.name
        connector.close()

        connection_id = "contract-hubspot"
        with session_scope(session_factory) as session:
            repo.sync_connections(
                session,
                AppConfig.model_validate({"connections": [{"id": connection_id, "kind": "hubspot"}]}),
                utc_now(),
            )

        def sync(full: bool) -> tuple[str, int, int, int]:
            engine = SyncEngine(
                session_factory=session_factory,
                connector=_make(settings),
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
        assert again[1:3] == (0, 0), f"a second sync of hubspot changed the store: {again}"
        refreshed = sync(full=True)
        assert refreshed[1:3] == (0, 0), f"a full re-read of hubspot changed the store: {refreshed}"
