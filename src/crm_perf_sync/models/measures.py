"""Measures: numbers from outside the CRM (survey scores, review ratings, training hours), entered
by people, and the history of every change to them."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Date, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_perf_sync.kit.columns import BigIntPK, ExactDecimal, UTCDateTime
from crm_perf_sync.models.base import Base


class MeasureEntry(Base):
    """The value of one measure for one scope and period, as last entered.

    ``measure_id`` names a definition of the configuration (``customer_satisfaction``); ``scope``
    and ``scope_id`` name the company, a team or a rep as KPI values do; ``period_key`` is the ISO
    date of the period's first day at ``grain`` (fiscal quarters and years from the configured
    first month), as for KPI values. ``source`` is ``api``, ``csv`` or ``config``; ``entered_by``
    the name of the API key that entered it, or ``config``.
    """

    __tablename__ = "measure_entry"
    __table_args__ = (
        UniqueConstraint(
            "measure_id", "scope", "scope_id", "grain", "period_key", name="uq_measure_entry_key"
        ),
        Index(None, "measure_id", "grain", "period_start"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    measure_id: Mapped[str] = mapped_column(String(63))
    scope: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[str] = mapped_column(String(600))
    grain: Mapped[str] = mapped_column(String(16))
    period_key: Mapped[str] = mapped_column(String(16))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    value: Mapped[Decimal] = mapped_column(ExactDecimal)
    source: Mapped[str] = mapped_column(String(16))
    entered_by: Mapped[str] = mapped_column(String(200))
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MeasureChange(Base):
    """One change to a measure entry, never updated nor deleted: its creation (``old_value``
    null), a new value, or its removal (``new_value`` null), with who made it, when and how.

    The entry's key is copied (not referenced), so a removed entry's history stays; the ids
    increase with every change, which makes this table the log a consumer of measures reads to
    update incrementally.
    """

    __tablename__ = "measure_change"
    __table_args__ = (
        Index(None, "measure_id", "scope_id", "grain", "period_key"),
        Index(None, "changed_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    measure_id: Mapped[str] = mapped_column(String(63))
    scope: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[str] = mapped_column(String(600))
    grain: Mapped[str] = mapped_column(String(16))
    period_key: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(16))
    old_value: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    new_value: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    source: Mapped[str] = mapped_column(String(16))
    changed_by: Mapped[str] = mapped_column(String(200))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
