"""A store loaded through the real sync engine from scripted records, and KPI rows read back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import load_config
from crm_perf_sync.connector_sdk import OpportunityRecord, OwnerRecord, StreamSpec, TeamRecord
from crm_perf_sync.jobs.refresh import RefreshJob
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.leases import new_holder_id
from crm_perf_sync.models import KpiValue
from crm_perf_sync.org import repository as org_repo
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.sync import repository as sync_repo
from crm_perf_sync.sync.service import SyncEngine, SyncOptions
from tests.sync.scripted import Script, ScriptedConnector, scripted

T = datetime(2024, 1, 10, 12, 0, tzinfo=UTC)
STREAMS = (
    "teams",
    "owners",
    "accounts",
    "pipeline_stages",
    "leads",
    "opportunities",
    "activities",
    "stage_changes",
)

TEAMS = [
    TeamRecord(external_id="emea", name="EMEA", level="region"),
    TeamRecord(external_id="dach", name="DACH", parent_external_id="emea", level="team"),
    TeamRecord(external_id="nordics", name="Nordics", parent_external_id="emea", level="team"),
]
OWNERS = [
    OwnerRecord(external_id="ana", name="Ana", team_external_id="dach"),
    OwnerRecord(external_id="bo", name="Bo", team_external_id="dach"),
    OwnerRecord(external_id="cy", name="Cy", team_external_id="nordics"),
    OwnerRecord(external_id="di", name="Di"),
]


def opp(n: int, owner: str | None, **kw: Any) -> OpportunityRecord:
    values: dict[str, Any] = {
        "external_id": f"o{n}",
        "owner_external_id": owner,
        "amount": Decimal("100.00"),
        "currency": "USD",
        "created_at": T - timedelta(days=10),
    }
    values.update(kw)
    return OpportunityRecord(**values)


def closed(n: int, owner: str | None, won: bool, at: datetime, **kw: Any) -> OpportunityRecord:
    return opp(n, owner, is_closed=True, is_won=won, closed_at=at, close_date=at.date(), **kw)


def load(
    tmp_path: Path, factory: sessionmaker[Session], pages: dict[str, list[Any]], config: str = ""
) -> RefreshJob:
    """Sync ``pages`` (records per stream) into the store as connection ``crm``; a refresh job."""
    path = tmp_path / "config.yaml"
    path.write_text("connections:\n  - {id: crm, kind: scripted}\n" + config)
    loaded = load_config(path, ConnectorRegistry(connectors={"scripted": ScriptedConnector}), {})
    with session_scope(factory) as session:
        sync_repo.sync_connections(session, loaded.app.connections, T)
        org_repo.sync_config_teams(session, loaded.app, T)
    streams = [StreamSpec(name, name) for name in STREAMS if name in pages]  # type: ignore[arg-type]
    script = Script(streams=streams, pages={name: [records] for name, records in pages.items()})
    engine = SyncEngine(
        session_factory=factory,
        connector=scripted(script),
        connection_id="crm",
        options=SyncOptions(),
        holder=new_holder_id(),
    )
    assert engine.run(trigger="manual", full_refresh=False).status == "succeeded"
    return RefreshJob(factory, loaded)


def values(
    factory: sessionmaker[Session],
    kpi_id: str,
    grain: str,
    scope: str,
    dimension: str = "",
) -> dict[tuple[str, str, str, str], KpiValue]:
    """``{(period_key, scope_id, currency, dimension_value): row}``."""
    with session_scope(factory) as session:
        found = session.scalars(
            select(KpiValue).where(
                KpiValue.kpi_id == kpi_id,
                KpiValue.grain == grain,
                KpiValue.scope == scope,
                KpiValue.dimension == dimension,
            )
        )
        return {(v.period_key, v.scope_id, v.currency, v.dimension_value): v for v in found}
