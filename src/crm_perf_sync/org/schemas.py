"""The organisation's configuration section (teams and their members) and its membership value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Self

from pydantic import Field, model_validator

from crm_perf_sync.kit.ids import Slug
from crm_perf_sync.kit.schema import StrictModel


@dataclass(frozen=True, slots=True)
class Membership:
    """Which reps count in which team, every level of the hierarchy included."""

    rows: tuple[tuple[str, str, str], ...]  # (team scope id, connection id, owner external id)
    regions: tuple[tuple[str, str, str], ...] = ()  # (region scope id, connection id, owner id)


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


class ConfiguredTeams(Protocol):
    """What the mirror of the configured teams reads (the whole configuration is one)."""

    def all_teams(self) -> list[tuple[TeamConfig, TeamConfig | None]]:
        """Every team with its parent, parents first."""
        ...
