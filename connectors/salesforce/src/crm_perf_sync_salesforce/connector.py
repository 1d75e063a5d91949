"""The ``salesforce`` connector: users, roles, stages, accounts, leads, opportunities, their stage
history, and the activities (tasks and events).

How one incremental stream is read (``teams``, ``owners``, ``accounts``, ``leads``,
``opportunities``, ``stage_changes``, ``tasks``, ``events``):

1. A fresh scan covers ``[cursor - lookback, now - skew]`` on the object's cursor field
   (``SystemModstamp``; ``CreatedDate`` for the append-only ``OpportunityHistory``): the
   lookback re-reads what committed late with an older timestamp, the upper bound keeps rows
   the org may still be writing (or stamped by a clock ahead of ours) for the next run. The first
   scan has no lower bound.
2. For objects with deletions (all but users, roles and history) the deleted-records feed is
   read for the same span first, as tombstones; a record deleted and restored since is then read
   live by the scan, which comes after and wins.
3. ``SELECT COUNT()`` of the span decides between Bulk API 2.0 (at least ``bulk_threshold``
   rows) and REST.
4. REST: ``queryAll`` (deleted rows come with ``IsDeleted``, and archived activities, which
   ``query`` leaves out, with ``IsArchived``) ``ORDER BY cursor, Id`` from a
   keyset position ``cursor > t OR (cursor = t AND Id > i)``, checkpointed after every page. A
   resumed scan continues exactly there, never re-reading or skipping the rows that share a
   timestamp. ``QUERY_TIMEOUT`` halves the time window until a query passes; a session that
   expires is renewed by the client whatever the call, and a query whose locator died with it
   restarts from the position.
   Bulk: one ``queryAll`` job, its CSV pages checkpointed by locator (a job outlives sessions).
5. The scan's end becomes the cursor.

Hard deletes the feed no longer covers are caught by the ``*_reconcile`` streams, one per entity:
every ``reconcile_every`` (and on a full refresh, when the feed's window was missed, or when no
reconcile is on record for rows read before the run) they read the live rows of the entity's
objects whole and end with ``SnapshotComplete``, and the engine soft-deletes what is gone. Tasks
and events are one entity, so ``activities_reconcile`` reads both before its snapshot ends (a
snapshot of either alone would delete the other's records); it reads them with ``queryAll`` and
``IsDeleted = false``, since ``query`` leaves out the activities Salesforce has archived.

The API budget is read from ``/limits/`` before a run and from ``Sforce-Limit-Info`` after every
response; at ``max_api_share`` (or on ``REQUEST_LIMIT_EXCEEDED``) the read stops after its last
checkpoint with :class:`QuotaExhaustedError`, and the next run resumes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, ClassVar

from simple_salesforce.api import Salesforce

from crm_perf_sync.connector_sdk import (
    Checkpoint,
    Connector,
    ConnectorConfigError,
    ConnectorContext,
    Entity,
    FatalError,
    Message,
    RetriableError,
    SnapshotComplete,
    StreamSpec,
    Tombstone,
    Watchable,
    parse_records,
)
from crm_perf_sync_salesforce import soql
from crm_perf_sync_salesforce.client import (
    LocatorInvalid,
    NotFound,
    QueryTimeout,
    ReplicationWindow,
    SalesforceClient,
    SessionRefused,
    Usage,
)
from crm_perf_sync_salesforce.mapping import (
    Mapper,
    OrgFacts,
    Stage,
    org_zone,
    parse_datetime,
    stage_of,
    typed_csv_row,
)
from crm_perf_sync_salesforce.settings import STREAMS, SalesforceSettings

#: Part of every checkpoint's field digest: bump it when the same rows map to other records, so
#: that older checkpoints lead to a full re-read.
FORMAT_VERSION = 1
RECONCILE = "_reconcile"
#: How many times one scan restarts its query (expired session, dead locator) without progress.
_MAX_RESTARTS = 3
_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
#: The objects whose records have a Lightning record page, by canonical entity (roles, stages
#: and field history live in Setup or on their parent's page).
_RECORD_PAGES: Mapping[str, str] = {
    "opportunities": "Opportunity",
    "leads": "Lead",
    "owners": "User",
    "accounts": "Account",
}
#: Activities are tasks or events: the id's key prefix says which.
_ACTIVITY_PAGES: Mapping[str, str] = {"00T": "Task", "00U": "Event"}
#: The deleted-records feed answers for about 30 days back; ask for a little less.
_FEED_REACH = timedelta(days=29)


@dataclass(frozen=True, slots=True)
class SObjectStream:
    """A stream and the Salesforce object behind it."""

    name: str
    entity: Entity
    sobject: str
    fields: tuple[str, ...]
    #: The keyset field; ``None`` for a small object read whole every run.
    cursor: str | None
    #: Deleted rows exist: ``queryAll``, the deleted-records feed and reconciliation apply.
    deletes: bool = False
    #: Salesforce archives old rows (activities), which only ``queryAll`` returns.
    archives: bool = False


def _names(*lines: str) -> tuple[str, ...]:
    return tuple(" ".join(lines).split())


OBJECTS: Mapping[str, SObjectStream] = {
    "teams": SObjectStream(
        "teams", "teams", "UserRole", _names("Id Name ParentRoleId SystemModstamp"), "SystemModstamp"
    ),
    "owners": SObjectStream(
        "owners",
        "owners",
        "User",
        _names("Id Name Email IsActive UserRoleId SystemModstamp"),
        "SystemModstamp",
    ),
    "pipeline_stages": SObjectStream(
        "pipeline_stages",
        "pipeline_stages",
        "OpportunityStage",
        _names(
            "Id MasterLabel ApiName IsActive IsClosed IsWon",
            "DefaultProbability SortOrder ForecastCategoryName",
        ),
        None,
    ),
    "accounts": SObjectStream(
        "accounts",
        "accounts",
        "Account",
        _names("Id Name OwnerId Industry Type ParentId CreatedDate IsDeleted SystemModstamp"),
        "SystemModstamp",
        deletes=True,
    ),
    "leads": SObjectStream(
        "leads",
        "leads",
        "Lead",
        _names(
            "Id OwnerId Name Email Company LeadSource Status CreatedDate IsConverted ConvertedDate",
            "ConvertedOpportunityId ConvertedAccountId IsDeleted SystemModstamp",
        ),
        "SystemModstamp",
        deletes=True,
    ),
    "opportunities": SObjectStream(
        "opportunities",
        "opportunities",
        "Opportunity",
        # CurrencyIsoCode exists only in multi-currency orgs; fields the org lacks are left out.
        _names(
            "Id OwnerId Name AccountId Amount CurrencyIsoCode StageName Probability ForecastCategory",
            "ForecastCategoryName IsClosed IsWon CreatedDate CloseDate Type LeadSource IsDeleted",
            "SystemModstamp",
        ),
        "SystemModstamp",
        deletes=True,
    ),
    # OpportunityHistory rows are never modified: CreatedDate is their cursor.
    "stage_changes": SObjectStream(
        "stage_changes",
        "stage_changes",
        "OpportunityHistory",
        _names("Id OpportunityId StageName CreatedDate"),
        "CreatedDate",
    ),
    # Tasks and events are two streams of one entity: each object has its own cursor, deleted-
    # records feed and Bulk decision, and one SOQL query reads one object only.
    "tasks": SObjectStream(
        "tasks",
        "activities",
        "Task",
        _names(
            "Id Subject Type TaskSubtype Status IsClosed ActivityDate CompletedDateTime",
            "CallDurationInSeconds CallDisposition CallType OwnerId WhoId WhatId AccountId",
            "IsArchived CreatedDate IsDeleted SystemModstamp",
        ),
        "SystemModstamp",
        deletes=True,
        archives=True,
    ),
    "events": SObjectStream(
        "events",
        "activities",
        "Event",
        _names(
            "Id Subject Type EventSubtype StartDateTime EndDateTime ActivityDateTime ActivityDate",
            "DurationInMinutes IsAllDayEvent OwnerId WhoId WhatId AccountId IsArchived CreatedDate",
            "IsDeleted SystemModstamp",
        ),
        "SystemModstamp",
        deletes=True,
        archives=True,
    ),
}


@dataclass
class _Scan:
    """One pass over ``[since, upper]``; ``after`` is how far it got, ``bulk`` its Bulk job."""

    since: datetime | None
    upper: datetime
    after: soql.Position | None = None
    bulk: dict[str, Any] | None = None

    def position(self) -> soql.Position:
        return self.after if self.after is not None else soql.Position(self.since, None, inclusive=True)

    def dump(self) -> dict[str, Any]:
        after = None
        if self.after is not None and self.after.at is not None:
            after = [self.after.at.isoformat(), self.after.last_id]
        return {
            "since": self.since.isoformat() if self.since else None,
            "upper": self.upper.isoformat(),
            "after": after,
            "bulk": dict(self.bulk) if self.bulk is not None else None,
        }


@dataclass
class _State:
    """A stream's checkpoint: the cursor of the last complete scan, and the scan in progress."""

    fields: str
    cursor: datetime | None = None
    deleted_until: datetime | None = None
    scan: _Scan | None = None

    def dump(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "fields": self.fields,
            "cursor": self.cursor.isoformat() if self.cursor else None,
            "deleted_until": self.deleted_until.isoformat() if self.deleted_until else None,
        }
        if self.scan is not None:
            state["scan"] = self.scan.dump()
        return state


class _BulkUnavailable(Exception):
    """The Bulk job failed or vanished: the scan goes on over REST."""


@dataclass
class _Prepared:
    """An object's query fields (as the org names them), their types, and the mapper of its rows."""

    fields: tuple[str, ...]
    types: Mapping[str, str]
    digest: str
    parse: Callable[[Mapping[str, Any]], Message | None] = field(repr=False)


def _query_all(sf: Salesforce, text: str) -> dict[str, Any]:
    """One page of ``text`` through ``queryAll`` (deleted rows too)."""
    answer: dict[str, Any] = sf.query(text, include_deleted=True)
    return answer


#: The entities whose objects :meth:`SalesforceConnector.latest_change` asks about: what the KPIs
#: are made of (users and roles change seldom, and the schedule reads them).
_WATCHED = frozenset({"opportunities", "leads", "accounts", "activities"})


class SalesforceConnector(Connector[SalesforceSettings], Watchable):
    """Accounts, leads, opportunities (open and closed), owners, roles, stages, stage history and
    activities (tasks and events) from Salesforce."""

    settings_model = SalesforceSettings
    description = "Salesforce (REST and Bulk API 2.0, through simple-salesforce)"
    #: Needs an org: the tests run it against their emulator (tests/connectors/salesforce/contract.py).
    example_settings: ClassVar[Mapping[str, Any] | None] = None

    def __init__(self, settings: SalesforceSettings, context: ConnectorContext) -> None:
        super().__init__(settings, context)
        self.client = SalesforceClient(settings, context.logger)
        self.log = context.logger
        self._org: OrgFacts | None = None
        self._stages: dict[str, Stage] | None = None
        self._mapper: Mapper | None = None
        self._prepared: dict[str, _Prepared] = {}
        #: Objects whose deletions the feed could not fully cover this run: reconcile them now.
        self._reconcile_due: set[str] = set()
        #: Objects whose every row a scan of this run read (no lower bound): nothing to reconcile.
        self._read_whole: set[str] = set()
        self._limits_read = False
        #: The org's latest change a watch saw before this sync (:meth:`follow`).
        self._latest_seen: datetime | None = None

    # -- the contract -------------------------------------------------------------------------------

    def record_url(self, entity: str, external_id: str) -> str | None:
        """The record's Lightning page, ``{origin}/lightning/r/{SObject}/{id}/view``, under
        :meth:`SalesforceSettings.record_origin` (``None`` when that is unknown)."""
        if entity == "activities":
            sobject = _ACTIVITY_PAGES.get(external_id[:3])
        else:
            sobject = _RECORD_PAGES.get(entity)
        origin = self.settings.record_origin()
        if sobject is None or origin is None or not _ID.match(external_id):
            return None
        return f"{origin}/lightning/r/{sobject}/{external_id}/view"

    def streams(self) -> Sequence[StreamSpec]:
        """The configured streams in sync order, then the reconciliation of each entity with
        deletions (``accounts``, ``leads``, ``opportunities``, ``activities``)."""
        chosen = self._chosen()
        specs = []
        for name in chosen:
            obj = OBJECTS[name]
            specs.append(StreamSpec(name, obj.entity, cursor_field=obj.cursor, snapshot=obj.cursor is None))
        # Reconciliation streams exist even without ``reconcile_every``: a full refresh, or a gap
        # the deleted-records feed cannot cover, still needs them.
        entities = dict.fromkeys(OBJECTS[name].entity for name in chosen if OBJECTS[name].deletes)
        specs.extend(StreamSpec(entity + RECONCILE, entity, snapshot=True) for entity in entities)
        return specs

    def _chosen(self) -> list[str]:
        return [
            name
            for name in STREAMS
            if name in self.settings.streams and (name != "teams" or self.settings.teams_from_roles)
        ]

    # -- watching (a change reaches the numbers within seconds) ---------------------------------

    def watch_interval(self) -> timedelta | None:
        """``watch``, or longer when asking that often would spend more than ``watch_share`` of the
        daily API budget (known once a response has said it): one request per watched object."""
        wanted = self.settings.watch
        if wanted is None:
            return None
        usage = self.client.usage
        if usage is None or usage.total <= 0:
            return wanted
        per_day = usage.total * self.settings.watch_share
        floor = timedelta(seconds=math.ceil(86_400 * len(self._watched()) / per_day))
        return max(wanted, floor)

    def latest_change(self) -> datetime | None:
        """The latest ``SystemModstamp`` of the objects of the opportunities, leads, accounts and
        activities read: ``ORDER BY SystemModstamp DESC LIMIT 1`` on each (an indexed field, one
        request each). Salesforce's own clock: no skew between ours and the org's can hide a
        change. Deletions stamp it too (``queryAll`` sees the deleted rows)."""
        latest: datetime | None = None
        for sobject in self._watched():
            text = soql.latest(sobject, "SystemModstamp")
            page = self.client.call(f"the latest change of {sobject}", partial(_query_all, text=text))
            for record in page.get("records") or ():
                stamp = record.get("SystemModstamp")
                if isinstance(stamp, str):
                    moment = parse_datetime(stamp)
                    latest = moment if latest is None or moment > latest else latest
        return latest

    def follow(self, latest: datetime) -> None:
        """A sync the watch starts reads up to the change it saw, not a ``skew`` short of now."""
        self._latest_seen = latest

    def _watched(self) -> list[str]:
        return list(
            dict.fromkeys(
                OBJECTS[name].sobject
                for name in self._chosen()
                if OBJECTS[name].entity in _WATCHED and OBJECTS[name].cursor == "SystemModstamp"
            )
        )

    def check(self) -> None:
        """Log in and read the daily API budget: refused credentials fail, an unreachable org is
        retriable (the engine retries a check like a read), a spent budget defers the run."""
        self._read_limits()

    def _read_limits(self) -> None:
        limits = self.client.limits()
        daily = limits.get("DailyApiRequests")
        if isinstance(daily, Mapping) and daily.get("Max"):
            total = int(daily["Max"])
            used = total - int(daily.get("Remaining", total))
            self.client.usage = Usage(used, total)
        self._limits_read = True
        self._check_budget()

    def read(self, stream: StreamSpec, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:
        """The stream's changes since ``checkpoint`` (see the module docstring), then a checkpoint."""
        reconciled: list[SObjectStream] = []
        obj = OBJECTS.get(stream.name)
        if stream.name.endswith(RECONCILE):
            entity = stream.name.removesuffix(RECONCILE)
            reconciled = [
                OBJECTS[name]
                for name in self._chosen()
                if OBJECTS[name].deletes and OBJECTS[name].entity == entity
            ]
        if not reconciled and (obj is None or obj.name not in self.settings.streams):
            raise ConnectorConfigError(
                f"stream {stream.name!r} is not configured for this salesforce connection"
            )
        try:
            if not self._limits_read:
                self._read_limits()
            if reconciled:
                yield from self._reconcile(stream.name, reconciled, checkpoint)
            elif obj is None:
                raise ConnectorConfigError(f"stream {stream.name!r} is not a salesforce stream")
            elif obj.cursor is None:
                yield from self._whole(obj)
            else:
                yield from self._incremental(obj, checkpoint)
        # The scans handle these where they can; anywhere else they are what they look like.
        except (QueryTimeout, LocatorInvalid, ReplicationWindow) as exc:
            raise RetriableError(str(exc)) from None
        except NotFound as exc:
            raise FatalError(str(exc)) from None

    def close(self) -> None:
        self.client.close()

    # -- org facts, fields, mapping -----------------------------------------------------------------

    def _mapping(self) -> Mapper:
        if self._mapper is None:
            if self._org is None:
                self._org = self._org_facts()
            if self._stages is None:
                self._stages = {stage.api_name: stage for stage in self._read_stages()}
            self._mapper = Mapper(
                org=self._org,
                stages=self._stages,
                pipeline=self.settings.pipeline,
                lead_custom=self.settings.custom_fields.leads,
                opportunity_custom=self.settings.custom_fields.opportunities,
                account_custom=self.settings.custom_fields.accounts,
                activity_custom=self.settings.custom_fields.activities,
                account_segment=self.settings.account_segment,
                activity_types=self.settings.activity_types,
                teams_from_roles=self.settings.teams_from_roles,
                keep_raw=self.settings.keep_raw,
            )
        return self._mapper

    def _org_facts(self) -> OrgFacts:
        text = soql.select("Organization", ("Id", "DefaultCurrencyIsoCode", "TimeZoneSidKey"), limit=1)
        try:
            page = next(self.client.query_pages(text, include_deleted=False))
        except SessionRefused:
            raise  # not the Organization's access, nothing to fall back from
        except (ConnectorConfigError, FatalError) as exc:
            self.log.warning(
                "salesforce: cannot read the Organization (%s); amounts use the configured currency", exc
            )
            return OrgFacts(self.settings.currency, org_zone(None))
        rows = page.get("records") or [{}]
        row = rows[0]
        currency = self.settings.currency or row.get("DefaultCurrencyIsoCode")
        return OrgFacts(currency, org_zone(row.get("TimeZoneSidKey")))

    def _read_stages(self) -> list[Stage]:
        obj = OBJECTS["pipeline_stages"]
        fields = self._fields(obj)[0]
        stages: list[Stage] = []
        for page in self._pages(
            soql.select(obj.sobject, fields, order_by=("SortOrder",)), include_deleted=False
        ):
            stages.extend(
                stage_of(row)
                for row in page.get("records") or []
                if row.get("MasterLabel") or row.get("ApiName")
            )
        return stages

    def _fields(self, obj: SObjectStream) -> tuple[tuple[str, ...], Mapping[str, str], Mapping[str, str]]:
        """The fields to select (those of ``obj`` the org has, plus the configured custom ones),
        their types, and the custom dimension names mapped to the org's field names."""
        describe = self.client.describe(obj.sobject)
        types = {str(f["name"]): str(f.get("type") or "string") for f in describe.get("fields") or []}
        by_lower = {name.lower(): name for name in types}
        for required in ("Id", obj.cursor):
            if required is not None and required not in types:
                raise ConnectorConfigError(
                    f"the {obj.sobject} object has no {required} field the integration user can read"
                )
        chosen = [name for name in obj.fields if name in types]
        configured: Mapping[str, str] = getattr(self.settings.custom_fields, obj.entity, None) or {}
        custom: dict[str, str] = {}
        for dimension, api_name in configured.items():
            found = by_lower.get(api_name.lower())
            if found is None:
                raise ConnectorConfigError(
                    f"custom_fields.{obj.name}.{dimension}: the {obj.sobject} object has no field {api_name} "
                    "(or the integration user cannot read it)"
                )
            custom[dimension] = found
            chosen.append(found)
        return tuple(dict.fromkeys(chosen)), types, custom

    def _segment_field(self, types: Mapping[str, str]) -> str | None:
        """The org's spelling of the Account field read as the segment (``None``: no segment)."""
        wanted = self.settings.account_segment
        if wanted is None:
            return None
        found = {name.lower(): name for name in types}.get(wanted.lower())
        if found is None and wanted != "Type":
            raise ConnectorConfigError(
                f"account_segment: the Account object has no field {wanted} "
                "(or the integration user cannot read it)"
            )
        return found

    def _prepare(self, obj: SObjectStream) -> _Prepared:
        prepared = self._prepared.get(obj.name)
        if prepared is None:
            fields, types, custom = self._fields(obj)
            mapper = self._mapping()
            if custom:
                # The org's spelling of the configured field names is what the rows carry.
                mapper.use_custom(obj.entity, custom)
            segment = None
            if obj.name == "accounts":
                segment = self._segment_field(types)
                mapper.use_segment(segment)
                if segment is not None:
                    fields = tuple(dict.fromkeys((*fields, segment)))
            parsers: Mapping[str, Callable[[Mapping[str, Any]], Message | None]] = {
                "teams": mapper.team,
                "owners": mapper.owner,
                "pipeline_stages": mapper.pipeline_stage,
                "accounts": mapper.account,
                "leads": mapper.lead,
                "opportunities": mapper.opportunity,
                "stage_changes": mapper.stage_change,
                "tasks": mapper.task,
                "events": mapper.event,
            }
            identity = [
                FORMAT_VERSION,
                obj.sobject,
                fields,
                sorted(custom.items()),
                self.settings.pipeline,
                self.settings.currency,
                self.settings.teams_from_roles,
                self.settings.keep_raw,
            ]
            # Added to the digest only where they apply, so that the other streams' checkpoints
            # stay what they were.
            if obj.name == "accounts":
                identity.append(segment)
            if obj.entity == "activities":
                identity.append(sorted(self.settings.activity_types.items()))
            digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]
            prepared = _Prepared(fields, types, digest, parsers[obj.name])
            self._prepared[obj.name] = prepared
        return prepared

    # -- budget --------------------------------------------------------------------------------------

    def _check_budget(self) -> None:
        self.client.check_budget()

    # -- one whole read (stages) ---------------------------------------------------------------------

    def _whole(self, obj: SObjectStream) -> Iterator[Message]:
        prepared = self._prepare(obj)
        text = soql.select(obj.sobject, prepared.fields, order_by=("Id",))
        stages: list[Stage] = []
        for page in self._pages(text, include_deleted=False):
            records = page.get("records") or []
            yield from parse_records(records, prepared.parse, key=_row_key)
            stages.extend(stage_of(row) for row in records if row.get("MasterLabel") or row.get("ApiName"))
        if obj.name == "pipeline_stages" and self._stages is not None:
            self._stages.clear()
            self._stages.update({stage.api_name: stage for stage in stages})
        yield SnapshotComplete()
        yield Checkpoint({"v": FORMAT_VERSION, "fields": prepared.digest})

    def _pages(self, text: str, *, include_deleted: bool) -> Iterator[dict[str, Any]]:
        """All pages of a small query, restarting it whole if its locator dies half-way."""
        for attempt in range(_MAX_RESTARTS + 1):
            try:
                yield from self.client.query_pages(text, include_deleted=include_deleted)
                return
            except LocatorInvalid as exc:
                if attempt == _MAX_RESTARTS:
                    raise FatalError(f"Salesforce keeps ending one query: {exc}") from None

    # -- incremental ---------------------------------------------------------------------------------

    def _state(self, obj: SObjectStream, checkpoint: Mapping[str, Any] | None, digest: str) -> _State:
        if not checkpoint:
            return _State(digest)
        if checkpoint.get("v") != FORMAT_VERSION or checkpoint.get("fields") != digest:
            self.log.info(
                "salesforce %s: the fields or mapping changed since the last sync; reading everything again",
                obj.name,
            )
            return _State(digest)
        try:
            state = _State(
                digest,
                cursor=_instant(checkpoint.get("cursor")),
                deleted_until=_instant(checkpoint.get("deleted_until")),
            )
            scan = checkpoint.get("scan")
            if scan is not None:
                upper = _instant(scan["upper"])
                assert upper is not None
                after = None
                if scan.get("after"):
                    at_text, last_id = scan["after"]
                    if last_id is not None and not _ID.match(str(last_id)):
                        raise ValueError(f"{last_id!r} is not a Salesforce id")
                    after = soql.Position(_instant(at_text), last_id, inclusive=False)
                bulk = dict(scan["bulk"]) if scan.get("bulk") else None
                if bulk is not None and not _ID.match(str(bulk.get("job"))):
                    raise ValueError("not a Bulk job id")
                state.scan = _Scan(_instant(scan.get("since")), upper, after, bulk)
            return state
        except (KeyError, TypeError, ValueError, AssertionError) as exc:
            self.log.warning(
                "salesforce %s: unreadable checkpoint (%s); reading everything again", obj.name, exc
            )
            return _State(digest)

    def _incremental(self, obj: SObjectStream, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:
        prepared = self._prepare(obj)
        state = self._state(obj, checkpoint, prepared.digest)
        if state.scan is None:
            upper = (self.context.clock() - self.settings.skew).replace(microsecond=0)
            if self._latest_seen is not None and self._latest_seen > upper:
                # The org's own latest change, which the watch saw: read up to it now rather than
                # a skew later (Salesforce's clock, and a row that exists; a late commit stamped
                # earlier is read again within the lookback).
                upper = self._latest_seen.replace(microsecond=0)
            since = state.cursor - self.settings.lookback if state.cursor is not None else None
            if since is not None and since > upper:
                upper = since  # our clock went back: scan the lookback window only
            scan = _Scan(since, upper)
            if obj.deletes and state.cursor is not None:
                start = state.deleted_until or state.cursor
                state.deleted_until = yield from self._deleted_feed(
                    obj, start - self.settings.lookback, upper
                )
            elif obj.deletes:
                # A first scan reads every row there is (deleted ones included): the feed starts now.
                state.deleted_until = upper
            scan.bulk = self._bulk_job(obj, prepared, scan)
            state.scan = scan
            # Resumable from here: a crash re-enters this scan (and its Bulk job), not a new one.
            yield Checkpoint(state.dump())
            self._check_budget()
        assert state.scan is not None
        if state.scan.bulk is not None:
            yield from self._bulk_scan(obj, prepared, state)
        else:
            yield from self._rest_scan(obj, prepared, state)
        if state.scan.since is None:
            self._read_whole.add(obj.name)
        state.cursor = state.scan.upper
        state.scan = None
        yield Checkpoint(state.dump())

    def _deleted_feed(
        self, obj: SObjectStream, start: datetime, end: datetime
    ) -> Generator[Message, None, datetime]:
        """Tombstones of the rows deleted in ``[start, end]``; returns how far the feed covered."""
        now = self.context.clock()
        if start < now - _FEED_REACH:
            self.log.warning(
                "salesforce %s: the last sync is too long ago for the deleted-records feed; reconciling",
                obj.name,
            )
            self._reconcile_due.add(obj.name)
            start = now - _FEED_REACH
        if end <= start:
            return end
        try:
            result = self.client.deleted(obj.sobject, start, end)
        except ReplicationWindow as exc:
            self.log.warning("salesforce %s: %s; reconciling instead", obj.name, exc)
            self._reconcile_due.add(obj.name)
            return end
        earliest = _instant(result.get("earliestDateAvailable"))
        if earliest is not None and earliest > start:
            self._reconcile_due.add(obj.name)
        for entry in result.get("deletedRecords") or []:
            record_id = entry.get("id")
            if record_id:
                yield Tombstone(str(record_id), _instant(entry.get("deletedDate")))
        covered = _instant(result.get("latestDateCovered"))
        # The feed answers to the minute: the next run starts from what it says it covered.
        return min(end, covered) if covered is not None else end

    def _bulk_job(self, obj: SObjectStream, prepared: _Prepared, scan: _Scan) -> dict[str, Any] | None:
        """A Bulk API 2.0 job for the scan when ``SELECT COUNT()`` says it is large enough."""
        threshold = self.settings.bulk_threshold
        if threshold is None:
            return None
        cursor = obj.cursor
        assert cursor is not None
        where = [scan.position().clause(cursor), soql.at_most(cursor, scan.upper)]
        try:
            rows = self.client.count(soql.count(obj.sobject, where), include_deleted=obj.deletes)
        except QueryTimeout:
            rows = threshold  # too many to count in time is plenty for Bulk
        if rows < threshold:
            return None
        text = soql.select(obj.sobject, prepared.fields, where)
        try:
            job_id = self.client.bulk_create(text, include_deleted=obj.deletes)
        except (ConnectorConfigError, FatalError) as exc:
            self.log.warning("salesforce %s: Bulk API refused the job (%s); reading over REST", obj.name, exc)
            return None
        self.log.info("salesforce %s: %d rows to read, through Bulk API 2.0 job %s", obj.name, rows, job_id)
        return {"job": job_id, "pages": 0, "locator": None}

    def _rest_scan(self, obj: SObjectStream, prepared: _Prepared, state: _State) -> Iterator[Message]:
        scan = state.scan
        assert scan is not None
        assert obj.cursor is not None
        cursor = obj.cursor
        position = scan.position()
        end = scan.upper
        window_start, window_end = position.at, end
        restarts = 0
        while True:
            text = soql.select(
                obj.sobject,
                prepared.fields,
                [position.clause(cursor), soql.at_most(cursor, window_end)],
                order_by=(cursor, "Id"),
            )
            try:
                pages = self.client.prefetch(self.client.query_pages(text, include_deleted=obj.deletes))
                for page in pages:
                    records = page.get("records") or []
                    yield from parse_records(records, prepared.parse, key=_row_key)
                    last = _last_key(records, cursor)
                    if last is not None:
                        position = soql.Position(last[0], last[1], inclusive=False)
                        scan.after = position
                    yield Checkpoint(state.dump())
                    restarts = 0
                    self._check_budget()
            except QueryTimeout:
                position, window_start, window_end = self._narrow(obj, position, window_end)
                continue
            except LocatorInvalid as exc:
                restarts += 1
                if restarts > _MAX_RESTARTS:
                    raise FatalError(f"Salesforce keeps ending the query of {obj.sobject}: {exc}") from None
                self.log.info("salesforce %s: restarting the query from its last row (%s)", obj.name, exc)
                continue
            if window_end >= end:
                return
            # The window is done; widen the next one again (twice the last width).
            position = soql.Position(window_end, None, inclusive=False)
            scan.after = position
            width = window_end - window_start if window_start is not None else end - window_end
            window_start, window_end = window_end, min(end, window_end + 2 * width)

    def _narrow(
        self, obj: SObjectStream, position: soql.Position, window_end: datetime
    ) -> tuple[soql.Position, datetime, datetime]:
        """Halve the window after a QUERY_TIMEOUT (from the first row's time on a first scan)."""
        assert obj.cursor is not None
        start = position.at
        if start is None:
            first = soql.select(obj.sobject, (obj.cursor,), order_by=(obj.cursor,), limit=1)
            try:
                page = next(self.client.query_pages(first, include_deleted=obj.deletes))
            except QueryTimeout:
                raise RetriableError(f"the query of {obj.sobject} timed out (QUERY_TIMEOUT)") from None
            rows = page.get("records") or []
            found = _instant(rows[0].get(obj.cursor)) if rows else None
            if found is None:
                raise RetriableError(f"the query of {obj.sobject} timed out (QUERY_TIMEOUT)")
            start = found
            position = soql.Position(start, None, inclusive=True)
        width = window_end - start
        if width <= self.settings.min_window:
            raise RetriableError(
                f"the query of {obj.sobject} timed out (QUERY_TIMEOUT) even for a window of {width}"
            )
        narrower = start + max(timedelta(seconds=1), width / 2)
        narrower = narrower.replace(microsecond=0)
        self.log.info("salesforce %s: QUERY_TIMEOUT; reading up to %s first", obj.name, narrower.isoformat())
        return position, start, narrower

    # -- Bulk API 2.0 ----------------------------------------------------------------------------------

    def _bulk_scan(self, obj: SObjectStream, prepared: _Prepared, state: _State) -> Iterator[Message]:
        scan = state.scan
        assert scan is not None
        assert scan.bulk is not None
        bulk = scan.bulk
        job_id = str(bulk["job"])
        try:
            if not bulk.get("pages"):
                self._wait_for(job_id)
            # A page takes seconds to arrive: the next is fetched while this one is mapped and stored.
            for rows, following in self.client.prefetch(self.client.bulk_pages(job_id, bulk.get("locator"))):
                typed = (typed_csv_row(row, prepared.types) for row in rows)
                yield from parse_records(typed, prepared.parse, key=_row_key)
                bulk["pages"] = int(bulk.get("pages") or 0) + 1
                bulk["locator"] = following
                if following is None:
                    break
                yield Checkpoint(state.dump())
                self._check_budget()
        except (_BulkUnavailable, NotFound) as exc:
            self.log.warning(
                "salesforce %s: Bulk job %s unavailable (%s); reading over REST", obj.name, job_id, exc
            )
            scan.bulk = None
            scan.after = None
            yield Checkpoint(state.dump())
            yield from self._rest_scan(obj, prepared, state)
            return
        self.client.bulk_delete(job_id)

    def _wait_for(self, job_id: str) -> None:
        deadline = time.monotonic() + self.settings.bulk_timeout.total_seconds()
        while True:
            info = self.client.bulk_state(job_id)
            status = str(info.get("state"))
            if status == "JobComplete":
                return
            if status in ("Failed", "Aborted"):
                raise _BulkUnavailable(f"{status}: {info.get('errorMessage') or 'no reason given'}")
            if time.monotonic() > deadline:
                raise _BulkUnavailable(f"still {status} after {self.settings.bulk_timeout}")
            time.sleep(self.settings.bulk_poll_interval)

    # -- reconciliation ------------------------------------------------------------------------------

    def _reconcile(
        self, name: str, objects: Sequence[SObjectStream], checkpoint: Mapping[str, Any] | None
    ) -> Iterator[Message]:
        """Every live row of ``objects`` (one entity's) then :class:`SnapshotComplete`, when a
        reconciliation is due."""
        now = self.context.clock()
        last = None
        try:
            last = _instant((checkpoint or {}).get("reconciled_at"))
        except (TypeError, ValueError):
            last = None
        every = self.settings.reconcile_every
        forced = self.context.full_refresh or any(obj.name in self._reconcile_due for obj in objects)
        if last is None and not forced and all(obj.name in self._read_whole for obj in objects):
            # A first sync has just read everything: the clock starts now.
            yield Checkpoint({"v": FORMAT_VERSION, "reconciled_at": now.isoformat()})
            return
        if not forced and last is not None and (every is None or now - last < every):
            yield Checkpoint({"v": FORMAT_VERSION, "reconciled_at": last.isoformat()})
            return
        # Due, forced, or never done on rows read before this run (the last one was refused as a
        # mass deletion, whose confirmation must find it due again).
        for obj in objects:
            yield from self._reconcile_object(name, obj)
        for obj in objects:
            self._reconcile_due.discard(obj.name)
        yield SnapshotComplete()
        yield Checkpoint({"v": FORMAT_VERSION, "reconciled_at": now.isoformat()})

    def _reconcile_object(self, name: str, obj: SObjectStream) -> Iterator[Message]:
        """Every live row of ``obj``, through Bulk API from ``bulk_threshold`` rows."""
        prepared = self._prepare(obj)
        self.log.info("salesforce %s: reconciling every live %s id (hard deletes)", name, obj.sobject)
        # ``query`` leaves archived rows out: those objects are read with ``queryAll``, live only.
        everything = obj.archives
        live_only = [soql.live_only()] if everything else []
        threshold = self.settings.bulk_threshold
        job_id = None
        if threshold is not None:
            try:
                live = self.client.count(soql.count(obj.sobject, live_only), include_deleted=everything)
            except QueryTimeout:
                live = threshold
            if live >= threshold:
                try:
                    job_id = self.client.bulk_create(
                        soql.select(obj.sobject, prepared.fields, live_only), include_deleted=everything
                    )
                except (ConnectorConfigError, FatalError) as exc:
                    self.log.warning("salesforce %s: Bulk API refused the job (%s); using REST", name, exc)
        over_rest = job_id is None
        if job_id is not None:
            try:
                yield from self._reconcile_bulk(job_id, prepared)
            except (_BulkUnavailable, NotFound) as exc:
                # Rows the job gave are read again: the snapshot only needs every live row once.
                self.log.warning("salesforce %s: Bulk job %s unavailable (%s); using REST", name, job_id, exc)
                over_rest = True
        if over_rest:
            yield from self._reconcile_rest(obj, prepared)

    def _reconcile_rest(self, obj: SObjectStream, prepared: _Prepared) -> Iterator[Message]:
        last_id: str | None = None
        restarts = 0
        everything = obj.archives
        live_only = soql.live_only() if everything else None
        while True:
            text = soql.select(
                obj.sobject, prepared.fields, [live_only, soql.id_after(last_id)], order_by=("Id",)
            )
            try:
                for page in self.client.prefetch(self.client.query_pages(text, include_deleted=everything)):
                    records = page.get("records") or []
                    yield from parse_records(records, prepared.parse, key=_row_key)
                    ids = [row["Id"] for row in records if row.get("Id")]
                    if ids:
                        last_id = str(ids[-1])
                    restarts = 0
                    self._check_budget()
                return
            except LocatorInvalid as exc:
                restarts += 1
                if restarts > _MAX_RESTARTS:
                    raise FatalError(f"Salesforce keeps ending the query of {obj.sobject}: {exc}") from None

    def _reconcile_bulk(self, job_id: str, prepared: _Prepared) -> Iterator[Message]:
        self._wait_for(job_id)
        for rows, _following in self.client.prefetch(self.client.bulk_pages(job_id, None)):
            yield from parse_records(
                (typed_csv_row(row, prepared.types) for row in rows), prepared.parse, key=_row_key
            )
            self._check_budget()
        self.client.bulk_delete(job_id)


def _row_key(row: Mapping[str, Any]) -> str | None:
    value = row.get("Id")
    return str(value) if value else None


def _last_key(records: Sequence[Mapping[str, Any]], cursor: str) -> tuple[datetime, str] | None:
    """The keyset position after a page: its last row with a readable cursor and Id."""
    for row in reversed(records):
        value, record_id = row.get(cursor), row.get("Id")
        if value and record_id and _ID.match(str(record_id)):
            try:
                return parse_datetime(str(value)), str(record_id)
            except ValueError:
                continue
    return None


def _instant(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return parse_datetime(str(value))
