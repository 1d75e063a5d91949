"""API keys: who may read and who may also write."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
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
