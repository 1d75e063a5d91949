"""Creating, listing, revoking and checking API keys.

A key is ``cps_`` and 43 URL-safe characters (32 random bytes); the store keeps its SHA-256 and
its first 12 characters (to recognise it in a listing). ``read`` keys read everything; ``editor``
keys may also enter measures (the numbers that come from outside the CRM); ``admin`` keys may
write everything (targets, webhooks, sync requests, measures).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.apikeys import repository as repo
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.errors import AppError, InvalidInput, NotFound
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.models import ApiKey

log = logging.getLogger(__name__)
Scope = Literal["read", "editor", "admin"]
#: Each scope allows what the ones before it do.
SCOPES: tuple[Scope, ...] = ("read", "editor", "admin")
_ALLOWS = {
    "read": "reads everything",
    "editor": "reads everything and enters measures",
    "admin": "reads and writes everything",
}
PREFIX = "cps_"
#: How stale ``last_used_at`` may get before a request writes it again (one write per key a
#: minute, not one per request).
TOUCH_EVERY = timedelta(minutes=1)
#: The name of the read key ``serve`` mints for a SQLite store it has just created.
DEMO_KEY_NAME = "embedded demo (read)"


class Unauthenticated(AppError):
    """No key, an unknown key or a revoked one: send ``Authorization: Bearer <key>``."""

    status = 401
    code = "unauthenticated"


class Forbidden(AppError):
    """The key is valid but its scope does not allow this."""

    status = 403
    code = "forbidden"


@dataclass(frozen=True, slots=True)
class Principal:
    """The key a request authenticated with; ``stale_use``: its ``last_used_at`` needs a write."""

    key_id: int
    name: str
    scope: Scope
    stale_use: bool = False

    def may(self, scope: Scope) -> bool:
        """Whether this key's scope allows what ``scope`` does."""
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    def require(self, scope: Scope) -> None:
        if not self.may(scope):
            needs = "an admin key" if scope == "admin" else "an editor or admin key"
            has = f"the {self.scope} scope ({_ALLOWS[self.scope]})"
            raise Forbidden(f"the key {self.name!r} has {has}; this needs {needs}")


def scope_of(stored: str) -> Scope:
    """A stored scope as a principal's: one this version does not know allows only reading."""
    for scope in SCOPES:
        if stored == scope:
            return scope
    return "read"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create(session: Session, name: str, scope: str) -> tuple[ApiKey, str]:
    """A new key: its row and the key itself (shown once; only its hash is kept)."""
    if scope not in SCOPES:
        raise InvalidInput(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    if not name.strip():
        raise InvalidInput("a key needs a name (who or what uses it)")
    key = PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        name=name.strip(),
        scope=scope,
        prefix=key[:12],
        key_hash=hash_key(key),
        created_at=utc_now(),
    )
    return repo.add(session, row), key


def listed(session: Session) -> list[ApiKey]:
    return repo.listed(session)


def revoke(session: Session, key_id: int) -> ApiKey:
    row = repo.by_id(session, key_id)
    if row is None:
        raise NotFound(f"no API key with id {key_id}")
    if row.revoked_at is None:
        row.revoked_at = utc_now()
        session.flush()
    return row


def demo_key(session: Session) -> str:
    """A new read key for the embedded demo, to be printed once (only its hash is kept)."""
    _, key = create(session, DEMO_KEY_NAME, "read")
    return key


def authenticate(session: Session, authorization: str | None, now: datetime | None = None) -> Principal:
    """The principal of an ``Authorization`` header value; :class:`Unauthenticated` otherwise."""
    if not authorization:
        raise Unauthenticated("this endpoint needs an API key: send Authorization: Bearer <key>")
    kind, _, key = authorization.partition(" ")
    if kind.lower() != "bearer" or not key.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <key>'")
    row = repo.by_hash(session, hash_key(key.strip()))
    if row is None:
        raise Unauthenticated("unknown API key")
    if row.revoked_at is not None:
        raise Unauthenticated(f"the API key {row.prefix}… was revoked")
    now = now or utc_now()
    stale = row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY
    return Principal(row.id, row.name, scope_of(row.scope), stale)


def record_use(session_factory: sessionmaker[Session], key_id: int, now: datetime) -> None:
    """Write a key's ``last_used_at`` in a unit of work of its own, after the response is sent.

    A read request never writes, so it never waits for the write lock a sync holds (SQLite).
    Best effort: a failure is logged and the next use tries again.
    """
    try:
        with session_scope(session_factory) as session:
            repo.touch(session, key_id, now)
    except SQLAlchemyError as exc:
        log.info("could not record the use of API key %d: %s", key_id, exc)
