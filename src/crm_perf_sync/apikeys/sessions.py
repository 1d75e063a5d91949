"""Dashboard sessions: an API key exchanged for a cookie.

The browser keeps a random token (``HttpOnly``, ``SameSite=Strict``); the store keeps its SHA-256,
the key it was opened with, a CSRF token and when it expires. A session is only as good as its
key: a revoked key ends every session it opened, at the next request. The key itself is never
kept, in the store or the cookie.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from crm_perf_sync.apikeys import repository as repo
from crm_perf_sync.apikeys.service import Principal, Unauthenticated, authenticate, hash_key, scope_of
from crm_perf_sync.models import DashboardSession


@dataclass(frozen=True, slots=True)
class Opened:
    """A session just opened: the cookie's token (given to the browser once) and its expiry."""

    token: str
    expires_at: datetime
    principal: Principal


@dataclass(frozen=True, slots=True)
class Signed:
    """The principal of a signed-in browser and its session's CSRF token."""

    principal: Principal
    csrf_token: str
    expires_at: datetime


def sign_in(session: Session, key: str, now: datetime, lifetime: timedelta) -> Opened:
    """Open a session for a valid key (:class:`Unauthenticated` otherwise); expired ones go."""
    principal = authenticate(session, f"Bearer {key.strip()}", now)
    repo.delete_expired_sessions(session, now)
    token = secrets.token_urlsafe(32)
    expires_at = now + lifetime
    repo.add_session(
        session,
        DashboardSession(
            token_hash=hash_key(token),
            key_id=principal.key_id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=expires_at,
        ),
    )
    return Opened(token, expires_at, principal)


def signed(session: Session, token: str | None, now: datetime) -> Signed:
    """The session a cookie names, if it is open and its key is not revoked."""
    if not token:
        raise Unauthenticated("sign in with an API key to see the dashboard")
    found = repo.session_by_hash(session, hash_key(token))
    if found is None:
        raise Unauthenticated("the session has ended (signed out, or the store does not know it)")
    row, key = found
    if row.expires_at <= now:
        raise Unauthenticated("the session has expired: sign in again")
    if key.revoked_at is not None:
        raise Unauthenticated(f"the API key {key.prefix}… this session was opened with was revoked")
    principal = Principal(key.id, key.name, scope_of(key.scope))
    return Signed(principal, row.csrf_token, row.expires_at)


def sign_out(session: Session, token: str | None) -> None:
    """End a session (nothing happens for a token the store does not know)."""
    if token:
        repo.delete_session(session, hash_key(token))
