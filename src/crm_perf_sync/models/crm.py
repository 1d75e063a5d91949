"""The canonical CRM store: what every connector's records become."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, Date, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_perf_sync.kit.columns import BigIntPK, JSONDoc, Money, UTCDateTime
from crm_perf_sync.models.base import Base

# Namespace of teams defined in the configuration file rather than read from a CRM. It is not a
# valid connection id, so the two can never collide.
CONFIG_NAMESPACE = "@config"


class Connection(Base):
    """A configured CRM source, mirrored from the configuration file (settings stay in the file)."""

    __tablename__ = "connection"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    kind: Mapped[str] = mapped_column(String(63))
    name: Mapped[str | None] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    schedule: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Team(Base):
    """A node of the sales organisation (region > team > ...), from the config or from a CRM."""

    __tablename__ = "team"
    __table_args__ = (UniqueConstraint("namespace", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(63))
    connection_id: Mapped[str | None] = mapped_column(ForeignKey("connection.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    level: Mapped[str | None] = mapped_column(String(63))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("team.id", ondelete="SET NULL"), index=True)
    parent_external_id: Mapped[str | None] = mapped_column(String(255))
    content_hash: Mapped[str] = mapped_column(String(32))
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Owner(Base):
    """A rep. ``team_external_id`` is the team the CRM puts them in, if it says."""

    __tablename__ = "owner"
    __table_args__ = (UniqueConstraint("connection_id", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection_id: Mapped[str] = mapped_column(ForeignKey("connection.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    team_external_id: Mapped[str | None] = mapped_column(String(255))
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    remote_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    content_hash: Mapped[str] = mapped_column(String(32))
    first_synced_at: Mapped[datetime] = mapped_column(UTCDateTime)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TeamMember(Base):
    """Membership of a rep in a team. ``source`` says whether the config or the CRM put them there."""

    __tablename__ = "team_member"

    team_id: Mapped[int] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"), primary_key=True)
    owner_id: Mapped[int] = mapped_column(
        ForeignKey("owner.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    source: Mapped[str] = mapped_column(String(16), primary_key=True)


class Account(Base):
    """A customer (or a prospect company). Leads, opportunities and activities name it by
    ``account_external_id``; ``parent_external_id`` is the account above it, if the CRM says."""

    __tablename__ = "account"
    __table_args__ = (
        UniqueConstraint("connection_id", "external_id"),
        Index(None, "synced_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    connection_id: Mapped[str] = mapped_column(ForeignKey("connection.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    owner_external_id: Mapped[str | None] = mapped_column(String(255))
    industry: Mapped[str | None] = mapped_column(String(255))
    segment: Mapped[str | None] = mapped_column(String(255))
    parent_external_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    remote_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    custom: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    content_hash: Mapped[str] = mapped_column(String(32))
    first_synced_at: Mapped[datetime] = mapped_column(UTCDateTime)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Lead(Base):
    __tablename__ = "lead"
    __table_args__ = (
        UniqueConstraint("connection_id", "external_id"),
        # Changed rows since a refresh; the KPI queries' own indexes come with the KPI engine.
        Index(None, "synced_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    connection_id: Mapped[str] = mapped_column(ForeignKey("connection.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(255))
    owner_external_id: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    company: Mapped[str | None] = mapped_column(String(255))
    account_external_id: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    is_converted: Mapped[bool] = mapped_column(Boolean, default=False)
    converted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    converted_opportunity_external_id: Mapped[str | None] = mapped_column(String(255))
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    remote_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    custom: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    content_hash: Mapped[str] = mapped_column(String(32))
    first_synced_at: Mapped[datetime] = mapped_column(UTCDateTime)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Opportunity(Base):
    """An opportunity; a closed deal is one with ``is_closed``. ``amount`` is in ``currency``."""

    __tablename__ = "opportunity"
    __table_args__ = (
        UniqueConstraint("connection_id", "external_id"),
        Index(None, "synced_at"),
        # An account's deals, and the latest closing dates: what an incremental refresh of the
        # customer KPIs reads after a few deals changed.
        Index(None, "connection_id", "account_external_id"),
        Index(None, "close_date"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    connection_id: Mapped[str] = mapped_column(ForeignKey("connection.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(255))
    owner_external_id: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    amount: Mapped[Decimal | None] = mapped_column(Money)
    currency: Mapped[str | None] = mapped_column(String(3))
    stage: Mapped[str | None] = mapped_column(String(255))
    probability: Mapped[float | None] = mapped_column(Float)
    pipeline: Mapped[str | None] = mapped_column(String(255))
    forecast_category: Mapped[str | None] = mapped_column(String(255))
    type: Mapped[str | None] = mapped_column(String(255))
    lead_source: Mapped[str | None] = mapped_column(String(255))
    account_external_id: Mapped[str | None] = mapped_column(String(255))
    product: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    close_date: Mapped[date | None] = mapped_column(Date)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    is_closed: Mapped[bool] = mapped_column(Boolean, default=False)
    is_won: Mapped[bool] = mapped_column(Boolean, default=False)
    lead_external_id: Mapped[str | None] = mapped_column(String(255))
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    remote_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    custom: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    content_hash: Mapped[str] = mapped_column(String(32))
    first_synced_at: Mapped[datetime] = mapped_column(UTCDateTime)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Activity(Base):
    """A call, meeting, visit, email, task, proposal or note of a rep (``type``; the CRM's own kind
    in ``subtype``), and the account, opportunity or lead it concerns."""

    __tablename__ = "activity"
    __table_args__ = (
        UniqueConstraint("connection_id", "external_id"),
        Index(None, "synced_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    connection_id: Mapped[str] = mapped_column(ForeignKey("connection.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(63))
    subtype: Mapped[str | None] = mapped_column(String(255))
    owner_external_id: Mapped[str | None] = mapped_column(String(255))
    subject: Mapped[str | None] = mapped_column(String(255))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(String(255))
    is_completed: Mapped[bool] = mapped_column(Boolean, default=True)
    account_external_id: Mapped[str | None] = mapped_column(String(255))
    opportunity_external_id: Mapped[str | None] = mapped_column(String(255))
    lead_external_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    remote_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    custom: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    content_hash: Mapped[str] = mapped_column(String(32))
    first_synced_at: Mapped[datetime] = mapped_column(UTCDateTime)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StageChange(Base):
    """Append-only stage history: from the CRM's own history (``crm``) or seen between syncs
    (``observed``)."""

    __tablename__ = "stage_change"
    __table_args__ = (
        UniqueConstraint("connection_id", "external_id"),
        Index(None, "connection_id", "opportunity_external_id", "changed_at"),
        # The history a sync batch wrote (all stamped with its time): an incremental KPI refresh
        # finds the deals whose funnel steps changed through it.
        Index(None, "connection_id", "recorded_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    connection_id: Mapped[str] = mapped_column(ForeignKey("connection.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(400))
    opportunity_external_id: Mapped[str] = mapped_column(String(255))
    from_stage: Mapped[str | None] = mapped_column(String(255))
    to_stage: Mapped[str] = mapped_column(String(255))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(16))
    content_hash: Mapped[str] = mapped_column(String(32))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PipelineStage(Base):
    """A pipeline's stage: order, default probability, and whether it closes (and wins) a deal."""

    __tablename__ = "pipeline_stage"
    __table_args__ = (UniqueConstraint("connection_id", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection_id: Mapped[str] = mapped_column(ForeignKey("connection.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(511))
    pipeline: Mapped[str] = mapped_column(String(255))
    stage: Mapped[str] = mapped_column(String(255))
    label: Mapped[str | None] = mapped_column(String(255))
    sort_order: Mapped[int] = mapped_column(Integer)
    probability: Mapped[float | None] = mapped_column(Float)
    is_closed: Mapped[bool] = mapped_column(Boolean, default=False)
    is_won: Mapped[bool] = mapped_column(Boolean, default=False)
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    content_hash: Mapped[str] = mapped_column(String(32))
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime)
