"""Wiring: settings → engine, session factory, connector registry and configuration.

Built by a command when it starts (never at import) and handed down explicitly.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import ConfigIssues, LoadedConfig, load_config
from crm_perf_sync.connector_sdk import Connector
from crm_perf_sync.jobs.sync import SyncService, build_connector
from crm_perf_sync.kit import migrate
from crm_perf_sync.kit.db import check_database, create_db_engine, make_session_factory
from crm_perf_sync.kit.errors import ConfigurationError, DatabaseUnavailable
from crm_perf_sync.kit.logs import register_secrets
from crm_perf_sync.kit.settings import Settings
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.sync.service import SyncOptions
from crm_perf_sync.webhooks.delivery import Deliverer, DeliveryOptions
from crm_perf_sync.webhooks.security import Guard

log = logging.getLogger(__name__)


def sync_options(settings: Settings) -> SyncOptions:
    return SyncOptions(
        batch_size=settings.sync_batch_size,
        max_retries=settings.sync_max_retries,
        retry_base_seconds=settings.sync_retry_base_seconds,
        retry_max_seconds=settings.sync_retry_max_seconds,
        lease_ttl=timedelta(seconds=settings.lease_ttl_seconds),
        mass_delete_share=settings.mass_delete_share,
        mass_delete_floor=settings.mass_delete_floor,
    )


def load_checked_config(settings: Settings, registry: ConnectorRegistry) -> LoadedConfig:
    try:
        return load_config(settings.config, registry)
    except ConfigIssues as exc:
        count = len(exc.issues)
        raise ConfigurationError(
            f"{count} problem{'s' if count != 1 else ''} in the configuration:\n{exc}"
        ) from None


@dataclass
class Store:
    """The configured database: an engine found reachable and its session factory. All a command
    that only reads or writes the store needs (keys, webhooks, alert states, migrations)."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def webhook_guard(self) -> Guard:
        return Guard(allow=tuple(self.settings.webhook_allow_hosts))

    def ensure_schema(self, *, auto_migrate: bool) -> None:
        """Make sure the store is migrated; on the embedded SQLite default, migrate it."""
        if migrate.is_at_head(self.engine):
            return
        migrate.check_known(self.engine)
        if auto_migrate:
            migrate.upgrade(self.engine)
            return
        raise DatabaseUnavailable(
            "the database schema is not at the current version: run `crm-perf-sync migrate` first"
        )

    def close(self) -> None:
        self.engine.dispose()


@dataclass
class Runtime(Store):
    """The store with the configuration and the connectors that serve it: what syncs, refreshes
    and the long-running processes need."""

    registry: ConnectorRegistry
    config: LoadedConfig
    _services: dict[str, SyncService] = field(default_factory=dict)

    def sync_service(self) -> SyncService:
        if "sync" not in self._services:
            self._services["sync"] = SyncService(
                session_factory=self.session_factory,
                registry=self.registry,
                config=self.config,
                options=sync_options(self.settings),
            )
        return self._services["sync"]

    def deliverer(self, holder: str) -> Deliverer:
        options = DeliveryOptions(
            timeout=self.settings.webhook_timeout_seconds, concurrency=self.settings.webhook_concurrency
        )
        return Deliverer(self.session_factory, self.webhook_guard(), holder, options)


_SECRET_KEY = re.compile(r"(?i)(token|secret|password|passphrase|private_key|session|api_?key|credential)")


def secret_values(settings: Settings, config: LoadedConfig | None) -> list[str]:
    """The secrets this process holds: the database password and every connection setting whose
    name says it is a credential (tokens, secrets, passwords, keys), however deeply nested."""
    found: list[str] = []
    password = (
        make_url(settings.database_url_value()).password if "://" in settings.database_url_value() else None
    )
    if password:
        found.append(str(password))

    def walk(value: Any, secret: bool) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, secret or bool(_SECRET_KEY.search(str(key))))
        elif isinstance(value, list):
            for item in value:
                walk(item, secret)
        elif secret and isinstance(value, str):
            found.append(value)

    for conn in config.app.connections if config is not None else ():
        walk(conn.settings, False)
    return found


def open_store(settings: Settings) -> Store:
    """The one way to open the configured database: an engine, checked reachable (its schema is
    the caller's to check, see :meth:`Store.ensure_schema`; ``migrate`` changes it instead)."""
    engine = create_db_engine(settings.database_url_value())
    try:
        check_database(engine)
    except DatabaseUnavailable:
        engine.dispose()
        raise
    return Store(settings, engine, make_session_factory(engine))


def build_runtime(settings: Settings) -> Runtime:
    registry = ConnectorRegistry.discover()
    register_secrets(secret_values(settings, None))
    config = load_checked_config(settings, registry)
    register_secrets(secret_values(settings, config))
    store = open_store(settings)
    return Runtime(store.settings, store.engine, store.session_factory, registry, config)


class RecordLinks:
    """``links(connection_id, entity, external_id)``: the record's page in its CRM, or ``None``.

    Each configured connection's connector is constructed once, on first use, exactly as a sync
    constructs it (:func:`crm_perf_sync.jobs.sync.build_connector`), and asked for
    :meth:`~crm_perf_sync.connector_sdk.Connector.record_url`; neither connects to the CRM.
    A link is an extra, never a reason to fail a response: an unknown connection, a connector
    kind that is not installed, or a connector that raises, constructing or building the URL,
    gives ``None`` (and a warning, once per connection).
    """

    def __init__(self, config: LoadedConfig, registry: ConnectorRegistry) -> None:
        self.config = config
        self.registry = registry
        self._connectors: dict[str, Connector | None] = {}  # type: ignore[type-arg]
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def __call__(self, connection_id: str, entity: str, external_id: str) -> str | None:
        connector = self._connector(connection_id)
        if connector is None:
            return None
        try:
            url = connector.record_url(entity, external_id)
        except Exception as exc:  # a plugin can fail in any way; the response goes on without the link
            # Once per connection: a page of an explanation asks for hundreds of links.
            if connection_id not in self._warned:
                self._warned.add(connection_id)
                log.warning(
                    "connection %s: no link for %s %s (nor for any other record it fails on): %s: %s",
                    connection_id,
                    entity,
                    external_id,
                    type(exc).__name__,
                    exc,
                )
            return None
        return url if isinstance(url, str) else None

    def _connector(self, connection_id: str) -> Connector | None:  # type: ignore[type-arg]
        with self._lock:
            if connection_id not in self._connectors:
                self._connectors[connection_id] = self._build(connection_id)
            return self._connectors[connection_id]

    def _build(self, connection_id: str) -> Connector | None:  # type: ignore[type-arg]
        if self.config.app.connection(connection_id) is None:
            return None
        try:
            return build_connector(self.config, self.registry, connection_id)
        except Exception as exc:  # a plugin can fail in any way; no links from it then
            log.warning("connection %s: no links to its CRM: %s: %s", connection_id, type(exc).__name__, exc)
            return None


def record_links(config: LoadedConfig, registry: ConnectorRegistry) -> RecordLinks:
    """Links from stored records back to their CRM, for every connection of ``config``."""
    return RecordLinks(config, registry)
