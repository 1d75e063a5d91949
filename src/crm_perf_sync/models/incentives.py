"""Incentives: the payout lines of each plan, rep and period, the periods closed, and what the
closed payouts were made of."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, Date, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_perf_sync.kit.columns import BigIntPK, ExactDecimal, JSONDoc, Money, UTCDateTime
from crm_perf_sync.models.base import Base


class IncentiveLine(Base):
    """One line of a rep's statement: what a component of a plan pays them in a period.

    ``kind`` is ``payout`` (the component's payout for ``period_key`` itself) or ``adjustment``
    (a change to the payout of the closed period ``for_period_key``, paid in ``period_key``, the
    first open period after it). Lines of open periods are recomputed by every refresh; a closed
    period's lines are ``frozen`` and never change again.
    """

    __tablename__ = "incentive_line"
    __table_args__ = (
        UniqueConstraint(
            "plan_id",
            "period_key",
            "owner_id",
            "component_id",
            "kind",
            "for_period_key",
            name="uq_incentive_line_key",
        ),
        Index(None, "plan_id", "owner_id", "period_key"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    plan_id: Mapped[str] = mapped_column(String(63))
    period_key: Mapped[str] = mapped_column(String(16))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    owner_id: Mapped[str] = mapped_column(String(600))
    component_id: Mapped[str] = mapped_column(String(63))
    component_type: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    for_period_key: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Money)
    base: Mapped[Decimal | None] = mapped_column(Money)
    quota: Mapped[Decimal | None] = mapped_column(Money)
    attainment: Mapped[float | None] = mapped_column(Float)
    rate: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    units: Mapped[int | None] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Float)
    grade: Mapped[str | None] = mapped_column(String(63))
    capped: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    frozen: Mapped[bool] = mapped_column(Boolean, default=False)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class IncentivePeriodClose(Base):
    """A plan's period closed by an admin: its lines are frozen from then on."""

    __tablename__ = "incentive_period_close"
    __table_args__ = (UniqueConstraint("plan_id", "period_key", name="uq_incentive_period_close_key"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    plan_id: Mapped[str] = mapped_column(String(63))
    period_key: Mapped[str] = mapped_column(String(16))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_by: Mapped[str] = mapped_column(String(200))


class IncentiveClosedRecord(Base):
    """A record behind a closed payout as it was at the close (a won deal and the amount it
    brought, a unit of a SPIFF), so a later change to it is named in the adjustment."""

    __tablename__ = "incentive_closed_record"
    __table_args__ = (Index(None, "close_id", "owner_id", "component_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    close_id: Mapped[int] = mapped_column(ForeignKey("incentive_period_close.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(String(600))
    component_id: Mapped[str] = mapped_column(String(63))
    connection_id: Mapped[str] = mapped_column(String(63))
    external_id: Mapped[str] = mapped_column(String(255))
    contribution: Mapped[float] = mapped_column(Float)


class IncentivePlanState(Base):
    """The definition (and context) a plan's open lines were last computed with."""

    __tablename__ = "incentive_plan_state"

    plan_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    state_hash: Mapped[str] = mapped_column(String(64))
    refreshed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class IncentivePlanDefinition(Base):
    """A plan set through the API (the configuration's live in the YAML file).

    ``definition`` is the plan as the configuration would write it (see ``Plan``); every refresh
    computes these with the configured ones. An id is either the file's or the API's, never both.
    """

    __tablename__ = "incentive_plan_definition"

    plan_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The name of the API key that last set it.
    updated_by: Mapped[str] = mapped_column(String(200))
