"""Canonical records → store rows, each with a content hash.

The hash lets the engine skip rows that did not change (most of an incremental re-read), count
inserts and updates exactly, and leave ``synced_at`` untouched for unchanged rows, which is what
an incremental KPI refresh keys on.

This is also where text that no store can hold is dealt with, once for every connector and alike
for both stores (see :func:`to_row`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import String, Table

from crm_perf_sync.connector_sdk import (
    AccountRecord,
    ActivityRecord,
    Entity,
    LeadRecord,
    OpportunityRecord,
    OwnerRecord,
    PipelineStageRecord,
    StageChangeRecord,
    TeamRecord,
)
from crm_perf_sync.kit.bulk import RawJSON
from crm_perf_sync.kit.canonical import HASH_OPTIONS, json_default
from crm_perf_sync.models import (
    Account,
    Activity,
    Lead,
    Opportunity,
    Owner,
    PipelineStage,
    StageChange,
    Team,
)

Row = dict[str, Any]


def _team(r: TeamRecord) -> Row:
    return {
        "external_id": r.external_id,
        "name": r.name,
        "level": r.level,
        "parent_external_id": r.parent_external_id,
    }


def _owner(r: OwnerRecord) -> Row:
    return {
        "external_id": r.external_id,
        "name": r.name,
        "email": r.email.strip().lower() if r.email else None,
        "active": r.active,
        "team_external_id": r.team_external_id,
        "remote_updated_at": r.remote_updated_at,
        "raw": r.raw,
        "is_deleted": False,
        "deleted_at": None,
    }


def _lead(r: LeadRecord) -> Row:
    return {
        "external_id": r.external_id,
        "owner_external_id": r.owner_external_id,
        "name": r.name,
        "email": r.email,
        "company": r.company,
        "account_external_id": r.account_external_id,
        "source": r.source,
        "status": r.status,
        "created_at": r.created_at,
        "is_converted": r.is_converted,
        "converted_at": r.converted_at,
        "converted_opportunity_external_id": r.converted_opportunity_external_id,
        "is_deleted": r.is_deleted,
        "deleted_at": r.remote_updated_at if r.is_deleted else None,
        "remote_updated_at": r.remote_updated_at,
        "custom": dict(r.custom),
        "raw": r.raw,
    }


def _opportunity(r: OpportunityRecord) -> Row:
    return {
        "external_id": r.external_id,
        "owner_external_id": r.owner_external_id,
        "name": r.name,
        "amount": r.amount,
        "currency": r.currency.upper() if r.currency else None,
        "stage": r.stage,
        "probability": r.probability,
        "pipeline": r.pipeline,
        "forecast_category": r.forecast_category,
        "type": r.type,
        "lead_source": r.lead_source,
        "account_external_id": r.account_external_id,
        "product": r.product,
        "created_at": r.created_at,
        "close_date": r.close_date,
        "closed_at": r.closed_at,
        "is_closed": r.is_closed,
        "is_won": r.is_won,
        "lead_external_id": r.lead_external_id,
        "is_deleted": r.is_deleted,
        "deleted_at": r.remote_updated_at if r.is_deleted else None,
        "remote_updated_at": r.remote_updated_at,
        "custom": dict(r.custom),
        "raw": r.raw,
    }


def _account(r: AccountRecord) -> Row:
    return {
        "external_id": r.external_id,
        "name": r.name,
        "owner_external_id": r.owner_external_id,
        "industry": r.industry,
        "segment": r.segment,
        "parent_external_id": r.parent_external_id,
        "created_at": r.created_at,
        "is_deleted": r.is_deleted,
        "deleted_at": r.remote_updated_at if r.is_deleted else None,
        "remote_updated_at": r.remote_updated_at,
        "custom": dict(r.custom),
        "raw": r.raw,
    }


def _activity(r: ActivityRecord) -> Row:
    return {
        "external_id": r.external_id,
        "type": r.type,
        "subtype": r.subtype,
        "owner_external_id": r.owner_external_id,
        "subject": r.subject,
        "occurred_at": r.occurred_at,
        "duration_seconds": r.duration_seconds,
        "outcome": r.outcome,
        "is_completed": r.is_completed,
        "account_external_id": r.account_external_id,
        "opportunity_external_id": r.opportunity_external_id,
        "lead_external_id": r.lead_external_id,
        "created_at": r.created_at,
        "is_deleted": r.is_deleted,
        "deleted_at": r.remote_updated_at if r.is_deleted else None,
        "remote_updated_at": r.remote_updated_at,
        "custom": dict(r.custom),
        "raw": r.raw,
    }


def _stage_change(r: StageChangeRecord) -> Row:
    external_id = r.external_id or f"{r.opportunity_external_id}@{r.changed_at.isoformat()}>{r.to_stage}"
    return {
        "external_id": external_id,
        "opportunity_external_id": r.opportunity_external_id,
        "from_stage": r.from_stage,
        "to_stage": r.to_stage,
        "changed_at": r.changed_at,
        "source": "crm",
    }


def _pipeline_stage(r: PipelineStageRecord) -> Row:
    return {
        "external_id": r.external_id,
        "pipeline": r.pipeline,
        "stage": r.stage,
        "label": r.label,
        "sort_order": r.sort_order,
        "probability": r.probability,
        "is_closed": r.is_closed,
        "is_won": r.is_won,
        "is_deleted": False,
        "deleted_at": None,
    }


TO_ROW: Mapping[Entity, Callable[[Any], Row]] = {
    "teams": _team,
    "owners": _owner,
    "accounts": _account,
    "leads": _lead,
    "opportunities": _opportunity,
    "activities": _activity,
    "stage_changes": _stage_change,
    "pipeline_stages": _pipeline_stage,
}


# --- text no store can hold ---------------------------------------------------------------------------

#: NUL, which PostgreSQL refuses in text (and as ``\u0000`` in jsonb) and SQLite keeps but cuts
#: short in comparisons, and unpaired surrogates, which neither driver can encode as UTF-8. They
#: reach a record from any source: a NUL byte in a CSV cell, a ``\u0000`` escape in a JSON API.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
#: How a NUL looks in the JSON orjson renders (a surrogate makes orjson raise instead).
_JSON_NUL = b"\\u0000"


def unstorable_kind(text: str) -> str | None:
    """What in ``text`` no store can hold ("a NUL character", ...), or ``None`` when it is storable."""
    found = UNSTORABLE.search(text)
    if found is None:
        return None
    return "a NUL character" if found.group() == "\x00" else "an unpaired surrogate"


def _escape_one(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


def escape_unstorable(value: Any) -> Any:
    """``value`` (text, or a JSON-like tree) with unstorable characters spelled out (``\\x00``).

    For reports of bad records, whose point is to show what was wrong: the character stays
    visible instead of disappearing.
    """
    if isinstance(value, str):
        return UNSTORABLE.sub(_escape_one, value)
    if isinstance(value, Mapping):
        return {escape_unstorable(key): escape_unstorable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [escape_unstorable(item) for item in value]
    return value


class UnstorableId(ValueError):
    """A record's own id, or its reference to another record, cannot be stored as it is (it holds
    characters no store can hold, or is longer than the column): the record cannot be stored."""

    def __init__(self, message: str, field: str = "external_id") -> None:
        super().__init__(message)
        self.field = field


def _bounded(table: Table) -> tuple[tuple[str, int], ...]:
    return tuple(
        (column.name, column.type.length)
        for column in table.columns
        if isinstance(column.type, String) and column.type.length
    )


#: The text columns of each entity's table that hold at most so many characters. PostgreSQL
#: refuses a longer value (the whole batch with it) while SQLite stores it whole: the engine
#: treats both alike, before either sees the row.
BOUNDED: Mapping[Entity, tuple[tuple[str, int], ...]] = {
    "teams": _bounded(Team.__table__),  # type: ignore[arg-type]
    "owners": _bounded(Owner.__table__),  # type: ignore[arg-type]
    "accounts": _bounded(Account.__table__),  # type: ignore[arg-type]
    "leads": _bounded(Lead.__table__),  # type: ignore[arg-type]
    "opportunities": _bounded(Opportunity.__table__),  # type: ignore[arg-type]
    "activities": _bounded(Activity.__table__),  # type: ignore[arg-type]
    "stage_changes": _bounded(StageChange.__table__),  # type: ignore[arg-type]
    "pipeline_stages": _bounded(PipelineStage.__table__),  # type: ignore[arg-type]
}


def _cut_overlong(entity: Entity, row: Row) -> list[str]:
    """Cut text longer than its column to the column's length, in place; the names cut.

    An id, or a reference to another record's id, is never cut: two ids that differ only past
    the limit would become one record. Such a record cannot be stored (:class:`UnstorableId`).
    """
    cut: list[str] = []
    for name, limit in BOUNDED[entity]:
        value = row.get(name)
        if not isinstance(value, str) or len(value) <= limit:
            continue  # (a number for a text column becomes text at the store, far within any limit)
        if name == "external_id" or name.endswith("_external_id"):
            raise UnstorableId(
                f"{name} is {len(value)} characters long; the store holds at most {limit}", field=name
            )
        row[name] = value[:limit]
        cut.append(name)
    return cut


@dataclass(slots=True)
class Removed:
    """Where :func:`to_row` removed unstorable characters from a record, for the run's warning."""

    paths: list[str] = field(default_factory=list)
    nul: bool = False
    surrogate: bool = False
    #: Columns whose text was longer than the column and was cut to its length.
    cut: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.paths or self.cut)

    @property
    def first(self) -> str:
        """The first place changed, for the warning's field."""
        return (self.paths or self.cut)[0]

    def message(self) -> str:
        parts = []
        if self.paths:
            kinds = " and ".join(
                name
                for name, present in (("NUL characters", self.nul), ("unpaired surrogates", self.surrogate))
                if present
            )
            parts.append(f"{kinds} removed from {', '.join(self.paths)}: no store can hold them")
        if self.cut:
            parts.append(f"{', '.join(self.cut)} cut to the length the store holds")
        return "; ".join(parts)


def _strip(text: str, path: str, removed: Removed) -> str:
    for char in set(UNSTORABLE.findall(text)):
        if char == "\x00":
            removed.nul = True
        else:
            removed.surrogate = True
    if path not in removed.paths:
        removed.paths.append(path)
    return UNSTORABLE.sub("", text)


def _strip_tree(value: Any, path: str, removed: Removed) -> Any:
    if isinstance(value, str):
        return _strip(value, path, removed) if UNSTORABLE.search(value) else value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            name = key
            if isinstance(key, str) and UNSTORABLE.search(key):
                name = _strip(key, f"{path}.{UNSTORABLE.sub('', key)}", removed)
            out[name] = _strip_tree(item, f"{path}.{name}", removed)
        return out
    if isinstance(value, list | tuple):
        return [_strip_tree(item, f"{path}[{index}]", removed) for index, item in enumerate(value)]
    return value


def _strip_row(row: Row, removed: Removed) -> None:
    """Remove unstorable characters from ``row`` in place; an id holding any cannot be stored."""
    for name, value in row.items():
        if name == "external_id" and isinstance(value, str):
            kind = unstorable_kind(value)
            if kind is not None:
                raise UnstorableId(f"external_id {value!r} holds {kind}, which no store can hold")
        row[name] = _strip_tree(value, name, removed)


class _MaybeUnstorable(Exception):
    """The rendered row shows ``\\u0000``: a NUL, or text that only looks like its escape."""


def _hashed(row: Row, *, check: bool) -> Row:
    raw = row.get("raw")
    if raw is None:
        payload = orjson.dumps(row, default=json_default, option=HASH_OPTIONS)
        if check and _JSON_NUL in payload:
            raise _MaybeUnstorable
        row["content_hash"] = hashlib.blake2b(payload, digest_size=16).hexdigest()
        return row
    # The payload is the bulk of a row: it is rendered to JSON once, with sorted keys, and that text
    # is both hashed (as a fragment of the row's JSON, the same bytes as rendering it in place) and
    # stored, instead of converting it to plain JSON types, rendering it to hash and again to store.
    rendered = orjson.dumps(raw, default=json_default, option=HASH_OPTIONS)
    row["raw"] = orjson.Fragment(rendered)
    try:
        payload = orjson.dumps(row, default=json_default, option=HASH_OPTIONS)
        if check and _JSON_NUL in payload:
            raise _MaybeUnstorable
    except (orjson.JSONEncodeError, _MaybeUnstorable):
        row["raw"] = raw  # the caller cleans the row, payload included
        raise
    row["content_hash"] = hashlib.blake2b(payload, digest_size=16).hexdigest()
    row["raw"] = RawJSON(rendered.decode())
    return row


def to_row(entity: Entity, record: Any, removed: Removed | None = None) -> Row:
    """The store row for ``record`` with its ``content_hash`` (bookkeeping columns excluded).

    Text longer than its column is cut to the column's length (an id is not: see
    :func:`_cut_overlong`), the same on both stores, and reported like removed characters.
    Text no store can hold (NUL, unpaired surrogates) is removed from the row's values, its
    ``custom`` dimensions and its raw payload, and where it was is added to ``removed``: the
    engine records that as a warning of the run. Removing rather than refusing the record keeps
    the deal in the KPIs: such a character carries no meaning in CRM text, and a whole deal
    missing from won revenue is worse than a name without a NUL. The record's own id is the
    exception: removing characters from it could make it another record's id and merge the two,
    so :class:`UnstorableId` is raised and the engine reports the record as bad.

    The common case pays one substring search of the JSON the hash renders anyway.
    """
    row = TO_ROW[entity](record)
    cut = _cut_overlong(entity, row)
    if cut and removed is not None:
        removed.cut.extend(cut)
    error: orjson.JSONEncodeError | None = None
    try:
        return _hashed(row, check=True)
    except orjson.JSONEncodeError as exc:  # an unpaired surrogate, or a value that is not JSON
        error = exc
    except _MaybeUnstorable:
        pass
    found = Removed()
    _strip_row(row, found)
    if not found and error is not None:
        raise error
    if found and removed is not None:
        removed.paths.extend(found.paths)
        removed.nul |= found.nul
        removed.surrogate |= found.surrogate
    return _hashed(row, check=False)


def observed_change_id(opportunity_external_id: str, changed_at: datetime, to_stage: str) -> str:
    """Stable key of a stage change seen between two syncs, so a re-run never records it twice."""
    return f"observed:{opportunity_external_id}@{changed_at.isoformat()}>{to_stage}"
