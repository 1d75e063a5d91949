"""Canonical records → store rows, each with a content hash.

The hash lets the engine skip rows that did not change (most of an incremental re-read), count
inserts and updates exactly, and leave ``synced_at`` untouched for unchanged rows, which is what
an incremental KPI refresh keys on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from crm_perf_sync.connector_sdk import (
    Entity,
    LeadRecord,
    OpportunityRecord,
    OwnerRecord,
    PipelineStageRecord,
    StageChangeRecord,
    TeamRecord,
)

Row = dict[str, Any]


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


_HASH_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


class RawJSON(str):
    """A raw payload already rendered as JSON text: rendered once, hashed and stored as it is."""

    __slots__ = ()


def content_hash(row: Mapping[str, Any]) -> str:
    payload = orjson.dumps(row, default=_default, option=_HASH_OPTIONS)
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def json_safe(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A raw payload as plain JSON types (Decimals and datetimes rendered as strings)."""
    if value is None:
        return None
    return orjson.loads(orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS))  # type: ignore[no-any-return]


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
        "account": r.account,
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
    "leads": _lead,
    "opportunities": _opportunity,
    "stage_changes": _stage_change,
    "pipeline_stages": _pipeline_stage,
}


def to_row(entity: Entity, record: Any) -> Row:
    """The store row for ``record`` with its ``content_hash`` (bookkeeping columns excluded)."""
    row = TO_ROW[entity](record)
    raw = row.get("raw")
    if raw is None:
        row["content_hash"] = content_hash(row)
        return row
    # The payload is the bulk of a row: it is rendered to JSON once, with sorted keys, and that text
    # is both hashed (as a fragment of the row's JSON, the same bytes as rendering it in place) and
    # stored, instead of converting it to plain JSON types, rendering it to hash and again to store.
    rendered = orjson.dumps(raw, default=_default, option=_HASH_OPTIONS)
    row["raw"] = orjson.Fragment(rendered)
    row["content_hash"] = content_hash(row)
    row["raw"] = RawJSON(rendered.decode())
    return row


def observed_change_id(opportunity_external_id: str, changed_at: datetime, to_stage: str) -> str:
    """Stable key of a stage change seen between two syncs, so a re-run never records it twice."""
    return f"observed:{opportunity_external_id}@{changed_at.isoformat()}>{to_stage}"
