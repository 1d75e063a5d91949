"""Settings of the ``demo`` connector: which synthetic company, how big, and how time moves."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

from pydantic import Field, field_validator, model_validator

from crm_perf_sync.connector_sdk import ConnectorSettings, Duration

#: The fixed date the default history leads up to. It is a constant, not "today", so that the
#: same settings describe the same company on every machine and every day.
REFERENCE_DATE = date(2026, 1, 1)
DEFAULT_START = date(2024, 1, 1)

_CURRENCY = re.compile(r"^[A-Z]{3}$")


class DemoSettings(ConnectorSettings):
    """A deterministic synthetic B2B sales company.

    The company is a pure function of these settings and an instant ("as of"): the same settings
    read at the same instant give identical records on any machine. ``opportunities`` and
    ``leads`` are created at an even pace over ``history_days`` days from ``start``; the company
    keeps that pace afterwards, so a read as of a later instant holds proportionally more.
    """

    seed: int = Field(default=42, description="Which company: every random choice derives from it.")
    reps: int = Field(default=24, ge=2, le=9999, description="Sales reps (owners).")
    regions: int = Field(default=3, ge=1, le=100, description="Regions at the top of the team tree.")
    teams_per_region: int = Field(default=2, ge=1, le=100, description="Teams under each region.")
    opportunities: int = Field(
        default=5000, ge=0, le=100_000_000, description="Opportunities created during the history."
    )
    leads: int | None = Field(
        default=None,
        ge=0,
        le=300_000_000,
        description="Leads created during the history; three per opportunity when not set.",
    )
    accounts: int | None = Field(
        default=None,
        ge=1,
        le=99_999_999,
        description="Accounts (customers) the deals and leads concern; a third of `opportunities` "
        "(at least 50) when not set.",
    )
    activities_per_deal: float = Field(
        default=4.0,
        ge=0.0,
        le=100.0,
        description="Calls, emails, meetings and visits per opportunity on average (won deals get "
        "more); proposals come on top, one per deal reaching the Proposal stage.",
    )
    start: date = Field(default=DEFAULT_START, description="First day of the history (UTC).")
    history_days: int = Field(
        default=(REFERENCE_DATE - DEFAULT_START).days,
        ge=1,
        le=36_600,
        description="Length of the history the sizes above refer to.",
    )
    currency: str = Field(default="USD", description="Currency of most deals (ISO 4217).")
    currencies: dict[str, float] = Field(
        default_factory=lambda: {"EUR": 0.1},
        description="Other deal currencies and their share of deals, e.g. {EUR: 0.1}.",
    )
    batch_size: int = Field(default=1000, ge=1, description="Records between two checkpoints.")
    increment: Duration = Field(
        default=timedelta(minutes=5),
        description=(
            "How simulated time advances: a read sees the company as of the clock rounded down to "
            "a multiple of this step, so each later run brings the records created and changed "
            "since, and two runs within one step read identical data."
        ),
    )
    lookback: Duration = Field(
        default=timedelta(hours=1),
        description="How far before the stored cursor an incremental read starts again.",
    )
    as_of: datetime | None = Field(
        default=None,
        description=(
            "Freeze the company at this instant instead of following the clock "
            "(reproducible demos and benchmarks)."
        ),
    )

    @field_validator("currency")
    @classmethod
    def _check_currency(cls, value: str) -> str:
        if not _CURRENCY.match(value):
            raise ValueError(f"must be an ISO 4217 code in capitals, got {value!r}")
        return value

    @field_validator("currencies")
    @classmethod
    def _check_currencies(cls, value: dict[str, float]) -> dict[str, float]:
        for code, share in value.items():
            if not _CURRENCY.match(code):
                raise ValueError(f"{code!r} is not an ISO 4217 code in capitals")
            if not 0.0 < share < 1.0:
                raise ValueError(f"the share of {code} must be between 0 and 1, got {share}")
        if sum(value.values()) >= 1.0:
            raise ValueError("the shares of the other currencies must leave some deals in `currency`")
        return value

    @field_validator("increment")
    @classmethod
    def _check_increment(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1) or value.microseconds:
            raise ValueError("must be a whole number of seconds, at least one")
        return value

    @field_validator("lookback")
    @classmethod
    def _check_lookback(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value

    @field_validator("as_of")
    @classmethod
    def _check_as_of(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("must carry a timezone (e.g. 2026-01-01T00:00:00Z)")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _check_base_currency(self) -> DemoSettings:
        if self.currency in self.currencies:
            raise ValueError(f"currencies lists {self.currency}, which is already the main currency")
        return self

    @property
    def lead_count(self) -> int:
        """Leads created during the history (``leads``, or three per opportunity)."""
        return 3 * self.opportunities if self.leads is None else self.leads

    @property
    def account_count(self) -> int:
        """Accounts of the company (``accounts``, or a third of the opportunities, at least 50)."""
        return self.accounts if self.accounts is not None else max(50, self.opportunities // 3)

    @property
    def history_start(self) -> datetime:
        """Midnight UTC at the start of the history."""
        return datetime.combine(self.start, time(0), tzinfo=UTC)

    @property
    def history_end(self) -> datetime:
        """The end of the history: as of this instant the company has exactly the configured sizes."""
        return self.history_start + timedelta(days=self.history_days)
