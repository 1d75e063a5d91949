"""Materialised KPI results: one row per KPI, grain, period, scope and currency."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, Float, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_perf_sync.models.base import Base
from crm_perf_sync.models.types import BigIntPK, UTCDateTime


class KpiValue(Base):
    """A KPI's value for one period and scope.

    ``period_key`` is the ISO date of the period's start in the business timezone (``all`` for the
    all-time grain); ``scope_id`` is ``company``, ``<namespace>:<team id>`` or
    ``<connection>:<owner id>``; ``currency`` is empty for KPIs that are not amounts.
    ``definition_hash`` names the definition version every row of a KPI was computed with.
    """

    __tablename__ = "kpi_value"
    __table_args__ = (
        UniqueConstraint("kpi_id", "grain", "period_key", "scope", "scope_id", "currency"),
        Index(None, "kpi_id", "grain", "scope", "period_start"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    kpi_id: Mapped[str] = mapped_column(String(63))
    definition_hash: Mapped[str] = mapped_column(String(32))
    grain: Mapped[str] = mapped_column(String(16))
    period_key: Mapped[str] = mapped_column(String(16))
    period_start: Mapped[date | None] = mapped_column(Date)
    period_end: Mapped[date | None] = mapped_column(Date)
    scope: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[str] = mapped_column(String(600))
    currency: Mapped[str] = mapped_column(String(3))
    value: Mapped[float | None] = mapped_column(Float)
    numerator: Mapped[float] = mapped_column(Float)
    denominator: Mapped[float | None] = mapped_column(Float)
    sample_count: Mapped[int] = mapped_column(Integer)
    low_sample: Mapped[bool] = mapped_column(Boolean)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)
