"""Is it set up right: configuration, database, migrations, each CRM's credentials, each webhook
endpoint against the address guard."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from crm_perf_sync.config import LoadedConfig
from crm_perf_sync.kit.settings import Settings, redact_url
from crm_perf_sync.ops.repository import server_version

log = logging.getLogger(__name__)

#: Tries of one request when ``doctor`` checks a connection: someone is waiting at a terminal, and
#: a second try is enough to tell a blip from an outage (a sync keeps its connector's patience).
DOCTOR_ATTEMPTS = 2


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    hint: str | None = None


@dataclass
class Doctor:
    """Each check in order; a check that cannot run because an earlier one failed is skipped."""

    settings: Settings
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def record(self, name: str, probe: Callable[[], str], hint: str | None = None) -> bool:
        try:
            detail = probe()
        except Exception as exc:  # every failure is a finding, reported and not raised
            message = str(exc).strip() or type(exc).__name__
            self.checks.append(Check(name, False, message, hint))
            return False
        self.checks.append(Check(name, True, detail))
        return True

    def run(self) -> Doctor:
        from crm_perf_sync.kit import migrate
        from crm_perf_sync.kit.db import check_database, create_db_engine, make_session_factory
        from crm_perf_sync.plugins import ConnectorRegistry
        from crm_perf_sync.runtime import load_checked_config

        registry = ConnectorRegistry.discover()
        loaded: list[LoadedConfig] = []

        def config() -> str:
            found = load_checked_config(self.settings, registry)
            loaded.append(found)
            app = found.app
            return (
                f"{found.path}: {len(app.connections)} connection(s), {len(found.kpis)} KPI(s), "
                f"{len(app.alerts.rules)} alert rule(s)"
            )

        self.record("configuration", config, "fix the file, then `crm-perf-sync config check`")
        for broken in registry.broken:
            self.checks.append(
                Check(f"connector plugin {broken.kind}", False, broken.error, "reinstall or remove it")
            )
        engines: list[Engine] = []

        def database() -> str:
            engines.append(create_db_engine(self.settings.database_url_value()))
            return _database(engines[0], check_database)

        try:
            reachable = self.record("database", database, "start it, or fix CRM_PERF_SYNC_DATABASE_URL")
            migrated = reachable and self.record(
                "migrations",
                lambda: _migrations(engines[0], migrate),
                "run `crm-perf-sync migrate` (back up the database first)",
            )
            if loaded:
                self._connections(loaded[0], registry)
                if migrated:
                    self._webhooks(make_session_factory(engines[0]))
        finally:
            for engine in engines:
                engine.dispose()
        return self

    def _connections(self, config: LoadedConfig, registry: Any) -> None:
        from crm_perf_sync.jobs.sync import build_connector

        for conn in config.app.connections:
            if not conn.enabled:
                self.checks.append(
                    Check(f"connection {conn.id}", True, f"{conn.kind}, disabled: not checked")
                )
                continue

            def probe(connection_id: str = conn.id, kind: str = conn.kind) -> str:
                connector = build_connector(config, registry, connection_id, max_attempts=DOCTOR_ATTEMPTS)
                try:
                    connector.check()
                finally:
                    connector.close()
                return f"{kind}: reachable, credentials accepted"

            self.record(f"connection {conn.id}", probe, "check its settings and credentials in the config")

    def _webhooks(self, session_factory: Any) -> None:
        from crm_perf_sync.kit.db import session_scope
        from crm_perf_sync.webhooks import repository as webhooks_repo
        from crm_perf_sync.webhooks.security import Guard

        guard = Guard(allow=tuple(self.settings.webhook_allow_hosts))
        with session_scope(session_factory) as session:
            endpoints = [(row.id, row.url) for row in webhooks_repo.endpoints(session, enabled_only=True)]
        for endpoint_id, url in endpoints:

            def probe(target: str = url) -> str:
                resolved = guard.resolve(target)
                return f"{target} → {resolved.address}, allowed"

            self.record(
                f"webhook endpoint {endpoint_id}",
                probe,
                "allow-list the host in CRM_PERF_SYNC_WEBHOOK_ALLOW_HOSTS, or fix the URL",
            )


def _database(engine: Any, check: Callable[[Any], None]) -> str:
    check(engine)
    version = server_version(engine)
    name = "SQLite" if engine.dialect.name == "sqlite" else "PostgreSQL"
    return f"{redact_url(str(engine.url))}: {name} {version}"


def _migrations(engine: Any, migrate: Any) -> str:
    current, head = migrate.current_revision(engine), migrate.head_revision()
    if current != head:
        raise RuntimeError(f"the schema is at {current or 'nothing (empty database)'}, the code at {head}")
    return f"at {head}"
