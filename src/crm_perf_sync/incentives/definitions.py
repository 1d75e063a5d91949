"""Incentive plans set through the API: each checked as the configuration's plans are, then stored.

A definition is the JSON of one ``incentives.plans`` entry of the configuration. Every refresh
computes the stored plans with the configured ones (:func:`in_force`); an id belongs to the file
or to the API, never both. The caller owns the transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from crm_perf_sync.incentives import repository as repo
from crm_perf_sync.incentives.checks import section_issues
from crm_perf_sync.incentives.schemas import IncentiveSection, Plan
from crm_perf_sync.kit.errors import Conflict, InvalidInput, NotFound
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.kit.yaml_source import format_loc
from crm_perf_sync.kpi.service import KpiService
from crm_perf_sync.models import IncentivePlanDefinition
from crm_perf_sync.org import repository as org_repo

log = logging.getLogger(__name__)


@dataclass(slots=True)
class InForce:
    """The plans a refresh computes, and the stored ones it cannot (what is wrong with each)."""

    plans: list[Plan] = field(default_factory=list)
    invalid: dict[str, str] = field(default_factory=dict)


def issues(kpis: KpiService, plan: Plan) -> list[str]:
    """What is wrong with the KPIs and scorecards a plan names, as ``key: message``."""
    found = section_issues(IncentiveSection(plans=[plan]), kpis.kpis, kpis.section)
    return [f"{format_loc(loc[3:])}: {message}" for loc, message in found]


def checked(session: Session, kpis: KpiService, definition: Mapping[str, Any]) -> Plan:
    """The plan ``definition`` describes, or :class:`InvalidInput` saying what is wrong with it:
    its shape (tiers, rates, caps, dates), the KPIs and scorecards it names, the reps and teams
    taking part."""
    try:
        plan = Plan.model_validate(definition)
    except ValidationError as exc:
        said = [
            f"{format_loc(tuple(error['loc'])) or 'plan'}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors(include_url=False)
        ]
        raise InvalidInput(f"invalid plan: {'; '.join(said)}") from None
    wrong = issues(kpis, plan)
    for p, who in enumerate(plan.participants):
        scope, scope_id = ("owner", who.owner) if who.owner is not None else ("team", who.team)
        assert scope_id is not None  # a participant is a rep or a team (the schema's check)
        if not org_repo.known_scope(session, scope, scope_id):
            wrong.append(
                f"participants[{p}].{scope}: no {scope} {scope_id!r} (see /teams and /owners for their ids)"
            )
    if wrong:
        raise InvalidInput(f"invalid plan: {'; '.join(wrong)}")
    return plan


def stored(session: Session, plan_id: str, configured: Collection[str]) -> IncentivePlanDefinition:
    """The plan set through the API with this id: :class:`NotFound` if there is none,
    :class:`Conflict` if the id is the configuration file's."""
    found = repo.plan_definition(session, plan_id)
    if found is not None:
        return found
    if plan_id in configured:
        raise Conflict(
            f"plan {plan_id!r} is defined in the configuration file: change it there "
            "(the API changes only the plans set through it)"
        )
    raise NotFound(f"no incentive plan {plan_id!r} set through the API")


def create(
    session: Session,
    kpis: KpiService,
    configured: Collection[str],
    definition: Mapping[str, Any],
    by: str,
) -> IncentivePlanDefinition:
    plan = checked(session, kpis, definition)
    if plan.id in configured:
        raise Conflict(f"plan {plan.id!r} is defined in the configuration file; choose another id")
    if repo.plan_definition(session, plan.id) is not None:
        raise Conflict(f"plan {plan.id!r} exists: change it with PUT /incentives/plans/{plan.id}")
    return repo.add_plan_definition(session, plan.id, _written(plan), by, utc_now())


def update(
    session: Session,
    kpis: KpiService,
    configured: Collection[str],
    plan_id: str,
    definition: Mapping[str, Any],
    by: str,
) -> IncentivePlanDefinition:
    row = stored(session, plan_id, configured)
    plan = checked(session, kpis, {**definition, "id": definition.get("id", plan_id)})
    if plan.id != plan_id:
        raise InvalidInput(f"id: the plan at /incentives/plans/{plan_id} keeps its id (not {plan.id!r})")
    repo.update_plan_definition(session, row, _written(plan), by, utc_now())
    return row


def remove(session: Session, configured: Collection[str], plan_id: str) -> None:
    """Remove a plan set through the API. Its open lines go at the next refresh; the lines of its
    closed periods stay (they were paid)."""
    repo.delete_plan_definition(session, stored(session, plan_id, configured))


def in_force(conn: Connection | Session, kpis: KpiService, configured: Sequence[Plan]) -> InForce:
    """The configured plans and the valid ones set through the API. A stored plan that no longer
    fits the configuration (a KPI or scorecard it names went) is left out and logged; its lines
    stay as they were until it is fixed or removed."""
    out = InForce(plans=list(configured))
    ids = {plan.id for plan in configured}
    for row in repo.plan_definitions(conn):
        if row.plan_id in ids:
            out.invalid[row.plan_id] = "its id is also a plan of the configuration file (the file's is used)"
            continue
        try:
            plan = Plan.model_validate(row.definition)
        except ValidationError as exc:
            out.invalid[row.plan_id] = str(exc.errors(include_url=False)[0]["msg"])
            continue
        wrong = issues(kpis, plan)
        if wrong:
            out.invalid[row.plan_id] = "; ".join(wrong)
            continue
        out.plans.append(plan)
    for plan_id, reason in sorted(out.invalid.items()):
        log.warning("incentive plan %s set through the API is not computed: %s", plan_id, reason)
    return out


def _written(plan: Plan) -> dict[str, Any]:
    """A plan as the configuration would write it (aliases such as ``from``, nothing unset)."""
    return plan.model_dump(mode="json", by_alias=True, exclude_unset=True)
