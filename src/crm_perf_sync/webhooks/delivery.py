"""The delivery worker: claims due deliveries, sends them signed, records every attempt.

Each round claims up to ``batch`` due deliveries (safe with several workers, see
:func:`repository.claim_due`), sends them concurrently over one HTTP client, and records the
outcomes in one transaction. A delivery is signed per attempt (Standard Webhooks:
``webhook-id`` stable, ``webhook-timestamp`` the attempt's, ``webhook-signature`` one ``v1,`` per
live secret). Timeouts, connection errors, 429 and 5xx are retried after 5 s, 5 min, 30 min,
2 h, 5 h, 10 h and 10 h (each ±20%, never sooner than a ``Retry-After`` of up to 5 days), then
the delivery fails; any other answer but a 2xx fails it at once. 410 disables the endpoint, and so
do 5 days of failures in a row, with a ``webhook.endpoint_disabled`` event to the other endpoints.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
import orjson
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.doorbell import OUTBOX
from crm_perf_sync.kit.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_LATENCY
from crm_perf_sync.kit.retry import retry_after
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.webhooks import repository as repo
from crm_perf_sync.webhooks.repository import Due
from crm_perf_sync.webhooks.security import Guard, RefusedTarget
from crm_perf_sync.webhooks.service import emit

log = logging.getLogger(__name__)

#: Waits before the 2nd, 3rd, ... attempt; after the last, the delivery has failed.
SCHEDULE = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
JITTER = 0.2
#: An endpoint failing every delivery for this long is disabled.
DISABLE_AFTER = timedelta(days=5)
EXCERPT = 1000
USER_AGENT = "crm-perf-sync-webhooks/1"


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    timeout: float = 15.0
    concurrency: int = 16
    batch: int = 200
    #: How long a claim lasts; by default long enough for a whole batch of timeouts.
    claim_seconds: float | None = None

    @property
    def claim_ttl(self) -> timedelta:
        """A claim outlives the slowest send of a batch; if its worker dies, it then expires."""
        if self.claim_seconds is not None:
            return timedelta(seconds=self.claim_seconds)
        rounds = math.ceil(self.batch / self.concurrency)
        return timedelta(seconds=self.timeout * rounds + 30)


@dataclass(frozen=True, slots=True)
class Outcome:
    due: Due
    attempted_at: datetime
    status_code: int | None = None
    latency_ms: float | None = None
    excerpt: str | None = None
    error: str | None = None
    retry_after: timedelta | None = None
    refused: bool = False

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retriable(self) -> bool:
        if self.refused:
            return False
        if self.status_code is None:
            return True  # timeout, connection refused or reset
        return self.status_code == 429 or self.status_code >= 500


def signature(secrets: tuple[str, ...], message_id: str, moment: datetime, body: str) -> str:
    """``v1,<base64>`` per live secret, space-separated (a consumer accepts any that matches)."""
    return " ".join(Webhook(secret).sign(message_id, moment, body) for secret in secrets)


def _asked_wait(header: str | None, now: datetime) -> timedelta | None:
    """The receiver's ``Retry-After``, at most :data:`DISABLE_AFTER`: a longer wait would change
    nothing (the endpoint is disabled by then if it keeps failing), and one past the calendar's
    end could not even be scheduled."""
    seconds = retry_after(header, now=now)
    return None if seconds is None else timedelta(seconds=min(seconds, DISABLE_AFTER.total_seconds()))


@dataclass
class Deliverer:
    """Sends due deliveries; one per worker process (its HTTP client is shared by its threads)."""

    session_factory: sessionmaker[Session]
    guard: Guard
    holder: str
    options: DeliveryOptions = field(default_factory=DeliveryOptions)
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], datetime] = utc_now
    client: httpx.Client | None = None
    _pool: ThreadPoolExecutor | None = None

    def __post_init__(self) -> None:
        if self.client is None:
            limits = httpx.Limits(max_connections=self.options.concurrency * 2)
            self.client = httpx.Client(timeout=self.options.timeout, follow_redirects=False, limits=limits)
        self._pool = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="webhook")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self.client is not None:
            self.client.close()

    def run(self, stop: threading.Event, idle: float = 0.5) -> None:
        """Deliver until ``stop`` is set; between empty rounds, wait ``idle`` seconds or until an
        event is queued (:data:`~crm_perf_sync.kit.doorbell.OUTBOX` rings)."""
        with OUTBOX.listener(self.session_factory.kw["bind"]) as listener:
            while not stop.is_set():
                try:
                    sent = self.run_once()
                except Exception:
                    log.exception("webhook delivery round failed; retrying")
                    sent = 0
                if not sent and not stop.is_set():
                    listener.wait(idle)

    def run_once(self) -> int:
        """One round: claim, send, record. Returns how many deliveries were attempted."""
        now = self.clock()
        with session_scope(self.session_factory) as session:
            due = repo.claim_due(session, self.holder, now, now + self.options.claim_ttl, self.options.batch)
        if not due:
            return 0
        assert self._pool is not None
        outcomes = list(self._pool.map(self._send, due))
        with session_scope(self.session_factory) as session:
            self._record(session, outcomes)
        for outcome in outcomes:
            WEBHOOK_ATTEMPTS.labels(
                "succeeded" if outcome.succeeded else "refused" if outcome.refused else "failed"
            ).inc()
            if outcome.latency_ms is not None:
                WEBHOOK_LATENCY.observe(outcome.latency_ms / 1000)
        return len(outcomes)

    def _send(self, due: Due) -> Outcome:
        assert self.client is not None
        moment = self.clock()
        try:
            target = self.guard.resolve(due.url)
        except RefusedTarget as exc:
            return Outcome(due, moment, error=f"refused: {exc}", refused=True)
        body = orjson.dumps(due.payload).decode()
        # The consumer checks the timestamp against its own clock (within minutes): the real
        # time, whatever clock schedules the retries.
        signed_at = utc_now()
        headers = {
            "Host": f"{target.host}:{target.port}" if target.port not in (80, 443) else target.host,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": due.message_id,
            "webhook-timestamp": str(int(signed_at.timestamp())),
            "webhook-signature": signature(due.secrets, due.message_id, signed_at, body),
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        started = time.perf_counter()
        try:
            response = self.client.post(
                target.connect_url, content=body.encode(), headers=headers, extensions=extensions
            )
        except httpx.TimeoutException:
            return Outcome(
                due, moment, latency_ms=_ms(started), error=f"timed out after {self.options.timeout:g}s"
            )
        except httpx.HTTPError as exc:
            return Outcome(due, moment, latency_ms=_ms(started), error=f"{type(exc).__name__}: {exc}")
        return Outcome(
            due,
            moment,
            status_code=response.status_code,
            latency_ms=_ms(started),
            excerpt=response.text[:EXCERPT],
            retry_after=_asked_wait(response.headers.get("retry-after"), moment),
        )

    def _record(self, session: Session, outcomes: list[Outcome]) -> None:
        now = self.clock()
        repo.record_attempts(
            session,
            [
                {
                    "delivery_id": o.due.delivery_id,
                    "attempted_at": o.attempted_at,
                    "status_code": o.status_code,
                    "latency_ms": o.latency_ms,
                    "response_excerpt": o.excerpt,
                    "error": o.error,
                    "sent_by": self.holder,
                }
                for o in outcomes
            ],
        )
        disabled: dict[int, str] = {}
        for outcome in outcomes:
            due = outcome.due
            attempts = due.attempts + 1
            common = {
                "attempts": attempts,
                "last_status_code": outcome.status_code,
                "last_error": outcome.error,
            }
            if outcome.succeeded:
                repo.finish_delivery(
                    session, due.delivery_id, self.holder, status="succeeded", finished_at=now, **common
                )
                repo.set_endpoint(session, due.endpoint_id, failing_since=None)
                continue
            if outcome.status_code == 410:
                disabled[due.endpoint_id] = "the endpoint answered 410 Gone"
            elif outcome.retriable and attempts <= len(SCHEDULE):
                wait = SCHEDULE[attempts - 1] * (1 + self.rng.uniform(-JITTER, JITTER))
                if outcome.retry_after is not None:
                    wait = max(wait, outcome.retry_after)
                repo.finish_delivery(
                    session, due.delivery_id, self.holder, next_attempt_at=now + wait, **common
                )
                log.warning(
                    "webhook delivery %d (%s) to endpoint %d: attempt %d failed (%s); retrying in %ds",
                    due.delivery_id,
                    due.message_id,
                    due.endpoint_id,
                    attempts,
                    _what(outcome),
                    wait.total_seconds(),
                )
                self._failing(session, due.endpoint_id, now, disabled)
                continue
            repo.finish_delivery(
                session, due.delivery_id, self.holder, status="failed", finished_at=now, **common
            )
            log.warning(
                "webhook delivery %d (%s) to endpoint %d failed after %d attempt%s (%s)",
                due.delivery_id,
                due.message_id,
                due.endpoint_id,
                attempts,
                "" if attempts == 1 else "s",
                _what(outcome),
            )
            self._failing(session, due.endpoint_id, now, disabled)
        for endpoint_id, reason in disabled.items():
            self._disable(session, endpoint_id, reason, now)

    @staticmethod
    def _failing(session: Session, endpoint_id: int, now: datetime, disabled: dict[int, str]) -> None:
        since = repo.mark_endpoint_failing(session, endpoint_id, now)
        if now - since >= DISABLE_AFTER and endpoint_id not in disabled:
            disabled[endpoint_id] = f"every delivery failed since {since.isoformat()}"

    @staticmethod
    def _disable(session: Session, endpoint_id: int, reason: str, now: datetime) -> None:
        found = repo.endpoint(session, endpoint_id)
        if found is None or not found.enabled:
            return
        repo.set_endpoint(session, endpoint_id, enabled=False, disabled_reason=reason, updated_at=now)
        cancelled = repo.cancel_pending(session, endpoint_id, f"endpoint disabled: {reason}", now)
        log.warning("webhook endpoint %d (%s) disabled: %s", endpoint_id, found.url, reason)
        emit(
            session,
            "webhook.endpoint_disabled",
            {
                "endpoint_id": endpoint_id,
                "url": found.url,
                "reason": reason,
                "cancelled_deliveries": cancelled,
            },
            now=now,
        )


def _what(outcome: Outcome) -> str:
    if outcome.status_code is not None:
        return f"HTTP {outcome.status_code}"
    return outcome.error or "no answer"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
