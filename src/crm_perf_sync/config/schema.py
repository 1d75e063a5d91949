"""The typed shape of ``crm-perf-sync.yaml``.

Later parts of the product (KPIs, targets, scorecards, alerts) add their own top-level sections;
unknown keys are rejected so a typo never silently disables something.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from crm_perf_sync.alerts.schemas import AlertSection
from crm_perf_sync.kit.durations import Duration
from crm_perf_sync.kit.schema import StrictModel
from crm_perf_sync.kpi.schemas import KpiSection

Slug = Annotated[
    str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="lower-case id: a-z, 0-9, - and _")
]


class BusinessConfig(StrictModel):
    """The calendar KPIs are bucketed in."""

    timezone: str = "UTC"
    fiscal_year_start_month: int = Field(default=1, ge=1, le=12)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {value!r} (e.g. UTC, Europe/Berlin)") from None
        return value

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Schedule(StrictModel):
    """When the worker syncs a connection: every ``interval`` or on a ``cron`` expression."""

    interval: Duration | None = None
    cron: str | None = None
    jitter: Duration = timedelta(0)

    @field_validator("interval")
    @classmethod
    def _not_too_often(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(seconds=5):
            raise ValueError("must be at least 5s")
        return value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"invalid cron expression {value!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.interval is None) == (self.cron is None):
            raise ValueError("give exactly one of interval (e.g. 15m) or cron (e.g. '0 * * * *')")
        return self


class ConnectionConfig(StrictModel):
    """A configured CRM source. ``settings`` is validated by the connector's own settings model."""

    id: Slug
    kind: str
    name: str | None = None
    enabled: bool = True
    schedule: Schedule | None = None
    #: Overrides CRM_PERF_SYNC_MASS_DELETE_SHARE for this connection: what share of a stream's
    #: live records one sync may delete depends on the source (an export of open deals only drops
    #: every deal that closed; an API's reconcile should almost never delete much).
    mass_delete_share: float | None = Field(default=None, gt=0.0, le=1.0)
    settings: dict[str, Any] = Field(default_factory=dict)


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
