"""Writing a stream's records: buffered per stream, committed in batches on one writer thread.

A :class:`StreamBuffer` collects one stream's rows, deletions, bad records and its newest
checkpoint; every ``batch_size`` records it hands them over as a :class:`Batch`. The
:class:`BatchWriter` commits batches in order on a thread of its own (the engine's
``commit_batch``: one batch, its checkpoint and the run's counters in one transaction), so batch N
is committed while batch N+1 is read and mapped: the database and the network release the GIL,
so the two overlap, and one thread keeps the commits in order.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crm_perf_sync.connector_sdk import BadRecord, Entity, StreamSpec, Tombstone
from crm_perf_sync.kit.canonical import json_safe
from crm_perf_sync.sync.deletions import HeldDeletions
from crm_perf_sync.sync.outcomes import StreamStats
from crm_perf_sync.sync.rows import Row, escape_unstorable

#: The interpreter's thread switch interval (seconds) once a sync writes. The writer thread makes
#: about ten round trips to the database a batch, and after each it has to win the GIL back from
#: the reader thread (parsing, mapping), which keeps it for up to the switch interval, 5 ms by
#: default. At 1 ms the upsert benchmark's store rate rose by about a fifth (45k to 54k rows/s on
#: average, PostgreSQL, 300k rows, alternating runs); 0.2 ms cost more in switching than it saved,
#: and SQLite (few round trips) did not move.
WRITER_SWITCH_INTERVAL = 0.001


class BatchWriter:
    """Commits batches in order on one thread; a failed batch's error is raised to the reader at
    its next hand-over or wait."""

    def __init__(self, commit: Callable[[Batch], None], thread_name: str) -> None:
        self.commit = commit
        self.thread_name = thread_name
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: Future[None] | None = None

    def submit(self, batch: Batch) -> None:
        """Queue ``batch`` for commit after the one in flight (whose failure is raised here)."""
        self.wait()
        if self._executor is None:
            if sys.getswitchinterval() > WRITER_SWITCH_INTERVAL:
                # Process-wide and never raised back: every sync of the process gains the same.
                sys.setswitchinterval(WRITER_SWITCH_INTERVAL)
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.thread_name)
        # The writer thread logs in the reader's context (connection, run, stream).
        self._inflight = self._executor.submit(contextvars.copy_context().run, self.commit, batch)

    def wait(self) -> None:
        """Block until the batch in flight is committed; raise its error if it failed."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            inflight.result()

    def shutdown(self) -> None:
        """Wait for the batch in flight (raising its error), then stop the thread."""
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None


class StreamBuffer:
    """Buffers one stream's messages and commits them in batches with their checkpoint.

    ``held`` (for the entities that can be deleted) makes the batches hold deletions back instead
    of applying them; ``held = None`` applies them (the decided deletions at the end of a read).
    """

    def __init__(
        self,
        batches: BatchWriter,
        connection_id: str,
        run_id: int,
        stream: StreamSpec,
        stats: StreamStats,
        held: HeldDeletions | None,
    ) -> None:
        self.batches = batches
        self.connection_id = connection_id
        self.run_id = run_id
        self.stream = stream
        self.entity: Entity = stream.entity
        self.stats = stats
        self.held = held
        #: A complete snapshot was read: what follows it is decided with its deletions.
        self.hold_checkpoints = False
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
                "connection_id": self.connection_id,
                "stream": self.stream.name,
                "level": level,
                "record_key": escape_unstorable(key)[:400] if key else None,
                "field": escape_unstorable(field)[:255] if field else None,
                "message": escape_unstorable(message),
                "raw": json_safe(escape_unstorable(raw)) if raw else None,
                "created_at": now,
            }
        )

    def hand_over(self) -> None:
        """Hand the buffer to the batch writer, which commits it while the read goes on."""
        if not self.pending and self.checkpoint is None:
            return
        self.batches.submit(
            Batch(
                self.stream,
                self.stats,
                list(self.rows.values()),
                self.tombstones,
                self.bad,
                self.checkpoint,
                self.held,
                self.hold_checkpoints,
            )
        )
        self.rows = {}
        self.tombstones = {}
        self.bad = []
        self.pending = 0
        self.checkpoint = None

    def drain(self) -> None:
        """Hand the buffer over and wait until everything handed over is committed."""
        self.hand_over()
        self.batches.wait()


@dataclass(slots=True)
class Batch:
    stream: StreamSpec
    stats: StreamStats
    rows: list[Row]
    tombstones: dict[str, datetime]
    bad: list[Row]
    checkpoint: Mapping[str, Any] | None
    held: HeldDeletions | None
    hold_checkpoint: bool
