"""All SQL of API keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from crm_perf_sync.models import ApiKey, DashboardSession


def add(session: Session, key: ApiKey) -> ApiKey:
    session.add(key)
    session.flush()
    return key


def by_hash(session: Session, key_hash: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash)).one_or_none()


def listed(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def by_id(session: Session, key_id: int) -> ApiKey | None:
    return session.get(ApiKey, key_id)


def touch(session: Session, key_id: int, now: datetime) -> None:
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))


def add_session(session: Session, row: DashboardSession) -> DashboardSession:
    session.add(row)
    session.flush()
    return row


def session_by_hash(session: Session, token_hash: str) -> tuple[DashboardSession, ApiKey] | None:
    found = session.execute(
        select(DashboardSession, ApiKey)
        .join(ApiKey, ApiKey.id == DashboardSession.key_id)
        .where(DashboardSession.token_hash == token_hash)
    ).one_or_none()
    return None if found is None else (found[0], found[1])


def delete_session(session: Session, token_hash: str) -> None:
    session.execute(delete(DashboardSession).where(DashboardSession.token_hash == token_hash))


def delete_expired_sessions(session: Session, now: datetime) -> None:
    session.execute(delete(DashboardSession).where(DashboardSession.expires_at <= now))
