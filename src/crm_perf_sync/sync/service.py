"""The sync engine: connector records → canonical store, batch and checkpoint in one transaction.

For each stream of a connection the engine reads from the last committed checkpoint, buffers
records, and every ``batch_size`` records (or at a checkpoint that closes a batch) commits, in one
transaction: the changed rows (bulk INSERT ... ON CONFLICT), observed stage changes, soft deletes,
skipped-record reports, the newest checkpoint covering them, the run's counters and a renewal of
the connection's lease. A crash therefore never leaves a cursor ahead of its data, and a re-read
never duplicates a row.
"""

from __future__ import annotations

import contextvars
import logging
import random
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import LoadedConfig
from crm_perf_sync.connector_sdk import (
    BadRecord,
    Checkpoint,
    Connector,
    ConnectorContext,
    ConnectorError,
    Entity,
    QuotaExhaustedError,
    RetriableError,
    SnapshotComplete,
    StreamSpec,
    Tombstone,
)
from crm_perf_sync.connector_sdk.records import RECORD_TYPES
from crm_perf_sync.connectors.registry import ConnectorRegistry
from crm_perf_sync.db import session_scope
from crm_perf_sync.errors import AppError, Conflict, NotFound
from crm_perf_sync.leases import new_holder_id, release, renew, try_acquire
from crm_perf_sync.logging_setup import bind_log_context, log_context
from crm_perf_sync.metrics import STREAM_RECORDS, STREAM_RUNS
from crm_perf_sync.sync import repository as repo
from crm_perf_sync.sync.rows import (
    UNSTORABLE,
    Removed,
    Row,
    UnstorableId,
    escape_unstorable,
    json_safe,
    observed_change_id,
    to_row,
    unstorable_kind,
)
from crm_perf_sync.sync.schemas import StreamStats, SyncOutcome
from crm_perf_sync.timeutil import utc_now
from crm_perf_sync.webhooks.service import emit

log = logging.getLogger(__name__)


class SyncAlreadyRunning(Conflict):
    """Another process holds this connection's sync lease."""


class LeaseLost(AppError):
    """This process's claim expired and another took the connection over; its batch was rolled back."""


class ConnectorBug(AppError):
    """The connector broke its contract (wrong record type, unserialisable checkpoint, ...)."""


class StopRequested(Exception):
    """A graceful shutdown was requested between two batches."""


@dataclass(frozen=True, slots=True)
class SyncOptions:
    batch_size: int = 5000
    max_retries: int = 5
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    lease_ttl: timedelta = timedelta(seconds=120)


ProgressCallback = Callable[[str, StreamStats], None]


# Rows a run inserts into a table before the table's planner statistics are first refreshed.
_FIRST_ANALYZE = 20_000
#: The interpreter's thread switch interval (seconds) once a sync writes. The writer thread makes
#: about ten round trips to the database a batch, and after each it has to win the GIL back from
#: the reader thread (parsing, mapping), which keeps it for up to the switch interval, 5 ms by
#: default. At 1 ms the upsert benchmark's store rate rose by about a fifth (45k to 54k rows/s on
#: average, PostgreSQL, 300k rows, alternating runs); 0.2 ms cost more in switching than it saved,
#: and SQLite (few round trips) did not move.
WRITER_SWITCH_INTERVAL = 0.001


def lease_name(connection_id: str) -> str:
    return f"sync:{connection_id}"


def backoff_delay(attempt: int, options: SyncOptions, retry_after: float | None, rng: random.Random) -> float:
    """Exponential backoff with jitter; a server's ``Retry-After`` is a floor, never shortened.

    "Equal jitter": half the exponential step is kept, half is random, so retries from several
    workers spread out without ever retrying immediately.
    """
    step = min(options.retry_max_seconds, options.retry_base_seconds * (2.0**attempt))
    delay = step / 2 + rng.uniform(0, step / 2)
    if retry_after is not None:
        delay = max(delay, retry_after + rng.uniform(0, 1))
    return delay


def _holds_unstorable(value: Any) -> bool:
    if isinstance(value, str):
        return UNSTORABLE.search(value) is not None
    if isinstance(value, Mapping):
        return any(_holds_unstorable(key) or _holds_unstorable(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_unstorable(item) for item in value)
    return False


def _is_older(row: Row, stored_updated_at: datetime | None) -> bool:
    incoming = row.get("remote_updated_at")
    return incoming is not None and stored_updated_at is not None and incoming < stored_updated_at


class _StreamWriter:
    """Buffers one stream's messages and commits them in batches with their checkpoint."""

    def __init__(self, engine: SyncEngine, run_id: int, stream: StreamSpec, stats: StreamStats) -> None:
        self.engine = engine
        self.run_id = run_id
        self.stream = stream
        self.entity: Entity = stream.entity
        self.stats = stats
        self.rows: dict[str, Row] = {}
        self.tombstones: dict[str, datetime] = {}
        self.bad: list[Row] = []
        self.checkpoint: Mapping[str, Any] | None = None
        self.pending = 0

    def add_row(self, row: Row) -> None:
        key = row["external_id"]
        self.tombstones.pop(key, None)
        self.rows[key] = row
        self.pending += 1

    def add_tombstone(self, tombstone: Tombstone, now: datetime) -> None:
        self.rows.pop(tombstone.external_id, None)
        self.tombstones[tombstone.external_id] = tombstone.deleted_at or now
        self.pending += 1

    def add_bad(self, bad: BadRecord, now: datetime) -> None:
        self.stats.skipped += 1
        self._report("error", bad.key, bad.field, bad.message, bad.raw, now)
        self.pending += 1

    def add_warning(self, key: str | None, field: str | None, message: str, now: datetime) -> None:
        """A record stored with a change the user must know of; kept with the run like bad records."""
        self.stats.warnings += 1
        self._report("warning", key, field, message, None, now)

    def _report(
        self,
        level: str,
        key: str | None,
        field: str | None,
        message: str,
        raw: Mapping[str, Any] | None,
        now: datetime,
    ) -> None:
        # A report shows what was wrong, so a character no store can hold is spelled out in it
        # rather than dropped (and the report itself can always be stored).
        self.bad.append(
            {
                "run_id": self.run_id,
                "connection_id": self.engine.connection_id,
                "stream": self.stream.name,
                "level": level,
                "record_key": escape_unstorable(key)[:400] if key else None,
                "field": escape_unstorable(field)[:255] if field else None,
                "message": escape_unstorable(message),
                "raw": json_safe(escape_unstorable(raw)) if raw else None,
                "created_at": now,
            }
        )

    def commit(self) -> None:
        """Hand the buffer to the engine's writer (which commits it while we read on)."""
        if not self.pending and self.checkpoint is None:
            return
        self.engine.submit(
            _Batch(
                self.stream, self.stats, list(self.rows.values()), self.tombstones, self.bad, self.checkpoint
            )
        )
        self.rows = {}
        self.tombstones = {}
        self.bad = []
        self.pending = 0
        self.checkpoint = None

    def flush(self) -> None:
        """Commit the buffer and wait until everything handed over is committed."""
        self.commit()
        self.engine.wait()


@dataclass(slots=True)
class _Batch:
    stream: StreamSpec
    stats: StreamStats
    rows: list[Row]
    tombstones: dict[str, datetime]
    bad: list[Row]
    checkpoint: Mapping[str, Any] | None


class SyncEngine:
    """Runs syncs of one connection. Create one per run; it owns the run's transactions."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        connector: Connector,  # type: ignore[type-arg]
        connection_id: str,
        options: SyncOptions,
        holder: str,
        on_progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.connector = connector
        self.connection_id = connection_id
        self.options = options
        self.holder = holder
        self.on_progress = on_progress
        self.should_stop = should_stop or (lambda: False)
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.run_id = 0
        self.streams: dict[str, StreamStats] = {}
        self.retries = 0
        # Stage changes are observed between syncs only when the CRM does not give its own history.
        self.observe_stage_changes = not any(spec.entity == "stage_changes" for spec in connector.streams())
        # One writer thread: batch N is committed while batch N+1 is read and mapped. The database
        # and the network release the GIL, so the two overlap; one thread keeps commits in order.
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: Future[None] | None = None
        self._analyze_at: dict[Entity, int] = {}

    # -- the writer --------------------------------------------------------------------------------

    def submit(self, batch: _Batch) -> None:
        """Queue ``batch`` for commit after the one in flight (whose failure is raised here)."""
        self.wait()
        if self._executor is None:
            if sys.getswitchinterval() > WRITER_SWITCH_INTERVAL:
                # Process-wide and never raised back: every sync of the process gains the same.
                sys.setswitchinterval(WRITER_SWITCH_INTERVAL)
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"sync-{self.connection_id}"
            )
        # The writer thread logs in the reader's context (connection, run, stream).
        self._inflight = self._executor.submit(contextvars.copy_context().run, self.commit_batch, batch)

    def wait(self) -> None:
        """Block until the batch in flight is committed; raise its error if it failed."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            inflight.result()

    def _shutdown_writer(self) -> None:
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    # -- one batch, one transaction --------------------------------------------------------------

    def commit_batch(self, batch: _Batch) -> None:
        now = utc_now()
        stats = batch.stats
        entity = batch.stream.entity
        with session_scope(self.session_factory) as session:
            if not renew(session, lease_name(self.connection_id), self.holder, self.options.lease_ttl):
                raise LeaseLost(
                    f"the sync lease of {self.connection_id!r} expired and was taken by another process; "
                    "this batch was rolled back"
                )
            rows = batch.rows
            if rows:
                stored = repo.existing_state(
                    session, entity, self.connection_id, [r["external_id"] for r in rows]
                )
                new: list[Row] = []
                changed: list[Row] = []
                observed: list[Row] = []
                for row in rows:
                    before = stored.get(row["external_id"])
                    if before is None:
                        new.append(row)
                    elif before.content_hash == row["content_hash"] or _is_older(
                        row, before.remote_updated_at
                    ):
                        # Unchanged, or an older version than the stored one (a lookback window or
                        # an out-of-order page): never move a record back in time.
                        stats.unchanged += 1
                    else:
                        stats.updated += 1
                        changed.append(row)
                        if (
                            self.observe_stage_changes
                            and entity == "opportunities"
                            and row["stage"] is not None
                            and before.stage != row["stage"]
                        ):
                            changed_at = row["remote_updated_at"] or now
                            observed.append(
                                {
                                    "external_id": observed_change_id(
                                        row["external_id"], changed_at, row["stage"]
                                    ),
                                    "opportunity_external_id": row["external_id"],
                                    "from_stage": before.stage,
                                    "to_stage": row["stage"],
                                    "changed_at": changed_at,
                                    "source": "observed",
                                    "content_hash": "",
                                }
                            )
                stats.inserted += len(new)
                # The change log keeps the versions this batch replaces (see models.changes).
                repo.record_prior_versions(
                    session, entity, self.connection_id, [row["external_id"] for row in changed]
                )
                repo.insert_rows(session, entity, self.connection_id, new, now)
                repo.upsert_rows(session, entity, self.connection_id, changed, now)
                repo.upsert_rows(session, "stage_changes", self.connection_id, observed, now)
                if entity == "stage_changes":
                    stats.stage_changes += len(new) + len(changed)
                else:
                    stats.stage_changes += len(observed)
                if new or changed:
                    repo.record_change_batch(session, entity, self.connection_id, now)
            if batch.tombstones:
                repo.record_prior_versions(session, entity, self.connection_id, list(batch.tombstones))
                stats.deleted += repo.mark_deleted(session, entity, self.connection_id, batch.tombstones, now)
                repo.record_change_batch(session, entity, self.connection_id, now)
            repo.record_errors(session, batch.bad)
            if batch.checkpoint is not None:
                repo.save_checkpoint(
                    session, self.connection_id, batch.stream.name, batch.checkpoint, self.run_id, now
                )
            self._write_counters(session)
        if stats.inserted >= self._analyze_at.get(entity, _FIRST_ANALYZE):
            # Each doubling of what this run inserted: a handful of ANALYZEs even for millions.
            self._analyze_at[entity] = stats.inserted * 2
            with session_scope(self.session_factory) as session:
                repo.refresh_statistics(session, entity)
        if batch.checkpoint is not None:
            # Only once committed: a retry resumes from here.
            stats.cursor_after = dict(batch.checkpoint)
        if self.on_progress is not None:
            self.on_progress(batch.stream.name, stats)

    def _write_counters(self, session: Session, **extra: Any) -> None:
        totals = {
            name: sum(int(getattr(s, name)) for s in self.streams.values())
            for name in (
                "inserted", "updated", "unchanged", "deleted", "skipped", "warnings", "stage_changes"
            )
        }  # fmt: skip
        repo.update_run(
            session,
            self.run_id,
            records_read=sum(s.read for s in self.streams.values()),
            retries=self.retries,
            streams={name: stats.as_json() for name, stats in self.streams.items()},
            **totals,
            **extra,
        )

    # -- one stream ------------------------------------------------------------------------------

    def _read_stream(
        self, spec: StreamSpec, checkpoint: Mapping[str, Any] | None, stats: StreamStats
    ) -> None:
        """One read of the stream from ``checkpoint``; commits as it goes."""
        writer = _StreamWriter(self, self.run_id, spec, stats)
        expected = RECORD_TYPES[spec.entity]
        batch_size = self.options.batch_size
        entity = spec.entity
        # Keys are remembered only where a snapshot can end the read (a bounded, whole-set stream).
        seen: set[str] | None = set() if spec.snapshot else None
        snapshot_complete = False
        try:
            for message in self.connector.read(spec, checkpoint):
                if type(message) is expected:
                    stats.read += 1
                    record: Any = message
                    key = getattr(record, "external_id", None)
                    try:
                        record.validate()
                        removed = Removed()
                        row = to_row(entity, record, removed)
                    except UnstorableId as exc:
                        writer.add_bad(
                            BadRecord(f"invalid record: {exc}", key=key, field="external_id"), utc_now()
                        )
                    except ValueError as exc:
                        writer.add_bad(BadRecord(f"invalid record: {exc}", key=key), utc_now())
                    else:
                        writer.add_row(row)
                        if removed:
                            writer.add_warning(
                                row["external_id"], removed.paths[0], removed.message(), utc_now()
                            )
                        if seen is not None:
                            seen.add(row["external_id"])
                elif isinstance(message, Checkpoint):
                    writer.checkpoint = self._checked_state(spec, message.state)
                    if writer.pending >= batch_size:
                        writer.commit()
                        self._maybe_stop()
                    continue
                elif isinstance(message, Tombstone):
                    kind = unstorable_kind(message.external_id)
                    if kind is None:
                        writer.add_tombstone(message, utc_now())
                    else:
                        # No stored record can have this id: there is nothing it could delete.
                        reason = (
                            f"invalid deletion: external_id {message.external_id!r} holds {kind}, "
                            "which no store can hold"
                        )
                        writer.add_bad(
                            BadRecord(reason, key=message.external_id, field="external_id"), utc_now()
                        )
                elif isinstance(message, BadRecord):
                    stats.read += 1
                    writer.add_bad(message, utc_now())
                elif isinstance(message, SnapshotComplete):
                    if seen is None:
                        raise ConnectorBug(
                            f"stream {spec.name!r} yielded SnapshotComplete but is not declared snapshot=True"
                        )
                    snapshot_complete = True
                    continue
                else:
                    raise ConnectorBug(
                        f"connector yielded {type(message).__name__} in stream {spec.name!r}, "
                        f"which holds {expected.__name__} records"
                    )
                if writer.pending >= batch_size * 2:
                    # A connector that checkpoints rarely must not grow the buffer without bound: the
                    # rows are committed without advancing the cursor, which a re-read covers safely.
                    writer.commit()
                    self._maybe_stop()
        except Exception as exc:
            if not isinstance(exc, AppError | DBAPIError):
                # The source failed: keep what it delivered first. Everything buffered was yielded
                # before the error, so committing it (and its last checkpoint) is safe.
                writer.flush()
            raise
        writer.flush()
        if snapshot_complete and seen is not None:
            self._reconcile_snapshot(writer, seen)

    def _reconcile_snapshot(self, writer: _StreamWriter, seen: set[str]) -> None:
        """Soft-delete what the source no longer has, after a read of the complete snapshot."""
        with session_scope(self.session_factory) as session:
            gone = [
                key
                for key in repo.live_external_ids(session, writer.entity, self.connection_id)
                if key not in seen
            ]
        if not gone:
            return
        now = utc_now()
        for start in range(0, len(gone), self.options.batch_size):
            for key in gone[start : start + self.options.batch_size]:
                writer.add_tombstone(Tombstone(key, now), now)
            writer.commit()
        writer.flush()

    def _checked_state(self, spec: StreamSpec, state: Mapping[str, Any]) -> Mapping[str, Any]:
        if not isinstance(state, Mapping):
            raise ConnectorBug(f"stream {spec.name!r} yielded a checkpoint that is not a JSON object")
        if _holds_unstorable(state):
            # A cursor cannot be cleaned without changing where the next read starts.
            raise ConnectorBug(
                f"stream {spec.name!r} yielded a checkpoint holding a NUL character or an unpaired "
                "surrogate, which no store can hold"
            )
        safe = json_safe(state)
        if safe is None:
            raise ConnectorBug(f"stream {spec.name!r} yielded a checkpoint that is not a JSON object")
        return safe

    def _maybe_stop(self) -> None:
        if self.should_stop():
            self.wait()  # the batch just handed over is committed before the run stops
            raise StopRequested

    def _check_connector(self) -> None:
        """The connector's check, retried like a read: an org unreachable for a moment must not
        fail the run, while ``doctor`` (one check, no engine) still hears that it is unreachable."""
        failures = 0
        while True:
            try:
                self.connector.check()
                return
            except RetriableError as exc:
                failures += 1
                if failures > self.options.max_retries:
                    raise
                self._wait_to_retry(f"the check of {self.connection_id}", exc, failures, "")

    def _wait_to_retry(self, what: str, exc: RetriableError, failures: int, resume: str) -> None:
        """Back off before retry number ``failures``, keeping the lease and the counters current."""
        self.retries += 1
        delay = backoff_delay(failures - 1, self.options, exc.retry_after, self.rng)
        log.warning(
            "%s: %s; retry %d/%d in %.1fs%s", what, exc, failures, self.options.max_retries, delay, resume
        )
        self.sleep(delay)
        with session_scope(self.session_factory) as session:
            if not renew(session, lease_name(self.connection_id), self.holder, self.options.lease_ttl):
                raise LeaseLost(
                    f"the sync lease of {self.connection_id!r} was lost while waiting to retry"
                ) from exc
            self._write_counters(session)

    def _sync_stream(self, spec: StreamSpec, checkpoint: Mapping[str, Any] | None) -> None:
        with log_context(stream=spec.name):
            self._sync_one_stream(spec, checkpoint)

    def _sync_one_stream(self, spec: StreamSpec, checkpoint: Mapping[str, Any] | None) -> None:
        stats = self.streams[spec.name]
        stats.status = "running"
        stats.cursor_before = dict(checkpoint) if checkpoint is not None else None
        failures = 0
        while True:
            progress_before = stats.inserted + stats.updated + stats.unchanged + stats.deleted + stats.skipped
            try:
                self._read_stream(spec, checkpoint, stats)
                stats.status = "succeeded"
                return
            except RetriableError as exc:
                progressed = (
                    stats.inserted + stats.updated + stats.unchanged + stats.deleted + stats.skipped
                ) > progress_before
                failures = 1 if progressed else failures + 1
                if failures > self.options.max_retries:
                    raise
                self._wait_to_retry(
                    f"stream {spec.name} of {self.connection_id}", exc, failures, " from the last checkpoint"
                )
                # Resume from what this run committed last (on a full refresh, never from an older
                # checkpoint that the refresh is meant to ignore).
                if stats.cursor_after is not None:
                    checkpoint = stats.cursor_after

    # -- the run ---------------------------------------------------------------------------------

    def run(self, *, trigger: str, full_refresh: bool, queued_run: int | None = None) -> SyncOutcome:
        """Sync every stream; ``queued_run``: carry out this queued run (its row records it)."""
        with log_context(connection=self.connection_id):
            return self._run(trigger=trigger, full_refresh=full_refresh, queued_run=queued_run)

    def _run(self, *, trigger: str, full_refresh: bool, queued_run: int | None) -> SyncOutcome:
        started = time.monotonic()
        now = utc_now()
        with session_scope(self.session_factory) as session:
            held = try_acquire(session, lease_name(self.connection_id), self.holder, self.options.lease_ttl)
            if held is not None:
                until = f" until {held.expires_at.isoformat()}" if held.expires_at else ""
                raise SyncAlreadyRunning(
                    f"connection {self.connection_id!r} is already being synced by {held.holder}{until}"
                )
            if queued_run is None:
                self.run_id = repo.create_run(
                    session, self.connection_id, trigger, full_refresh, self.holder, now
                )
            elif repo.adopt_queued_run(session, queued_run, self.holder, now):
                self.run_id = queued_run
            else:
                # Another worker took it first; rolling back releases the lease taken above.
                raise SyncAlreadyRunning(f"queued run {queued_run} was taken by another worker")
            bind_log_context(run_id=self.run_id)
            abandoned = repo.abandon_running(session, self.connection_id, self.run_id, now)
            checkpoints = {} if full_refresh else repo.load_checkpoints(session, self.connection_id)
        if abandoned:
            log.warning(
                "%s: %d earlier run(s) had died mid-way; resuming from their checkpoints",
                self.connection_id,
                abandoned,
            )
        specs = list(self.connector.streams())
        self.streams = {spec.name: StreamStats() for spec in specs}
        status, error, kind = "succeeded", None, None
        try:
            self._check_connector()
            for spec in specs:
                self._sync_stream(spec, checkpoints.get(spec.name))
            self._after_streams()
        except StopRequested:
            status, kind = "interrupted", "interrupted"
            error = "stopped by a shutdown request after a committed batch"
        except QuotaExhaustedError as exc:
            status, kind = "deferred", "deferred"
            error = f"API quota exhausted, resuming on the next run: {exc}"
        except ConnectorError as exc:
            status, error, kind = "failed", f"{type(exc).__name__}: {exc}", exc.recovery
        except (LeaseLost, ConnectorBug) as exc:
            status, error, kind = "failed", str(exc), "fatal"
        except DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
            status, error, kind = "failed", f"database error: {reason}", "database"
        except Exception as exc:  # a connector bug must still close the run it started
            log.exception("sync of %s failed unexpectedly", self.connection_id)
            status, error, kind = "failed", f"unexpected {type(exc).__name__}: {exc}", "fatal"
        except BaseException:
            self._drain_writer()
            self._finish("interrupted", "the process was interrupted", "interrupted", started)
            raise
        finally:
            self._drain_writer()
            try:
                self.connector.close()
            except Exception:
                log.exception("closing the connector of %s failed", self.connection_id)
        if error is not None:
            # An exception's text may quote a source value; the run's record must still be storable.
            error = escape_unstorable(error)
        for stats in self.streams.values():
            if stats.status == "running":
                stats.status = status
                stats.error = error
        self._finish(status, error, kind, started)
        return SyncOutcome(
            run_id=self.run_id,
            connection_id=self.connection_id,
            status=status,
            duration_seconds=time.monotonic() - started,
            streams=self.streams,
            error=error,
            error_kind=kind,
            retries=self.retries,
        )

    def _drain_writer(self) -> None:
        # Every path that ends a run has already waited for its last batch (and seen its error);
        # this only stops the thread, and logs what a second failure would otherwise hide.
        try:
            self._shutdown_writer()
        except Exception:
            log.exception("the last batch of %s could not be committed", self.connection_id)

    def _after_streams(self) -> None:
        with session_scope(self.session_factory) as session:
            repo.link_team_parents(session, self.connection_id)
            repo.sync_crm_memberships(session, self.connection_id)

    def _finish(self, status: str, error: str | None, kind: str | None, started: float) -> None:
        try:
            with session_scope(self.session_factory) as session:
                now = utc_now()
                duration = round(time.monotonic() - started, 3)
                self._write_counters(
                    session,
                    status=status,
                    error=error,
                    error_kind=kind,
                    finished_at=now,
                    duration_seconds=duration,
                )
                self._announce(session, status, error, kind, duration, now)
                release(session, lease_name(self.connection_id), self.holder)
        except DBAPIError:
            log.exception("could not record the end of sync run %s of %s", self.run_id, self.connection_id)
        for stream, stats in self.streams.items():
            STREAM_RUNS.labels(self.connection_id, stream, stats.status).inc()
            for action in ("read", "inserted", "updated", "deleted", "skipped"):
                STREAM_RECORDS.labels(self.connection_id, stream, action).inc(getattr(stats, action))

    def _announce(
        self,
        session: Session,
        status: str,
        error: str | None,
        kind: str | None,
        duration: float,
        now: datetime,
    ) -> None:
        """``sync.completed`` (succeeded, or deferred by a quota) or ``sync.failed``, through the
        outbox in the transaction that records the run's end. An interrupted run says nothing:
        it resumes."""
        if status not in ("succeeded", "deferred", "failed"):
            return
        totals = {
            name: sum(int(getattr(stats, name)) for stats in self.streams.values())
            for name in ("read", "inserted", "updated", "unchanged", "deleted", "skipped", "warnings")
        }
        data: dict[str, Any] = {
            "run_id": self.run_id,
            "connection_id": self.connection_id,
            "status": status,
            "duration_seconds": duration,
            **totals,
            "links": {"run": f"/api/v1/sync-runs/{self.run_id}"},
        }
        if error is not None:
            data.update(error=error, error_kind=kind)
        emit(session, "sync.failed" if status == "failed" else "sync.completed", data, now=now)


class SyncService:
    """Entry point of the sync domain for the CLI, the worker and (later) the API."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        registry: ConnectorRegistry,
        config: LoadedConfig,
        options: SyncOptions,
        holder: str | None = None,
        base_dir: Path | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.registry = registry
        self.config = config
        self.options = options
        self.holder = holder or new_holder_id()
        self.base_dir = base_dir or Path.cwd()

    def apply_config(self) -> None:
        """Mirror connections and configured teams into the store (idempotent)."""
        with session_scope(self.session_factory) as session:
            now = utc_now()
            repo.sync_connections(session, self.config.app, now)
            repo.sync_config_teams(session, self.config.app, now)

    def build_connector(self, connection_id: str, *, full_refresh: bool = False) -> Connector:  # type: ignore[type-arg]
        return build_connector(
            self.config, self.registry, connection_id, base_dir=self.base_dir, full_refresh=full_refresh
        )

    def sync(
        self,
        connection_id: str,
        *,
        trigger: str = "manual",
        full_refresh: bool = False,
        on_progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        queued_run: int | None = None,
    ) -> SyncOutcome:
        connector = self.build_connector(connection_id, full_refresh=full_refresh)
        with session_scope(self.session_factory) as session:
            repo.sync_connections(session, self.config.app, utc_now())
        engine = SyncEngine(
            session_factory=self.session_factory,
            connector=connector,
            connection_id=connection_id,
            options=self.options,
            holder=self.holder,
            on_progress=on_progress,
            should_stop=should_stop,
            sleep=sleep,
        )
        outcome = engine.run(trigger=trigger, full_refresh=full_refresh, queued_run=queued_run)
        if outcome.status == "succeeded":
            # Configured members may name reps this sync has just brought in.
            with session_scope(self.session_factory) as session:
                repo.sync_config_teams(session, self.config.app, utc_now())
        return outcome

    def reports(self, run_id: int, limit: int = 10) -> list[tuple[str, str, str]]:
        """The first bad records and warnings of run ``run_id``: (level, stream, message)."""
        with session_scope(self.session_factory) as session:
            return repo.run_reports(session, run_id, limit)


def build_connector(
    config: LoadedConfig,
    registry: ConnectorRegistry,
    connection_id: str,
    *,
    base_dir: Path | None = None,
    full_refresh: bool = False,
    max_attempts: int | None = None,
) -> Connector:  # type: ignore[type-arg]
    """The configured connection's connector, ready to check or read (the caller closes it);
    ``max_attempts`` caps its tries of one request (see :class:`ConnectorContext`)."""
    conn = config.app.connection(connection_id)
    if conn is None:
        known = ", ".join(c.id for c in config.app.connections) or "none"
        raise NotFound(f"no connection {connection_id!r} in {config.path} (configured: {known})")
    connector_cls = registry.get(conn.kind)
    if connector_cls is None:
        raise NotFound(f"connector kind {conn.kind!r} of connection {connection_id!r} is not installed")
    context = ConnectorContext(
        connection_id=connection_id,
        base_dir=base_dir or Path.cwd(),
        logger=logging.getLogger(f"crm_perf_sync.connector.{connection_id}"),
        full_refresh=full_refresh,
        max_attempts=max_attempts,
    )
    return connector_cls(config.connector_settings[connection_id], context)
