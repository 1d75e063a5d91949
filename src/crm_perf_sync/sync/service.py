"""The sync engine: connector records → canonical store, batch and checkpoint in one transaction.

For each stream of a connection the engine reads from the last committed checkpoint, buffers
records, and every ``batch_size`` records (or at a checkpoint that closes a batch) commits, in one
transaction: the changed rows (bulk INSERT ... ON CONFLICT), observed stage changes, soft deletes,
skipped-record reports, the newest checkpoint covering them, the run's counters and a renewal of
the connection's lease. A crash therefore never leaves a cursor ahead of its data, and a re-read
never duplicates a row.

Deletions are decided per read, once it has ended: the tombstones, the records that arrive
deleted and (after a complete snapshot) the records the snapshot no longer has are held back,
with every checkpoint that follows them, until the read is over. Then they are soft-deleted
together, or, when they are more of the stream's live records than a sync may delete (a truncated
export, a reconcile that saw part of the CRM), none is: the stream is set to be read again (from
where the run found it; a snapshot whole) and the run fails, asking for a confirmation
(``allow_mass_delete``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.connector_sdk import (
    BadRecord,
    Checkpoint,
    Connector,
    ConnectorError,
    Entity,
    Pushable,
    QuotaExhaustedError,
    RetriableError,
    SnapshotComplete,
    StreamSpec,
    Tombstone,
)
from crm_perf_sync.connector_sdk.records import RECORD_TYPES
from crm_perf_sync.kit.canonical import json_safe
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.errors import AppError
from crm_perf_sync.kit.logs import bind_log_context, log_context
from crm_perf_sync.kit.metrics import STREAM_RECORDS, STREAM_RUNS
from crm_perf_sync.kit.retry import backoff_delay
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.leases import release, renew, sync_lease, try_acquire
from crm_perf_sync.org import repository as org_repo
from crm_perf_sync.sync import repository as repo
from crm_perf_sync.sync.deletions import (
    HeldDeletions,
    hold_deletion,
    is_older,
    mass_deletion,
    withheld_message,
)
from crm_perf_sync.sync.errors import (
    ConnectorBug,
    LeaseLost,
    MassDeletionWithheld,
    StopRequested,
    SyncAlreadyRunning,
)
from crm_perf_sync.sync.outcomes import StreamStats, SyncOutcome
from crm_perf_sync.sync.rows import (
    UNSTORABLE,
    Removed,
    Row,
    UnstorableId,
    escape_unstorable,
    observed_change_id,
    to_row,
    unstorable_kind,
)
from crm_perf_sync.sync.writer import Batch, BatchWriter, StreamBuffer
from crm_perf_sync.webhooks.service import emit

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SyncOptions:
    batch_size: int = 5000
    max_retries: int = 5
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    lease_ttl: timedelta = timedelta(seconds=120)
    #: The mass-deletion limit of one read: at most this share of the stream's live records...
    mass_delete_share: float = 0.10
    #: ...or this many, whichever is more; never all of them (unless confirmed).
    mass_delete_floor: int = 10


ProgressCallback = Callable[[str, StreamStats], None]


# Rows a run inserts into a table before the table's planner statistics are first refreshed.
_FIRST_ANALYZE = 20_000


def retry_delay(attempt: int, options: SyncOptions, retry_after: float | None, rng: random.Random) -> float:
    """Exponential backoff with equal jitter (:func:`backoff_delay`); a server's ``Retry-After``
    is a floor, never shortened."""
    delay = backoff_delay(attempt, base=options.retry_base_seconds, cap=options.retry_max_seconds, rng=rng)
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
        self.batches = BatchWriter(self.commit_batch, f"sync-{connection_id}")
        self._analyze_at: dict[Entity, int] = {}
        self.allow_mass_delete = False
        #: Each stream's checkpoint as the run found it (also on a full refresh, which ignores them).
        self._found_checkpoints: dict[str, dict[str, Any]] = {}
        #: Of a targeted sync (see :meth:`run`), the record ids to fetch by stream.
        self.targets: Mapping[str, Sequence[str]] | None = None

    # -- one batch, one transaction --------------------------------------------------------------

    def commit_batch(self, batch: Batch) -> None:
        now = utc_now()
        stats = batch.stats
        entity = batch.stream.entity
        with session_scope(self.session_factory) as session:
            if not renew(session, sync_lease(self.connection_id), self.holder, self.options.lease_ttl):
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
                held = batch.held
                for row in rows:
                    before = stored.get(row["external_id"])
                    if held is not None and (held.pending or row.get("is_deleted")):
                        row = hold_deletion(held, row, before, now)
                    if before is None:
                        new.append(row)
                    elif before.content_hash == row["content_hash"] or is_older(
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
            checkpoint = batch.checkpoint
            if batch.held is not None:
                if batch.tombstones:
                    # Only the tombstones of live records delete anything: those are held back.
                    found = repo.existing_state(session, entity, self.connection_id, list(batch.tombstones))
                    for key, state in found.items():
                        if not state.is_deleted:
                            batch.held.pending[key] = batch.tombstones[key]
                if checkpoint is not None and (batch.held.pending or batch.hold_checkpoint):
                    # It covers deletions not made yet: it waits for them (a crash re-reads them).
                    batch.held.checkpoint, checkpoint = checkpoint, None
            elif batch.tombstones:
                repo.record_prior_versions(session, entity, self.connection_id, list(batch.tombstones))
                stats.deleted += repo.mark_deleted(session, entity, self.connection_id, batch.tombstones, now)
                repo.record_change_batch(session, entity, self.connection_id, now)
            repo.record_errors(session, batch.bad)
            if checkpoint is not None:
                repo.save_checkpoint(
                    session, self.connection_id, batch.stream.name, checkpoint, self.run_id, now
                )
            self._write_counters(session)
        if stats.inserted >= self._analyze_at.get(entity, _FIRST_ANALYZE):
            # Each doubling of what this run inserted: a handful of ANALYZEs even for millions.
            self._analyze_at[entity] = stats.inserted * 2
            with session_scope(self.session_factory) as session:
                repo.refresh_statistics(session, entity)
        if checkpoint is not None:
            # Only once committed: a retry resumes from here.
            stats.cursor_after = dict(checkpoint)
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
        self,
        spec: StreamSpec,
        checkpoint: Mapping[str, Any] | None,
        stats: StreamStats,
        ids: Sequence[str] | None = None,
    ) -> None:
        """One read of the stream from ``checkpoint`` (or, given ``ids``, a fetch of those records:
        no checkpoint moves); commits as it goes, deletions at the end."""
        held = HeldDeletions() if repo.entity_table(spec.entity).deletable else None
        writer = StreamBuffer(self.batches, self.connection_id, self.run_id, spec, stats, held)
        expected = RECORD_TYPES[spec.entity]
        batch_size = self.options.batch_size
        entity = spec.entity
        # Keys are remembered only where a snapshot can end the read (a bounded, whole-set stream).
        seen: set[str] | None = set() if spec.snapshot else None
        snapshot_complete = False
        if ids is None:
            messages = self.connector.read(spec, checkpoint)
        else:
            assert isinstance(self.connector, Pushable)  # (checked when the run started)
            messages = self.connector.fetch(spec, ids)
        try:
            for message in messages:
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
                            BadRecord(f"invalid record: {exc}", key=key, field=exc.field), utc_now()
                        )
                    except ValueError as exc:
                        writer.add_bad(BadRecord(f"invalid record: {exc}", key=key), utc_now())
                    else:
                        writer.add_row(row)
                        if removed:
                            writer.add_warning(
                                row["external_id"], removed.first, removed.message(), utc_now()
                            )
                        if seen is not None:
                            seen.add(row["external_id"])
                elif isinstance(message, Checkpoint):
                    if ids is not None:
                        raise ConnectorBug(f"a fetch of stream {spec.name!r} by id yielded a checkpoint")
                    writer.checkpoint = self._checked_state(spec, message.state)
                    if writer.pending >= batch_size:
                        writer.hand_over()
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
                    if seen is None or ids is not None:
                        raise ConnectorBug(
                            f"stream {spec.name!r} yielded SnapshotComplete but is not declared snapshot=True"
                        )
                    snapshot_complete = True
                    writer.hold_checkpoints = True
                    continue
                else:
                    raise ConnectorBug(
                        f"connector yielded {type(message).__name__} in stream {spec.name!r}, "
                        f"which holds {expected.__name__} records"
                    )
                if writer.pending >= batch_size * 2:
                    # A connector that checkpoints rarely must not grow the buffer without bound: the
                    # rows are committed without advancing the cursor, which a re-read covers safely.
                    writer.hand_over()
                    self._maybe_stop()
        except Exception as exc:
            if not isinstance(exc, AppError | DBAPIError):
                # The source failed: keep what it delivered first. Everything buffered was yielded
                # before the error, so committing it (and its last checkpoint) is safe.
                writer.drain()
            raise
        writer.drain()
        if held is not None:
            self._decide_deletions(writer, held, seen if snapshot_complete else None)

    def _decide_deletions(self, writer: StreamBuffer, held: HeldDeletions, seen: set[str] | None) -> None:
        """Make the deletions of the read that has just ended, or none of them.

        ``seen``: the keys of a complete snapshot, whose absent records are deleted too. Above the
        mass-deletion limit nothing is deleted, the stream is set to be read again (so the next
        run reads the same changes and decides again) and :class:`MassDeletionWithheld` is
        raised; the records the read stored stay.
        """
        spec = writer.stream
        now = utc_now()
        doomed = dict(held.pending)
        with session_scope(self.session_factory) as session:
            if seen is not None:
                live = 0
                for key in repo.live_external_ids(session, spec.entity, self.connection_id):
                    live += 1
                    if key not in seen:
                        doomed.setdefault(key, now)
            else:
                live = repo.count_live(session, spec.entity, self.connection_id) if doomed else 0
        if doomed:
            self._check_mass_deletion(spec, len(doomed), live, snapshot=seen is not None)
        # Decided: the batches below delete, and the last one commits the checkpoint that waited.
        writer.held = None
        writer.hold_checkpoints = False
        items = list(doomed.items())
        size = self.options.batch_size
        for start in range(0, len(items), size):
            for key, deleted_at in items[start : start + size]:
                writer.add_tombstone(Tombstone(key, deleted_at), now)
            if start + size >= len(items):
                writer.checkpoint = held.checkpoint
            writer.hand_over()
        if not items and held.checkpoint is not None:
            writer.checkpoint = held.checkpoint
        writer.drain()

    def _check_mass_deletion(self, spec: StreamSpec, doomed: int, live: int, *, snapshot: bool) -> None:
        """Raise :class:`MassDeletionWithheld` if ``doomed`` of the stream's ``live`` records are
        more than a sync may delete unconfirmed, with the stream set to be read again: from where
        the run found it, or (``snapshot``) whole, since only a whole read decides a snapshot's
        deletions and a connector may skip a snapshot its checkpoint says is done or not due."""
        refusal = mass_deletion(
            spec.entity, doomed, live, self.options.mass_delete_share, self.options.mass_delete_floor
        )
        if refusal is None:
            return
        what, why = refusal
        if self.allow_mass_delete:
            log.warning("%s: soft-deleting %s, as confirmed", spec.name, what)
            return
        if self.targets is not None:  # a fetch by id moved no cursor: there is none to set back
            raise MassDeletionWithheld(f"{spec.name}: this fetch would soft-delete {what}, {why}")
        found = None if snapshot else self._found_checkpoints.get(spec.name)
        with session_scope(self.session_factory) as session:
            if found is None:
                repo.delete_checkpoint(session, self.connection_id, spec.name)
            else:
                repo.save_checkpoint(session, self.connection_id, spec.name, found, self.run_id, utc_now())
        self.streams[spec.name].cursor_after = dict(found) if found is not None else None
        raise MassDeletionWithheld(f"{spec.name}: this sync would soft-delete {what}, {why}")

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
            self.batches.wait()  # the batch just handed over is committed before the run stops
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
        delay = retry_delay(failures - 1, self.options, exc.retry_after, self.rng)
        log.warning(
            "%s: %s; retry %d/%d in %.1fs%s", what, exc, failures, self.options.max_retries, delay, resume
        )
        self.sleep(delay)
        with session_scope(self.session_factory) as session:
            if not renew(session, sync_lease(self.connection_id), self.holder, self.options.lease_ttl):
                raise LeaseLost(
                    f"the sync lease of {self.connection_id!r} was lost while waiting to retry"
                ) from exc
            self._write_counters(session)

    def _sync_stream(
        self, spec: StreamSpec, checkpoint: Mapping[str, Any] | None, ids: Sequence[str] | None = None
    ) -> None:
        with log_context(stream=spec.name):
            self._sync_one_stream(spec, checkpoint, ids)

    def _sync_one_stream(
        self, spec: StreamSpec, checkpoint: Mapping[str, Any] | None, ids: Sequence[str] | None = None
    ) -> None:
        stats = self.streams[spec.name]
        stats.status = "running"
        stats.cursor_before = dict(checkpoint) if checkpoint is not None else None
        failures = 0
        while True:
            progress_before = stats.inserted + stats.updated + stats.unchanged + stats.deleted + stats.skipped
            try:
                self._read_stream(spec, checkpoint, stats, ids)
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

    def run(
        self,
        *,
        trigger: str,
        full_refresh: bool,
        queued_run: int | None = None,
        allow_mass_delete: bool = False,
        targets: Mapping[str, Sequence[str]] | None = None,
    ) -> SyncOutcome:
        """Sync every stream; ``queued_run``: carry out this queued run (its row records it);
        ``allow_mass_delete``: make deletions above the mass-deletion limit (a confirmation).

        ``targets`` (stream name → record ids) makes it a targeted sync of what a CRM pushed:
        only those records of only those streams, fetched by id (:meth:`Pushable.fetch`) and
        written as a read's are (change log, stage history, deletions held to the end of each
        stream and checked against the mass-deletion limit); no cursor moves, and the connector's
        check is not asked for (a push comes often, a check costs requests)."""
        self.allow_mass_delete = allow_mass_delete
        if targets is not None:
            if not isinstance(self.connector, Pushable) or not self.connector.takes_pushes():
                raise ConnectorBug(f"connection {self.connection_id!r}: its connector cannot fetch by id")
            known = {spec.name for spec in self.connector.streams()}
            unknown = sorted(set(targets) - known)
            if unknown:
                raise ConnectorBug(f"connection {self.connection_id!r} has no stream {', '.join(unknown)}")
        self.targets = targets
        with log_context(connection=self.connection_id):
            return self._run(trigger=trigger, full_refresh=full_refresh, queued_run=queued_run)

    def _run(self, *, trigger: str, full_refresh: bool, queued_run: int | None) -> SyncOutcome:
        started = time.monotonic()
        now = utc_now()
        with session_scope(self.session_factory) as session:
            held = try_acquire(session, sync_lease(self.connection_id), self.holder, self.options.lease_ttl)
            if held is not None:
                until = f" until {held.expires_at.isoformat()}" if held.expires_at else ""
                raise SyncAlreadyRunning(
                    f"connection {self.connection_id!r} is already being synced by {held.holder}{until}"
                )
            if queued_run is None:
                self.run_id = repo.create_run(
                    session,
                    self.connection_id,
                    trigger,
                    full_refresh,
                    self.holder,
                    now,
                    self.allow_mass_delete,
                )
            elif repo.adopt_queued_run(session, queued_run, self.holder, now):
                self.run_id = queued_run
            else:
                # Another worker took it first; rolling back releases the lease taken above.
                raise SyncAlreadyRunning(f"queued run {queued_run} was taken by another worker")
            bind_log_context(run_id=self.run_id)
            abandoned = repo.abandon_running(session, self.connection_id, self.run_id, now)
            self._found_checkpoints = repo.load_checkpoints(session, self.connection_id)
        checkpoints = {} if full_refresh else self._found_checkpoints
        if abandoned:
            log.warning(
                "%s: %d earlier run(s) had died mid-way; resuming from their checkpoints",
                self.connection_id,
                abandoned,
            )
        specs = list(self.connector.streams())
        targets = self.targets
        if targets is not None:
            specs = [spec for spec in specs if targets.get(spec.name)]
        self.streams = {spec.name: StreamStats() for spec in specs}
        status, error, kind = "succeeded", None, None
        withheld: list[str] = []
        try:
            if targets is None:
                self._check_connector()
            for spec in specs:
                try:
                    if targets is None:
                        self._sync_stream(spec, checkpoints.get(spec.name))
                    else:
                        self._sync_stream(spec, None, targets[spec.name])
                except MassDeletionWithheld as exc:
                    # The other streams are independent of this one: they still sync.
                    stats = self.streams[spec.name]
                    stats.status, stats.error = "failed", str(exc)
                    withheld.append(str(exc))
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
        if withheld and status in ("succeeded", "deferred"):
            later = f" (besides, {error})" if error else ""
            status, kind = "failed", "mass_delete"
            error = withheld_message(self.connection_id, withheld) + later
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
            self.batches.shutdown()
        except Exception:
            log.exception("the last batch of %s could not be committed", self.connection_id)

    def _after_streams(self) -> None:
        if self.targets is not None and not {"owners", "teams"} & set(self.targets):
            return  # a fetch of deals, leads or accounts changes no team
        with session_scope(self.session_factory) as session:
            org_repo.link_team_parents(session, self.connection_id)
            org_repo.sync_crm_memberships(session, self.connection_id)

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
                release(session, sync_lease(self.connection_id), self.holder)
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
        it resumes. The counts include ``skipped``, the records the run rejected, so a consumer
        tells a clean run from one that left records out."""
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
