"""The connector contract, as tests that a connector's own test suite runs.

A connector's test module subclasses :class:`ConnectorContract`, names the connector class and
its entry point, and inherits the tests::

    from crm_perf_sync.testing import ConnectorContract
    from acme_connector import AcmeConnector

    class TestAcmeContract(ConnectorContract):
        connector_class = AcmeConnector
        kind = "acme"  # the name of its crm_perf_sync.connectors entry point

A connector that declares ``example_settings`` needs nothing more. One that talks to a CRM
overrides the ``contract_settings`` fixture with a generator that yields settings for as long as
the tests run, typically while an emulator of the CRM serves on 127.0.0.1::

        @pytest.fixture(scope="class")
        @classmethod
        def contract_settings(cls):
            with AcmeEmulator() as emulator:
                yield {"api_key": "test", "base_url": emulator.url}

The tests check the structure (entry point, settings model, description, streams), that a read
of every stream yields valid canonical records of the stream's entity (each linked back to its
CRM by an absolute URL or not at all) and ends with a checkpoint that survives JSON, and that a
sync through the real engine into a fresh migrated store, then a second sync from its
checkpoints and a full re-read, change nothing the second and third time. The store comes from
the ``crm_perf_sync_store`` fixture of the pytest plugin, :mod:`crm_perf_sync.testing.plugin`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import ConnectionConfig
from crm_perf_sync.connector_sdk import (
    BadRecord,
    Checkpoint,
    Connector,
    ConnectorContext,
    ConnectorSettings,
    Pushable,
    SnapshotComplete,
    Tombstone,
)
from crm_perf_sync.connector_sdk.records import RECORD_TYPES
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.leases import new_holder_id
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.sync import repository as sync_repo
from crm_perf_sync.sync.outcomes import SyncOutcome
from crm_perf_sync.sync.service import SyncEngine, SyncOptions

#: A settings key no connector declares: the settings model must reject it.
UNKNOWN_SETTINGS_KEY = "crm_perf_sync_contract_unknown_key"


class ConnectorContract:
    """Base class of a connector's contract tests (see the module docstring).

    Not collected itself (its name does not start with ``Test``); a subclass named ``Test...``
    is, with every ``test_`` method below.
    """

    #: The connector under test.
    connector_class: ClassVar[type[Connector[Any]]]
    #: The name of its entry point in the ``crm_perf_sync.connectors`` group (the connection kind).
    kind: ClassVar[str]
    #: The stream names, in order, when the connector's streams are fixed.
    expected_streams: ClassVar[Sequence[str] | None] = None
    #: Streams that may read no record under the contract settings, e.g. a reconciliation pass that
    #: only reports deletions. Every other stream must yield at least one record, so that the
    #: settings exercise it.
    empty_streams: ClassVar[frozenset[str]] = frozenset()
    #: For a connector that takes pushes (:class:`~crm_perf_sync.connector_sdk.Pushable`): the
    #: streams its pushes name, whose records :meth:`~.Pushable.fetch` reads by id.
    fetched_streams: ClassVar[Sequence[str]] = ()
    #: An id no record of those streams has in the contract settings' CRM (fetched: a tombstone).
    unknown_id: ClassVar[str | None] = None

    @pytest.fixture(scope="class")
    @classmethod
    def contract_settings(cls) -> Mapping[str, Any]:
        """The raw settings (as a configuration file gives them) the tests run the connector with.

        The connector's ``example_settings`` by default. Override it with a generator that starts
        what the connector needs (an emulator of its CRM), yields the settings, and stops it.
        """
        declared = cls.connector_class.example_settings
        if declared is None:
            pytest.fail(
                f"{cls.kind} declares no example_settings: override the contract_settings fixture "
                f"of {cls.__name__} to yield settings under which it runs self-contained"
            )
        return dict(declared)

    # -- helpers -----------------------------------------------------------------------------------

    @property
    def connection_id(self) -> str:
        return f"contract-{self.kind}"

    def make_connector(self, raw: Mapping[str, Any], *, full_refresh: bool = False) -> Connector[Any]:
        """The connector as the service builds one for a configured connection."""
        settings = self.connector_class.settings_model.model_validate(dict(raw))
        context = ConnectorContext(
            connection_id=self.connection_id,
            base_dir=Path.cwd(),
            logger=logging.getLogger(f"crm_perf_sync.connector.{self.connection_id}"),
            full_refresh=full_refresh,
        )
        return self.connector_class(settings, context)

    def sync(
        self, store: sessionmaker[Session], raw: Mapping[str, Any], *, full_refresh: bool
    ) -> SyncOutcome:
        """One sync of the contract connection through the real engine."""
        engine = SyncEngine(
            session_factory=store,
            connector=self.make_connector(raw, full_refresh=full_refresh),
            connection_id=self.connection_id,
            options=SyncOptions(batch_size=500),
            holder=new_holder_id(),
        )
        return engine.run(trigger="manual", full_refresh=full_refresh)

    # -- structure ---------------------------------------------------------------------------------

    def test_entry_point_loads_this_connector(self) -> None:
        registry = ConnectorRegistry.discover()
        loaded = registry.get(self.kind)
        broken = [entry for entry in registry.broken if entry.kind == self.kind]
        assert broken == [], f"the entry point {self.kind!r} does not load: {broken}"
        assert loaded is self.connector_class, (
            f"the crm_perf_sync.connectors entry point {self.kind!r} names {loaded}, "
            f"not {self.connector_class}"
        )

    def test_settings_model_forbids_unknown_keys(self) -> None:
        model = self.connector_class.settings_model
        assert issubclass(model, ConnectorSettings)
        assert model.model_config.get("extra") == "forbid", "unknown settings keys must be errors"

    def test_settings_validate_and_a_misspelt_key_is_an_error(
        self, contract_settings: Mapping[str, Any]
    ) -> None:
        model = self.connector_class.settings_model
        model.model_validate(dict(contract_settings))
        with pytest.raises(ValidationError) as caught:
            model.model_validate({**contract_settings, UNKNOWN_SETTINGS_KEY: 1})
        assert UNKNOWN_SETTINGS_KEY in str(caught.value), "the error names the unknown key"

    def test_has_a_description(self) -> None:
        description = self.connector_class.description
        assert isinstance(description, str)
        assert description.strip(), "a one-line description for `connectors list`"

    def test_streams_are_unique_and_land_in_known_entities(
        self, contract_settings: Mapping[str, Any]
    ) -> None:
        connector = self.make_connector(contract_settings)
        try:
            streams = connector.streams()
        finally:
            connector.close()
        names = [spec.name for spec in streams]
        assert names, "a connector offers at least one stream"
        assert len(names) == len(set(names)), f"stream names are unique: {names}"
        for spec in streams:
            assert spec.entity in RECORD_TYPES, f"{spec.name}: unknown entity {spec.entity!r}"
        assert set(self.empty_streams) <= set(names), f"empty_streams names no stream of {names}"
        if self.expected_streams is not None:
            assert names == list(self.expected_streams)

    # -- reading -----------------------------------------------------------------------------------

    def test_reads_are_valid_records_and_end_with_a_json_checkpoint(
        self, contract_settings: Mapping[str, Any]
    ) -> None:
        connector = self.make_connector(contract_settings)
        try:
            for spec in connector.streams():
                expected = RECORD_TYPES[spec.entity]
                where = f"{self.kind}/{spec.name}"
                records = 0
                last: object = None
                for message in connector.read(spec, None):
                    last = message
                    if isinstance(message, Checkpoint):
                        state = dict(message.state)
                        # The store keeps the state as JSON and hands it back to the next read.
                        assert json.loads(json.dumps(state)) == state, f"{where}: {state} is not JSON"
                    elif isinstance(message, SnapshotComplete):
                        assert spec.snapshot, f"{where}: SnapshotComplete from a stream not declared snapshot"
                    elif not isinstance(message, Tombstone | BadRecord):  # deletions, skipped rows
                        assert isinstance(message, expected), (
                            f"{where}: a {type(message).__name__} in a stream of {spec.entity}"
                        )
                        message.validate()
                        records += 1
                        _check_record_url(connector, spec.entity, message, where)
                assert isinstance(last, Checkpoint), f"{where}: a read ends with a checkpoint, not {last!r}"
                if spec.name not in self.empty_streams:
                    assert records > 0, f"{where}: the contract settings read no record"
        finally:
            connector.close()

    def test_records_fetched_by_id_are_the_records_a_read_gives(
        self, contract_settings: Mapping[str, Any]
    ) -> None:
        connector = self.make_connector(contract_settings)
        try:
            takes = isinstance(connector, Pushable) and connector.takes_pushes()
            if not self.fetched_streams:
                # Nothing to fetch is right only for a connector that takes no pushes.
                assert not takes, f"{self.kind} takes pushes: name the streams they fetch in fetched_streams"
                return
            assert isinstance(connector, Pushable), f"{self.kind} names fetched_streams but is not Pushable"
            streams = {spec.name: spec for spec in connector.streams()}
            for name in self.fetched_streams:
                assert name in streams, f"fetched_streams: {self.kind} has no stream {name!r}"
                spec = streams[name]
                read = {
                    message.external_id: message
                    for message in connector.read(spec, None)
                    if isinstance(message, RECORD_TYPES[spec.entity])
                }
                assert read, f"{self.kind}/{name}: the contract settings read no record to fetch"
                keys = list(read)
                chosen = list(dict.fromkeys([keys[0], keys[len(keys) // 2], keys[-1]]))
                asked = [*chosen, *([self.unknown_id] if self.unknown_id is not None else [])]
                fetched = list(connector.fetch(spec, asked))
                records = [m for m in fetched if isinstance(m, RECORD_TYPES[spec.entity])]
                gone = [m.external_id for m in fetched if isinstance(m, Tombstone)]
                assert not [m for m in fetched if isinstance(m, Checkpoint)], (
                    f"{self.kind}/{name}: a fetch moves no cursor"
                )
                assert {r.external_id: r for r in records} == {key: read[key] for key in chosen}, (
                    f"{self.kind}/{name}: the records fetched by id differ from the records a read gives"
                )
                assert gone == ([self.unknown_id] if self.unknown_id is not None else []), (
                    f"{self.kind}/{name}: an id the CRM does not have is a tombstone, and only it ({gone})"
                )
        finally:
            connector.close()

    # -- syncing -----------------------------------------------------------------------------------

    def test_a_second_sync_and_a_full_reread_change_nothing(
        self, contract_settings: Mapping[str, Any], crm_perf_sync_store: sessionmaker[Session]
    ) -> None:
        with session_scope(crm_perf_sync_store) as session:
            sync_repo.sync_connections(
                session,
                [ConnectionConfig.model_validate({"id": self.connection_id, "kind": self.kind})],
                utc_now(),
            )

        first = self.sync(crm_perf_sync_store, contract_settings, full_refresh=False)
        assert first.status == "succeeded", first.summary()
        assert first.total("inserted") > 0, first.summary()

        for full_refresh, what in ((False, "a second sync"), (True, "a full re-read")):
            again = self.sync(crm_perf_sync_store, contract_settings, full_refresh=full_refresh)
            assert again.status == "succeeded", again.summary()
            changed = {name: again.total(name) for name in ("inserted", "updated", "deleted")}
            assert changed == {"inserted": 0, "updated": 0, "deleted": 0}, (
                f"{what} of {self.kind} changed the store: {again.summary()}"
            )


def _check_record_url(connector: Connector[Any], entity: str, record: object, where: str) -> None:
    """A record's link into its CRM is an absolute URL, or ``None``."""
    external_id = getattr(record, "external_id", None)
    if external_id is None:
        return
    url = connector.record_url(entity, external_id)
    if url is not None:
        parts = urlsplit(url)
        message = f"{where}: record_url of {external_id!r} is {url!r}, not an absolute URL or None"
        assert parts.scheme in ("http", "https"), message
        assert parts.netloc, message
