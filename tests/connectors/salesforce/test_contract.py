"""The connector contract (as tests/connectors/test_contract.py checks it) over the emulated org."""

from __future__ import annotations

import json

from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.connector_sdk import Checkpoint, ConnectorSettings
from crm_perf_sync.connector_sdk.records import RECORD_TYPES
from crm_perf_sync.connectors.registry import ConnectorRegistry
from crm_perf_sync_salesforce.connector import SalesforceConnector
from tests.connectors.salesforce.contract import example_settings
from tests.connectors.salesforce.support import Syncer, connector


def test_the_entry_point_names_the_connector() -> None:
    registry = ConnectorRegistry.discover()
    assert registry.get("salesforce") is SalesforceConnector
    assert not [broken for broken in registry.broken if broken.kind == "salesforce"]
    assert issubclass(SalesforceConnector.settings_model, ConnectorSettings)
    assert SalesforceConnector.settings_model.model_config.get("extra") == "forbid"
    assert SalesforceConnector.description


def test_reads_are_valid_and_a_second_sync_changes_nothing(session_factory: sessionmaker[Session]) -> None:
    with example_settings() as settings:
        conn = connector(settings)
        names = [spec.name for spec in conn.streams()]
        assert len(names) == len(set(names))
        for spec in conn.streams():
            expected = RECORD_TYPES[spec.entity]
            last = None
            for message in conn.read(spec, None):
                if isinstance(message, Checkpoint):
                    json.dumps(dict(message.state))
                    last = message
                elif isinstance(message, expected):
                    message.validate()
            assert last is not None, f"{spec.name} never yielded a checkpoint"
        conn.close()

        syncer = Syncer(session_factory, settings, connection_id="contract-salesforce", batch_size=500)
        first = syncer.run()
        assert first.status == "succeeded", first.error
        assert first.total("inserted") > 0
        again = syncer.run()
        assert again.status == "succeeded", again.error
        assert (again.total("inserted"), again.total("updated")) == (0, 0)
        refreshed = syncer.run(full=True)
        assert refreshed.status == "succeeded", refreshed.error
        assert (refreshed.total("inserted"), refreshed.total("updated"), refreshed.total("deleted")) == (
            0,
            0,
            0,
        )
