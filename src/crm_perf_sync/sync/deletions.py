"""Deletions and the mass-deletion rule: what one read may delete, and how the rest is held back.

A read's deletions (tombstones, records that arrive deleted, what a complete snapshot no longer
has) are held back until the read has ended (:class:`HeldDeletions`); a live record that arrives
deleted is meanwhile stored live (:func:`hold_deletion`). Then they are made together, unless
they are more of the stream's live records than a sync may delete without a confirmation
(:func:`mass_deletion`): a share of them (``mass_delete_share``), or a floor for small streams,
and never all of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from crm_perf_sync.sync.repository import StoredState
from crm_perf_sync.sync.rows import Row


class HeldDeletions:
    """The deletions of one read, held back until the read has ended.

    The writer thread fills it as it commits the read's batches (it alone knows which records are
    live); the reader looks at it only once every batch is committed.
    """

    def __init__(self) -> None:
        #: External id → deleted at, of the live records this read deleted so far.
        self.pending: dict[str, datetime] = {}
        #: The newest checkpoint of the read that was not committed because it covers them.
        self.checkpoint: Mapping[str, Any] | None = None


def is_older(row: Row, stored_updated_at: datetime | None) -> bool:
    """Whether ``row`` is an older version than the stored one (never move a record back in time)."""
    incoming = row.get("remote_updated_at")
    return incoming is not None and stored_updated_at is not None and incoming < stored_updated_at


def held_hash(row: Row) -> str:
    """The content hash of a deleted record stored live while its deletion is held back: never the
    hash of the record as read, so that reading it again (still deleted) holds it back again."""
    return hashlib.blake2b(f"held:{row['content_hash']}".encode(), digest_size=16).hexdigest()


def hold_deletion(held: HeldDeletions, row: Row, before: StoredState | None, now: datetime) -> Row:
    """``row`` as it is stored while this read's deletions are held back.

    A live record that arrives deleted is stored with its other changes but live, its deletion
    held back; a record that arrives live again is no longer to be deleted.
    """
    key = row["external_id"]
    if not row.get("is_deleted"):
        held.pending.pop(key, None)
        return row
    if before is None or before.is_deleted or is_older(row, before.remote_updated_at):
        return row  # deletes nothing live
    held.pending[key] = row["deleted_at"] or now
    return {**row, "is_deleted": False, "deleted_at": None, "content_hash": held_hash(row)}


def deletion_limit(live: int, share: float, floor: int) -> int:
    """How many of a stream's ``live`` records one read may delete without a confirmation."""
    allowed = max(int(live * share), floor)
    return min(allowed, live - 1)


def mass_deletion(entity: str, doomed: int, live: int, share: float, floor: int) -> tuple[str, str] | None:
    """``None`` when deleting ``doomed`` of ``live`` records is within the limit; else what would go
    and why that needs a confirmation, as words for the run's error."""
    limit = deletion_limit(live, share, floor)
    if doomed <= limit:
        return None
    noun = entity.replace("_", " ")
    if doomed >= live:
        return f"all {live:,} live {noun}", "a sync never deletes all of a stream's records"
    allowed = f"{share:.0%} ({limit:,})" if limit > floor else f"{limit:,}"
    return (
        f"{doomed:,} of the {live:,} live {noun} ({doomed / live:.0%})",
        f"more than the {allowed} a sync may delete",
    )


def withheld_message(connection_id: str, withheld: Sequence[str]) -> str:
    """The run's error when deletions were withheld: what, and the two ways to confirm them."""
    command = f"crm-perf-sync sync {connection_id} --allow-mass-delete"
    return (
        f"{'; '.join(withheld)}; nothing was deleted. If the source really lost them, confirm with "
        f'`{command}` (or POST /api/v1/connections/{connection_id}/sync with {{"allow_mass_delete": true}}), '
        "or raise CRM_PERF_SYNC_MASS_DELETE_SHARE or the connection's mass_delete_share"
    )
