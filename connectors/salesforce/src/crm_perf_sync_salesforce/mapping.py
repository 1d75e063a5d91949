"""Salesforce rows → canonical records.

Rows reach the mapper in one shape whichever API read them: REST JSON as parsed (numbers as
``int`` or exact ``Decimal``), or Bulk CSV text typed by :func:`typed_csv_row` into the same
values. Both go through :func:`canonical`, so the same record read either way has the same raw
payload and the same content hash in the store (a switch between the two paths rewrites nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crm_perf_sync.connector_sdk import (
    AccountRecord,
    ActivityRecord,
    LeadRecord,
    OpportunityRecord,
    OwnerRecord,
    PipelineStageRecord,
    Scalar,
    SkippableRecordError,
    StageChangeRecord,
    TeamRecord,
)

_NUMBER_TYPES = frozenset({"double", "currency", "percent"})
#: Salesforce's own kinds of task (``TaskSubtype``, case-folded) as canonical kinds; any other
#: subtype (Task, Cadence, LinkedIn...) is a ``task``, and every event a ``meeting``.
_TASK_SUBTYPES: Mapping[str, str] = {"call": "call", "email": "email", "listemail": "email"}
#: Key prefixes of the records an activity's WhoId / WhatId point at.
LEAD_PREFIX, ACCOUNT_PREFIX, OPPORTUNITY_PREFIX = "00Q", "001", "006"


def parse_datetime(value: str) -> datetime:
    """``2024-05-01T10:00:00.000+0000`` (REST) or ``...Z`` (Bulk) → an aware UTC datetime."""
    moment = datetime.fromisoformat(value)
    if value.endswith("+0000"):
        return moment  # what Salesforce always sends: already UTC
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    if moment.utcoffset():
        return moment.astimezone(UTC)
    return moment


def _canonical_decimal(value: Decimal) -> int | Decimal:
    # 15000, 15000.0 and "15000.00" are one amount: written one way, hashed one way.
    if value == value.to_integral_value():
        return int(value)
    return value.normalize()


def canonical(record: Mapping[str, Any]) -> dict[str, Any]:
    """A REST record as the raw payload kept in the store: no ``attributes``, numbers normalised."""
    out = dict(record)
    out.pop("attributes", None)
    for key, value in record.items():
        if type(value) is Decimal:
            out[key] = _canonical_decimal(value)
    return out


def typed_csv_row(row: Mapping[str, str], types: Mapping[str, str]) -> dict[str, Any]:
    """A Bulk API CSV row with the values REST would give for the same record."""
    out: dict[str, Any] = {}
    for key, text in row.items():
        ftype = types.get(key, "string")
        if text == "" or text is None:
            out[key] = None  # Salesforce stores no empty strings: an empty cell is null
        elif ftype == "boolean":
            out[key] = text == "true"
        elif ftype == "int":
            out[key] = int(text)
        elif ftype in _NUMBER_TYPES:
            try:
                out[key] = _canonical_decimal(Decimal(text))
            except InvalidOperation:
                out[key] = text
        elif ftype == "datetime" and text.endswith("Z"):
            out[key] = text[:-1] + "+0000"
        else:
            out[key] = text
    return out


@dataclass(frozen=True, slots=True)
class Stage:
    """What ``OpportunityStage`` says about a stage, for deals whose row does not say it."""

    api_name: str
    label: str
    sort_order: int
    probability: float | None
    is_closed: bool
    is_won: bool


@dataclass(frozen=True, slots=True)
class OrgFacts:
    """What the ``Organization`` row says that records need: the default currency and time zone."""

    currency: str | None
    zone: ZoneInfo


def org_zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _id(row: Mapping[str, Any]) -> str:
    value = row.get("Id")
    if not value:
        kind = (row.get("attributes") or {}).get("type")
        raise SkippableRecordError(f"a {kind or 'Salesforce'} record without an Id")
    return str(value)


def _when(row: Mapping[str, Any], name: str, key: str) -> datetime | None:
    value = row.get(name)
    if value is None:
        return None
    try:
        return parse_datetime(value)
    except (TypeError, ValueError):
        raise SkippableRecordError(f"{name} {value!r} is not a date-time", key=key, field=name) from None


def _date(row: Mapping[str, Any], name: str, key: str) -> date | None:
    value = row.get(name)
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise SkippableRecordError(f"{name} {value!r} is not a date", key=key, field=name) from None


def _decimal(value: Any, name: str, key: str) -> Decimal | None:
    """A canonical number (``int`` or ``Decimal``, see :func:`canonical`) as a ``Decimal``."""
    if value is None or type(value) is Decimal:
        return value
    if type(value) is bool:
        raise SkippableRecordError(f"{name} {value!r} is not a number", key=key, field=name)
    try:
        return Decimal(value if isinstance(value, int) else str(value))
    except InvalidOperation:
        raise SkippableRecordError(f"{name} {value!r} is not a number", key=key, field=name) from None


def _whole(value: Any, name: str, key: str) -> int | None:
    """A Salesforce ``int`` field (a whole number, whichever API read it)."""
    if value is None:
        return None
    if type(value) is int:
        return value
    if type(value) is not bool:
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            number = None
        if number is not None and number.is_finite() and number == number.to_integral_value():
            return int(number)
    raise SkippableRecordError(f"{name} {value!r} is not a whole number", key=key, field=name)


def _object(row: Mapping[str, Any]) -> str:
    return str((row.get("attributes") or {}).get("type") or "Salesforce record")


def _fraction(value: Any, name: str, key: str) -> float | None:
    """A Salesforce percent (0-100) as a fraction."""
    if value is None:
        return None
    try:
        fraction = float(value) / 100.0
    except (TypeError, ValueError):
        raise SkippableRecordError(f"{name} {value!r} is not a number", key=key, field=name) from None
    if not 0.0 <= fraction <= 1.0:
        raise SkippableRecordError(f"{name} {value!r} is not a percentage", key=key, field=name)
    return fraction


def _scalar(value: Any) -> Scalar:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Decimal):
        return float(value)  # a dimension, not money: a number stays a number
    return str(value)


class Mapper:
    """Builds the canonical records of one connection from rows of the objects it reads."""

    def __init__(
        self,
        *,
        org: OrgFacts,
        stages: Mapping[str, Stage],
        pipeline: str,
        lead_custom: Mapping[str, str],
        opportunity_custom: Mapping[str, str],
        teams_from_roles: bool,
        keep_raw: bool = True,
        account_custom: Mapping[str, str] | None = None,
        activity_custom: Mapping[str, str] | None = None,
        account_segment: str | None = "Type",
        activity_types: Mapping[str, str] | None = None,
    ) -> None:
        self.org = org
        self.stages = stages
        self.pipeline = pipeline
        self.lead_custom = tuple(lead_custom.items())
        self.opportunity_custom = tuple(opportunity_custom.items())
        self.account_custom = tuple((account_custom or {}).items())
        self.activity_custom = tuple((activity_custom or {}).items())
        self.account_segment = account_segment
        #: Configured kinds by case-folded picklist value (Salesforce picklists ignore case).
        self.activity_types = {
            value.strip().casefold(): kind for value, kind in (activity_types or {}).items()
        }
        self.teams_from_roles = teams_from_roles
        self.keep_raw = keep_raw
        self._midnights: dict[date, datetime] = {}

    def use_custom(self, entity: str, fields: Mapping[str, str]) -> None:
        """Read the custom dimensions of ``entity`` (accounts, leads, opportunities, activities)
        from these fields."""
        if entity == "leads":
            self.lead_custom = tuple(fields.items())
        elif entity == "opportunities":
            self.opportunity_custom = tuple(fields.items())
        elif entity == "accounts":
            self.account_custom = tuple(fields.items())
        elif entity == "activities":
            self.activity_custom = tuple(fields.items())

    def use_segment(self, field: str | None) -> None:
        """Read the accounts' segment from this field (the org's spelling), or from none."""
        self.account_segment = field

    def _midnight(self, day: date | None) -> datetime | None:
        """A date-only Salesforce value as an instant: midnight in the org's time zone."""
        if day is None:
            return None
        found = self._midnights.get(day)
        if found is None:
            found = datetime.combine(day, time(0), tzinfo=self.org.zone).astimezone(UTC)
            if len(self._midnights) < 100_000:  # days repeat a lot; the bound keeps memory flat
                self._midnights[day] = found
        return found

    def team(self, row: Mapping[str, Any]) -> TeamRecord:
        return TeamRecord(
            external_id=_id(row),
            name=str(row.get("Name") or row["Id"]),
            parent_external_id=row.get("ParentRoleId"),
            level="role",
            raw=canonical(row) if self.keep_raw else None,
        )

    def owner(self, row: Mapping[str, Any]) -> OwnerRecord:
        key = _id(row)
        return OwnerRecord(
            external_id=key,
            name=row.get("Name"),
            email=row.get("Email"),
            active=bool(row.get("IsActive", True)),
            team_external_id=row.get("UserRoleId") if self.teams_from_roles else None,
            remote_updated_at=_when(row, "SystemModstamp", key),
            raw=canonical(row) if self.keep_raw else None,
        )

    def pipeline_stage(self, row: Mapping[str, Any]) -> PipelineStageRecord:
        stage = stage_of(row)
        return PipelineStageRecord(
            pipeline=self.pipeline,
            stage=stage.api_name,
            sort_order=stage.sort_order,
            probability=stage.probability,
            is_closed=stage.is_closed,
            is_won=stage.is_won,
            label=stage.label,
        )

    def lead(self, row: Mapping[str, Any]) -> LeadRecord:
        key = _id(row)
        raw = canonical(row)
        return LeadRecord(
            external_id=key,
            owner_external_id=row.get("OwnerId"),
            name=row.get("Name"),
            email=row.get("Email"),
            company=row.get("Company"),
            account_external_id=row.get("ConvertedAccountId"),
            source=row.get("LeadSource"),
            status=row.get("Status"),
            created_at=_when(row, "CreatedDate", key),
            is_converted=bool(row.get("IsConverted")),
            converted_at=self._midnight(_date(row, "ConvertedDate", key)),
            converted_opportunity_external_id=row.get("ConvertedOpportunityId"),
            is_deleted=bool(row.get("IsDeleted")),
            remote_updated_at=_when(row, "SystemModstamp", key),
            custom={name: _scalar(raw.get(field)) for name, field in self.lead_custom},
            raw=raw if self.keep_raw else None,
        )

    def opportunity(self, row: Mapping[str, Any]) -> OpportunityRecord:
        # The hot path of a sync, once per deal: every value is read once, from ``raw``.
        key = _id(row)
        raw = canonical(row)
        get = raw.get
        stage_name = get("StageName")
        stage = self.stages.get(stage_name) if stage_name is not None else None
        # A query that did not select IsClosed / IsWon / Probability (or a row that lacks them)
        # is classified by the stage's metadata.
        is_closed = get("IsClosed")
        if is_closed is None:
            is_closed = stage.is_closed if stage is not None else False
        is_won = get("IsWon")
        if is_won is None:
            is_won = stage.is_won if stage is not None else False
        probability = _fraction(get("Probability"), "Probability", key)
        if probability is None and stage is not None:
            probability = stage.probability
        close_date = _date(raw, "CloseDate", key)
        return OpportunityRecord(
            external_id=key,
            owner_external_id=get("OwnerId"),
            name=get("Name"),
            amount=_decimal(get("Amount"), "Amount", key),
            currency=get("CurrencyIsoCode") or self.org.currency,
            stage=stage_name,
            probability=probability,
            pipeline=self.pipeline,
            forecast_category=get("ForecastCategoryName") or get("ForecastCategory"),
            type=get("Type"),
            lead_source=get("LeadSource"),
            account_external_id=get("AccountId"),
            created_at=_when(raw, "CreatedDate", key),
            close_date=close_date,
            # Salesforce keeps only the close date; a closed deal closed at its start (org time).
            closed_at=self._midnight(close_date) if is_closed else None,
            is_closed=bool(is_closed),
            is_won=bool(is_won),
            is_deleted=bool(get("IsDeleted")),
            remote_updated_at=_when(raw, "SystemModstamp", key),
            custom={name: _scalar(get(field)) for name, field in self.opportunity_custom}
            if self.opportunity_custom
            else {},
            raw=raw if self.keep_raw else None,
        )

    def account(self, row: Mapping[str, Any]) -> AccountRecord:
        key = _id(row)
        raw = canonical(row)
        segment = raw.get(self.account_segment) if self.account_segment else None
        return AccountRecord(
            external_id=key,
            name=raw.get("Name"),
            owner_external_id=raw.get("OwnerId"),
            industry=raw.get("Industry"),
            segment=str(segment) if segment is not None else None,
            parent_external_id=raw.get("ParentId"),
            created_at=_when(raw, "CreatedDate", key),
            is_deleted=bool(raw.get("IsDeleted")),
            remote_updated_at=_when(raw, "SystemModstamp", key),
            custom={name: _scalar(raw.get(field)) for name, field in self.account_custom},
            raw=raw if self.keep_raw else None,
        )

    def _kind(self, picklist: Any, subtype: Any, built_in: str) -> str:
        """The configured kind of the Type picklist value, else of the subtype, else ``built_in``."""
        for value in (picklist, subtype):
            if isinstance(value, str) and value:
                kind = self.activity_types.get(value.strip().casefold())
                if kind is not None:
                    return kind
        return built_in

    def _activity(
        self,
        row: Mapping[str, Any],
        raw: dict[str, Any],
        key: str,
        *,
        kind: str,
        subtype: Any,
        occurred_at: datetime | None,
        duration: int | None,
        outcome: Any,
        is_completed: bool,
    ) -> ActivityRecord:
        if occurred_at is None:
            occurred_at = _when(raw, "CreatedDate", key)
        if occurred_at is None:
            raise SkippableRecordError(f"a {_object(row)} without any date", key=key)
        who, what = raw.get("WhoId"), raw.get("WhatId")
        account = raw.get("AccountId")
        if account is None and isinstance(what, str) and what.startswith(ACCOUNT_PREFIX):
            account = what
        picklist = raw.get("Type")
        opportunity = what if isinstance(what, str) and what.startswith(OPPORTUNITY_PREFIX) else None
        return ActivityRecord(
            external_id=key,
            type=kind,
            occurred_at=occurred_at,
            owner_external_id=raw.get("OwnerId"),
            subtype=picklist or subtype,
            subject=raw.get("Subject"),
            duration_seconds=duration,
            outcome=outcome,
            is_completed=is_completed,
            account_external_id=account,
            # A WhoId is a lead or a contact (the store holds no contacts); a WhatId an account, a
            # deal, or another object (a case, a campaign...) that the store does not hold either.
            opportunity_external_id=opportunity,
            lead_external_id=who if isinstance(who, str) and who.startswith(LEAD_PREFIX) else None,
            created_at=_when(raw, "CreatedDate", key),
            is_deleted=bool(raw.get("IsDeleted")),
            remote_updated_at=_when(raw, "SystemModstamp", key),
            custom={name: _scalar(raw.get(field)) for name, field in self.activity_custom},
            raw=raw if self.keep_raw else None,
        )

    def task(self, row: Mapping[str, Any]) -> ActivityRecord:
        """A task: a call, an email, or a to-do. It happened when it was completed; an open task
        (or one closed before Salesforce kept CompletedDateTime) is placed on its due date."""
        key = _id(row)
        raw = canonical(row)
        subtype = raw.get("TaskSubtype")
        built_in = _TASK_SUBTYPES.get(subtype.casefold(), "task") if isinstance(subtype, str) else "task"
        closed = raw.get("IsClosed")
        if closed is None:
            closed = raw.get("Status") == "Completed"
        occurred_at = _when(raw, "CompletedDateTime", key) if closed else None
        if occurred_at is None:
            occurred_at = self._midnight(_date(raw, "ActivityDate", key))
        return self._activity(
            row,
            raw,
            key,
            kind=self._kind(raw.get("Type"), subtype, built_in),
            subtype=subtype,
            occurred_at=occurred_at,
            duration=_whole(raw.get("CallDurationInSeconds"), "CallDurationInSeconds", key),
            outcome=raw.get("CallDisposition"),
            is_completed=bool(closed),
        )

    def event(self, row: Mapping[str, Any]) -> ActivityRecord:
        """A calendar event: a meeting unless its Type says otherwise. It happened at its start (an
        all-day event at the start of its day in the org's zone); Salesforce has no completion
        for events, so every event counts as done."""
        key = _id(row)
        raw = canonical(row)
        occurred_at = None
        if raw.get("IsAllDayEvent"):
            occurred_at = self._midnight(_date(raw, "ActivityDate", key))
        if occurred_at is None:
            occurred_at = _when(raw, "StartDateTime", key) or _when(raw, "ActivityDateTime", key)
        if occurred_at is None:
            occurred_at = self._midnight(_date(raw, "ActivityDate", key))
        minutes = _whole(raw.get("DurationInMinutes"), "DurationInMinutes", key)
        duration = minutes * 60 if minutes is not None else None
        if duration is None:
            start, end = _when(raw, "StartDateTime", key), _when(raw, "EndDateTime", key)
            if start is not None and end is not None and end >= start:
                duration = int((end - start).total_seconds())
        subtype = raw.get("EventSubtype")
        return self._activity(
            row,
            raw,
            key,
            kind=self._kind(raw.get("Type"), subtype, "meeting"),
            subtype=subtype,
            occurred_at=occurred_at,
            duration=duration,
            outcome=None,
            is_completed=True,
        )

    def stage_change(self, row: Mapping[str, Any]) -> StageChangeRecord:
        key = _id(row)
        stage = row.get("StageName")
        opportunity = row.get("OpportunityId")
        changed_at = _when(row, "CreatedDate", key)
        if not stage or not opportunity or changed_at is None:
            raise SkippableRecordError(
                "an OpportunityHistory row without stage, opportunity or date", key=key
            )
        return StageChangeRecord(
            external_id=key,
            opportunity_external_id=str(opportunity),
            to_stage=str(stage),
            changed_at=changed_at,
        )


def stage_of(row: Mapping[str, Any]) -> Stage:
    """An ``OpportunityStage`` row as a :class:`Stage` (keyed by the picklist value, ``ApiName``)."""
    label = str(row.get("MasterLabel") or row.get("ApiName") or "")
    if not label:
        raise SkippableRecordError("an OpportunityStage without a label", key=row.get("Id"))
    probability = row.get("DefaultProbability")
    sort_order = row.get("SortOrder")
    return Stage(
        api_name=str(row.get("ApiName") or label),
        label=label,
        sort_order=int(sort_order) if sort_order is not None else 0,
        probability=float(probability) / 100.0 if probability is not None else None,
        is_closed=bool(row.get("IsClosed")),
        is_won=bool(row.get("IsWon")),
    )
