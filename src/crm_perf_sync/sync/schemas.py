"""The sync domain's configuration: a connection (its connector kind, its settings, which the
connector's own settings model validates, its schedule and its mass-deletion tolerance)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Self

from pydantic import Field, field_validator, model_validator

from crm_perf_sync.kit.durations import Duration
from crm_perf_sync.kit.ids import Slug
from crm_perf_sync.kit.schema import StrictModel


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
