"""Request dependencies: the unit of work, the caller's key, and the application's context.

The request owns the transaction: :func:`db_session` commits when the route returns and rolls
back when it raises; everything below it only flushes.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.api.batching import GroupWriter
from crm_perf_sync.api.cache import VERSION_SECONDS, ResponseCache, TtlCache
from crm_perf_sync.api.listing import Fetch, PageParams, Version, listing, page_params
from crm_perf_sync.api.schemas import columns
from crm_perf_sync.apikeys.service import Principal, authenticate, record_use
from crm_perf_sync.apikeys.sessions import Signed
from crm_perf_sync.config import LoadedConfig
from crm_perf_sync.connector_sdk import Connector
from crm_perf_sync.incentives import repository as incentives_repo
from crm_perf_sync.incentives.service import IncentiveService
from crm_perf_sync.jobs.sync import build_connector
from crm_perf_sync.kit.db import WRITE_LOCK, session_scope
from crm_perf_sync.kit.errors import ConfigurationError
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.kpi import repository as kpi_repo
from crm_perf_sync.kpi import scores_repository as scores_repo
from crm_perf_sync.kpi.service import KpiService
from crm_perf_sync.measures.service import Catalog
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.runtime import RecordLinks, record_links
from crm_perf_sync.webhooks.security import Guard


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What every request may use: built once by the app factory, never at import."""

    engine: Engine
    session_factory: sessionmaker[Session]
    config: LoadedConfig | None
    webhook_guard: Guard = field(default_factory=Guard)
    responses: ResponseCache = field(default_factory=ResponseCache)
    versions: TtlCache[datetime | None] = field(default_factory=lambda: TtlCache(VERSION_SECONDS))
    principals: TtlCache[Principal] = field(default_factory=TtlCache)
    #: Dashboard sessions by cookie token (checked against the store at most once a second).
    sessions: TtlCache[Signed] = field(default_factory=TtlCache)
    #: Bookkeeping writes no response waits for (a key's last use), one at a time.
    chores: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-chores")
    )
    #: The connectors behind the configuration's connections (``None``: those installed).
    registry: ConnectorRegistry | None = None
    _links: list[RecordLinks] = field(default_factory=list, init=False, repr=False)
    _links_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _pushers: dict[str, Connector] = field(default_factory=dict, init=False, repr=False)  # type: ignore[type-arg]
    _pushers_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    #: SQLite pushes' group writer, per event loop (see :meth:`push_writer`).
    _push_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupWriter[Any, Any]] = field(
        default_factory=weakref.WeakKeyDictionary, init=False, repr=False
    )

    def push_writer(self, write: Callable[[Sequence[Any]], Sequence[Any]]) -> GroupWriter[Any, Any] | None:
        """Where a push stores its changes: on SQLite, a :class:`GroupWriter` of ``write`` (the
        pushes that arrive while a refresh holds the write lock wait in the event loop, then are
        stored together); ``None`` on PostgreSQL, where a push's writes do not wait for a refresh."""
        if self.engine.dialect.name != "sqlite":
            return None
        loop = asyncio.get_running_loop()
        writer = self._push_writers.get(loop)
        if writer is None:
            writer = self._push_writers[loop] = GroupWriter(write)
        return writer

    def values_version(self, session: Session, kpi_id: str) -> Version:
        """The version of a KPI's values (read at most every ``VERSION_SECONDS``)."""
        return Version(
            self.versions.get(("values", kpi_id), lambda: kpi_repo.values_version(session, kpi_id))
        )

    def results_version(self, session: Session) -> str:
        """The version of the KPI values as a whole, as text: when any of them last changed
        (``""`` before the first refresh); read at most every ``VERSION_SECONDS``."""
        found = self.versions.get(("results",), lambda: kpi_repo.results_version(session))
        return found.isoformat() if found is not None else ""

    def scores_version(self, session: Session, scorecard_id: str) -> Version:
        load = lambda: scores_repo.scores_version(session, scorecard_id)  # noqa: E731
        return Version(self.versions.get(("scores", scorecard_id), load))

    def incentives_version(self, session: Session) -> Version:
        """The version of the statement lines (read at most every ``VERSION_SECONDS``)."""
        return Version(self.versions.get(("incentives",), lambda: incentives_repo.lines_version(session)))

    def record_links(self) -> RecordLinks | None:
        """Links from stored records back to their CRM (built on first use), or ``None`` when
        this process has no configuration to say which CRM a connection is."""
        if self.config is None:
            return None
        with self._links_lock:
            if not self._links:
                registry = self.registry if self.registry is not None else ConnectorRegistry.discover()
                self._links.append(record_links(self.config, registry))
            return self._links[0]

    def push_connector(self, connection_id: str) -> Connector:  # type: ignore[type-arg]
        """The connector of a configured connection, to verify what its CRM pushes (built once,
        as a sync builds it; it does no I/O for a verification)."""
        if self.config is None:
            raise ConfigurationError("this API process was started without a configuration")
        with self._pushers_lock:
            found = self._pushers.get(connection_id)
            if found is None:
                registry = self.registry if self.registry is not None else ConnectorRegistry.discover()
                found = self._pushers[connection_id] = build_connector(self.config, registry, connection_id)
            return found

    def kpi_service(self) -> KpiService:
        if self.config is None:
            raise ConfigurationError("this API process was started without a configuration")
        return KpiService(self.config.kpi_config())

    def incentives(self, session: Session) -> IncentiveService:
        """The incentive plans (the configuration's and those set through the API) over the KPIs
        they read."""
        if self.config is None:
            raise ConfigurationError("this API process was started without a configuration")
        return IncentiveService(self.kpi_service(), self.config.app.incentives.plans).in_store(session)

    def measures(self) -> Catalog:
        """The measures in force and the fiscal calendar their periods follow."""
        if self.config is None:
            raise ConfigurationError("this API process was started without a configuration")
        return Catalog(self.config.measures, self.config.app.business.fiscal_year_start_month)


# Dependencies that do no I/O are ``async``: FastAPI runs a plain ``def`` dependency in the
# thread pool, a hand-off per dependency per request that costs more than these do.


async def context(request: Request) -> ApiContext:
    found: ApiContext = request.app.state.context
    return found


async def db_session(
    request: Request, ctx: Annotated[ApiContext, Depends(context)]
) -> AsyncIterator[Session]:
    """The request's unit of work: committed when the route returns, rolled back if it raises.

    The session connects on first use only (a response served from the cache never does);
    commit, rollback and close, which may wait on the database, run in the thread pool.
    """
    session = ctx.session_factory()
    if request.method not in ("GET", "HEAD") and ctx.engine.dialect.name == "sqlite":
        # A write request reads first (its key, what it checks): on SQLite it takes the write
        # lock before it reads, so a sync committing meanwhile makes it wait, not fail.
        await run_in_threadpool(session.connection, execution_options={WRITE_LOCK: True})
    try:
        yield session
        if session.in_transaction():
            await run_in_threadpool(session.commit)
    except BaseException:
        if session.in_transaction():
            await run_in_threadpool(session.rollback)
        raise
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


SessionDep = Annotated[Session, Depends(db_session)]
ContextDep = Annotated[ApiContext, Depends(context)]


@dataclass(frozen=True, slots=True)
class Lister:
    """Makes a collection route's response (:func:`crm_perf_sync.api.listing.listing`): bound to
    the request, its session, the factory a streamed CSV reads with, and the paging parameters."""

    request: Request
    session: Session
    factory: sessionmaker[Session]
    params: PageParams

    def __call__(
        self,
        kind: str,
        model: type[BaseModel],
        fetch: Fetch,
        *,
        version: Version | None = None,
        cache: ResponseCache | None = None,
    ) -> Response:
        """A page of ``model`` rows read by ``fetch``; ``kind`` names the collection in cursors."""
        return listing(
            self.request,
            self.session,
            self.factory,
            self.params,
            kind=kind,
            columns=columns(model),
            fetch=fetch,
            version=version,
            cache=cache,
        )


async def lister(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    params: Annotated[PageParams, Depends(page_params)],
) -> Lister:
    return Lister(request, session, ctx.session_factory, params)


ListerDep = Annotated[Lister, Depends(lister)]


#: ``Authorization: Bearer <key>`` (documented in OpenAPI as the ``bearer`` security scheme).
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key from `crm-perf-sync apikey create --scope read|editor|admin`.",
)


async def reader(
    ctx: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """Any valid key (``read``, ``editor`` or ``admin``).

    Checked against the store at most once a second per key (a revocation applies within that
    second), in a unit of work of its own in the thread pool; a key checked within the second
    costs no database read and no thread hand-off.
    """
    header = None if credentials is None else f"{credentials.scheme} {credentials.credentials}"
    now = utc_now()

    def check() -> Principal:
        with session_scope(ctx.session_factory) as session:
            found = authenticate(session, header, now)
        if found.stale_use:
            # Not a background task of the request: it may run before the request's own
            # transaction ends, and on SQLite it would then wait for that transaction's lock.
            ctx.chores.submit(record_use, ctx.session_factory, found.key_id, now)
        return found

    if header is None:
        return await run_in_threadpool(check)  # raises: no key
    cached = ctx.principals.peek(header)
    if cached is not None:
        return cached
    found = await run_in_threadpool(check)
    ctx.principals.put(header, found)
    return found


async def admin(principal: Annotated[Principal, Depends(reader)]) -> Principal:
    """A key with the ``admin`` scope."""
    principal.require("admin")
    return principal


async def editor(principal: Annotated[Principal, Depends(reader)]) -> Principal:
    """A key that may enter measures: ``editor`` or ``admin``."""
    principal.require("editor")
    return principal


Reader = Annotated[Principal, Depends(reader)]
Editor = Annotated[Principal, Depends(editor)]
Admin = Annotated[Principal, Depends(admin)]

#: A row id in a path: positive and within the database's integer range (a larger one is a 422,
#: not a database error).
RowId = Annotated[int, Path(ge=1, le=2_147_483_647)]
