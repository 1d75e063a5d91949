"""The typed shape of ``crm-perf-sync.yaml``: each domain's section composed into one file.

The sections are defined by their domains (``business`` and ``kpis`` by the KPI engine,
``connections`` by the sync, ``teams`` by the organisation, ``measures`` by the measures,
``alerts`` by the alert rules, ``incentives`` by the incentive plans);
unknown keys are rejected so a typo never silently disables something.
"""

from __future__ import annotations

from pydantic import Field

from crm_perf_sync.alerts.schemas import AlertSection
from crm_perf_sync.incentives.schemas import IncentiveSection
from crm_perf_sync.kit.ids import Slug
from crm_perf_sync.kit.schema import StrictModel
from crm_perf_sync.kpi.schemas import BusinessConfig, KpiSection
from crm_perf_sync.measures.schemas import MeasureSection
from crm_perf_sync.org.schemas import TeamConfig
from crm_perf_sync.sync.schemas import ConnectionConfig, Schedule


class AppConfig(StrictModel):
    """The whole configuration file."""

    business: BusinessConfig = Field(default_factory=BusinessConfig)
    connections: list[ConnectionConfig] = Field(default_factory=list)
    teams: list[TeamConfig] = Field(default_factory=list)
    kpis: KpiSection = Field(default_factory=KpiSection)
    measures: MeasureSection = Field(default_factory=MeasureSection)
    alerts: AlertSection = Field(default_factory=AlertSection)
    incentives: IncentiveSection = Field(default_factory=IncentiveSection)

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


__all__ = ["AppConfig", "BusinessConfig", "ConnectionConfig", "Schedule", "Slug"]
