"""The synced CRM records: reps, teams, accounts, leads, opportunities (closed deals included) and
activities."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from crm_perf_sync.api import listing
from crm_perf_sync.api.deps import ListerDep, Reader, SessionDep
from crm_perf_sync.api.problems import collection
from crm_perf_sync.api.schemas import (
    AccountOut,
    ActivityOut,
    Instant,
    LeadOut,
    OpportunityOut,
    OwnerOut,
    Page,
    TeamOut,
)
from crm_perf_sync.org import repository as org_repo
from crm_perf_sync.sync import repository as sync_repo

router = APIRouter(tags=["crm records"])
Moment = Annotated[Instant | None, Query(description="An ISO date-time; without a zone, UTC")]


@router.get(
    "/owners",
    summary="The reps (owners) with their teams",
    response_model=Page[OwnerOut],
    responses=collection(400, 401, 422),
)
def owners(
    _key: Reader,
    page: ListerDep,
    connection: Annotated[str | None, Query(max_length=63)] = None,
) -> Response:
    def fetch(s: Any, after: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        return org_repo.owners_page(s, after, limit, connection)

    return page(f"owners:{connection}", OwnerOut, fetch=fetch)


@router.get(
    "/teams",
    summary="The team hierarchy: each team, its parent and how many reps count in it",
    response_model=Page[TeamOut],
    responses=collection(400, 401, 422),
)
def teams(
    session: SessionDep,
    _key: Reader,
    page: ListerDep,
) -> Response:
    rows = org_repo.teams(session)
    return page("teams", TeamOut, fetch=listing.in_memory(rows, "id"))


@router.get(
    "/opportunities",
    summary="Opportunities, open and closed (a closed deal has is_closed = true)",
    description="`updated_since` returns what the store changed since then: an incremental pull.",
    response_model=Page[OpportunityOut],
    responses=collection(400, 401, 422),
)
def opportunities(
    _key: Reader,
    page: ListerDep,
    connection: Annotated[str | None, Query(max_length=63)] = None,
    owner: Annotated[str | None, Query(max_length=600, description="A rep's scope id")] = None,
    team: Annotated[str | None, Query(max_length=600, description="A team's scope id")] = None,
    stage: Annotated[str | None, Query(max_length=255)] = None,
    is_closed: bool | None = None,
    is_won: bool | None = None,
    created_from: Moment = None,
    created_to: Moment = None,
    closed_from: Moment = None,
    closed_to: Moment = None,
    updated_since: Moment = None,
    include_deleted: bool = False,
) -> Response:
    where = sync_repo.RecordFilter(
        connection_id=connection,
        owner=owner,
        team=team,
        stage=stage,
        is_closed=is_closed,
        is_won=is_won,
        created_from=created_from,
        created_to=created_to,
        closed_from=closed_from,
        closed_to=closed_to,
        updated_since=updated_since,
        include_deleted=include_deleted,
    )

    def fetch(s: Any, after: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        return sync_repo.opportunities_page(s, where, after, limit)

    return page("opportunities", OpportunityOut, fetch=fetch)


@router.get(
    "/leads",
    summary="Leads, converted or not",
    response_model=Page[LeadOut],
    responses=collection(400, 401, 422),
)
def leads(
    _key: Reader,
    page: ListerDep,
    connection: Annotated[str | None, Query(max_length=63)] = None,
    owner: Annotated[str | None, Query(max_length=600, description="A rep's scope id")] = None,
    team: Annotated[str | None, Query(max_length=600, description="A team's scope id")] = None,
    status: Annotated[str | None, Query(max_length=255)] = None,
    source: Annotated[str | None, Query(max_length=255)] = None,
    is_converted: bool | None = None,
    created_from: Moment = None,
    created_to: Moment = None,
    updated_since: Moment = None,
    include_deleted: bool = False,
) -> Response:
    where = sync_repo.RecordFilter(
        connection_id=connection,
        owner=owner,
        team=team,
        stage=status,
        source=source,
        is_converted=is_converted,
        created_from=created_from,
        created_to=created_to,
        updated_since=updated_since,
        include_deleted=include_deleted,
    )

    def fetch(s: Any, after: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        return sync_repo.leads_page(s, where, after, limit)

    return page("leads", LeadOut, fetch=fetch)


@router.get(
    "/accounts",
    summary="Accounts (customers), with the rep who owns each",
    description="Opportunities, leads and activities name their account by `account_external_id`.",
    response_model=Page[AccountOut],
    responses=collection(400, 401, 422),
)
def accounts(
    _key: Reader,
    page: ListerDep,
    connection: Annotated[str | None, Query(max_length=63)] = None,
    owner: Annotated[str | None, Query(max_length=600, description="A rep's scope id")] = None,
    team: Annotated[str | None, Query(max_length=600, description="A team's scope id")] = None,
    industry: Annotated[str | None, Query(max_length=255)] = None,
    segment: Annotated[str | None, Query(max_length=255)] = None,
    parent: Annotated[
        str | None, Query(max_length=255, description="The parent account's external id")
    ] = None,
    created_from: Moment = None,
    created_to: Moment = None,
    updated_since: Moment = None,
    include_deleted: bool = False,
) -> Response:
    where = sync_repo.RecordFilter(
        connection_id=connection,
        owner=owner,
        team=team,
        created_from=created_from,
        created_to=created_to,
        updated_since=updated_since,
        include_deleted=include_deleted,
        equal=(("industry", industry), ("segment", segment), ("parent_external_id", parent)),
    )

    def fetch(s: Any, after: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        return sync_repo.accounts_page(s, where, after, limit)

    return page("accounts", AccountOut, fetch=fetch)


@router.get(
    "/activities",
    summary="Activities: calls, meetings, visits, emails, tasks, proposals and notes of the reps",
    response_model=Page[ActivityOut],
    responses=collection(400, 401, 422),
)
def activities(
    _key: Reader,
    page: ListerDep,
    connection: Annotated[str | None, Query(max_length=63)] = None,
    owner: Annotated[str | None, Query(max_length=600, description="A rep's scope id")] = None,
    team: Annotated[str | None, Query(max_length=600, description="A team's scope id")] = None,
    type: Annotated[str | None, Query(max_length=63, description="call, meeting, visit, ...")] = None,
    account: Annotated[str | None, Query(max_length=255, description="An account's external id")] = None,
    opportunity: Annotated[
        str | None, Query(max_length=255, description="An opportunity's external id")
    ] = None,
    lead: Annotated[str | None, Query(max_length=255, description="A lead's external id")] = None,
    occurred_from: Moment = None,
    occurred_to: Moment = None,
    updated_since: Moment = None,
    include_deleted: bool = False,
) -> Response:
    where = sync_repo.RecordFilter(
        connection_id=connection,
        owner=owner,
        team=team,
        updated_since=updated_since,
        include_deleted=include_deleted,
        equal=(
            ("type", type),
            ("account_external_id", account),
            ("opportunity_external_id", opportunity),
            ("lead_external_id", lead),
        ),
        within=("occurred_at", occurred_from, occurred_to),
    )

    def fetch(s: Any, after: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        return sync_repo.activities_page(s, where, after, limit)

    return page("activities", ActivityOut, fetch=fetch)
