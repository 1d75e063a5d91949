"""Alert states and their history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from crm_perf_sync.alerts import repository as alerts_repo
from crm_perf_sync.api import listing
from crm_perf_sync.api.deps import ListerDep, Reader, SessionDep
from crm_perf_sync.api.problems import collection
from crm_perf_sync.api.schemas import Instant, Page, columns
from crm_perf_sync.kit.paging import expect

router = APIRouter(tags=["webhooks and alerts"])


class AlertStateOut(BaseModel):
    rule_id: str
    scope: str
    scope_id: str
    currency: str
    state: str = Field(description="ok, pending, firing or resolved")
    breaches: int = Field(description="Breaching evaluations in a row")
    outcome: str = Field(
        description="The last evaluation: breach, clear, no_data, low_sample or outside_window"
    )
    value: float | None
    threshold: float
    period_key: str | None
    since: datetime
    evaluated_at: datetime


class AlertTransitionOut(BaseModel):
    id: int
    rule_id: str
    scope: str
    scope_id: str
    currency: str
    from_state: str
    to_state: str
    value: float | None
    threshold: float
    period_key: str | None
    severity: str
    at: datetime
    reason: str | None = Field(
        description="Empty when the value caused it; rule_changed, rule_removed or scope_removed otherwise"
    )


@router.get(
    "/alerts",
    summary="Where every alert rule stands, per scope",
    response_model=Page[AlertStateOut],
    responses=collection(400, 401, 422),
)
def alert_states(
    session: SessionDep,
    _key: Reader,
    page: ListerDep,
    rule: Annotated[str | None, Query(max_length=63)] = None,
    state: Literal["ok", "pending", "firing", "resolved"] | None = None,
) -> Response:
    rows = [
        {name: getattr(r, name) for name in columns(AlertStateOut)}
        for r in alerts_repo.current_states(session, rule, state)
    ]
    return page("alerts", AlertStateOut, fetch=listing.in_memory_by_position(rows))


@router.get(
    "/alerts/history",
    summary="Every change of an alert state, newest first, with the value and threshold",
    response_model=Page[AlertTransitionOut],
    responses=collection(400, 401, 422),
)
def alert_history(
    _key: Reader,
    page: ListerDep,
    rule: Annotated[str | None, Query(max_length=63)] = None,
    since: Annotated[
        Instant | None, Query(description="Changes at or after this time (ISO; without a zone, UTC)")
    ] = None,
) -> Response:
    def fetch(s: Any, after: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        rows, next_key = alerts_repo.transitions_page(s, rule, since, expect(after, int), limit)
        return [{name: getattr(r, name) for name in columns(AlertTransitionOut)} for r in rows], next_key

    return page("alert-history", AlertTransitionOut, fetch=fetch)
