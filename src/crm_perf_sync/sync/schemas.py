"""The sync domain's configuration: a connection (its connector kind, its settings, which the
connector's own settings model validates, its schedule and its mass-deletion tolerance)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crm_perf_sync.kit.ids import Slug

_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> timedelta:
    """``90``, ``"30s"``, ``"15m"``, ``"1h"``, ``"1d"`` → timedelta (bare numbers are seconds)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 15m, 1h or 1d")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match["n"]) * _UNITS[match["unit"]])
    raise ValueError(f"expected a duration like 30s, 15m, 1h or 1d, got {value!r}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Schedule(_Model):
    """When the worker syncs a connection: every ``interval`` or on a ``cron`` expression."""

    interval: timedelta | None = None
    cron: str | None = None
    jitter: timedelta = timedelta(0)

    @field_validator("interval", "jitter", mode="before")
    @classmethod
    def _duration(cls, value: object) -> timedelta | None:
        return None if value is None else parse_duration(value)

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


class ConnectionConfig(_Model):
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
