"""Delivering the outbox: signed (checked by a standardwebhooks consumer), retried, recorded, guarded.

The worker runs against a real store and a real HTTP receiver on 127.0.0.1; time is the
worker's clock, moved on by the tests where a retry waits (5 s, 5 min, ...).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from crm_perf_sync.webhooks import service
from crm_perf_sync.webhooks.delivery import DISABLE_AFTER, SCHEDULE, Deliverer, DeliveryOptions
from crm_perf_sync.webhooks.security import Guard
from tests.webhooks.receiver import receiving

LOCAL = Guard(allow=("127.0.0.1",))


class Clock:
    """The real time, moved on by what the test skips (events are stamped with the real time)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    @property
    def now(self) -> datetime:
        return utc_now() + self.offset

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.offset += by


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def deliverer(session_factory: sessionmaker[Session], clock: Clock) -> Iterator[Deliverer]:
    found = Deliverer(session_factory, LOCAL, "worker-a", DeliveryOptions(timeout=5), clock=clock)
    yield found
    found.close()


def add_endpoint(factory: sessionmaker[Session], url: str, **kw: Any) -> tuple[int, str]:
    with session_scope(factory) as session:
        row, secret = service.create_endpoint(session, service.EndpointSpec(url, **kw), LOCAL)
        return row.id, secret


def emit(factory: sessionmaker[Session], event_type: str = "sync.completed", **data: Any) -> str:
    with session_scope(factory) as session:
        return service.emit(session, event_type, {"n": 1, **data})


def deliveries(factory: sessionmaker[Session]) -> list[Any]:
    with session_scope(factory) as session:
        return list(session.execute(select(WebhookDelivery.__table__).order_by(WebhookDelivery.id)))


def attempts(factory: sessionmaker[Session]) -> list[Any]:
    with session_scope(factory) as session:
        return list(session.execute(select(WebhookAttempt.__table__).order_by(WebhookAttempt.id)))


def test_an_event_is_signed_and_verified_by_a_standard_webhooks_consumer(
    session_factory: sessionmaker[Session], deliverer: Deliverer
) -> None:
    with receiving() as receiver:
        _, secret = add_endpoint(session_factory, receiver.url)
        receiver.secrets.append(secret)
        message_id = emit(session_factory, "sync.completed", connection_id="crm", inserted=12)
        assert deliverer.run_once() == 1
    (got,) = receiver.accepted
    assert got.message_id == message_id
    assert got.payload["type"] == "sync.completed"
    assert got.payload["data"] == {"n": 1, "connection_id": "crm", "inserted": 12}
    assert got.payload["timestamp"].endswith("Z")
    assert got.headers["webhook-signature"].startswith("v1,")
    assert receiver.rejected == []
    (delivery,) = deliveries(session_factory)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 1, 204)
    (attempt,) = attempts(session_factory)
    assert attempt.status_code == 204
    assert attempt.latency_ms is not None
    assert attempt.latency_ms > 0


def test_a_receiver_failing_three_times_gets_the_event_once_after_four_attempts(
    session_factory: sessionmaker[Session], deliverer: Deliverer, clock: Clock
) -> None:
    with receiving(script=[500, 503, 500]) as receiver:
        _, secret = add_endpoint(session_factory, receiver.url)
        receiver.secrets.append(secret)
        message_id = emit(session_factory)
        for attempt in range(4):
            assert deliverer.run_once() == 1
            assert deliverer.run_once() == 0  # not due again yet
            if attempt < 3:
                (pending,) = deliveries(session_factory)
                wait = pending.next_attempt_at - attempts(session_factory)[-1].attempted_at
                expected = SCHEDULE[attempt]
                # The schedule, with jitter (and the few milliseconds recording took).
                assert expected * 0.8 <= wait <= expected * 1.2 + timedelta(seconds=1)
                clock.advance(wait)
    assert [r.message_id for r in receiver.accepted] == [message_id]
    assert receiver.attempts == [message_id] * 4  # one webhook-id on every attempt
    (delivery,) = deliveries(session_factory)
    assert (delivery.status, delivery.attempts) == ("succeeded", 4)
    assert [a.status_code for a in attempts(session_factory)] == [500, 503, 500, 204]


def test_retry_after_is_honoured_and_retries_end_in_failure(
    session_factory: sessionmaker[Session], deliverer: Deliverer, clock: Clock
) -> None:
    with receiving(script=[429] * 20) as receiver:
        receiver.retry_after = "120"
        add_endpoint(session_factory, receiver.url)
        emit(session_factory)
        deliverer.run_once()
        (pending,) = deliveries(session_factory)
        (first,) = attempts(session_factory)
        assert pending.next_attempt_at - first.attempted_at >= timedelta(
            seconds=120
        )  # not the schedule's 5 s
        receiver.retry_after = None
        for _ in range(len(SCHEDULE)):
            clock.advance(timedelta(hours=13))  # beyond the longest wait with its jitter
            assert deliverer.run_once() == 1
    (failed,) = deliveries(session_factory)
    assert (failed.status, failed.attempts, failed.last_status_code) == ("failed", len(SCHEDULE) + 1, 429)
    assert failed.finished_at is not None


@pytest.mark.parametrize(
    ("header", "at_least", "below"),
    [
        # An HTTP date an hour ahead: the next attempt waits for it.
        (
            lambda now: format_datetime(now + timedelta(hours=1), usegmt=True),
            timedelta(minutes=59),
            timedelta(hours=2),
        ),
        # Unreadable: the schedule's first wait (5 s, give or take a fifth).
        (lambda _now: "inf", timedelta(seconds=4), timedelta(minutes=1)),
        # Beyond any calendar: as long as an endpoint may fail before it is disabled.
        (lambda _now: "1e12", DISABLE_AFTER, DISABLE_AFTER + timedelta(hours=1)),
    ],
    ids=["http-date", "unreadable", "beyond-the-calendar"],
)
def test_every_retry_after_gives_a_next_attempt(
    session_factory: sessionmaker[Session],
    deliverer: Deliverer,
    clock: Clock,
    header: Callable[[datetime], str],
    at_least: timedelta,
    below: timedelta,
) -> None:
    with receiving(script=[429]) as receiver:
        receiver.retry_after = header(clock.now)
        add_endpoint(session_factory, receiver.url)
        emit(session_factory)
        assert deliverer.run_once() == 1
    (pending,) = deliveries(session_factory)
    (first,) = attempts(session_factory)
    assert (pending.status, pending.attempts, first.status_code) == ("pending", 1, 429)
    assert at_least <= pending.next_attempt_at - first.attempted_at < below


def test_a_client_error_fails_at_once(session_factory: sessionmaker[Session], deliverer: Deliverer) -> None:
    with receiving(script=[400]) as receiver:
        add_endpoint(session_factory, receiver.url)
        emit(session_factory)
        deliverer.run_once()
    (failed,) = deliveries(session_factory)
    assert (failed.status, failed.attempts, failed.last_status_code) == ("failed", 1, 400)


def test_410_disables_the_endpoint_and_tells_the_others(
    session_factory: sessionmaker[Session], deliverer: Deliverer
) -> None:
    with receiving(script=[410]) as gone, receiving() as other:
        gone_id, _ = add_endpoint(session_factory, gone.url, event_types=("sync.*",))
        _, other_secret = add_endpoint(session_factory, other.url, event_types=("webhook.*",))
        other.secrets.append(other_secret)
        emit(session_factory)
        emit(session_factory)  # a second pending delivery to the same endpoint
        deliverer.run_once()  # the first answers 410 ...
        deliverer.run_once()  # ... and the event about it reaches the other endpoint
    with session_scope(session_factory) as session:
        endpoint = session.get(WebhookEndpoint, gone_id)
        assert endpoint is not None
        assert (endpoint.enabled, endpoint.disabled_reason) == (False, "the endpoint answered 410 Gone")
    statuses = sorted(d.status for d in deliveries(session_factory) if d.endpoint_id == gone_id)
    assert statuses in (["cancelled", "failed"], ["failed", "failed"])
    assert other.types() == ["webhook.endpoint_disabled"]
    assert other.accepted[0].payload["data"]["endpoint_id"] == gone_id


def test_an_endpoint_failing_for_five_days_is_disabled(
    session_factory: sessionmaker[Session], deliverer: Deliverer, clock: Clock
) -> None:
    with receiving(script=[500] * 100) as receiver:
        endpoint_id, _ = add_endpoint(session_factory, receiver.url)
        emit(session_factory)
        deliverer.run_once()
        clock.advance(timedelta(days=5, minutes=1))
        assert deliverer.run_once() == 1
    with session_scope(session_factory) as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        assert endpoint is not None
        assert endpoint.enabled is False
        assert "every delivery failed since" in (endpoint.disabled_reason or "")


def test_a_rotated_secret_signs_alongside_the_old_one(
    session_factory: sessionmaker[Session], deliverer: Deliverer
) -> None:
    with receiving() as old_consumer, receiving() as new_consumer:
        endpoint_id, old = add_endpoint(session_factory, old_consumer.url)
        with session_scope(session_factory) as session:
            _, new = service.rotate_secret(session, endpoint_id)
            row = session.get(WebhookEndpoint, endpoint_id)
            assert row is not None
            assert row.previous_secret_expires_at is not None
            assert row.previous_secret_expires_at - utc_now() > timedelta(hours=23)
        old_consumer.secrets.append(old)
        emit(session_factory)
        deliverer.run_once()
        assert len(old_consumer.accepted) == 1  # a consumer not yet switched over still verifies
        signatures = old_consumer.accepted[0].headers["webhook-signature"].split(" ")
        assert len(signatures) == 2
        with session_scope(session_factory) as session:
            service.update_endpoint(session, endpoint_id, service.EndpointSpec(new_consumer.url), LOCAL)
        new_consumer.secrets.append(new)
        emit(session_factory)
        deliverer.run_once()
        assert len(new_consumer.accepted) == 1  # and one that has switched does too


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://10.0.0.1/hook", "a private address"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[::1]:8443/hook", "a loopback address"),
        ("https://localhost:8443/hook", "resolves to 127.0.0.1, a loopback address"),
    ],
)
def test_the_ssrf_guard_refuses_internal_addresses(
    session_factory: sessionmaker[Session], clock: Clock, url: str, says: str
) -> None:
    strict = Deliverer(session_factory, Guard(allow=()), "worker-b", DeliveryOptions(timeout=2), clock=clock)
    try:
        with session_scope(session_factory) as session:
            service.create_endpoint(session, service.EndpointSpec(url), Guard())
        emit(session_factory)
        assert strict.run_once() == 1
    finally:
        strict.close()
    (delivery,) = deliveries(session_factory)
    assert delivery.status == "failed"  # refused for good, not retried
    assert says in delivery.last_error
    (attempt,) = attempts(session_factory)
    assert attempt.status_code is None


def test_plain_http_needs_the_host_allow_listed() -> None:
    with pytest.raises(Exception, match="not allow-listed for plain http"):
        Guard().check_url("http://hooks.example.com/in")
    assert (
        Guard(allow=("hooks.example.com",)).check_url("http://hooks.example.com/in")[1] == "hooks.example.com"
    )
    assert Guard(allow=("10.0.0.0/8",)).resolve("http://10.1.2.3/in").address == "10.1.2.3"


def test_an_event_is_written_with_the_change_or_not_at_all(
    session_factory: sessionmaker[Session],
) -> None:
    with receiving() as receiver:
        add_endpoint(session_factory, receiver.url)

    def change_that_fails() -> None:
        with session_scope(session_factory) as session:
            service.emit(session, "sync.completed", {"n": 1})
            raise RuntimeError("the change that caused it failed")

    with pytest.raises(RuntimeError):
        change_that_fails()
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0


def test_event_filters_route_to_the_endpoints_that_asked(session_factory: sessionmaker[Session]) -> None:
    everything, _ = add_endpoint(session_factory, "https://a.example.com/")
    alerts_only, _ = add_endpoint(session_factory, "https://b.example.com/", event_types=("alert.*",))
    critical, _ = add_endpoint(
        session_factory, "https://c.example.com/", event_types=("alert.firing",), severities=("critical",)
    )
    one_rule, _ = add_endpoint(
        session_factory, "https://d.example.com/", event_types=("alert.*",), rule_ids=("low-win-rate",)
    )
    with session_scope(session_factory) as session:
        service.emit(session, "sync.completed", {})
        service.emit(session, "alert.firing", {}, rule_id="low-win-rate", severity="warning")
        service.emit(session, "alert.firing", {}, rule_id="big-drop", severity="critical")
    routed: dict[int, int] = {}
    for delivery in deliveries(session_factory):
        routed[delivery.endpoint_id] = routed.get(delivery.endpoint_id, 0) + 1
    assert routed == {everything: 3, alerts_only: 2, critical: 1, one_rule: 1}


@pytest.mark.postgres
# Several workers share one PostgreSQL store; on SQLite one worker is the supported shape.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_workers_on_postgresql_never_send_a_delivery_twice(
    db_url: str,  # noqa: ARG001 - parametrized to PostgreSQL; the store comes through session_factory
    session_factory: sessionmaker[Session],
) -> None:
    with receiving() as receiver:
        _, secret = add_endpoint(session_factory, receiver.url)
        receiver.secrets.append(secret)
        with session_scope(session_factory) as session:
            ids = [service.emit(session, "sync.completed", {"n": n}) for n in range(300)]
        workers = [
            Deliverer(
                session_factory, LOCAL, f"worker-{n}", DeliveryOptions(timeout=5, batch=25, concurrency=4)
            )
            for n in range(2)
        ]
        stop = threading.Event()
        threads = [threading.Thread(target=w.run, args=(stop, 0.05)) for w in workers]
        for thread in threads:
            thread.start()
        deadline = utc_now() + timedelta(seconds=60)
        while len(receiver.accepted) < len(ids) and utc_now() < deadline:
            stop.wait(0.1)
        stop.set()
        for thread in threads:
            thread.join()
        for worker in workers:
            worker.close()
    assert sorted(r.message_id for r in receiver.accepted) == sorted(ids)
    assert len(receiver.attempts) == len(ids)  # no delivery sent twice
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(WebhookAttempt)) == len(ids)


def test_the_test_event_and_a_manual_retry(
    session_factory: sessionmaker[Session], deliverer: Deliverer
) -> None:
    with receiving(script=[404]) as receiver:
        endpoint_id, secret = add_endpoint(session_factory, receiver.url)
        receiver.secrets.append(secret)
        with session_scope(session_factory) as session:
            message_id = service.send_test(session, endpoint_id)
        deliverer.run_once()
        (failed,) = deliveries(session_factory)
        assert failed.status == "failed"
        with session_scope(session_factory) as session:
            service.retry_delivery(session, failed.id)
        deliverer.run_once()
    assert [(r.message_id, r.payload["type"]) for r in receiver.accepted] == [(message_id, "webhook.test")]
    (done,) = deliveries(session_factory)
    assert (done.status, done.attempts) == ("succeeded", 2)


def test_an_unreachable_receiver_is_a_recorded_error_retried_later(
    session_factory: sessionmaker[Session], deliverer: Deliverer
) -> None:
    add_endpoint(session_factory, "http://127.0.0.1:9/never")  # nothing listens there
    emit(session_factory)
    assert deliverer.run_once() == 1
    (attempt,) = attempts(session_factory)
    assert attempt.status_code is None
    assert "ConnectError" in attempt.error
    (retried,) = deliveries(session_factory)  # a connection error is retried
    assert (retried.status, retried.attempts, retried.last_status_code) == ("pending", 1, None)
