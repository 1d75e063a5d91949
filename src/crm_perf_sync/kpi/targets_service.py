"""Targets set through the API: each checked as the configuration's targets are, then stored.

A definition is the JSON of a configuration ``kpis.targets`` entry; the next refresh decomposes it
with the configured ones (:mod:`crm_perf_sync.kpi.targets`). The caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from crm_perf_sync.kit.errors import InvalidInput, NotFound
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.kpi import targets_repository as repo
from crm_perf_sync.kpi.library import target_issues
from crm_perf_sync.kpi.schemas import Kpi, TargetConfig
from crm_perf_sync.models import TargetDefinition
from crm_perf_sync.org import repository as org_repo


def checked(session: Session, kpis: Mapping[str, Kpi], definition: Mapping[str, Any]) -> TargetConfig:
    """The target ``definition`` describes, or :class:`InvalidInput` saying the first thing wrong
    with it (an unknown KPI or scope, weights or a split that do not fit, a period the KPI lacks)."""
    kpi = kpis.get(definition["kpi"])
    if kpi is None:
        raise InvalidInput(f"unknown KPI {definition['kpi']!r} (known: {', '.join(sorted(kpis))})")
    try:
        target = TargetConfig.model_validate(definition)
    except ValidationError as exc:
        says = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise InvalidInput(f"invalid target: {says}") from None
    issues = target_issues(target, kpi)
    if issues:
        raise InvalidInput("; ".join(f"{key}: {says}" for key, says in issues))
    if not org_repo.known_scope(session, definition["scope"], definition["scope_id"]):
        raise InvalidInput(
            f"no {definition['scope']} {definition['scope_id']!r} (see /teams and /owners for their ids)"
        )
    return target


def stored(session: Session, target_id: int) -> TargetDefinition:
    """The definition set through the API with this id (:class:`NotFound` if there is none)."""
    found = repo.target_definition(session, target_id)
    if found is None:
        raise NotFound(f"no target set through the API with id {target_id}")
    return found


def create(session: Session, kpis: Mapping[str, Kpi], definition: Mapping[str, Any]) -> TargetDefinition:
    target = checked(session, kpis, definition)
    return repo.add_target_definition(session, target.kpi, dict(definition), utc_now())


def update(
    session: Session, kpis: Mapping[str, Kpi], target_id: int, definition: Mapping[str, Any]
) -> TargetDefinition:
    row = stored(session, target_id)
    target = checked(session, kpis, definition)
    repo.update_target_definition(session, row, target.kpi, dict(definition), utc_now())
    return row


def remove(session: Session, target_id: int) -> None:
    repo.delete_target_definition(session, stored(session, target_id))
