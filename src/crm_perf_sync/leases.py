"""Claims on named units of work, through the database, so each runs once across processes.

A lease is taken with a single conditional UPDATE (atomic on SQLite and PostgreSQL), renewed by
its holder as it makes progress, and expires if the holder dies. A holder on this same host whose
process is gone is taken over at once instead of waiting for the expiry.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.metrics import CLAIM_TAKEOVERS, unit_of
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.models import Lease

log = logging.getLogger(__name__)
_HOST = socket.gethostname()


def process_prefix() -> str:
    """What every holder id of this process starts with (``host:pid:``)."""
    return f"{_HOST}:{os.getpid()}:"


def new_holder_id() -> str:
    """``host:pid:random`` — unique per process start, readable in ``sync_run.holder``."""
    return f"{process_prefix()}{uuid.uuid4().hex[:8]}"


def _holder_is_dead_here(holder: str) -> bool:
    """True if ``holder`` names a process on this host that no longer exists."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True, slots=True)
class LeaseHeld:
    name: str
    holder: str
    expires_at: datetime | None


def _insert_if_missing(session: Session, name: str) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        session.execute(pg_insert(Lease).values(name=name).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        session.execute(sqlite_insert(Lease).values(name=name).on_conflict_do_nothing())


def sync_lease(connection_id: str) -> str:
    """The name of the lease that lets one process at a time sync a connection."""
    return f"sync:{connection_id}"


def try_acquire(session: Session, name: str, holder: str, ttl: timedelta) -> LeaseHeld | None:
    """Take the lease ``name`` for ``holder``. Returns ``None`` on success, else who holds it.

    Flushes only; the caller commits to make the claim visible.
    """
    _insert_if_missing(session, name)
    now = utc_now()
    before = session.execute(select(Lease.holder, Lease.expires_at).where(Lease.name == name)).one()
    claim = (
        update(Lease)
        .where(Lease.name == name)
        .where(or_(Lease.holder.is_(None), Lease.expires_at < now, Lease.holder == holder))
        .values(holder=holder, acquired_at=now, expires_at=now + ttl)
        .execution_options(synchronize_session=False)
    )
    if session.execute(claim).rowcount == 1:  # type: ignore[attr-defined]
        if before.holder not in (None, holder):
            CLAIM_TAKEOVERS.labels(unit_of(name)).inc()
            log.warning("took over %s from %s, whose claim had expired", name, before.holder)
        return None
    current = session.execute(select(Lease.holder, Lease.expires_at).where(Lease.name == name)).one()
    if current.holder is not None and _holder_is_dead_here(current.holder):
        takeover = (
            update(Lease)
            .where(Lease.name == name, Lease.holder == current.holder)
            .values(holder=holder, acquired_at=now, expires_at=now + ttl)
            .execution_options(synchronize_session=False)
        )
        if session.execute(takeover).rowcount == 1:  # type: ignore[attr-defined]
            CLAIM_TAKEOVERS.labels(unit_of(name)).inc()
            log.warning("took over %s from %s, whose process is gone", name, current.holder)
            return None
    return LeaseHeld(name, current.holder or "?", current.expires_at)


def renew(session: Session, name: str, holder: str, ttl: timedelta) -> bool:
    """Extend the lease; ``False`` means it was lost (expired and taken by someone else)."""
    stmt = (
        update(Lease)
        .where(Lease.name == name, Lease.holder == holder)
        .values(expires_at=utc_now() + ttl)
        .execution_options(synchronize_session=False)
    )
    return bool(session.execute(stmt).rowcount == 1)  # type: ignore[attr-defined]


def release(session: Session, name: str, holder: str) -> None:
    stmt = (
        update(Lease)
        .where(Lease.name == name, Lease.holder == holder)
        .values(holder=None, expires_at=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(stmt)


@contextmanager
def released_after(factory: sessionmaker[Session], name: str, holder: str) -> Iterator[None]:
    """Run the block, then release ``holder``'s lease ``name`` in a transaction of its own,
    however the block ended. (A sync releases its lease in the transaction that records the
    run's end instead, so the two are never seen apart.)"""
    try:
        yield
    finally:
        with session_scope(factory) as session:
            release(session, name, holder)


def release_held_like(session: Session, holder_like: str) -> int:
    """Release every lease whose holder matches the LIKE pattern ``holder_like`` (escape ``\\``)."""
    stmt = (
        update(Lease)
        .where(Lease.holder.like(holder_like, escape="\\"))
        .values(holder=None, expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(session.execute(stmt).rowcount)  # type: ignore[attr-defined]
