"""The connector protocol: the whole surface a connector codes against."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from crm_perf_sync.connector_sdk.errors import SkippableRecordError
from crm_perf_sync.connector_sdk.messages import BadRecord, Checkpoint, SnapshotComplete, Tombstone
from crm_perf_sync.connector_sdk.records import Entity, Record
from crm_perf_sync.kit.schema import StrictModel
from crm_perf_sync.kit.timeutil import utc_now

Message = Record | Checkpoint | Tombstone | BadRecord | SnapshotComplete


class ConnectorSettings(StrictModel):
    """Base class for a connector's settings model: unknown keys are an error, not ignored."""


SettingsT = TypeVar("SettingsT", bound=ConnectorSettings)


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One stream of records a connector can read.

    ``entity`` says which canonical table the records land in; ``cursor_field`` names the source
    field the incremental cursor follows (``None`` for a stream read whole every time).
    ``snapshot`` marks a stream whose source has no deletion feed: a read that emits the whole
    current set ends with :class:`SnapshotComplete`, and the engine remembers the keys of every
    read of such a stream to soft-delete what is gone (so keep snapshot streams to what fits in
    memory as a set of ids).
    """

    name: str
    entity: Entity
    primary_key: tuple[str, ...] = ("external_id",)
    cursor_field: str | None = None
    snapshot: bool = False


@dataclass(frozen=True, slots=True)
class ConnectorContext:
    """What the service hands a connector: who it is, where it runs, and what time it is.

    ``max_attempts`` caps the tries of one request that a connector's own settings allow, for a
    caller that wants a prompt answer rather than a patient sync (``doctor``); ``None``: the
    settings decide.
    """

    connection_id: str
    base_dir: Path
    logger: logging.Logger
    full_refresh: bool = False
    clock: Callable[[], datetime] = utc_now
    max_attempts: int | None = None


class Connector(ABC, Generic[SettingsT]):
    """A source of canonical CRM records.

    A connector does network (or file) I/O only: it never touches the store. Subclasses set
    ``settings_model`` to their :class:`ConnectorSettings` subclass and are registered under the
    entry point group ``crm_perf_sync.connectors``; the entry point's name is the connection
    ``kind`` users write in the config.

    ``read`` yields records of the stream's entity, :class:`Tombstone` for deletions,
    :class:`BadRecord` for records it skipped, and a :class:`Checkpoint` whenever the records so far
    are covered by a resumable state (typically after every page). It receives the last committed
    checkpoint state, or ``None`` on the first run and on a full refresh.

    Rules every incremental connector follows: keyset cursors ``(modified_at, id)`` with a closed
    start and a lookback window (re-reading is free: the store upserts idempotently); an upper
    bound of ``now - skew``; deletions reported as tombstones or ``is_deleted`` records; errors
    raised as the classes in :mod:`crm_perf_sync.connector_sdk.errors`.

    ``record_url`` links a stored record back to its page in the CRM (the KPI explanations show
    it); a connector that knows its CRM's web addresses overrides it.

    Deletions are the engine's to decide, not the connector's: the deletions of a read
    (tombstones, ``is_deleted`` records of live ones, a snapshot's absent records) are made
    together once the read has ended, or none of them when they are more of the stream's live
    records than a sync may delete unconfirmed. Until then every checkpoint yielded after a
    deletion waits with it (so a crash, or a refusal, re-reads it), which is why a sweep of
    deletions is best yielded at the end of a read, after the changes.
    """

    settings_model: ClassVar[type[ConnectorSettings]]
    description: ClassVar[str] = ""
    #: Settings under which the connector runs self-contained (synthetic data, shipped sample
    #: files, a local emulator), or ``None``. The contract test suite syncs every connector with
    #: them, so a connector without them is only checked structurally.
    example_settings: ClassVar[Mapping[str, Any] | None] = None

    def __init__(self, settings: SettingsT, context: ConnectorContext) -> None:
        self.settings = settings
        self.context = context

    @classmethod
    def presets(cls) -> Mapping[str, str]:
        """Ready-made configurations the connector ships, by name, with what each is for.

        The rest connector's specs (``jiandaoyun``: "简道云 Jiandaoyun API v5 ..."), listed by
        ``crm-perf-sync connectors list``. The default: none.
        """
        return {}

    @abstractmethod
    def streams(self) -> Sequence[StreamSpec]:
        """The streams this connection offers, in the order they should be synced."""

    @abstractmethod
    def read(self, stream: StreamSpec, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:
        """Yield the stream's records changed since ``checkpoint``, then a final checkpoint."""

    def check(self) -> None:
        """Verify the source is reachable and the credentials work; raise a connector error if not.

        The default does nothing: a connector with nothing to verify up front is always ready.
        """
        return None

    def close(self) -> None:
        """Release sessions and files. Called once after the sync, also after a failure."""
        return None

    def record_url(self, entity: str, external_id: str) -> str | None:  # noqa: ARG002
        """The address of a record's page in the CRM, or ``None`` when it has none.

        ``entity`` is the canonical entity the record was stored as (an :data:`Entity`:
        ``"opportunities"``, ``"leads"``, ``"owners"``, ...) and ``external_id`` its id in the
        CRM. The URL is built from the settings alone, never with I/O: it is asked for every
        record a page of the API shows, on a connector constructed for nothing else (so the
        constructor must not connect either). The default: no links.
        """
        return None


RecordT = TypeVar("RecordT")


def parse_records(
    rows: Iterable[RecordT],
    parse: Callable[[RecordT], Message | None],
    *,
    key: Callable[[RecordT], str | None],
) -> Iterator[Message]:
    """Map ``rows`` with ``parse``, turning a :class:`SkippableRecordError` into a :class:`BadRecord`.

    ``parse`` may return ``None`` for a row that does not belong in the stream at all (filtered
    out by design, not bad). ``key`` names the row in the report.
    """
    for row in rows:
        try:
            message = parse(row)
        except SkippableRecordError as exc:
            raw = row if isinstance(row, Mapping) else {}
            yield BadRecord(str(exc), key=exc.key or key(row), field=exc.field, raw=dict(raw))
            continue
        if message is not None:
            yield message
