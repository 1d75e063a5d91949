"""Bookkeeping of syncs (runs, checkpoints, skipped records) and claims on units of work."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from crm_perf_sync.kit.columns import BigIntPK, JSONDoc, UTCDateTime
from crm_perf_sync.models.base import Base


class SyncRun(Base):
    """One sync of a connection: what ran, what it did to the store, and how it ended.

    ``streams`` holds per-stream statistics and the cursor before and after.
    """

    __tablename__ = "sync_run"
    __table_args__ = (Index(None, "connection_id", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection_id: Mapped[str] = mapped_column(ForeignKey("connection.id", ondelete="CASCADE"))
    trigger: Mapped[str] = mapped_column(String(16))
    full_refresh: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Confirmed to delete more of a stream than the mass-deletion limit lets a sync delete.
    allow_mass_delete: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    status: Mapped[str] = mapped_column(String(16), index=True)
    holder: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    records_read: Mapped[int] = mapped_column(Integer, default=0)
    inserted: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    deleted: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    warnings: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    stage_changes: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    error_kind: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    streams: Mapped[dict[str, Any]] = mapped_column(JSONDoc)


class SyncCheckpoint(Base):
    """The last committed position of a connection's stream; written with the data it covers."""

    __tablename__ = "sync_checkpoint"

    connection_id: Mapped[str] = mapped_column(
        ForeignKey("connection.id", ondelete="CASCADE"), primary_key=True
    )
    stream: Mapped[str] = mapped_column(String(63), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_run.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SyncRecordError(Base):
    """A record a connector could not map, kept with its run so an operator can fix the source.

    ``level`` is ``error`` for such a bad record (skipped), or ``warning`` for a record that was
    stored with a change the operator should know of (e.g. characters no store can hold removed).
    """

    __tablename__ = "sync_record_error"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("sync_run.id", ondelete="CASCADE"), index=True)
    connection_id: Mapped[str] = mapped_column(String(63))
    stream: Mapped[str] = mapped_column(String(63))
    level: Mapped[str] = mapped_column(String(8), default="error", server_default="error")
    record_key: Mapped[str | None] = mapped_column(String(400))
    field: Mapped[str | None] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text)
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Lease(Base):
    """A claim on a named unit of work (``sync:<connection>``, later ``kpi-refresh``, ...).

    Taken with one conditional UPDATE, so it is atomic on SQLite and PostgreSQL alike; it expires
    unless its holder renews it, so a dead worker's work is taken over.
    """

    __tablename__ = "lease"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200))
    acquired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
