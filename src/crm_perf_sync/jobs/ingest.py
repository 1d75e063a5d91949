"""The push inbox turned into targeted syncs: what a CRM pushed is fetched from it by id.

A connection's waiting changes (the oldest :data:`BATCH`, coalesced: a record named by many
events is fetched once) become one targeted sync under the connection's sync lease, so it never
runs beside another sync of the connection, on any replica. Once the sync succeeded the changes
are done; when it failed, each counts an attempt, the connection is not tried again before a
wait that doubles with each failure (:class:`Backoff`: 5 s, 10 s, 20 s ...), and a change that
failed :data:`MAX_ATTEMPTS` times (over a minute and more) is parked with the error (visible in
the status, never dropped). A sync that could not start
(another sync holds the connection), was stopped or was deferred by the CRM's quota leaves them
waiting, as a crash between the sync and the bookkeeping does: a fetch by id is idempotent, so a
change processed twice is stored once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.ingest import repository as repo
from crm_perf_sync.jobs.sync import SyncService
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.metrics import INGEST_LAG
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.sync.errors import SyncAlreadyRunning
from crm_perf_sync.sync.outcomes import SyncOutcome

log = logging.getLogger(__name__)

#: The most changes of one connection one targeted sync fetches (a burst takes several).
BATCH = 5000
#: Failed targeted syncs after which a change is parked.
MAX_ATTEMPTS = 5


@dataclass
class Backoff:
    """When each connection whose last targeted sync failed may be tried again: after ``base``,
    doubling with each failure in a row up to ``cap``; a success clears it. Kept by the inbox
    loop of one process (a replica's own failures pace its own tries)."""

    base: timedelta = timedelta(seconds=5)
    cap: timedelta = timedelta(minutes=5)
    clock: Callable[[], datetime] = utc_now
    _failures: dict[str, int] = field(default_factory=dict)
    _until: dict[str, datetime] = field(default_factory=dict)

    def due(self, connection_id: str) -> bool:
        until = self._until.get(connection_id)
        return until is None or self.clock() >= until

    def record(self, connection_id: str, succeeded: bool) -> None:
        if succeeded:
            self._failures.pop(connection_id, None)
            self._until.pop(connection_id, None)
            return
        failures = self._failures[connection_id] = self._failures.get(connection_id, 0) + 1
        self._until[connection_id] = self.clock() + min(self.cap, self.base * 2 ** (failures - 1))


@dataclass(frozen=True, slots=True)
class InboxRun:
    """One targeted sync of a connection's waiting changes, and what became of them."""

    connection_id: str
    changes: int
    outcome: SyncOutcome
    parked: int
    #: When each change processed happened in the CRM (or arrived, when the CRM did not say).
    happened: tuple[datetime, ...]

    @property
    def changed(self) -> int:
        return sum(self.outcome.total(name) for name in ("inserted", "updated", "deleted"))


def process_inbox(
    sync: SyncService,
    session_factory: sessionmaker[Session],
    connection_id: str,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> InboxRun | None:
    """Fetch what waits in ``connection_id``'s inbox; ``None`` when nothing waited or another
    sync of the connection is running (the changes wait for the next turn)."""
    with session_scope(session_factory) as session:
        waiting = repo.waiting(session, connection_id, BATCH)
    if not waiting:
        return None
    targets: dict[str, list[str]] = {}
    for change in waiting:
        ids = targets.setdefault(change.stream, [])
        if change.external_id not in ids:
            ids.append(change.external_id)
    try:
        outcome = sync.sync(connection_id, trigger="push", targets=targets, should_stop=should_stop)
    except SyncAlreadyRunning as exc:
        log.info("pushed changes of %s wait: %s", connection_id, exc)
        return None
    event_ids = [change.id for change in waiting]
    parked = 0
    with session_scope(session_factory) as session:
        if outcome.status == "succeeded":
            repo.mark_done(session, event_ids, utc_now())
        elif outcome.status == "failed":
            error = outcome.error or "the targeted sync failed"
            parked = repo.record_failure(session, event_ids, error, utc_now(), MAX_ATTEMPTS)
    if parked:
        log.error(
            "%s: %d pushed changes parked after %d failed fetches: %s",
            connection_id,
            parked,
            MAX_ATTEMPTS,
            outcome.error,
        )
    happened = tuple(change.occurred_at or change.received_at for change in waiting)
    return InboxRun(connection_id, len(waiting), outcome, parked, happened)


def observe_lag(runs: list[InboxRun], refreshed_at: datetime) -> None:
    """The lag from each change in the CRM to the refreshed numbers, into :data:`INGEST_LAG`."""
    for run in runs:
        if run.outcome.status != "succeeded":
            continue
        for at in run.happened:
            INGEST_LAG.labels(run.connection_id).observe(max(0.0, (refreshed_at - at).total_seconds()))
