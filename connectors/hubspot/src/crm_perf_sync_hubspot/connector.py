"""The ``hubspot`` connector: owners, teams, pipelines, companies, contacts as leads, deals and their
history, and the engagements (calls, meetings, emails, notes, tasks) as activities.

Streams, in sync order:

- ``teams``, ``owners`` (``/crm/v3/owners``, active and archived) and ``pipelines`` (the deal
  pipelines' stages, ``/crm/v3/pipelines/deals``) are small and read whole every run, ending with
  :class:`SnapshotComplete`. An owner's primary team is their team membership.
- ``accounts`` (companies), ``leads`` (contacts), ``opportunities`` (deals), ``stage_changes``
  (the deals' ``dealstage`` history) and ``activities`` (the five engagement objects, one
  window each) are incremental, through the search API (see :mod:`.search`).

``accounts`` and ``activities`` are optional: an app without ``crm.objects.companies.read``
reads no accounts (and links no deal, contact or activity to its company), one without
``sales-email-read`` reads no logged emails; the run says so and syncs the rest.

An incremental read of ``leads`` or ``opportunities`` has three phases, each checkpointed after
every page:

1. **Changes**: the window from the cursor (less ``lookback`` when a new window starts) to
   ``now - index_lag``. HubSpot's search index trails its database by up to a minute; a record
   modified in the last ``index_lag`` may not be searchable yet, so the window stops short of
   it and the next run picks it up. Each page's associations (deal → contacts, contact → deals)
   are read with the v4 batch API.
2. **Association refresh**: associations change without touching the modified date, so every
   ``association_refresh`` the open deals (and the leads not converted by stage) are read again,
   by id, with their associations.
3. **Deletions**: search never returns archived records, so ``GET …?archived=true`` is polled
   and every record archived since the last poll (less ``lookback``) becomes a tombstone.

``stage_changes`` reads the changed deals' ids through the same window and requests their
``dealstage`` history in batches of ``history_batch_size`` (50, HubSpot's maximum with history).

Checkpoint of an incremental stream (JSON)::

    {"v": 1, "shape": "<digest of the mapping settings>",
     "since": "2026-03-12T07:36:23.415Z", "tie_after": null, "open": false,
     "refreshed": "...", "refresh_after": null, "archived_since": "..."}

``activities`` keeps one such position per engagement object::

    {"v": 1, "shape": "...", "objects": {"calls": {"since": "...", ...}, "meetings": {...}, ...}}

``since``/``tie_after`` is a window position (:class:`.search.Position`); ``open`` says a window
was interrupted mid-way (resume exactly there, no lookback). A checkpoint written under other
mapping settings (``shape``) is ignored: the stream is read afresh, so that a newly configured
property reaches every record.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, ClassVar, Final

from crm_perf_sync.connector_sdk import (
    Checkpoint,
    Connector,
    ConnectorConfigError,
    ConnectorContext,
    FatalError,
    Message,
    Pushable,
    PushedChange,
    PushRequest,
    SkippableRecordError,
    SnapshotComplete,
    StreamSpec,
    Tombstone,
    parse_records,
)
from crm_perf_sync_hubspot import push
from crm_perf_sync_hubspot.api import (
    ENGAGEMENTS,
    SCOPES,
    EngagementType,
    HubSpotApi,
    MissingScopes,
    ObjectType,
    Readable,
)
from crm_perf_sync_hubspot.mapping import (
    CompanyMapper,
    ContactMapper,
    DealMapper,
    EngagementMapper,
    Links,
    StageTable,
    aware,
    min_id,
    modified_millis,
    owner_record,
    parse_datetime,
    stage_changes,
    team_records,
)
from crm_perf_sync_hubspot.search import (
    ALL,
    Position,
    Segment,
    from_millis,
    keyset,
    parse_millis,
    to_millis,
    window,
)
from crm_perf_sync_hubspot.settings import HubSpotSettings

STREAMS: Final = (
    StreamSpec("teams", "teams", snapshot=True),
    StreamSpec("owners", "owners", snapshot=True),
    StreamSpec("pipelines", "pipeline_stages", primary_key=("pipeline", "stage"), snapshot=True),
    StreamSpec("accounts", "accounts", cursor_field="hs_lastmodifieddate"),
    StreamSpec("leads", "leads", cursor_field="lastmodifieddate"),
    StreamSpec("opportunities", "opportunities", cursor_field="hs_lastmodifieddate"),
    StreamSpec("stage_changes", "stage_changes", cursor_field="hs_lastmodifieddate"),
    StreamSpec("activities", "activities", cursor_field="hs_lastmodifieddate"),
)

#: What each stream reads (and so which scopes it needs, :data:`.api.SCOPES`): leads and
#: opportunities read each other's ids through the associations, which take both scopes, and
#: their companies' ids with the companies scope; activities are read with the contacts scope,
#: linked to deals and companies, and logged emails need a scope of their own.
READS: Final[Mapping[str, tuple[Readable, ...]]] = {
    "teams": ("owners",),
    "owners": ("owners",),
    "pipelines": ("deals",),
    "accounts": ("companies",),
    "leads": ("contacts", "deals", "companies"),
    "opportunities": ("deals", "contacts", "companies"),
    "stage_changes": ("deals",),
    "activities": ("contacts", "deals", "companies", "emails"),
}

#: Scopes an app may lack: the run reads what it can without them and says what it left out.
OPTIONAL: Final[Mapping[Readable, str]] = {
    "companies": (
        "companies are not read as accounts, and deals, leads and activities are not linked to them"
    ),
    "emails": "logged emails are not read as activities",
}

#: HubSpot's object type ids of the records that have a page, by canonical entity.
_RECORD_TYPES: Final[Mapping[str, str]] = {"opportunities": "0-3", "leads": "0-1", "accounts": "0-2"}

#: The streams a push's changes are fetched into by id, and the objects they are read from.
_FETCHED: Final[Mapping[str, ObjectType]] = {
    "opportunities": "deals",
    "stage_changes": "deals",
    "leads": "contacts",
    "accounts": "companies",
}
#: Records per batch read of a fetch (HubSpot's maximum).
FETCH_BATCH: Final = 100

#: v4 association type ids of the primary company: "Deal with Primary Company", and a contact's.
DEAL_PRIMARY_COMPANY: Final = 5
CONTACT_PRIMARY_COMPANY: Final = 1

#: Bump when the same settings map the same HubSpot data to different records.
FORMAT_VERSION: Final = 1


@dataclass(slots=True)
class _State:
    """An incremental stream's checkpoint (see the module docstring)."""

    since: int | None = None
    tie_after: int | None = None
    open: bool = False
    refreshed: int | None = None
    refresh_after: int | None = None
    archived_since: int | None = None

    def dump(self, shape: str) -> dict[str, Any]:
        return {"v": FORMAT_VERSION, "shape": shape, **self.position()}

    def position(self) -> dict[str, Any]:
        """Where the stream stands, without the checkpoint's version and shape."""

        def instant(value: int | None) -> str | None:
            return _iso(value) if value is not None else None

        return {
            "since": instant(self.since),
            "tie_after": self.tie_after,
            "open": self.open,
            "refreshed": instant(self.refreshed),
            "refresh_after": self.refresh_after,
            "archived_since": instant(self.archived_since),
        }

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> _State:
        def instant(key: str) -> int | None:
            value = data.get(key)
            return parse_millis(value) if isinstance(value, str) else None

        def number(key: str) -> int | None:
            value = data.get(key)
            return int(value) if isinstance(value, int) else None

        return cls(
            since=instant("since"),
            tie_after=number("tie_after"),
            open=bool(data.get("open")),
            refreshed=instant("refreshed"),
            refresh_after=number("refresh_after"),
            archived_since=instant("archived_since"),
        )


def _iso(millis: int) -> str:
    return from_millis(millis).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class HubSpotConnector(Connector[HubSpotSettings], Pushable):
    """A HubSpot portal through hubspot-api-client (CRM v3 objects and search, v4 associations).

    ``sleep`` is how the connector waits (for the rate buckets, between attempts); the clock is
    the context's. Both are injectable so a caller that simulates time, or runs under a
    scheduler of its own, decides what waiting means.
    """

    settings_model = HubSpotSettings
    description: ClassVar[str] = (
        "HubSpot CRM: owners, pipelines, companies, contacts as leads, deals, stage history, engagements"
    )

    def __init__(
        self,
        settings: HubSpotSettings,
        context: ConnectorContext,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(settings, context)
        self.sleep = sleep
        self.log = context.logger
        self._owners: list[Any] | None = None
        #: Whether each scope was granted, as the check (or a first read) found it.
        self._granted: dict[Readable, bool] = {}

    # -- the contract -----------------------------------------------------------------------------

    def record_url(self, entity: str, external_id: str) -> str | None:
        """The record's page in the portal: ``https://{app_host}/contacts/{portal_id}/record/{type}/{id}``
        (deals ``0-3``, contacts ``0-1``, companies ``0-2``); owners, teams, stages and activities
        (shown on their records' timelines, without a page of their own) have none, nor does a
        portal whose ``portal_id`` is not configured."""
        object_type = _RECORD_TYPES.get(entity)
        portal = self.settings.portal_id
        if object_type is None or portal is None or not external_id.isdigit():
            return None
        return f"https://{self.settings.app_host}/contacts/{portal}/record/{object_type}/{external_id}"

    def streams(self) -> Sequence[StreamSpec]:
        """Teams, owners, pipelines, accounts, leads, opportunities, stage changes, activities."""
        return STREAMS

    def verify_push(self, request: PushRequest) -> Sequence[PushedChange]:
        """The deals, contacts and companies an app webhook says changed (see :mod:`.push`)."""
        return push.verify(self.settings, request, self.context.clock())

    def fetch(self, stream: StreamSpec, ids: Sequence[str]) -> Iterator[Message]:
        """Deals, contacts or companies by id, as HubSpot has them now, with their associations
        (batch reads of :data:`FETCH_BATCH`), each id HubSpot no longer has (deleted, archived,
        merged away) a tombstone; for ``stage_changes``, the deals' stage history."""
        object_type = _FETCHED.get(stream.name)
        if object_type is None:
            raise ConnectorConfigError(f"hubspot: stream {stream.name!r} cannot be fetched by id")
        wanted = [i for i in dict.fromkeys(ids) if i.isdigit()]
        if stream.name == "stage_changes":
            size = self.settings.history_batch_size
            for start in range(0, len(wanted), size):
                batch = self.api.batch_read(
                    "deals",
                    wanted[start : start + size],
                    properties=["dealstage"],
                    with_history=["dealstage"],
                )
                for deal in batch:
                    yield from stage_changes(deal)
            return
        if object_type == "companies" and not self._can_read("companies"):
            return
        for start in range(0, len(wanted), FETCH_BATCH):
            chunk = wanted[start : start + FETCH_BATCH]
            if object_type == "deals":
                page = self.api.batch_read("deals", chunk, properties=self.deals.properties)
                yield from self._deal_page(page)
            elif object_type == "contacts":
                page = self.api.batch_read("contacts", chunk, properties=self.contacts.properties)
                yield from self._contact_page(page)
            else:
                page = self.api.batch_read("companies", chunk, properties=self.companies.properties)
                yield from parse_records(page, self.companies.record, key=lambda company: str(company.id))
            found = {str(obj.id) for obj in page}
            for gone in chunk:
                if gone not in found:
                    yield Tombstone(gone, None)

    def check(self) -> None:
        """The credentials work and the app has every scope the streams need: one cheap read per
        scope, and every scope HubSpot refuses is named, with the streams that need it. An
        optional scope (:data:`OPTIONAL`) refused is a warning saying what the runs leave out."""
        needed: dict[Readable, list[str]] = {}
        for spec in self.streams():
            for readable in READS[spec.name]:
                needed.setdefault(readable, []).append(spec.name)
        refused: dict[Readable, MissingScopes] = {}
        for readable in needed:
            try:
                self.api.check(readable)
            except MissingScopes as exc:
                if readable in OPTIONAL:
                    self._refused(readable, exc)
                    continue
                refused[readable] = exc
            self._granted[readable] = True
        if refused:
            lacking = [
                f"{' or '.join(exc.info.scopes) or SCOPES[readable]} "
                f"(needed by {', '.join(needed[readable])})"
                for readable, exc in refused.items()
            ]
            first = next(iter(refused.values())).info
            raise ConnectorConfigError(
                f"the HubSpot app lacks the scope{'s' if len(lacking) > 1 else ''} {' and '.join(lacking)}: "
                f"grant {'them' if len(lacking) > 1 else 'it'} to the app and try again ({first.describe()})"
            )

    def close(self) -> None:
        if "api" in self.__dict__:
            self.api.close()

    def _can_read(self, readable: Readable) -> bool:
        """Whether the app has the scope, from the check, or else from one cheap read now."""
        granted = self._granted.get(readable)
        if granted is None:
            try:
                self.api.check(readable)
                granted = True
            except MissingScopes as exc:
                if readable not in OPTIONAL:
                    raise
                self._refused(readable, exc)
                granted = False
            self._granted[readable] = granted
        return granted

    def _refused(self, readable: Readable, exc: MissingScopes) -> None:
        self._granted[readable] = False
        self.log.warning(
            "hubspot: the app lacks the scope %s, so %s; grant it to the app to read them (%s)",
            " or ".join(exc.info.scopes) or SCOPES[readable],
            OPTIONAL[readable],
            exc.info.describe(),
        )

    def read(self, stream: StreamSpec, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:
        """The stream's records changed since ``checkpoint`` (everything for the snapshot streams)."""
        if stream.name == "teams":
            yield from team_records(self._all_owners())
        elif stream.name == "owners":
            yield from (owner_record(owner) for owner in self._all_owners())
        elif stream.name == "pipelines":
            yield from (stage.record() for stage in self.stage_table.stages)
        elif stream.name == "opportunities":
            yield from self._read_deals(checkpoint)
            return
        elif stream.name == "leads":
            yield from self._read_leads(checkpoint)
            return
        elif stream.name == "stage_changes":
            yield from self._read_stage_changes(checkpoint)
            return
        elif stream.name == "accounts":
            yield from self._read_companies(checkpoint)
            return
        elif stream.name == "activities":
            yield from self._read_engagements(checkpoint)
            return
        else:
            raise FatalError(f"the hubspot connector has no stream {stream.name!r}")
        yield SnapshotComplete()
        yield Checkpoint({"v": FORMAT_VERSION, "snapshot": "complete"})

    # -- shared state -----------------------------------------------------------------------------

    @cached_property
    def api(self) -> HubSpotApi:
        """The API client, built on first use (nothing connects before a read or a check)."""
        return HubSpotApi(
            self.settings,
            clock=self.context.clock,
            sleep=self.sleep,
            logger=self.log,
            max_attempts=self.context.max_attempts,
        )

    @cached_property
    def stage_table(self) -> StageTable:
        """The deal pipelines' stages, read once per connector instance."""
        return StageTable.from_pipelines(self.api.pipelines("deals"))

    @cached_property
    def deals(self) -> DealMapper:
        return DealMapper(self.settings, self.stage_table)

    @cached_property
    def contacts(self) -> ContactMapper:
        return ContactMapper(self.settings)

    @cached_property
    def companies(self) -> CompanyMapper:
        return CompanyMapper(self.settings)

    @cached_property
    def engagements(self) -> EngagementMapper:
        return EngagementMapper(self.settings)

    def _all_owners(self) -> list[Any]:
        # Teams and owners both come from the owners list: read it once per run.
        if self._owners is None:
            self._owners = [*self.api.owners(archived=False), *self.api.owners(archived=True)]
        return self._owners

    def _now_ms(self) -> int:
        return to_millis(self.context.clock())

    def _shape(self, stream: str, properties: Sequence[str], **extra: Any) -> str:
        settings = self.settings
        shape = {
            "format": FORMAT_VERSION,
            "stream": stream,
            "properties": sorted(properties),
            "currency": settings.currency,
            "deal_properties": settings.deal_properties,
            "contact_properties": settings.contact_properties,
            "lifecycle": [settings.lifecycle_stages, settings.lead_stage, settings.converted_stage],
            **extra,
        }
        return hashlib.blake2b(json.dumps(shape, sort_keys=True).encode(), digest_size=8).hexdigest()

    def _state(self, stream: str, shape: str, checkpoint: Mapping[str, Any] | None) -> _State:
        if not checkpoint:
            return _State()
        if checkpoint.get("v") != FORMAT_VERSION or checkpoint.get("shape") != shape:
            self.log.info("hubspot %s: the checkpoint was written for other settings; reading afresh", stream)
            return _State()
        try:
            return _State.load(checkpoint)
        except (TypeError, ValueError):
            self.log.warning("hubspot %s: unreadable checkpoint %r; reading afresh", stream, checkpoint)
            return _State()

    # -- the changes window -------------------------------------------------------------------------

    def _changes(
        self,
        object_type: ObjectType,
        modified: str,
        segment: Segment,
        properties: Sequence[str],
        state: _State,
        until: int,
    ) -> Iterator[tuple[list[Any], Position]]:
        """The window's pages (see :func:`.search.window`), from where ``state`` says."""
        if state.open and state.since is not None:
            start = Position(state.since, state.tie_after)
        elif state.since is not None:
            lookback = self.settings.lookback // timedelta(milliseconds=1)
            start = Position(max(0, state.since - lookback))
        else:
            start = Position(0)
        yield from window(
            lambda body: self.api.search(object_type, body),
            modified=modified,
            segment=segment,
            properties=properties,
            start=start,
            until=until,
            page_size=self.settings.page_size,
            stamp=lambda obj: modified_millis(obj, modified),
        )

    def _refresh_due(self, state: _State, now: int) -> bool:
        if state.refresh_after is not None:
            return True  # a refresh was interrupted: finish it
        interval = self.settings.association_refresh // timedelta(milliseconds=1)
        return state.refreshed is None or now - state.refreshed >= interval

    def _tombstones(self, object_type: ObjectType, state: _State) -> Iterator[Tombstone]:
        """Records archived since the last poll (less the lookback), from ``GET …?archived=true``."""
        lookback = self.settings.lookback // timedelta(milliseconds=1)
        since = state.archived_since - lookback if state.archived_since is not None else None
        after: str | None = None
        while True:
            page, after = self.api.list_page(
                object_type, after=after, properties=["hs_object_id"], archived=True
            )
            for obj in page:
                archived_at = aware(obj.archived_at)
                if since is None or archived_at is None or to_millis(archived_at) >= since:
                    yield Tombstone(str(obj.id), archived_at)
            if after is None:
                return

    # -- opportunities ------------------------------------------------------------------------------

    def _read_deals(self, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:
        mapper = self.deals
        properties = mapper.properties
        # Granting the companies scope later re-reads every deal, so that each gets its company.
        shape = self._shape("opportunities", properties, companies=self._can_read("companies"))
        state = self._state("opportunities", shape, checkpoint)
        now = self._now_ms()
        until = now - self.settings.index_lag // timedelta(milliseconds=1)
        if state.since is None and state.refreshed is None:
            # A first read takes every deal's associations anyway: it counts as a refresh.
            state.refreshed = now
        for page, position in self._changes("deals", "hs_lastmodifieddate", ALL, properties, state, until):
            yield from self._deal_page(page)
            state.since, state.tie_after, state.open = position.since, position.tie_after, True
            yield Checkpoint(state.dump(shape))
        state.since, state.tie_after, state.open = max(until, state.since or 0), None, False
        yield Checkpoint(state.dump(shape))

        if self._refresh_due(state, now):
            open_stages = self.stage_table.open_stages()
            if open_stages:
                segment: Segment = (
                    ({"propertyName": "dealstage", "operator": "IN", "values": open_stages},),
                )
                pages = keyset(
                    lambda body: self.api.search("deals", body),
                    segment=segment,
                    properties=properties,
                    after_id=state.refresh_after or 0,
                    page_size=self.settings.page_size,
                )
                for page, last_id in pages:
                    yield from self._deal_page(page)
                    state.refresh_after = last_id
                    yield Checkpoint(state.dump(shape))
            state.refreshed, state.refresh_after = now, None
            yield Checkpoint(state.dump(shape))

        yield from self._tombstones("deals", state)
        state.archived_since = now
        yield Checkpoint(state.dump(shape))
        if mapper.unknown_stages:
            self.log.warning(
                "hubspot: deals in stages no active pipeline defines (kept unclassified): %s",
                ", ".join(sorted(mapper.unknown_stages)),
            )
            mapper.unknown_stages.clear()

    def _deal_page(self, page: list[Any]) -> Iterator[Message]:
        if not page:
            return
        ids = [str(d.id) for d in page]
        contacts = self.api.associations("deals", "contacts", ids)
        companies = self._companies_of("deals", ids, DEAL_PRIMARY_COMPANY)
        yield from parse_records(
            page,
            lambda deal: self.deals.record(deal, contacts.get(str(deal.id), ()), companies.get(str(deal.id))),
            key=lambda deal: str(deal.id),
        )

    def _companies_of(
        self, object_type: ObjectType, ids: Sequence[str], primary: int | None
    ) -> dict[str, str]:
        """Each record's company: the primary one, else the lowest id; none without the scope."""
        if not ids or not self._can_read("companies"):
            return {}
        return self.api.primary_associations(object_type, "companies", ids, primary_type=primary)

    # -- stage history ------------------------------------------------------------------------------

    def _read_stage_changes(self, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:
        properties = ["hs_lastmodifieddate"]
        shape = self._shape("stage_changes", properties)
        state = self._state("stage_changes", shape, checkpoint)
        until = self._now_ms() - self.settings.index_lag // timedelta(milliseconds=1)
        size = self.settings.history_batch_size
        for page, position in self._changes("deals", "hs_lastmodifieddate", ALL, properties, state, until):
            ids = [str(deal.id) for deal in page]
            for start in range(0, len(ids), size):
                batch = self.api.batch_read(
                    "deals", ids[start : start + size], properties=["dealstage"], with_history=["dealstage"]
                )
                for deal in batch:
                    yield from stage_changes(deal)
            state.since, state.tie_after, state.open = position.since, position.tie_after, True
            yield Checkpoint(state.dump(shape))
        state.since, state.tie_after, state.open = max(until, state.since or 0), None, False
        yield Checkpoint(state.dump(shape))

    # -- leads --------------------------------------------------------------------------------------

    def _read_leads(self, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:
        mapper = self.contacts
        properties = mapper.properties
        shape = self._shape("leads", properties, companies=self._can_read("companies"))
        state = self._state("leads", shape, checkpoint)
        now = self._now_ms()
        until = now - self.settings.index_lag // timedelta(milliseconds=1)
        if state.since is None and state.refreshed is None:
            state.refreshed = now  # as for deals: a first read takes every association
        for page, position in self._changes(
            "contacts", "lastmodifieddate", mapper.segment(), properties, state, until
        ):
            yield from self._contact_page(page)
            state.since, state.tie_after, state.open = position.since, position.tie_after, True
            yield Checkpoint(state.dump(shape))
        state.since, state.tie_after, state.open = max(until, state.since or 0), None, False
        yield Checkpoint(state.dump(shape))

        if self._refresh_due(state, now):
            pages = keyset(
                lambda body: self.api.search("contacts", body),
                segment=mapper.unconverted_segment(),
                properties=properties,
                after_id=state.refresh_after or 0,
                page_size=self.settings.page_size,
            )
            for page, last_id in pages:
                yield from self._contact_page(page)
                state.refresh_after = last_id
                yield Checkpoint(state.dump(shape))
            state.refreshed, state.refresh_after = now, None
            yield Checkpoint(state.dump(shape))

        yield from self._tombstones("contacts", state)
        state.archived_since = now
        yield Checkpoint(state.dump(shape))

    def _contact_page(self, page: list[Any]) -> Iterator[Message]:
        if not page:
            return
        mapper = self.contacts
        ids = [str(c.id) for c in page]
        deals = self.api.associations("contacts", "deals", ids)
        companies = self._companies_of("contacts", ids, CONTACT_PRIMARY_COMPANY)
        # A lead converted by a deal alone (no date of entering a converted stage) converted when
        # that deal was created: read those deals' creation dates, one request for the page.
        wanted = sorted(
            {
                first
                for contact in page
                if not mapper.has_conversion_date(contact)
                and (first := min_id(deals.get(str(contact.id), ()))) is not None
            }
        )
        created: dict[str, datetime | None] = {}
        for start in range(0, len(wanted), 100):
            for deal in self.api.batch_read("deals", wanted[start : start + 100], properties=["createdate"]):
                try:
                    created[str(deal.id)] = parse_datetime(
                        (deal.properties or {}).get("createdate"), key=str(deal.id), field="createdate"
                    )
                except SkippableRecordError:
                    created[str(deal.id)] = None
        yield from parse_records(
            page,
            lambda contact: self.contacts.record(
                contact, deals.get(str(contact.id), ()), created, companies.get(str(contact.id))
            ),
            key=lambda contact: str(contact.id),
        )

    # -- accounts -----------------------------------------------------------------------------------

    def _read_companies(self, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:
        if not self._can_read("companies"):
            return  # said once, by the check; the stream starts afresh once the scope is granted
        mapper = self.companies
        properties = mapper.properties
        shape = self._shape(
            "accounts",
            properties,
            segment=mapper.segment,
            company_properties=self.settings.company_properties,
        )
        state = self._state("accounts", shape, checkpoint)
        now = self._now_ms()
        until = now - self.settings.index_lag // timedelta(milliseconds=1)
        for page, position in self._changes(
            "companies", "hs_lastmodifieddate", ALL, properties, state, until
        ):
            yield from parse_records(page, mapper.record, key=lambda company: str(company.id))
            state.since, state.tie_after, state.open = position.since, position.tie_after, True
            yield Checkpoint(state.dump(shape))
        state.since, state.tie_after, state.open = max(until, state.since or 0), None, False
        yield Checkpoint(state.dump(shape))
        yield from self._tombstones("companies", state)
        state.archived_since = now
        yield Checkpoint(state.dump(shape))

    # -- activities ---------------------------------------------------------------------------------

    def _read_engagements(self, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:
        """Each engagement object in turn: its changes window, then its archived records.

        Associations are read with each page of changes (engagements are linked when they are
        logged); unlike deals', they are not refreshed periodically.
        """
        linked = self._can_read("companies")
        shape = self._shape(
            "activities",
            [],
            companies=linked,
            activity_types=self.settings.activity_types,
            call_outcomes=self.settings.call_outcomes,
        )
        stored = checkpoint.get("objects") if checkpoint and checkpoint.get("shape") == shape else None
        if checkpoint and stored is None:
            self.log.info("hubspot activities: the checkpoint was written for other settings; reading afresh")
        states: dict[str, _State] = {}
        for kind in ENGAGEMENTS:
            data = stored.get(kind) if isinstance(stored, Mapping) else None
            try:
                states[kind] = _State.load(data) if isinstance(data, Mapping) else _State()
            except (TypeError, ValueError):
                states[kind] = _State()

        def dump() -> Checkpoint:
            return Checkpoint(
                {
                    "v": FORMAT_VERSION,
                    "shape": shape,
                    "objects": {kind: state.position() for kind, state in states.items()},
                }
            )

        for kind in ENGAGEMENTS:
            if kind == "emails" and not self._can_read("emails"):
                continue
            state = states[kind]
            properties = self.engagements.properties(kind)
            now = self._now_ms()
            until = now - self.settings.index_lag // timedelta(milliseconds=1)
            for page, position in self._changes(kind, "hs_lastmodifieddate", ALL, properties, state, until):
                yield from self._engagement_page(kind, page, linked)
                state.since, state.tie_after, state.open = position.since, position.tie_after, True
                yield dump()
            state.since, state.tie_after, state.open = max(until, state.since or 0), None, False
            yield dump()
            yield from self._tombstones(kind, state)
            state.archived_since = now
            yield dump()

    def _engagement_page(self, kind: EngagementType, page: list[Any], linked: bool) -> Iterator[Message]:
        if not page:
            return
        ids = [str(obj.id) for obj in page]
        companies = self.api.associations(kind, "companies", ids) if linked else {}
        deals = self.api.associations(kind, "deals", ids)
        contacts = self.api.associations(kind, "contacts", ids)

        def links(key: str) -> Links:
            return Links(
                company=min_id(companies.get(key, ())),
                deal=min_id(deals.get(key, ())),
                contact=min_id(contacts.get(key, ())),
            )

        yield from parse_records(
            page,
            lambda obj: self.engagements.record(kind, obj, links(str(obj.id))),
            key=lambda obj: str(obj.id),
        )
