"""Driving the demo connector in tests: a fixed clock, reads collected, a store emulated."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crm_perf_sync.connector_sdk import (
    BadRecord,
    Checkpoint,
    ConnectorContext,
    Record,
    SnapshotComplete,
    StageChangeRecord,
    Tombstone,
)
from crm_perf_sync_demo import DemoConnector, DemoSettings

#: A company small enough to read many times per test, big enough for every kind of record.
SMALL: Mapping[str, Any] = {"opportunities": 600, "leads": 1800, "reps": 12, "batch_size": 100}
HISTORY_END = datetime(2026, 1, 1, tzinfo=UTC)


def make(
    settings: Mapping[str, Any] | DemoSettings,
    *,
    clock: datetime | Callable[[], datetime] | None = None,
    full_refresh: bool = False,
) -> DemoConnector:
    """A demo connector whose clock reads ``clock`` (the real clock if ``None``)."""
    if not isinstance(settings, DemoSettings):
        settings = DemoSettings.model_validate(settings)
    context = ConnectorContext(
        connection_id="demo-test",
        base_dir=Path("."),
        logger=logging.getLogger("demo-test"),
        full_refresh=full_refresh,
    )
    if isinstance(clock, datetime):
        fixed = clock
        context = replace(context, clock=lambda: fixed)
    elif clock is not None:
        context = replace(context, clock=clock)
    return DemoConnector(settings, context)


@dataclass
class Read:
    """What one ``read`` yielded, split by kind."""

    records: list[Record] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    #: How many records had been read when each checkpoint came.
    positions: list[int] = field(default_factory=list)
    snapshot_complete: bool = False

    @property
    def final(self) -> dict[str, Any]:
        return self.checkpoints[-1]


def read(
    connector: DemoConnector,
    stream: str,
    checkpoint: Mapping[str, Any] | None = None,
    *,
    stop_after: int | None = None,
) -> Read:
    """Read ``stream``; stop right after the ``stop_after``-th checkpoint if given.

    Checkpoint states go through JSON, as they do through the store.
    """
    (spec,) = [spec for spec in connector.streams() if spec.name == stream]
    result = Read()
    for message in connector.read(spec, checkpoint):
        if isinstance(message, Checkpoint):
            result.checkpoints.append(json.loads(json.dumps(dict(message.state))))
            result.positions.append(len(result.records))
            if stop_after is not None and len(result.checkpoints) == stop_after:
                break
        elif isinstance(message, SnapshotComplete):
            result.snapshot_complete = True
        elif isinstance(message, Tombstone | BadRecord):
            raise AssertionError(f"the demo never yields {message!r}")
        else:
            result.records.append(message)
    return result


def key_of(record: Record) -> str:
    key = record.external_id
    assert key is not None
    return key


def updated_of(record: Record) -> datetime | None:
    """The record's version time: ``remote_updated_at`` (``changed_at`` for stage changes)."""
    if isinstance(record, StageChangeRecord):
        return record.changed_at
    return getattr(record, "remote_updated_at", None)


def upsert(store: dict[str, Record], records: Iterable[Record]) -> dict[str, Record]:
    """Apply ``records`` as the store does: by external id, never back to an older version."""
    for record in records:
        before = store.get(key_of(record))
        if before is not None:
            old, new = updated_of(before), updated_of(record)
            if old is not None and new is not None and new < old:
                continue
        store[key_of(record)] = record
    return store


def by_id(records: Iterable[Record]) -> dict[str, Record]:
    """Records by external id; ids must be unique."""
    result: dict[str, Record] = {}
    for record in records:
        assert key_of(record) not in result, f"{key_of(record)} read twice"
        result[key_of(record)] = record
    return result
