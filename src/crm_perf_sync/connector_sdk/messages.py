"""Control messages a connector yields between records."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(slots=True, frozen=True)
class Checkpoint:
    """Every record yielded before this message is part of the state ``state`` describes.

    The engine commits the records and this state in one transaction, so a crash never leaves a
    cursor ahead of the data it covers. ``state`` must be JSON-serialisable; the next ``read``
    of the stream receives it back unchanged.
    """

    state: Mapping[str, Any]


@dataclass(slots=True, frozen=True)
class Tombstone:
    """The record ``external_id`` was deleted in the source at ``deleted_at`` (if known).

    Applied when the read ends, with the read's other deletions (see :class:`.Connector`).
    """

    external_id: str
    deleted_at: datetime | None = None


@dataclass(slots=True, frozen=True)
class BadRecord:
    """A source record that could not be mapped. Counted, stored with the run, and skipped."""

    message: str
    key: str | None = None
    field: str | None = None
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class SnapshotComplete:
    """This ``read`` emitted the complete current set of the stream, from the start.

    Only for streams declared with ``StreamSpec(snapshot=True)`` (a source with no deletion feed,
    such as a CSV export): the engine soft-deletes every stored record of the stream that this
    read did not emit, unless they are a mass deletion: then none, and the stream's checkpoint
    is dropped, so the next read (which must then read the whole set) decides again.
    Never yield it from a read that resumed part-way through the snapshot.
    """
