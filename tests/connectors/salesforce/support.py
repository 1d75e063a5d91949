"""Driving the Salesforce connector in tests: settings for an emulator, syncs, the stored rows."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import ConnectionConfig
from crm_perf_sync.connector_sdk import Checkpoint, ConnectorContext, Message, StreamSpec
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.leases import new_holder_id
from crm_perf_sync.models import (
    Account,
    Activity,
    Lead,
    Opportunity,
    Owner,
    PipelineStage,
    StageChange,
    SyncRun,
    Team,
)
from crm_perf_sync.sync import repository as repo
from crm_perf_sync.sync.outcomes import SyncOutcome
from crm_perf_sync.sync.service import SyncEngine, SyncOptions
from crm_perf_sync_salesforce.connector import SalesforceConnector
from crm_perf_sync_salesforce.settings import SalesforceSettings
from tests.connectors.salesforce.emulator import SalesforceEmulator

PASSWORD_AUTH = {
    "type": "password",
    "username": "admin@example.com",
    "password": "admin-password",
    "security_token": "TOKEN",
}
CONNECTION = "sfdc"
_MODELS: Mapping[str, Any] = {
    "owners": Owner,
    "teams": Team,
    "accounts": Account,
    "leads": Lead,
    "activities": Activity,
    "opportunities": Opportunity,
    "stage_changes": StageChange,
    "pipeline_stages": PipelineStage,
}


def settings_for(emulator: SalesforceEmulator, **overrides: Any) -> dict[str, Any]:
    """Settings of a connection to ``emulator`` (password login, its CA trusted), as YAML gives them."""
    settings: dict[str, Any] = {
        "auth": dict(PASSWORD_AUTH),
        "login_url": emulator.url,
        "ca_bundle": str(emulator.tls.ca_path),
        "bulk_poll_interval": 0.01,
    }
    settings.update(overrides)
    return settings


@cache
def rsa_key_pair() -> tuple[str, str]:
    """A connected app's signing key (PEM private) and its certificate's public key (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def auth_for(emulator: SalesforceEmulator, kind: str) -> dict[str, Any]:
    """``auth`` settings of each type, with the connected app or session the org needs for it."""
    org = emulator.org
    if "admin@example.com" not in org.users:
        org.add_user("admin@example.com", "admin-password", "TOKEN")
    if kind == "password":
        return dict(PASSWORD_AUTH)
    if kind == "client_credentials":
        org.add_client("cc-consumer-key", "cc-consumer-secret", run_as="admin@example.com")
        return {
            "type": "client_credentials",
            "client_id": "cc-consumer-key",
            "client_secret": "cc-consumer-secret",
        }
    if kind == "jwt":
        private, public = rsa_key_pair()
        org.add_client("jwt-consumer-key", "unused-secret", public_key=public)
        return {
            "type": "jwt",
            "client_id": "jwt-consumer-key",
            "username": "admin@example.com",
            "private_key": private,
        }
    if kind == "session":
        token = org.new_session(org.users["admin@example.com"].user_id)
        return {"type": "session", "session_id": token, "instance_url": emulator.url}
    raise ValueError(kind)


def connector(
    settings: Mapping[str, Any] | SalesforceSettings,
    *,
    clock: Callable[[], datetime] | None = None,
    full_refresh: bool = False,
    logger: logging.Logger | None = None,
) -> SalesforceConnector:
    """A connector as the service builds one."""
    if not isinstance(settings, SalesforceSettings):
        settings = SalesforceSettings.model_validate(settings)
    context = ConnectorContext(
        connection_id=CONNECTION,
        base_dir=Path.cwd(),
        logger=logger or logging.getLogger("crm_perf_sync.connector.sfdc"),
        full_refresh=full_refresh,
    )
    if clock is not None:
        context = replace(context, clock=clock)
    return SalesforceConnector(settings, context)


def spec(conn: SalesforceConnector, name: str) -> StreamSpec:
    (found,) = [s for s in conn.streams() if s.name == name]
    return found


def read(conn: SalesforceConnector, name: str, checkpoint: Mapping[str, Any] | None = None) -> list[Message]:
    """Every message of one read of the stream."""
    return list(conn.read(spec(conn, name), checkpoint))


def checkpoints(messages: Iterable[Message]) -> list[Mapping[str, Any]]:
    return [m.state for m in messages if isinstance(m, Checkpoint)]


def register(session_factory: sessionmaker[Session], connection_id: str = CONNECTION) -> None:
    with session_scope(session_factory) as session:
        repo.sync_connections(
            session,
            [ConnectionConfig.model_validate({"id": connection_id, "kind": "salesforce"})],
            utc_now(),
        )


@dataclass
class Syncer:
    """Runs syncs of one connection through the real engine, recording the engine's backoff sleeps."""

    session_factory: sessionmaker[Session]
    settings: Mapping[str, Any]
    connection_id: str = CONNECTION
    clock: Callable[[], datetime] | None = None
    batch_size: int = 5000
    max_retries: int = 5
    sleeps: list[float] = field(default_factory=list)
    logger: logging.Logger | None = None

    def __post_init__(self) -> None:
        register(self.session_factory, self.connection_id)

    def run(self, *, full: bool = False, allow_mass_delete: bool = False, **overrides: Any) -> SyncOutcome:
        settings = {**self.settings, **overrides}
        engine = SyncEngine(
            session_factory=self.session_factory,
            connector=connector(settings, clock=self.clock, full_refresh=full, logger=self.logger),
            connection_id=self.connection_id,
            options=SyncOptions(batch_size=self.batch_size, max_retries=self.max_retries),
            holder=new_holder_id(),
            sleep=self.sleeps.append,
        )
        return engine.run(trigger="test", full_refresh=full, allow_mass_delete=allow_mass_delete)


def stored(
    session_factory: sessionmaker[Session], entity: str, connection_id: str = CONNECTION
) -> dict[str, Any]:
    """The stored rows of ``entity`` for the connection, by external id (detached ORM objects)."""
    model = _MODELS[entity]
    scope = model.namespace if entity == "teams" else model.connection_id
    with session_scope(session_factory) as session:
        rows = session.scalars(select(model).where(scope == connection_id)).all()
        session.expunge_all()
    return {row.external_id: row for row in rows}


def live(session_factory: sessionmaker[Session], entity: str, connection_id: str = CONNECTION) -> set[str]:
    return {key for key, row in stored(session_factory, entity, connection_id).items() if not row.is_deleted}


def last_run(session_factory: sessionmaker[Session], connection_id: str = CONNECTION) -> SyncRun:
    with session_scope(session_factory) as session:
        run = session.scalars(
            select(SyncRun).where(SyncRun.connection_id == connection_id).order_by(SyncRun.id.desc()).limit(1)
        ).one()
        session.expunge(run)
    return run


def checkpoint_of(
    session_factory: sessionmaker[Session], stream: str, connection_id: str = CONNECTION
) -> Mapping[str, Any] | None:
    with session_scope(session_factory) as session:
        return repo.load_checkpoints(session, connection_id).get(stream)


_BOOKKEEPING = frozenset({"id", "connection_id", "first_synced_at", "synced_at"})


def comparable(
    session_factory: sessionmaker[Session], entity: str, connection_id: str
) -> dict[str, dict[str, Any]]:
    """Every stored column but the bookkeeping ones, by external id: what two syncs must agree on."""
    rows = stored(session_factory, entity, connection_id)
    columns = [c.name for c in _MODELS[entity].__table__.columns if c.name not in _BOOKKEEPING]
    return {key: {name: getattr(row, name) for name in columns} for key, row in rows.items()}
