"""Canonical records: what a connector yields, whatever CRM it reads.

Records are plain slotted dataclasses, not pydantic models: a connector builds one per CRM row,
and a sync of millions of rows cannot afford validation twice. The sync engine checks the
invariants that matter for the store (aware datetimes, probabilities in [0, 1], ISO currency
codes) once, in :meth:`validate`.

Conventions
- ``external_id`` is the record's id in the source CRM, unique per connection and entity.
- References to other records (``owner_external_id``, ``lead_external_id`` ...) are external ids
  too: streams can arrive in any order, and the store resolves them when it is queried.
- Every datetime is timezone-aware; convert naive source values with
  :func:`crm_perf_sync.connector_sdk.ensure_utc` using the source's timezone.
- Accounts (customers) are referenced by ``account_external_id``; a CRM that names accounts only by
  their name (a CSV export's account column) uses the name as the account's external id.
- ``amount`` is a :class:`~decimal.Decimal` in ``currency`` (ISO 4217); amounts are never
  converted by a connector.
- ``probability`` is a fraction in [0, 1], not a percentage.
- ``custom`` holds the named custom dimensions configured for the connection (scalar values);
  ``raw`` keeps the whole source payload for explanations and later re-mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

Scalar = str | int | float | bool | None

Entity = Literal[
    "owners", "teams", "accounts", "leads", "opportunities", "activities", "stage_changes", "pipeline_stages"
]

#: The kinds of activity every connector maps its CRM's own to, so that ``calls`` means the same
#: whatever the CRM. A configured kind (``demo``, ``site_survey``...) is any other lower-case name.
ACTIVITY_TYPES = ("call", "meeting", "visit", "email", "task", "proposal", "note")

#: An activity's type: lower-case letters, digits and underscores, starting with a letter.
ACTIVITY_TYPE = re.compile(r"[a-z][a-z0-9_]{0,62}")


def _check_aware(record: object, *names: str) -> None:
    for name in names:
        value = getattr(record, name)
        if value is not None and value.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")


@dataclass(slots=True, kw_only=True)
class TeamRecord:
    """A team or a level above it (region, division) as the CRM knows it."""

    external_id: str
    name: str
    parent_external_id: str | None = None
    level: str | None = None
    raw: Mapping[str, Any] | None = None

    def validate(self) -> None:
        if not self.external_id:
            raise ValueError("external_id is empty")


@dataclass(slots=True, kw_only=True)
class OwnerRecord:
    """A rep: the user who owns leads and opportunities."""

    external_id: str
    name: str | None = None
    email: str | None = None
    active: bool = True
    team_external_id: str | None = None
    remote_updated_at: datetime | None = None
    raw: Mapping[str, Any] | None = None

    def validate(self) -> None:
        if not self.external_id:
            raise ValueError("external_id is empty")
        _check_aware(self, "remote_updated_at")


@dataclass(slots=True, kw_only=True)
class AccountRecord:
    """An account: a customer (or a prospect company) that leads, deals and activities concern."""

    external_id: str
    name: str | None = None
    owner_external_id: str | None = None
    industry: str | None = None
    segment: str | None = None
    parent_external_id: str | None = None
    created_at: datetime | None = None
    is_deleted: bool = False
    remote_updated_at: datetime | None = None
    custom: Mapping[str, Scalar] = field(default_factory=dict)
    raw: Mapping[str, Any] | None = None

    def validate(self) -> None:
        if not self.external_id:
            raise ValueError("external_id is empty")
        _check_aware(self, "created_at", "remote_updated_at")
        if self.parent_external_id is not None and self.parent_external_id == self.external_id:
            raise ValueError("an account cannot be its own parent")


@dataclass(slots=True, kw_only=True)
class LeadRecord:
    """A lead (or a contact at the lead stage), converted or not."""

    external_id: str
    owner_external_id: str | None = None
    name: str | None = None
    email: str | None = None
    company: str | None = None
    account_external_id: str | None = None
    source: str | None = None
    status: str | None = None
    created_at: datetime | None = None
    is_converted: bool = False
    converted_at: datetime | None = None
    converted_opportunity_external_id: str | None = None
    is_deleted: bool = False
    remote_updated_at: datetime | None = None
    custom: Mapping[str, Scalar] = field(default_factory=dict)
    raw: Mapping[str, Any] | None = None

    def validate(self) -> None:
        if not self.external_id:
            raise ValueError("external_id is empty")
        _check_aware(self, "created_at", "converted_at", "remote_updated_at")


@dataclass(slots=True, kw_only=True)
class OpportunityRecord:
    """An opportunity (deal), open or closed. A closed deal has ``is_closed`` set."""

    external_id: str
    owner_external_id: str | None = None
    name: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    stage: str | None = None
    probability: float | None = None
    pipeline: str | None = None
    forecast_category: str | None = None
    type: str | None = None
    lead_source: str | None = None
    account_external_id: str | None = None
    product: str | None = None
    created_at: datetime | None = None
    close_date: date | None = None
    closed_at: datetime | None = None
    is_closed: bool = False
    is_won: bool = False
    lead_external_id: str | None = None
    is_deleted: bool = False
    remote_updated_at: datetime | None = None
    custom: Mapping[str, Scalar] = field(default_factory=dict)
    raw: Mapping[str, Any] | None = None

    def validate(self) -> None:
        if not self.external_id:
            raise ValueError("external_id is empty")
        _check_aware(self, "created_at", "closed_at", "remote_updated_at")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be a fraction in [0, 1], got {self.probability}")
        if self.is_won and not self.is_closed:
            raise ValueError("a won opportunity must be closed")
        if self.currency is not None and (len(self.currency) != 3 or not self.currency.isalpha()):
            raise ValueError(f"currency must be an ISO 4217 code, got {self.currency!r}")
        if self.amount is not None:
            if not isinstance(self.amount, Decimal):
                # A binary float is not an exact amount: the connector must parse it as a Decimal.
                raise ValueError(
                    f"amount must be a Decimal, got {type(self.amount).__name__} {self.amount!r}"
                )
            if not self.amount.is_finite():
                raise ValueError(f"amount must be a finite number, got {self.amount}")


@dataclass(slots=True, kw_only=True)
class ActivityRecord:
    """Something a rep did: a call, a meeting, a visit, an email, a task, a proposal, a note.

    ``type`` is one of :data:`ACTIVITY_TYPES` or a configured kind (see :data:`ACTIVITY_TYPE`);
    ``subtype`` keeps the CRM's own finer kind when it has one. ``occurred_at`` is when it
    happened (a call's start, a meeting's start, a task's due or completion time), and it is what
    the KPIs count by. An activity may concern an account, an opportunity and a lead at once.
    """

    external_id: str
    type: str
    occurred_at: datetime
    owner_external_id: str | None = None
    subtype: str | None = None
    subject: str | None = None
    duration_seconds: int | None = None
    outcome: str | None = None
    is_completed: bool = True
    account_external_id: str | None = None
    opportunity_external_id: str | None = None
    lead_external_id: str | None = None
    created_at: datetime | None = None
    is_deleted: bool = False
    remote_updated_at: datetime | None = None
    custom: Mapping[str, Scalar] = field(default_factory=dict)
    raw: Mapping[str, Any] | None = None

    def validate(self) -> None:
        if not self.external_id:
            raise ValueError("external_id is empty")
        if not isinstance(self.type, str) or ACTIVITY_TYPE.fullmatch(self.type) is None:
            raise ValueError(
                f"type must be one of {', '.join(ACTIVITY_TYPES)} or a lower-case name "
                f"(letters, digits, _), got {self.type!r}"
            )
        if self.occurred_at is None:
            raise ValueError("occurred_at is missing")
        _check_aware(self, "occurred_at", "created_at", "remote_updated_at")
        if self.duration_seconds is not None and (
            isinstance(self.duration_seconds, bool) or not isinstance(self.duration_seconds, int)
        ):
            raise ValueError(f"duration_seconds must be a whole number, got {self.duration_seconds!r}")
        if self.duration_seconds is not None and self.duration_seconds < 0:
            raise ValueError(f"duration_seconds cannot be negative, got {self.duration_seconds}")


@dataclass(slots=True, kw_only=True)
class StageChangeRecord:
    """One step of an opportunity's stage history, as recorded by the CRM.

    ``external_id`` is the history row's id when the CRM has one; otherwise the engine derives a
    stable key from the opportunity, the time and the stage so a re-read never duplicates it.
    """

    opportunity_external_id: str
    to_stage: str
    changed_at: datetime
    from_stage: str | None = None
    external_id: str | None = None

    def validate(self) -> None:
        if not self.opportunity_external_id:
            raise ValueError("opportunity_external_id is empty")
        _check_aware(self, "changed_at")


@dataclass(slots=True, kw_only=True)
class PipelineStageRecord:
    """A stage of a sales pipeline: its order, default probability and whether it closes a deal."""

    pipeline: str
    stage: str
    sort_order: int
    probability: float | None = None
    is_closed: bool = False
    is_won: bool = False
    label: str | None = None

    def validate(self) -> None:
        if not self.stage:
            raise ValueError("stage is empty")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be a fraction in [0, 1], got {self.probability}")

    @property
    def external_id(self) -> str:
        return f"{self.pipeline}/{self.stage}"


Record = (
    TeamRecord
    | OwnerRecord
    | AccountRecord
    | LeadRecord
    | OpportunityRecord
    | ActivityRecord
    | StageChangeRecord
    | PipelineStageRecord
)

RECORD_TYPES: Mapping[Entity, type[Any]] = {
    "teams": TeamRecord,
    "owners": OwnerRecord,
    "accounts": AccountRecord,
    "leads": LeadRecord,
    "opportunities": OpportunityRecord,
    "activities": ActivityRecord,
    "stage_changes": StageChangeRecord,
    "pipeline_stages": PipelineStageRecord,
}
