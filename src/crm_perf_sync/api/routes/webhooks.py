"""Webhook endpoints and deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from crm_perf_sync.api import listing
from crm_perf_sync.api.deps import Admin, ContextDep, ListerDep, Reader, RowId, SessionDep
from crm_perf_sync.api.listing import json_response
from crm_perf_sync.api.problems import collection, documented
from crm_perf_sync.api.schemas import InputModel, Instant, Page, columns
from crm_perf_sync.kit.errors import InvalidInput, NotFound
from crm_perf_sync.kit.paging import expect
from crm_perf_sync.webhooks import repository as repo
from crm_perf_sync.webhooks import service
from crm_perf_sync.webhooks.events import EVENT_TYPES
from crm_perf_sync.webhooks.service import EndpointSpec

router = APIRouter(tags=["webhooks and alerts"])
DeliveryStatus = Literal["pending", "succeeded", "failed", "cancelled"]


class EndpointIn(InputModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=2000, description="https://… (plain http only if allow-listed)")
    description: str = Field(default="", max_length=500)
    event_types: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        max_length=20,
        description=f"Types or patterns (`*`, `alert.*`) of: {', '.join(EVENT_TYPES)}",
    )
    rule_ids: list[str] | None = Field(default=None, max_length=200, description="Only these alert rules")
    severities: list[Literal["info", "warning", "critical"]] | None = Field(
        default=None, description="Only alerts of these severities"
    )
    enabled: StrictBool = True

    def spec(self) -> EndpointSpec:
        return EndpointSpec(
            url=self.url,
            description=self.description,
            event_types=tuple(self.event_types),
            rule_ids=tuple(self.rule_ids) if self.rule_ids else None,
            severities=tuple(self.severities) if self.severities else None,
            enabled=self.enabled,
        )


class EndpointOut(BaseModel):
    id: int
    url: str
    description: str
    event_types: list[str]
    rule_ids: list[str] | None
    severities: list[str] | None
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    secret_rotated: bool = Field(description="A previous secret still signs alongside the current one")
    firing_requested: bool = Field(
        description="Waiting for the alerts firing now (the next alert evaluation of it enabled sends them)"
    )
    created_at: datetime
    updated_at: datetime


class EndpointCreated(EndpointOut):
    secret: str = Field(description="The whsec_ signing secret: shown once, store it now")


class EndpointCreate(EndpointIn):
    send_firing: bool = Field(
        default=False,
        description="Also send it the alert.firing event of every alert firing now (with its webhook-id), "
        "queued by the next alert evaluation",
    )


class DeliveryOut(BaseModel):
    id: int
    endpoint_id: int
    message_id: str = Field(description="The webhook-id the consumer sees (the same on every attempt)")
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


class DeliveryDetail(DeliveryOut):
    attempt_log: list[dict[str, Any]] = Field(
        description="Every attempt: when, status code, latency, excerpt, error, the worker that sent it"
    )


class ReplayIn(InputModel):
    model_config = ConfigDict(extra="forbid")

    since: Instant | None = Field(
        default=None, description="Every event since this time (ISO; without a zone, UTC)"
    )
    firing: StrictBool = Field(
        default=False,
        description="The alert.firing event of every alert firing now, whenever it fired "
        "(queued by the next alert evaluation)",
    )


def endpoint_out(row: Any, firing_requested: bool) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": row.url,
        "description": row.description,
        "event_types": list(row.event_types),
        "rule_ids": row.rule_ids,
        "severities": row.severities,
        "enabled": row.enabled,
        "disabled_reason": row.disabled_reason,
        "failing_since": row.failing_since,
        "secret_rotated": row.previous_secret is not None,
        "firing_requested": firing_requested,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def delivery_out(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in columns(DeliveryOut)}


@router.get(
    "/webhooks/endpoints",
    summary="The webhook endpoints (never their secrets)",
    response_model=Page[EndpointOut],
    responses=collection(400, 401, 422),
)
def list_endpoints(
    session: SessionDep,
    _key: Reader,
    page: ListerDep,
) -> Response:
    endpoints = repo.endpoints(session)
    waiting = repo.firing_requested(session, [e.id for e in endpoints])
    rows = [endpoint_out(e, e.id in waiting) for e in endpoints]
    return page("endpoints", EndpointOut, fetch=listing.in_memory(rows, "id"))


@router.post(
    "/webhooks/endpoints",
    status_code=201,
    summary="Add a webhook endpoint (admin); its signing secret is in the response, once",
    response_model=EndpointCreated,
    responses=documented(401, 403, 413, 422),
)
def create_endpoint(body: EndpointCreate, session: SessionDep, ctx: ContextDep, _key: Admin) -> Response:
    row, secret = service.create_endpoint(
        session, body.spec(), ctx.webhook_guard, send_firing=body.send_firing
    )
    return json_response(
        {**endpoint_out(row, body.send_firing), "secret": secret},
        status=201,
        headers={"Location": f"/api/v1/webhooks/endpoints/{row.id}"},
    )


@router.get(
    "/webhooks/endpoints/{endpoint_id}",
    summary="One webhook endpoint",
    response_model=EndpointOut,
    responses=documented(401, 404, 422),
)
def get_endpoint(endpoint_id: RowId, session: SessionDep, _key: Reader) -> Response:
    return json_response(_endpoint(session, service.get_endpoint(session, endpoint_id)))


def _endpoint(session: Any, row: Any) -> dict[str, Any]:
    return endpoint_out(row, bool(repo.firing_requested(session, [row.id])))


@router.put(
    "/webhooks/endpoints/{endpoint_id}",
    summary="Change a webhook endpoint (admin); enabling it again clears its failures",
    response_model=EndpointOut,
    responses=documented(401, 403, 404, 413, 422),
)
def update_endpoint(
    endpoint_id: RowId, body: EndpointIn, session: SessionDep, ctx: ContextDep, _key: Admin
) -> Response:
    return json_response(
        _endpoint(session, service.update_endpoint(session, endpoint_id, body.spec(), ctx.webhook_guard))
    )


@router.delete(
    "/webhooks/endpoints/{endpoint_id}",
    status_code=204,
    summary="Remove a webhook endpoint and its deliveries (admin)",
    responses=documented(401, 403, 404, 422),
)
def delete_endpoint(endpoint_id: RowId, session: SessionDep, _key: Admin) -> Response:
    service.delete_endpoint(session, endpoint_id)
    return Response(status_code=204)


@router.post(
    "/webhooks/endpoints/{endpoint_id}/rotate-secret",
    summary="A new signing secret (admin); the old one keeps signing alongside for 24 hours",
    response_model=EndpointCreated,
    responses=documented(401, 403, 404, 422),
)
def rotate_secret(endpoint_id: RowId, session: SessionDep, _key: Admin) -> Response:
    row, secret = service.rotate_secret(session, endpoint_id)
    return json_response({**_endpoint(session, row), "secret": secret})


@router.post(
    "/webhooks/endpoints/{endpoint_id}/test",
    status_code=202,
    summary="Send a webhook.test event to this endpoint (admin)",
    responses=documented(401, 403, 404, 422),
)
def send_test_event(endpoint_id: RowId, session: SessionDep, _key: Admin) -> Response:
    return json_response({"message_id": service.send_test(session, endpoint_id)}, status=202)


@router.post(
    "/webhooks/endpoints/{endpoint_id}/replay",
    status_code=202,
    summary="Deliver again this endpoint's events since a time, or the alerts firing now (admin)",
    description="The events keep their webhook-id, so a consumer can drop the ones it already has. "
    "`since` queues every event since then at once (`queued` says how many); `firing` asks for the "
    "alert.firing event of every alert firing now, whenever it fired, which the next alert evaluation "
    "queues (after the next refresh, or within a minute; the endpoint's `firing_requested` is true "
    "until then).",
    responses=documented(401, 403, 404, 413, 422),
)
def replay(endpoint_id: RowId, body: ReplayIn, session: SessionDep, _key: Admin) -> Response:
    if body.since is None and not body.firing:
        raise InvalidInput("body: give since, firing: true, or both")
    queued = 0
    if body.since is not None:
        queued = service.replay(session, endpoint_id, body.since)
    if body.firing:
        service.request_firing(session, endpoint_id)
    return json_response({"queued": queued}, status=202)


@router.get(
    "/webhooks/deliveries",
    summary="Deliveries, newest first: their status, attempts and last answer",
    response_model=Page[DeliveryOut],
    responses=collection(400, 401, 422),
)
def list_deliveries(
    _key: Reader,
    page: ListerDep,
    endpoint_id: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
    event_type: Annotated[str | None, Query(max_length=63)] = None,
    status: DeliveryStatus | None = None,
) -> Response:
    def fetch(s: Any, after: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        rows, next_key = repo.deliveries_page(
            s,
            endpoint_id=endpoint_id,
            event_type=event_type,
            status=status,
            after=expect(after, int),
            limit=limit,
        )
        return [delivery_out(r) for r in rows], next_key

    return page("deliveries", DeliveryOut, fetch=fetch)


@router.get(
    "/webhooks/deliveries/{delivery_id}",
    summary="One delivery with every attempt",
    response_model=DeliveryDetail,
    responses=documented(401, 404, 422),
)
def get_delivery(delivery_id: RowId, session: SessionDep, _key: Reader) -> Response:
    row = repo.delivery(session, delivery_id)
    if row is None:
        raise NotFound(f"no webhook delivery {delivery_id}")
    return json_response(
        {**delivery_out(row), "attempt_log": repo.attempts_of(session, [delivery_id])[delivery_id]}
    )


@router.post(
    "/webhooks/deliveries/{delivery_id}/retry",
    status_code=202,
    summary="Send a delivery again now (admin)",
    response_model=DeliveryOut,
    responses=documented(401, 403, 404, 422),
)
def retry_delivery(delivery_id: RowId, session: SessionDep, _key: Admin) -> Response:
    return json_response(delivery_out(service.retry_delivery(session, delivery_id)), status=202)
