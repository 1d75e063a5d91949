"""The ``demo`` connector: a synthetic CRM that evolves with the clock.

Time. A connector instance reads the company as of one instant, fixed at its first use:
``settings.as_of`` when pinned, otherwise ``context.clock()`` rounded down to a multiple of
``settings.increment`` counted from the start of the history. The first sync brings the whole
history up to that instant; every later sync brings the records created and changed since (a new
lead or deal, a stage move, a close, a deletion); two syncs within one increment read identical
data. The instant is never after the clock: the rounding is the ``now - skew`` upper bound.

Checkpoints of ``accounts``, ``leads``, ``opportunities``, ``activities`` and ``stage_changes``
(JSON, every ``settings.batch_size`` records)::

    {"cursor": ["2025-03-31T17:02:11+00:00", "OPP-00001234"], "model": "<fingerprint>"}
    {"snapshot": ["2026-01-01T00:00:00+00:00", 120000], "model": "<fingerprint>"}

``cursor`` is a keyset position ``(remote_updated_at, external_id)`` (``changed_at`` for stage
changes). An incremental read emits, in key order, every record whose key is at or after it
(closed start), moved back by ``settings.lookback``; the boundary record and the lookback window
come again, which the store's idempotent upsert absorbs. A complete read ends with the cursor at
``[as_of, ""]``: nothing in the demo commits late, so everything up to that instant was seen.

``snapshot`` is a full read in progress (first sync, full refresh): records as of that instant in
creation order, the indices below the number done (for activities, the index of the deal they
come with). Ordering by key is not needed when every
record is read at one fixed instant, and skipping the sort keeps a full read of millions of
records at generation speed. A resumed snapshot finishes at its own instant, then continues as an
incremental read up to the new one.

``model`` fingerprints the settings that shape the company: a checkpoint written under other
settings describes another company, so the read starts afresh. Teams, owners and pipeline stages
are small and read whole every time, followed by :class:`SnapshotComplete`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from hashlib import blake2b
from typing import Any, ClassVar, Final

from crm_perf_sync.connector_sdk import (
    Checkpoint,
    Connector,
    ConnectorContext,
    FatalError,
    Message,
    SnapshotComplete,
    StreamSpec,
)
from crm_perf_sync_demo.company import Company, to_datetime, to_timestamp
from crm_perf_sync_demo.ordering import Key, Keyed
from crm_perf_sync_demo.settings import REFERENCE_DATE, DemoSettings

STREAMS: Final = (
    StreamSpec("teams", "teams", snapshot=True),
    StreamSpec("owners", "owners", snapshot=True),
    StreamSpec("pipeline_stages", "pipeline_stages", primary_key=("pipeline", "stage"), snapshot=True),
    StreamSpec("accounts", "accounts", cursor_field="remote_updated_at"),
    StreamSpec("leads", "leads", cursor_field="remote_updated_at"),
    StreamSpec("opportunities", "opportunities", cursor_field="remote_updated_at"),
    StreamSpec("activities", "activities", cursor_field="remote_updated_at"),
    StreamSpec("stage_changes", "stage_changes", cursor_field="changed_at"),
)

_INCREMENTAL: Final = frozenset({"accounts", "leads", "opportunities", "activities", "stage_changes"})

#: Fields of the settings that decide what the company is (not how it is read).
_MODEL_FIELDS: Final = (
    "seed",
    "reps",
    "regions",
    "teams_per_region",
    "opportunities",
    "leads",
    "accounts",
    "activities_per_deal",
    "start",
    "history_days",
    "currency",
    "currencies",
)


class DemoConnector(Connector[DemoSettings]):
    """A deterministic synthetic B2B sales company, sized by its settings.

    Same settings and same instant → identical records, on any machine. See the module docstring
    for how the clock maps onto the company's timeline and for the checkpoint format.
    """

    settings_model = DemoSettings
    description: ClassVar[str] = "Synthetic sales company (deterministic, sized by settings; no CRM needed)"
    # Pinned to the end of the default history, so that the contract suite's repeated syncs read
    # the same company whatever the wall clock does between them.
    example_settings: ClassVar[Mapping[str, Any] | None] = {
        "opportunities": 300,
        "reps": 12,
        "batch_size": 250,
        "as_of": f"{REFERENCE_DATE.isoformat()}T00:00:00Z",
    }

    def __init__(self, settings: DemoSettings, context: ConnectorContext) -> None:
        super().__init__(settings, context)
        self.company = Company(settings)

    def streams(self) -> Sequence[StreamSpec]:
        """Teams, owners, pipeline stages, accounts, leads, opportunities, activities, stage changes."""
        return STREAMS

    @cached_property
    def as_of(self) -> datetime:
        """The instant this connector instance reads the company at (fixed on first use)."""
        if self.settings.as_of is not None:
            return self.settings.as_of
        start = self.company.start
        step = int(self.settings.increment.total_seconds())
        now = to_timestamp(self.context.clock())
        return to_datetime(start + (now - start) // step * step)

    @cached_property
    def model(self) -> str:
        """Fingerprint of the settings that decide what the company is."""
        shape = self.settings.model_dump(mode="json", include=set(_MODEL_FIELDS))
        encoded = json.dumps(shape, sort_keys=True).encode()
        return blake2b(encoded, digest_size=8).hexdigest()

    def read(self, stream: StreamSpec, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:
        """Yield the stream's records as of :attr:`as_of` changed since ``checkpoint``."""
        as_of = to_timestamp(self.as_of)
        company = self.company
        if stream.name == "teams":
            yield from company.teams
        elif stream.name == "owners":
            yield from company.owner_records(as_of)
        elif stream.name == "pipeline_stages":
            yield from company.pipeline_stages()
        elif stream.name in _INCREMENTAL:
            yield from self._read_incremental(stream, checkpoint, as_of)
            return
        else:
            raise FatalError(f"the demo connector has no stream {stream.name!r}")
        yield SnapshotComplete()
        yield Checkpoint({"as_of": self.as_of.isoformat(), "model": self.model})

    def _read_incremental(
        self, stream: StreamSpec, checkpoint: Mapping[str, Any] | None, as_of: int
    ) -> Iterator[Message]:
        position = None if self.context.full_refresh else self._position(stream, checkpoint)
        if position is None:
            position = _SnapshotPosition(as_of, 0)
        if isinstance(position, _SnapshotPosition):
            at, first = position.at, position.next_index
            if at > as_of:  # written by a run that saw a later instant: start this one afresh
                at, first = as_of, 0
            yield from self._snapshot(stream.name, at, first)
            if at == as_of:
                return
            position = (at, "")
        yield from self._changes(stream.name, position, as_of)

    def _snapshot(self, name: str, at: int, first: int) -> Iterator[Message]:
        """Every record as of ``at`` from index ``first``, in index (creation) order.

        A full read needs no sort: the instant is fixed, so "indices below n are done" is a
        complete resume position. It ends with a keyset cursor at ``at``: everything after that
        instant has ``remote_updated_at > at``.
        """
        company = self.company
        items: Iterator[tuple[int, Any]]
        if name == "opportunities":
            items = (
                (o.number, company.opportunity_record(o, at)) for o in company.opportunities_as_of(at, first)
            )
        elif name == "leads":
            items = ((lead.number, company.lead_record(lead, at)) for lead in company.leads_as_of(at, first))
        elif name == "accounts":
            items = ((a.number, company.account_record(a, at)) for a in company.accounts_as_of(at, first))
        elif name == "activities":
            items = (
                (o.number, company.activity_record(activity, at))
                for o in company.activity_deals_as_of(at, first)
                for activity in company.activities_as_of(o, at)
            )
        else:
            items = (
                (o.number, change)
                for o in company.opportunities_as_of(at, first)
                for change in company.stage_change_records(o, at)
            )
        batch_size = self.settings.batch_size
        pending = 0
        for index, record in items:
            if pending >= batch_size:
                # Checkpointing before record ``index`` claims only the indices below it, even
                # when a deal's stage changes straddle the batch boundary.
                yield Checkpoint({"snapshot": [to_datetime(at).isoformat(), index], "model": self.model})
                pending = 0
            yield record
            pending += 1
        yield Checkpoint(self._cursor_state((at, "")))

    def _changes(self, name: str, cursor: Key, as_of: int) -> Iterator[Message]:
        """Records whose key is at or after ``cursor`` (less the lookback), in key order."""
        lookback = int(self.settings.lookback.total_seconds())
        lower = (cursor[0] - lookback, "") if lookback else cursor
        company = self.company
        records: Iterator[Keyed[Any]]
        if name == "opportunities":
            records = company.changed_opportunities(as_of, lower)
        elif name == "leads":
            records = company.changed_leads(as_of, lower)
        elif name == "accounts":
            records = company.changed_accounts(as_of, lower)
        elif name == "activities":
            records = company.changed_activities(as_of, lower)
        else:
            records = company.changed_stage_changes(as_of, lower)
        batch_size = self.settings.batch_size
        pending = 0
        for at, external_id, record in records:
            yield record
            pending += 1
            if pending >= batch_size:
                yield Checkpoint(self._cursor_state((at, external_id)))
                pending = 0
        # The read covered every change up to ``as_of`` (nothing in the demo commits late), so
        # the next one may start there rather than at the last record.
        yield Checkpoint(self._cursor_state((as_of, "")))

    def _cursor_state(self, key: Key) -> dict[str, Any]:
        return {"cursor": [to_datetime(key[0]).isoformat(), key[1]], "model": self.model}

    def _position(
        self, stream: StreamSpec, checkpoint: Mapping[str, Any] | None
    ) -> _SnapshotPosition | Key | None:
        """Where the stored checkpoint says to resume; ``None`` to read everything afresh."""
        if not checkpoint:
            return None
        if checkpoint.get("model") != self.model:
            self.context.logger.info(
                "demo %s: the checkpoint was written for other settings; reading everything afresh",
                stream.name,
            )
            return None
        try:
            if "snapshot" in checkpoint:
                at, next_index = checkpoint["snapshot"]
                return _SnapshotPosition(_parse_instant(at), int(next_index))
            at, external_id = checkpoint["cursor"]
            return _parse_instant(at), str(external_id)
        except (KeyError, TypeError, ValueError):
            self.context.logger.warning(
                "demo %s: unreadable checkpoint %r; reading everything afresh", stream.name, checkpoint
            )
            return None


@dataclass(frozen=True, slots=True)
class _SnapshotPosition:
    """A full read in progress: as of ``at``, the records of indices below ``next_index`` are done."""

    at: int
    next_index: int


def _parse_instant(value: str) -> int:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_timestamp(moment)
