"""API keys: who may read and who may also write."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from crm_perf_sync.kit.columns import UTCDateTime
from crm_perf_sync.models.base import Base


class ApiKey(Base):
    """A bearer key for the REST API, stored as the SHA-256 of the key (never the key itself).

    Keys are 32 random bytes, so a fast hash is enough: there is nothing to brute-force.
    ``prefix`` (the first characters of the key) identifies it in listings and logs. ``scope``
    is ``read`` or ``admin``. No key is ever kept readable: it is shown once, when it is created.
    """

    __tablename__ = "api_key"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DashboardSession(Base):
    """A dashboard sign-in: an API key exchanged for a cookie, kept as the SHA-256 of the cookie.

    The session lives in the store, not in the cookie, so that every API replica knows it, a
    sign-out ends it at once, and revoking the key ends every session it opened. ``csrf_token``
    is the synchronizer token every form of the session carries back.
    """

    __tablename__ = "dashboard_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_key.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
