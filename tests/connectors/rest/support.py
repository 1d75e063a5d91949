"""Helpers of the rest connector tests: a connector on a simulated clock, whole reads, specs on disk."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import ConnectionConfig
from crm_perf_sync.connector_sdk import Checkpoint, ConnectorContext, Message, StreamSpec
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.leases import new_holder_id
from crm_perf_sync.sync import repository as repo
from crm_perf_sync.sync.outcomes import SyncOutcome
from crm_perf_sync.sync.service import SyncEngine, SyncOptions
from crm_perf_sync_rest.connector import RestConnector, RestSettings
from tests.connectors.rest.emulators.base import SimClock

HERE = Path(__file__).resolve().parent
TOY_SPEC = HERE / "toy.yaml"

T = TypeVar("T")

#: Every connector the helpers built, closed after each test (tests/connectors/rest/conftest.py).
OPEN: list[RestConnector] = []


def connector(
    settings: Mapping[str, Any] | RestSettings,
    clock: SimClock,
    *,
    connection_id: str = "rest-test",
    full_refresh: bool = False,
    max_attempts: int | None = None,
) -> RestConnector:
    """A connector as the service builds one, on the simulated clock (for time and for waiting)."""
    if not isinstance(settings, RestSettings):
        settings = RestSettings.model_validate(settings)
    context = ConnectorContext(
        connection_id=connection_id,
        base_dir=Path.cwd(),
        logger=logging.getLogger("rest-test"),
        full_refresh=full_refresh,
        clock=clock.now,
        max_attempts=max_attempts,
    )
    built = RestConnector(settings, context, sleep=clock.sleep)
    OPEN.append(built)
    return built


def stream(conn: RestConnector, name: str) -> StreamSpec:
    (found,) = [s for s in conn.streams() if s.name == name]
    return found


def read(conn: RestConnector, name: str, checkpoint: Mapping[str, Any] | None = None) -> list[Message]:
    return list(conn.read(stream(conn, name), checkpoint))


def of_type(messages: list[Message], kind: type[T]) -> list[T]:
    return [m for m in messages if isinstance(m, kind)]


def last_state(messages: list[Message]) -> Mapping[str, Any]:
    assert isinstance(messages[-1], Checkpoint), messages[-1]
    return messages[-1].state


def spec_variant(tmp_path: Path, base: Path, name: str = "variant", **changes: Any) -> Path:
    """A copy of the spec at ``base`` with top-level keys (or ``streams__<name>`` keys) replaced."""
    data = yaml.safe_load(base.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if key.startswith("streams__"):
            stream_name, _, field = key.removeprefix("streams__").partition("__")
            if field:
                data["streams"][stream_name][field] = value
            else:
                data["streams"][stream_name] = value
        else:
            data[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


# -- the shipped specs' connection settings for their emulators ----------------------------------
#
# The emulators' datasets label their forms and tables as the Maven export names its columns
# (商机编号 for the deal, 接洽日期 for when it was engaged), where the specs' defaults are a typical
# form's (商机名称, 创建日期): the connections say so, as a user's would.

EMULATOR_LABELS = {"name": "商机编号", "created": "接洽日期"}


def jiandaoyun_settings(emulator: Any, **extra: Any) -> dict[str, Any]:
    inputs = {
        "api_key": emulator.api_key,
        "app_id": emulator.app_id,
        "entry_id": emulator.entry_id,
        "labels": dict(EMULATOR_LABELS),
    }
    return {"spec": "jiandaoyun", "base_url": emulator.url, "inputs": inputs, **extra}


def huoban_settings(emulator: Any, **extra: Any) -> dict[str, Any]:
    inputs = {"api_key": emulator.api_key, "table_id": emulator.table_id, "labels": dict(EMULATOR_LABELS)}
    return {"spec": "huoban", "base_url": emulator.url, "inputs": inputs, **extra}


def pipedrive_settings(emulator: Any, **extra: Any) -> dict[str, Any]:
    inputs = {"api_token": emulator.api_token, "company_domain": "acme"}
    return {"spec": "pipedrive", "base_url": emulator.url, "inputs": inputs, **extra}


def zoho_settings(emulator: Any, **extra: Any) -> dict[str, Any]:
    inputs = {
        "client_id": emulator.client_id,
        "client_secret": emulator.client_secret,
        "refresh_token": emulator.refresh_token,
        "accounts_url": emulator.url,
    }
    return {"spec": "zoho_crm", "base_url": emulator.url, "inputs": inputs, **extra}


# -- syncing into a real store -------------------------------------------------------------------


def sync_into(
    session_factory: sessionmaker[Session],
    settings: Mapping[str, Any],
    clock: SimClock,
    *,
    connection_id: str = "rest",
    allow_mass_delete: bool = False,
) -> SyncOutcome:
    """One sync of a rest connection into the store, as the service runs it; it must succeed."""
    connections = [ConnectionConfig.model_validate({"id": connection_id, "kind": "rest"})]
    with session_scope(session_factory) as session:
        repo.sync_connections(session, connections, clock.now())
    engine = SyncEngine(
        session_factory=session_factory,
        connector=connector(settings, clock, connection_id=connection_id),
        connection_id=connection_id,
        options=SyncOptions(batch_size=500, retry_base_seconds=0.01),
        holder=new_holder_id(),
        sleep=clock.sleep,
    )
    outcome = engine.run(trigger="manual", full_refresh=False, allow_mass_delete=allow_mass_delete)
    assert outcome.status == "succeeded", outcome.summary()
    return outcome


def stored(
    session_factory: sessionmaker[Session], model: Any, connection_id: str = "rest"
) -> dict[str, dict[str, Any]]:
    """The rows of ``model``'s table for the connection, by external id."""
    table = model.__table__
    with session_scope(session_factory) as session:
        result = session.execute(select(table).where(table.c.connection_id == connection_id))
        return {str(row["external_id"]): dict(row) for row in result.mappings()}
