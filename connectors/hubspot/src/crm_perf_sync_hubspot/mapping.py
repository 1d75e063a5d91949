"""HubSpot objects (as hubspot-api-client deserialises them) → canonical records.

Property values always arrive as strings or null: amounts as ``"5000.00"`` or ``"3000"``,
datetimes as ISO 8601 (``"2026-02-25T16:26:25.880Z"``), booleans as ``"true"``/``"false"``.
A value that cannot be parsed makes its record a bad record (reported, skipped), never a
crash of the stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from crm_perf_sync.connector_sdk import (
    AccountRecord,
    ActivityRecord,
    LeadRecord,
    OpportunityRecord,
    OwnerRecord,
    PipelineStageRecord,
    SkippableRecordError,
    StageChangeRecord,
    TeamRecord,
)
from crm_perf_sync_hubspot.search import parse_millis, to_millis
from crm_perf_sync_hubspot.settings import HubSpotSettings

#: Deal properties every read asks for (the custom ones are added from the settings).
DEAL_PROPERTIES: tuple[str, ...] = (
    "dealname",
    "amount",
    "deal_currency_code",
    "dealstage",
    "pipeline",
    "closedate",
    "createdate",
    "hubspot_owner_id",
    "hs_lastmodifieddate",
)
CONTACT_PROPERTIES: tuple[str, ...] = (
    "firstname",
    "lastname",
    "email",
    "company",
    "hubspot_owner_id",
    "lifecyclestage",
    "hs_analytics_source",
    "createdate",
    "lastmodifieddate",
)


def entered_property(stage: str) -> str:
    """The contact property holding when the contact (last) entered lifecycle stage ``stage``."""
    return f"hs_v2_date_entered_{stage}"


def aware(value: datetime | None) -> datetime | None:
    """A datetime the client parsed (dateutil: ``tzutc``, ``tzlocal``, or naive) as aware UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_datetime(value: str | None, *, key: str, field: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        if value.isdigit():  # epoch milliseconds, as some older date properties still have it
            return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise SkippableRecordError(f"{field}: not a date-time: {value!r}", key=key, field=field) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_amount(value: str | None, *, key: str) -> Decimal | None:
    if value is None or value.strip() == "":
        return None
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        raise SkippableRecordError(f"amount: not a number: {value!r}", key=key, field="amount") from None
    if not amount.is_finite():
        raise SkippableRecordError(f"amount: not a finite number: {value!r}", key=key, field="amount")
    return amount


def _text(value: str | None) -> str | None:
    return value if value not in (None, "") else None


def min_id(ids: Sequence[str]) -> str | None:
    """The lowest of HubSpot's numeric ids: the earliest created of the records."""
    return min(ids, key=lambda i: (len(i), i)) if ids else None


# -- pipelines -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stage:
    """A deal stage as its pipeline defines it (``metadata.isClosed`` and ``metadata.probability``)."""

    pipeline: str
    stage: str
    label: str | None
    order: int
    probability: float | None
    is_closed: bool

    @property
    def is_won(self) -> bool:
        # HubSpot has no "won" flag: a closed stage at probability 1.0 is won, at 0.0 lost.
        return self.is_closed and self.probability == 1.0

    def record(self) -> PipelineStageRecord:
        return PipelineStageRecord(
            pipeline=self.pipeline,
            stage=self.stage,
            sort_order=self.order,
            probability=self.probability,
            is_closed=self.is_closed,
            is_won=self.is_won,
            label=self.label,
        )


class StageTable:
    """Every active stage of the deal pipelines, found by pipeline and stage id.

    Stage ids are unique in a portal, so a deal read without its ``pipeline`` (or with one that
    does not name the stage's) is classified by the stage id alone when that is unambiguous.
    """

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)
        self._by_key = {(s.pipeline, s.stage): s for s in stages}
        self._by_stage: dict[str, Stage | None] = {}
        for s in stages:
            self._by_stage[s.stage] = None if s.stage in self._by_stage else s

    @classmethod
    def from_pipelines(cls, pipelines: Sequence[Any]) -> StageTable:
        stages: list[Stage] = []
        for pipeline in pipelines:
            if pipeline.archived:
                continue
            for stage in pipeline.stages or []:
                if stage.archived:
                    continue
                metadata: Mapping[str, str] = stage.metadata or {}
                stages.append(
                    Stage(
                        pipeline=str(pipeline.id),
                        stage=str(stage.id),
                        label=stage.label,
                        order=int(stage.display_order or 0),
                        probability=_probability(metadata.get("probability")),
                        is_closed=str(metadata.get("isClosed", "false")).strip().lower() == "true",
                    )
                )
        return cls(stages)

    def lookup(self, pipeline: str | None, stage: str) -> Stage | None:
        found = self._by_key.get((pipeline, stage)) if pipeline is not None else None
        return found or self._by_stage.get(stage)

    def open_stages(self) -> list[str]:
        return sorted({s.stage for s in self.stages if not s.is_closed})


def _probability(value: str | None) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        probability = float(value)
    except ValueError:
        return None
    return probability if 0.0 <= probability <= 1.0 else None


# -- owners and teams ----------------------------------------------------------------------------


def primary_team(owner: Any) -> Any | None:
    """The owner's primary team; HubSpot marks one, else the first listed."""
    teams = list(owner.teams or [])
    for team in teams:
        if team.primary:
            return team
    return teams[0] if teams else None


def owner_record(owner: Any) -> OwnerRecord:
    name = " ".join(part for part in (owner.first_name, owner.last_name) if part) or None
    team = primary_team(owner)
    return OwnerRecord(
        external_id=str(owner.id),
        name=name,
        email=owner.email or None,
        # An archived owner is a deactivated user: kept (their deals still point at them), inactive.
        active=not owner.archived,
        team_external_id=str(team.id) if team is not None else None,
        remote_updated_at=aware(owner.updated_at),
        raw={
            "id": owner.id,
            "email": owner.email,
            "firstName": owner.first_name,
            "lastName": owner.last_name,
            "userId": owner.user_id,
            "type": owner.type,
            "archived": owner.archived,
            "teams": [{"id": t.id, "name": t.name, "primary": t.primary} for t in owner.teams or []],
        },
    )


def team_records(owners: Sequence[Any]) -> list[TeamRecord]:
    """Every team any owner belongs to, once (HubSpot lists teams only through their members)."""
    teams: dict[str, TeamRecord] = {}
    for owner in owners:
        for team in owner.teams or []:
            key = str(team.id)
            if key not in teams:
                teams[key] = TeamRecord(external_id=key, name=team.name or key, level="team")
    return [teams[key] for key in sorted(teams)]


# -- deals ---------------------------------------------------------------------------------------


class DealMapper:
    """Deals → :class:`OpportunityRecord`, classified by the pipelines' stage metadata."""

    def __init__(self, settings: HubSpotSettings, stages: StageTable) -> None:
        self.stages = stages
        self.currency = settings.currency
        self.custom = dict(settings.deal_properties)
        self.unknown_stages: set[str] = set()

    @property
    def properties(self) -> list[str]:
        return list(dict.fromkeys([*DEAL_PROPERTIES, *self.custom.values()]))

    def record(self, deal: Any, contacts: Sequence[str], company: str | None = None) -> OpportunityRecord:
        key = str(deal.id)
        p: Mapping[str, str | None] = deal.properties or {}
        stage_id = _text(p.get("dealstage"))
        pipeline = _text(p.get("pipeline"))
        stage = self.stages.lookup(pipeline, stage_id) if stage_id is not None else None
        if stage_id is not None and stage is None:
            self.unknown_stages.add(stage_id)
        if stage is not None and pipeline is None:
            pipeline = stage.pipeline
        closedate = parse_datetime(p.get("closedate"), key=key, field="closedate")
        is_closed = stage is not None and stage.is_closed
        currency = (_text(p.get("deal_currency_code")) or self.currency).upper()
        if len(currency) != 3 or not currency.isalpha():
            raise SkippableRecordError(
                f"deal_currency_code: not an ISO 4217 code: {currency!r}", key=key, field="deal_currency_code"
            )
        modified = p.get("hs_lastmodifieddate")
        return OpportunityRecord(
            external_id=key,
            owner_external_id=_text(p.get("hubspot_owner_id")),
            name=_text(p.get("dealname")),
            amount=parse_amount(p.get("amount"), key=key),
            currency=currency,
            stage=stage_id,
            probability=stage.probability if stage is not None else None,
            pipeline=pipeline,
            created_at=parse_datetime(p.get("createdate"), key=key, field="createdate"),
            close_date=closedate.date() if closedate is not None else None,
            # An open deal's close date is a forecast, not the moment it closed.
            closed_at=closedate if is_closed else None,
            is_closed=is_closed,
            is_won=stage is not None and stage.is_won,
            lead_external_id=min_id(contacts),
            account_external_id=company,
            remote_updated_at=(
                parse_datetime(modified, key=key, field="hs_lastmodifieddate") or aware(deal.updated_at)
            ),
            custom={name: _text(p.get(prop)) for name, prop in self.custom.items()},
            raw={
                "id": key,
                "properties": p,
                "contacts": sorted(contacts, key=lambda i: (len(i), i)),
                "company": company,
            },
        )


def stage_changes(deal: Any) -> list[StageChangeRecord]:
    """A deal's ``dealstage`` history (``propertiesWithHistory``) as stage changes, oldest first."""
    key = str(deal.id)
    history = (deal.properties_with_history or {}).get("dealstage") or []
    steps: list[tuple[datetime, str]] = []
    for entry in history:
        at = aware(entry.timestamp)
        if entry.value and at is not None:
            steps.append((at, str(entry.value)))
    steps.sort(key=lambda step: step[0])
    changes: list[StageChangeRecord] = []
    previous: str | None = None
    for at, value in steps:
        if value == previous:
            continue  # the same stage set again (an import, a workflow): not a change
        changes.append(
            StageChangeRecord(
                opportunity_external_id=key,
                to_stage=value,
                changed_at=at,
                from_stage=previous,
            )
        )
        previous = value
    return changes


# -- contacts ------------------------------------------------------------------------------------


class ContactMapper:
    """Contacts that reached the lead stage → :class:`LeadRecord`, converted or not."""

    def __init__(self, settings: HubSpotSettings) -> None:
        self.lead_stages = settings.lead_stages
        self.converted_stages = settings.converted_stages
        self.lead_stage = settings.lead_stage
        self.custom = dict(settings.contact_properties)

    @property
    def properties(self) -> list[str]:
        entered = [entered_property(stage) for stage in self.lead_stages]
        return list(dict.fromkeys([*CONTACT_PROPERTIES, *entered, *self.custom.values()]))

    def segment(self) -> tuple[tuple[dict[str, Any], ...], ...]:
        """Search filter groups selecting the contacts that are (or were) leads."""
        return (
            ({"propertyName": "lifecyclestage", "operator": "IN", "values": list(self.lead_stages)},),
            ({"propertyName": entered_property(self.lead_stage), "operator": "HAS_PROPERTY"},),
        )

    def unconverted_segment(self) -> tuple[tuple[dict[str, Any], ...], ...]:
        """Leads not converted by their lifecycle stage: those an associated deal may convert."""
        open_stages = [s for s in self.lead_stages if s not in self.converted_stages]
        return (({"propertyName": "lifecyclestage", "operator": "IN", "values": open_stages},),)

    def has_conversion_date(self, contact: Any) -> bool:
        """Whether the contact says when it entered a converted stage."""
        p: Mapping[str, str | None] = contact.properties or {}
        return any(p.get(entered_property(s)) for s in self.converted_stages)

    def record(
        self,
        contact: Any,
        deals: Sequence[str],
        deal_created: Mapping[str, datetime | None],
        company_id: str | None = None,
    ) -> LeadRecord | None:
        """The lead, or ``None`` for a contact that never reached the lead stage."""
        key = str(contact.id)
        p: Mapping[str, str | None] = contact.properties or {}
        stage = _text(p.get("lifecyclestage"))
        entered = {
            s: parse_datetime(p.get(entered_property(s)), key=key, field=entered_property(s))
            for s in self.lead_stages
        }
        if stage not in self.lead_stages and not any(entered.values()):
            return None
        converted_times = [entered[s] for s in self.converted_stages if entered.get(s) is not None]
        deal = min_id(deals)
        is_converted = stage in self.converted_stages or bool(converted_times) or deal is not None
        converted_at: datetime | None = None
        if converted_times:
            converted_at = min(t for t in converted_times if t is not None)
        elif deal is not None:
            converted_at = deal_created.get(deal)
        name = " ".join(part for part in (_text(p.get("firstname")), _text(p.get("lastname"))) if part)
        return LeadRecord(
            external_id=key,
            owner_external_id=_text(p.get("hubspot_owner_id")),
            name=name or None,
            email=_text(p.get("email")),
            company=_text(p.get("company")),
            account_external_id=company_id,
            source=_text(p.get("hs_analytics_source")),
            status=stage,
            created_at=parse_datetime(p.get("createdate"), key=key, field="createdate"),
            is_converted=is_converted,
            converted_at=converted_at if is_converted else None,
            converted_opportunity_external_id=deal,
            remote_updated_at=parse_datetime(p.get("lastmodifieddate"), key=key, field="lastmodifieddate")
            or aware(contact.updated_at),
            custom={name: _text(p.get(prop)) for name, prop in self.custom.items()},
            raw={
                "id": key,
                "properties": p,
                "deals": sorted(deals, key=lambda i: (len(i), i)),
                "company": company_id,
            },
        )


def modified_millis(obj: Any, modified: str) -> int:
    """An object's modified date in ms: the property the search sorts on, else ``updatedAt``."""
    value = (obj.properties or {}).get(modified)
    if value:
        try:
            return parse_millis(value)
        except ValueError:
            pass
    updated = aware(obj.updated_at)
    return to_millis(updated) if updated is not None else 0


# -- companies -----------------------------------------------------------------------------------

COMPANY_PROPERTIES: tuple[str, ...] = (
    "name",
    "domain",
    "hubspot_owner_id",
    "industry",
    "hs_parent_company_id",
    "createdate",
    "hs_lastmodifieddate",
)


class CompanyMapper:
    """Companies → :class:`AccountRecord`.

    The parent is ``hs_parent_company_id``, the property HubSpot keeps in step with the
    company-to-company parent association: unlike the association, setting it moves the child's
    modified date, so an incremental read sees a new parent.
    """

    def __init__(self, settings: HubSpotSettings) -> None:
        self.segment = settings.company_segment
        self.custom = dict(settings.company_properties)

    @property
    def properties(self) -> list[str]:
        return list(dict.fromkeys([*COMPANY_PROPERTIES, self.segment, *self.custom.values()]))

    def record(self, company: Any) -> AccountRecord:
        key = str(company.id)
        p: Mapping[str, str | None] = company.properties or {}
        parent = _text(p.get("hs_parent_company_id"))
        return AccountRecord(
            external_id=key,
            name=_text(p.get("name")),
            owner_external_id=_text(p.get("hubspot_owner_id")),
            industry=_text(p.get("industry")),
            segment=_text(p.get(self.segment)),
            parent_external_id=parent if parent != key else None,
            created_at=parse_datetime(p.get("createdate"), key=key, field="createdate")
            or aware(company.created_at),
            remote_updated_at=parse_datetime(
                p.get("hs_lastmodifieddate"), key=key, field="hs_lastmodifieddate"
            )
            or aware(company.updated_at),
            custom={name: _text(p.get(prop)) for name, prop in self.custom.items()},
            raw={"id": key, "properties": p},
        )


# -- engagements (activities) --------------------------------------------------------------------

#: HubSpot's default call outcomes: ``hs_call_disposition`` holds the outcome's id, not its label.
CALL_OUTCOMES: Mapping[str, str] = {
    "9d9162e7-6cf3-4944-bf63-4dff82258764": "Busy",
    "f240bbac-87c9-4f6e-bf70-924b57d47db7": "Connected",
    "a4c4c377-d246-4b32-a13b-75a56a4cd0ff": "Left live message",
    "b2cf5968-551e-4856-9783-52b3da59a7d0": "Left voicemail",
    "73a0d17f-1163-4015-bdd5-ec830791da20": "No answer",
    "17b47fee-58de-441e-a44c-c6300d46f273": "Wrong number",
}
#: Properties read of every engagement, and of each kind.
ENGAGEMENT_PROPERTIES: tuple[str, ...] = (
    "hs_timestamp",
    "hubspot_owner_id",
    "hs_createdate",
    "hs_lastmodifieddate",
)
KIND_PROPERTIES: Mapping[str, tuple[str, ...]] = {
    "calls": (
        "hs_call_title",
        "hs_call_duration",
        "hs_call_disposition",
        "hs_call_status",
        "hs_call_direction",
        "hs_activity_type",
    ),
    "meetings": (
        "hs_meeting_title",
        "hs_meeting_start_time",
        "hs_meeting_end_time",
        "hs_meeting_outcome",
        "hs_activity_type",
    ),
    "emails": ("hs_email_subject", "hs_email_direction", "hs_email_status"),
    "notes": (),
    "tasks": ("hs_task_subject", "hs_task_status", "hs_task_type", "hs_task_completion_date"),
}
#: Each engagement object's activity type, before the settings' ``activity_types``.
ACTIVITY_OF: Mapping[str, str] = {
    "calls": "call",
    "meetings": "meeting",
    "emails": "email",
    "notes": "note",
    "tasks": "task",
}
# Calls not (or not yet) made, and meetings that did not take place: not completed.
_CALLS_NOT_DONE = frozenset(
    {"QUEUED", "RINGING", "CONNECTING", "IN_PROGRESS", "CALLING_CRM_USER", "CANCELED", "FAILED"}
)
_MEETINGS_NOT_DONE = frozenset({"SCHEDULED", "RESCHEDULED", "NO_SHOW", "CANCELED"})


@dataclass(frozen=True, slots=True)
class Links:
    """The records an engagement concerns: its company, deal and contact (the lowest id of each)."""

    company: str | None = None
    deal: str | None = None
    contact: str | None = None


class EngagementMapper:
    """Calls, meetings, emails, notes and tasks → :class:`ActivityRecord`.

    The CRM's own kind is the subtype: a call's or meeting's type (``hs_activity_type``, which
    the portal defines), an email's direction, a task's type; ``activity_types`` maps any of them
    to an activity type of its own ("Site visit" -> visit).
    """

    def __init__(self, settings: HubSpotSettings) -> None:
        self.types = dict(settings.activity_types)
        self.outcomes = {**CALL_OUTCOMES, **settings.call_outcomes}

    @staticmethod
    def properties(kind: str) -> list[str]:
        return list(dict.fromkeys([*ENGAGEMENT_PROPERTIES, *KIND_PROPERTIES[kind]]))

    def record(self, kind: str, obj: Any, links: Links) -> ActivityRecord:
        key = str(obj.id)
        p: Mapping[str, str | None] = obj.properties or {}

        def when(prop: str) -> datetime | None:
            return parse_datetime(p.get(prop), key=key, field=prop)

        occurred_at = when("hs_timestamp")
        subtype: str | None = None
        subject: str | None = None
        duration: int | None = None
        outcome: str | None = None
        completed = True
        if kind == "calls":
            subtype = _text(p.get("hs_activity_type"))
            subject = _text(p.get("hs_call_title"))
            duration = _milliseconds_to_seconds(p.get("hs_call_duration"), key=key)
            status = _text(p.get("hs_call_status"))
            disposition = _text(p.get("hs_call_disposition"))
            outcome = self.outcomes.get(disposition, disposition) if disposition is not None else status
            completed = status not in _CALLS_NOT_DONE
        elif kind == "meetings":
            subtype = _text(p.get("hs_activity_type"))
            subject = _text(p.get("hs_meeting_title"))
            start, end = when("hs_meeting_start_time"), when("hs_meeting_end_time")
            occurred_at = start or occurred_at
            if start is not None and end is not None and end >= start:
                duration = int((end - start).total_seconds())
            outcome = _text(p.get("hs_meeting_outcome"))
            completed = outcome not in _MEETINGS_NOT_DONE
        elif kind == "emails":
            subtype = _text(p.get("hs_email_direction"))
            subject = _text(p.get("hs_email_subject"))
            outcome = _text(p.get("hs_email_status"))
        elif kind == "tasks":
            subtype = _text(p.get("hs_task_type"))
            subject = _text(p.get("hs_task_subject"))
            completed = _text(p.get("hs_task_status")) == "COMPLETED"
            # A done task happened when it was completed; an open one is counted at its due date.
            done_at = when("hs_task_completion_date") if completed else None
            occurred_at = done_at or occurred_at
        if occurred_at is None:
            field = "hs_meeting_start_time" if kind == "meetings" else "hs_timestamp"
            raise SkippableRecordError(
                f"{field} is missing: the {kind[:-1]} has no time", key=key, field=field
            )
        activity_type = (
            self.types.get(subtype, ACTIVITY_OF[kind]) if subtype is not None else ACTIVITY_OF[kind]
        )
        return ActivityRecord(
            external_id=key,
            type=activity_type,
            occurred_at=occurred_at,
            owner_external_id=_text(p.get("hubspot_owner_id")),
            subtype=subtype,
            subject=subject,
            duration_seconds=duration,
            outcome=outcome,
            is_completed=completed,
            account_external_id=links.company,
            opportunity_external_id=links.deal,
            lead_external_id=links.contact,
            created_at=when("hs_createdate") or aware(obj.created_at),
            remote_updated_at=when("hs_lastmodifieddate") or aware(obj.updated_at),
            raw={
                "id": key,
                "object": kind,
                "properties": p,
                "company": links.company,
                "deal": links.deal,
                "contact": links.contact,
            },
        )


def _milliseconds_to_seconds(value: str | None, *, key: str) -> int | None:
    """A call's ``hs_call_duration`` (milliseconds, as text) in whole seconds, rounded half up."""
    if value is None or value.strip() == "":
        return None
    try:
        millis = Decimal(value.strip())
    except InvalidOperation:
        millis = Decimal("NaN")
    if not millis.is_finite() or millis < 0:
        raise SkippableRecordError(
            f"hs_call_duration: not a duration in milliseconds: {value!r}", key=key, field="hs_call_duration"
        )
    return int((millis + 500) // 1000)
