"""The sync job: a configured connection synced through the engine, with the configuration
mirrored into the store before and its configured teams and declared measure values applied after.

The engine (:class:`crm_perf_sync.sync.service.SyncEngine`) commits each batch with its checkpoint
in a transaction of its own, under the connection's lease: a sync is a sequence of units of work,
each its own transaction, not one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import LoadedConfig
from crm_perf_sync.connector_sdk import Connector, ConnectorContext
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.errors import NotFound
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.leases import new_holder_id
from crm_perf_sync.measures import service as measures
from crm_perf_sync.measures.service import Catalog
from crm_perf_sync.org import repository as org_repo
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.sync import repository as repo
from crm_perf_sync.sync.outcomes import SyncOutcome
from crm_perf_sync.sync.service import ProgressCallback, SyncEngine, SyncOptions


class SyncService:
    """Syncs configured connections: for the CLI, the worker and the syncs queued through the API."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        registry: ConnectorRegistry,
        config: LoadedConfig,
        options: SyncOptions,
        holder: str | None = None,
        base_dir: Path | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.registry = registry
        self.config = config
        self.options = options
        self.holder = holder or new_holder_id()
        self.base_dir = base_dir or Path.cwd()

    def apply_config(self) -> None:
        """Mirror connections, configured teams and declared measure values into the store
        (idempotent)."""
        with session_scope(self.session_factory) as session:
            now = utc_now()
            repo.sync_connections(session, self.config.app.connections, now)
            org_repo.sync_config_teams(session, self.config.app, now)
            self._apply_measures(session)

    def _apply_measures(self, session: Session) -> None:
        catalog = Catalog(self.config.measures, self.config.app.business.fiscal_year_start_month)
        measures.apply_declared(session, catalog, self.config.app.measures.values, utc_now())

    def build_connector(self, connection_id: str, *, full_refresh: bool = False) -> Connector:  # type: ignore[type-arg]
        return build_connector(
            self.config, self.registry, connection_id, base_dir=self.base_dir, full_refresh=full_refresh
        )

    def sync(
        self,
        connection_id: str,
        *,
        trigger: str = "manual",
        full_refresh: bool = False,
        on_progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        queued_run: int | None = None,
        allow_mass_delete: bool = False,
        targets: Mapping[str, Sequence[str]] | None = None,
        connector: Connector | None = None,  # type: ignore[type-arg]
    ) -> SyncOutcome:
        """One sync of ``connection_id``; ``targets`` (stream → record ids) makes it a targeted
        sync of what its CRM pushed (see :meth:`SyncEngine.run`). ``connector``: a new connector
        of the connection to sync with (one a watch told of the latest change, say); by default
        one built here."""
        if connector is None:
            connector = self.build_connector(connection_id, full_refresh=full_refresh)
        if targets is None:  # (a push's changes name a connection the store has mirrored already)
            with session_scope(self.session_factory) as session:
                repo.sync_connections(session, self.config.app.connections, utc_now())
        options = self.options
        conn = self.config.app.connection(connection_id)
        if conn is not None and conn.mass_delete_share is not None:
            options = replace(options, mass_delete_share=conn.mass_delete_share)
        engine = SyncEngine(
            session_factory=self.session_factory,
            connector=connector,
            connection_id=connection_id,
            options=options,
            holder=self.holder,
            on_progress=on_progress,
            should_stop=should_stop,
            sleep=sleep,
        )
        outcome = engine.run(
            trigger=trigger,
            full_refresh=full_refresh,
            queued_run=queued_run,
            allow_mass_delete=allow_mass_delete,
            targets=targets,
        )
        if outcome.status == "succeeded" and targets is None:
            # Configured members and declared measure values may name reps this sync has just
            # brought in.
            with session_scope(self.session_factory) as session:
                org_repo.sync_config_teams(session, self.config.app, utc_now())
                self._apply_measures(session)
        return outcome

    def reports(self, run_id: int, limit: int = 10) -> list[tuple[str, str, str]]:
        """The first bad records and warnings of run ``run_id``: (level, stream, message)."""
        with session_scope(self.session_factory) as session:
            return repo.run_reports(session, run_id, limit)


def build_connector(
    config: LoadedConfig,
    registry: ConnectorRegistry,
    connection_id: str,
    *,
    base_dir: Path | None = None,
    full_refresh: bool = False,
    max_attempts: int | None = None,
) -> Connector:  # type: ignore[type-arg]
    """The configured connection's connector, ready to check or read (the caller closes it);
    ``max_attempts`` caps its tries of one request (see :class:`ConnectorContext`)."""
    conn = config.app.connection(connection_id)
    if conn is None:
        known = ", ".join(c.id for c in config.app.connections) or "none"
        raise NotFound(f"no connection {connection_id!r} in {config.path} (configured: {known})")
    connector_cls = registry.get(conn.kind)
    if connector_cls is None:
        raise NotFound(f"connector kind {conn.kind!r} of connection {connection_id!r} is not installed")
    context = ConnectorContext(
        connection_id=connection_id,
        base_dir=base_dir or Path.cwd(),
        logger=logging.getLogger(f"crm_perf_sync.connector.{connection_id}"),
        full_refresh=full_refresh,
        max_attempts=max_attempts,
    )
    return connector_cls(config.connector_settings[connection_id], context)
