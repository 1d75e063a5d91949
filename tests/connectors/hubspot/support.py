"""Driving the hubspot connector in tests: settings for an emulator, syncs into a real store."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import ConnectionConfig
from crm_perf_sync.connector_sdk import Checkpoint, ConnectorContext, Message, StreamSpec
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.leases import new_holder_id
from crm_perf_sync.models import (
    Lead,
    Opportunity,
    Owner,
    PipelineStage,
    StageChange,
    SyncCheckpoint,
    SyncRun,
    Team,
)
from crm_perf_sync.sync import repository as repo
from crm_perf_sync.sync.outcomes import SyncOutcome
from crm_perf_sync.sync.service import SyncEngine, SyncOptions
from crm_perf_sync_hubspot import HubSpotConnector, HubSpotSettings
from tests.connectors.hubspot.emulator import HubSpotEmulator, SimClock

#: Limits far above anything a test sends (and equal to what the emulator announces when it
#: enforces none): pacing is tested on purpose, not everywhere.
UNLIMITED: Mapping[str, Any] = {
    "requests_per_interval": 100_000,
    "interval": "PT1S",
    "search_per_second": 100_000,
}


def settings_for(emulator: HubSpotEmulator, **overrides: Any) -> HubSpotSettings:
    """Settings pointing at ``emulator`` with the private app token the portal accepts."""
    values: dict[str, Any] = {
        "access_token": emulator.portal.token,
        "base_url": emulator.url,
        "rate_limits": dict(UNLIMITED),
    }
    values.update(overrides)
    return HubSpotSettings.model_validate(values)


def connector(
    settings: HubSpotSettings, clock: SimClock, *, connection_id: str = "hs", full_refresh: bool = False
) -> HubSpotConnector:
    """A connector as the service builds one, on the simulated clock (for time and for waiting)."""
    context = ConnectorContext(
        connection_id=connection_id,
        base_dir=Path.cwd(),
        logger=logging.getLogger(f"crm_perf_sync.connector.{connection_id}"),
        full_refresh=full_refresh,
        clock=clock.now,
    )
    return HubSpotConnector(settings, context, sleep=clock.sleep)


def read(conn: HubSpotConnector, name: str, checkpoint: Mapping[str, Any] | None = None) -> list[Message]:
    (spec,) = [s for s in conn.streams() if s.name == name]
    return list(conn.read(spec, checkpoint))


def stream(conn: HubSpotConnector, name: str) -> StreamSpec:
    (spec,) = [s for s in conn.streams() if s.name == name]
    return spec


def checkpoints(messages: Iterable[Message]) -> list[dict[str, Any]]:
    return [dict(m.state) for m in messages if isinstance(m, Checkpoint)]


@dataclass
class Harness:
    """One HubSpot connection syncing from an emulator into a store, on a simulated clock."""

    session_factory: sessionmaker[Session]
    emulator: HubSpotEmulator
    clock: SimClock
    connection_id: str = "hs"
    settings: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 500

    def __post_init__(self) -> None:
        connections = [ConnectionConfig.model_validate({"id": self.connection_id, "kind": "hubspot"})]
        with session_scope(self.session_factory) as session:
            repo.sync_connections(session, connections, self.clock.now())

    def connector(self, *, full_refresh: bool = False, **overrides: Any) -> HubSpotConnector:
        settings = settings_for(self.emulator, **{**self.settings, **overrides})
        return connector(settings, self.clock, connection_id=self.connection_id, full_refresh=full_refresh)

    def sync(self, *, full: bool = False, allow_mass_delete: bool = False, **overrides: Any) -> SyncOutcome:
        engine = SyncEngine(
            session_factory=self.session_factory,
            connector=self.connector(full_refresh=full, **overrides),
            connection_id=self.connection_id,
            options=SyncOptions(batch_size=self.batch_size, retry_base_seconds=0.01),
            holder=new_holder_id(),
            sleep=self.clock.sleep,
        )
        return engine.run(trigger="manual", full_refresh=full, allow_mass_delete=allow_mass_delete)

    def ok(self, **overrides: Any) -> SyncOutcome:
        """A sync that must succeed."""
        outcome = self.sync(**overrides)
        assert outcome.status == "succeeded", outcome.summary()
        return outcome

    # -- the store --------------------------------------------------------------------------------

    def rows(self, model: Any, key: str = "external_id") -> dict[str, dict[str, Any]]:
        table: Table = model.__table__
        with session_scope(self.session_factory) as session:
            result = session.execute(select(table).where(table.c.connection_id == self.connection_id))
            return {str(row[key]): dict(row) for row in result.mappings()}

    def opportunities(self) -> dict[str, dict[str, Any]]:
        return self.rows(Opportunity)

    def leads(self) -> dict[str, dict[str, Any]]:
        return self.rows(Lead)

    def owners(self) -> dict[str, dict[str, Any]]:
        return self.rows(Owner)

    def stages(self) -> dict[str, dict[str, Any]]:
        return self.rows(PipelineStage)

    def stage_changes(self) -> dict[str, dict[str, Any]]:
        return self.rows(StageChange)

    def teams(self) -> dict[str, dict[str, Any]]:
        table: Table = Team.__table__  # type: ignore[assignment]
        with session_scope(self.session_factory) as session:
            result = session.execute(select(table).where(table.c.namespace == self.connection_id))
            return {str(row["external_id"]): dict(row) for row in result.mappings()}

    def checkpoint(self, stream_name: str) -> dict[str, Any] | None:
        with session_scope(self.session_factory) as session:
            row = session.get(SyncCheckpoint, (self.connection_id, stream_name))
            return dict(row.state) if row is not None else None

    def last_run(self) -> dict[str, Any]:
        table: Table = SyncRun.__table__  # type: ignore[assignment]
        with session_scope(self.session_factory) as session:
            row = (
                session.execute(
                    select(table)
                    .where(table.c.connection_id == self.connection_id)
                    .order_by(table.c.id.desc())
                )
                .mappings()
                .first()
            )
            assert row is not None
            return dict(row)
