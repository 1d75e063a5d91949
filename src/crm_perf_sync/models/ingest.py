"""The inbox of changes the CRMs push: written before the push is acknowledged."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_perf_sync.kit.columns import BigIntPK, UTCDateTime
from crm_perf_sync.models.base import Base


class IngestEvent(Base):
    """One change a CRM pushed to a connection: which record of which stream.

    Unique by the CRM's event id within the connection, so a delivery the CRM repeats is dropped.
    ``status`` is ``pending`` until a targeted sync has fetched the record, then ``done``;
    ``parked`` when it could not be processed after retries (``last_error`` says why).
    """

    __tablename__ = "ingest_event"
    __table_args__ = (
        UniqueConstraint("connection_id", "event_id", name="uq_ingest_event_key"),
        Index(None, "status", "connection_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    connection_id: Mapped[str] = mapped_column(ForeignKey("connection.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(200))
    stream: Mapped[str] = mapped_column(String(63))
    external_id: Mapped[str] = mapped_column(String(600))
    deleted: Mapped[bool] = mapped_column(Boolean)
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
