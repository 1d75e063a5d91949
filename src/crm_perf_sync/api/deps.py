"""Request dependencies: the unit of work, the caller's key, and the application's context.

The request owns the transaction: :func:`db_session` commits when the route returns and rolls
back when it raises; everything below it only flushes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import BackgroundTasks, Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.apikeys.service import Principal, authenticate, record_use
from crm_perf_sync.config import LoadedConfig
from crm_perf_sync.db import WRITE_LOCK
from crm_perf_sync.kpi.service import KpiService
from crm_perf_sync.timeutil import utc_now


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What every request may use: built once by the app factory, never at import."""

    engine: Engine
    session_factory: sessionmaker[Session]
    config: LoadedConfig | None

    def kpi_service(self) -> KpiService:
        from crm_perf_sync.errors import ConfigurationError

        if self.config is None:
            raise ConfigurationError("this API process was started without a configuration")
        return KpiService(self.session_factory, self.config)


def context(request: Request) -> ApiContext:
    found: ApiContext = request.app.state.context
    return found


def db_session(request: Request, ctx: Annotated[ApiContext, Depends(context)]) -> Iterator[Session]:
    session = ctx.session_factory()
    if request.method not in ("GET", "HEAD") and ctx.engine.dialect.name == "sqlite":
        # A write request reads first (its key, what it checks): on SQLite it takes the write
        # lock before it reads, so a sync committing meanwhile makes it wait, not fail.
        session.connection(execution_options={WRITE_LOCK: True})
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(db_session)]
ContextDep = Annotated[ApiContext, Depends(context)]


#: ``Authorization: Bearer <key>`` (documented in OpenAPI as the ``bearer`` security scheme).
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key from `crm-perf-sync apikey create --scope read|admin`.",
)


def reader(
    session: SessionDep,
    ctx: ContextDep,
    background: BackgroundTasks,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """Any valid key (``read`` or ``admin``)."""
    header = None if credentials is None else f"{credentials.scheme} {credentials.credentials}"
    now = utc_now()
    principal = authenticate(session, header, now)
    if principal.stale_use:
        background.add_task(record_use, ctx.session_factory, principal.key_id, now)
    return principal


def admin(principal: Annotated[Principal, Depends(reader)]) -> Principal:
    """A key with the ``admin`` scope."""
    principal.require("admin")
    return principal


Reader = Annotated[Principal, Depends(reader)]
Admin = Annotated[Principal, Depends(admin)]

#: A row id in a path: positive and within the database's integer range (a larger one is a 422,
#: not a database error).
RowId = Annotated[int, Path(ge=1, le=2_147_483_647)]
