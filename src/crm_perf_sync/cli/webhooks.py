"""Webhook endpoints and their deliveries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.table import Table

from crm_perf_sync.cli._shared import ConfigOption, _fail, _guard, _in_store, unit_of_work
from crm_perf_sync.cli.render import (
    err,
    out,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

webhooks_app = typer.Typer(help="Webhook endpoints and deliveries.", no_args_is_help=True)


@webhooks_app.command("add")
def webhooks_add(
    url: Annotated[str, typer.Argument(help="https://… (plain http only for allow-listed hosts).")],
    event: Annotated[list[str] | None, typer.Option(help="An event type or pattern (repeatable).")] = None,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    rule: Annotated[list[str] | None, typer.Option(help="Only these alert rules (repeatable).")] = None,
    severity: Annotated[
        list[str] | None, typer.Option(help="Only alerts of these severities (repeatable).")
    ] = None,
    send_firing: Annotated[
        bool, typer.Option(help="Also send it the alerts firing now (at the next alert evaluation).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Add an endpoint; prints its signing secret once."""
    from crm_perf_sync.webhooks import service

    spec = service.EndpointSpec(
        url,
        description,
        tuple(event or ["*"]),
        tuple(rule) if rule else None,
        tuple(severity) if severity else None,
        True,
    )
    with unit_of_work(config) as (store, session):
        row, secret = _guard(
            lambda: service.create_endpoint(session, spec, store.webhook_guard(), send_firing=send_firing)
        )
        endpoint_id = row.id
    err.print(f"added webhook endpoint {endpoint_id}; its signing secret is shown once, store it now:")
    out.print(secret)


@webhooks_app.command("list")
def webhooks_list(config: ConfigOption = None) -> None:
    """The endpoints, their subscriptions and health."""
    from crm_perf_sync.webhooks import repository as repo

    rows = _in_store(config, lambda session: [dict(r._mapping) for r in repo.endpoints(session)])
    table = Table("id", "url", "events", "enabled", "failing since", "disabled because")
    for r in rows:
        table.add_row(
            str(r["id"]),
            str(r["url"]),
            ", ".join(r["event_types"]),
            "yes" if r["enabled"] else "no",
            "" if r["failing_since"] is None else f"{r['failing_since']:%Y-%m-%d %H:%M}",
            str(r["disabled_reason"] or ""),
        )
    out.print(table)


@webhooks_app.command("remove")
def webhooks_remove(
    endpoint_id: Annotated[int, typer.Argument(help="The endpoint's id.")], config: ConfigOption = None
) -> None:
    """Remove an endpoint and its deliveries."""
    from crm_perf_sync.webhooks import service

    _in_store(config, lambda session: service.delete_endpoint(session, endpoint_id))
    out.print(f"removed webhook endpoint {endpoint_id}")


@webhooks_app.command("test")
def webhooks_test(
    endpoint_id: Annotated[int, typer.Argument(help="The endpoint's id.")], config: ConfigOption = None
) -> None:
    """Queue a webhook.test event to one endpoint (a worker sends it)."""
    from crm_perf_sync.webhooks import service

    message_id = _in_store(config, lambda session: service.send_test(session, endpoint_id))
    out.print(f"queued webhook.test {message_id} to endpoint {endpoint_id}")


@webhooks_app.command("rotate")
def webhooks_rotate(
    endpoint_id: Annotated[int, typer.Argument(help="The endpoint's id.")], config: ConfigOption = None
) -> None:
    """A new signing secret; the old one keeps signing alongside for 24 hours."""
    from crm_perf_sync.webhooks import service

    secret = _in_store(config, lambda session: service.rotate_secret(session, endpoint_id)[1])
    err.print(f"rotated the secret of endpoint {endpoint_id}; the previous one signs too for 24 hours:")
    out.print(secret)


@webhooks_app.command("replay")
def webhooks_replay(
    endpoint_id: Annotated[int, typer.Argument(help="The endpoint's id.")],
    since: Annotated[str | None, typer.Option(help="ISO date-time (UTC without a zone).")] = None,
    firing: Annotated[
        bool, typer.Option(help="The alerts firing now, whenever they fired (at the next alert evaluation).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Deliver again the events the endpoint subscribes to: since a time, or the alerts firing now."""
    from datetime import UTC, datetime

    from crm_perf_sync.webhooks import service

    if since is None and not firing:
        raise _fail("give --since, --firing or both", 2)
    moment = None
    if since is not None:
        try:
            moment = datetime.fromisoformat(since)
        except ValueError:
            raise _fail(f"--since {since!r} is not an ISO date-time", 2) from None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    def replay(session: Session) -> int:
        count = 0 if moment is None else service.replay(session, endpoint_id, moment)
        if firing:
            service.request_firing(session, endpoint_id)
        return count

    count = _in_store(config, replay)
    if moment is not None:
        out.print(f"queued {count} event(s) to endpoint {endpoint_id}")
    if firing:
        out.print(f"the alerts firing now go to endpoint {endpoint_id} at the next alert evaluation")


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    status: Annotated[
        Literal["pending", "succeeded", "failed", "cancelled"] | None,
        typer.Option(help="pending, succeeded, failed or cancelled."),
    ] = None,
    endpoint: Annotated[int | None, typer.Option(help="One endpoint's id.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    config: ConfigOption = None,
) -> None:
    """Recent deliveries: status, attempts, last answer."""
    from crm_perf_sync.webhooks import repository as repo

    def page(session: Session) -> list[dict[str, Any]]:
        rows, _ = repo.deliveries_page(
            session, endpoint_id=endpoint, event_type=None, status=status, after=None, limit=limit
        )
        return [dict(r._mapping) for r in rows]

    table = Table("id", "endpoint", "event", "webhook-id", "status", "attempts", "last", "next attempt")
    for r in _in_store(config, page):
        table.add_row(
            str(r["id"]),
            str(r["endpoint_id"]),
            str(r["event_type"]),
            str(r["message_id"]),
            str(r["status"]),
            str(r["attempts"]),
            str(r["last_status_code"] or r["last_error"] or ""),
            ""
            if r["next_attempt_at"] is None or r["status"] != "pending"
            else f"{r['next_attempt_at']:%H:%M:%S}",
        )
    out.print(table)


@webhooks_app.command("retry")
def webhooks_retry(
    delivery_id: Annotated[int, typer.Argument(help="The delivery's id.")], config: ConfigOption = None
) -> None:
    """Send a delivery again now."""
    from crm_perf_sync.webhooks import service

    _in_store(config, lambda session: service.retry_delivery(session, delivery_id))
    out.print(f"delivery {delivery_id} is due again now")
