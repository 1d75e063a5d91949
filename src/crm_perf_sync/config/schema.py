"""The typed shape of ``crm-perf-sync.yaml``: each domain's section composed into one file.

The sections are defined by their domains (``business`` and ``kpis`` by the KPI engine,
``connections`` by the sync, ``alerts`` by the alert rules; teams here); unknown keys are
rejected so a typo never silently disables something.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from crm_perf_sync.alerts.schemas import AlertSection
from crm_perf_sync.kit.ids import Slug
from crm_perf_sync.kit.schema import StrictModel
from crm_perf_sync.kpi.schemas import BusinessConfig, KpiSection
from crm_perf_sync.sync.schemas import ConnectionConfig, Schedule


class MemberRef(StrictModel):
    """A rep, named by email (across connections), or by connection and external id or name."""

    email: str | None = None
    connection: str | None = None
    external_id: str | None = None
    name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: object) -> object:
        if isinstance(value, str):
            return {"email": value} if "@" in value else {"name": value}
        return value

    @model_validator(mode="after")
    def _identifies_someone(self) -> Self:
        if self.email is None and self.external_id is None and self.name is None:
            raise ValueError("a member needs an email, an external_id or a name")
        if self.external_id is not None and self.connection is None:
            raise ValueError("external_id needs the connection it belongs to")
        return self


class TeamConfig(StrictModel):
    """A node of the sales organisation: a region, a team, a pod; nested through ``teams``."""

    id: Slug
    name: str
    level: str | None = None
    members: list[MemberRef] = Field(default_factory=list)
    teams: list[TeamConfig] = Field(default_factory=list)


class AppConfig(StrictModel):
    """The whole configuration file."""

    business: BusinessConfig = Field(default_factory=BusinessConfig)
    connections: list[ConnectionConfig] = Field(default_factory=list)
    teams: list[TeamConfig] = Field(default_factory=list)
    kpis: KpiSection = Field(default_factory=KpiSection)
    alerts: AlertSection = Field(default_factory=AlertSection)

    def connection(self, connection_id: str) -> ConnectionConfig | None:
        return next((c for c in self.connections if c.id == connection_id), None)

    def all_teams(self) -> list[tuple[TeamConfig, TeamConfig | None]]:
        """Every team with its parent, parents first."""
        out: list[tuple[TeamConfig, TeamConfig | None]] = []

        def walk(team: TeamConfig, parent: TeamConfig | None) -> None:
            out.append((team, parent))
            for child in team.teams:
                walk(child, team)

        for team in self.teams:
            walk(team, None)
        return out


__all__ = ["AppConfig", "BusinessConfig", "ConnectionConfig", "MemberRef", "Schedule", "Slug", "TeamConfig"]
