"""Alert states and their history; webhook endpoints, the event outbox and its deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_perf_sync.kit.columns import BigIntPK, JSONDoc, UTCDateTime
from crm_perf_sync.models.base import Base


class AlertState(Base):
    """Where one alert rule stands for one scope: ``ok``, ``pending``, ``firing`` or ``resolved``.

    ``breaches`` counts consecutive breaching evaluations (a rule fires after ``for`` of them);
    ``outcome`` is the last evaluation's (``breach``, ``clear``, ``no_data``, ``low_sample``,
    ``outside_window``: a rule with ``days_left`` outside its last days) with
    its ``value`` and ``period_key``. ``rule_hash`` is the rule's definition the state belongs
    to: a changed rule counts its breaches again (a firing alert stays firing while the changed
    rule still sees a breach). ``severity`` is the rule's, and ``message_id`` the ``webhook-id``
    of the ``alert.firing`` event of the latest breach: what a removed rule's ``alert.resolved``
    and an endpoint's replay of the alerts firing now are built from, once the rule is gone.
    """

    __tablename__ = "alert_state"
    __table_args__ = (UniqueConstraint("rule_id", "scope", "scope_id", "currency"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(63))
    rule_hash: Mapped[str] = mapped_column(String(32))
    scope: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[str] = mapped_column(String(600))
    currency: Mapped[str] = mapped_column(String(3))
    state: Mapped[str] = mapped_column(String(16))
    breaches: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    period_key: Mapped[str | None] = mapped_column(String(16))
    since: Mapped[datetime] = mapped_column(UTCDateTime)  # when the current state began
    evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    severity: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[str | None] = mapped_column(String(64))


class AlertTransition(Base):
    """Every change of an alert state, with the value and threshold that caused it.

    ``reason`` is empty when the value caused it; otherwise ``rule_changed`` (a changed rule
    judged the scope again), ``rule_removed`` (the rule left the configuration) or
    ``scope_removed`` (the rule no longer covers the scope).
    """

    __tablename__ = "alert_transition"
    __table_args__ = (Index(None, "rule_id", "at"), Index(None, "at"))

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(63))
    scope: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[str] = mapped_column(String(600))
    currency: Mapped[str] = mapped_column(String(3))
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    period_key: Mapped[str | None] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(String(32))


class ScorePublication(Base):
    """A scorecard period announced as final (``score.published``), so it is announced once."""

    __tablename__ = "score_publication"

    scorecard_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    grain: Mapped[str] = mapped_column(String(16), primary_key=True)
    period_key: Mapped[str] = mapped_column(String(16), primary_key=True)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookEndpoint(Base):
    """Where events are sent, which ones, and the secrets they are signed with.

    ``event_types`` lists the types it receives (``*`` and ``alert.*`` style wildcards);
    ``rule_ids`` and ``severities``, when set, narrow alert events further. ``secret`` is the
    ``whsec_`` signing secret; after a rotation ``previous_secret`` also signs until
    ``previous_secret_expires_at``. ``failing_since`` is the first failure of an unbroken run of
    them (an endpoint failing for 5 days is disabled, ``disabled_reason`` says why).
    """

    __tablename__ = "webhook_endpoint"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(500), default="")
    event_types: Mapped[list[str]] = mapped_column(JSONDoc)
    rule_ids: Mapped[list[str] | None] = mapped_column(JSONDoc)
    severities: Mapped[list[str] | None] = mapped_column(JSONDoc)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    secret: Mapped[str] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookFiringRequest(Base):
    """An endpoint waiting for the ``alert.firing`` events of the alerts firing now.

    Taken by the next alert evaluation of an enabled endpoint, which queues those events in the
    transaction that reads the states (see :func:`crm_perf_sync.alerts.service.evaluate`).
    """

    __tablename__ = "webhook_firing_request"

    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_endpoint.id", ondelete="CASCADE"), primary_key=True
    )
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookEvent(Base):
    """The outbox: one event, written in the transaction of the change that caused it.

    ``message_id`` is the ``webhook-id`` every delivery of it carries (stable across retries and
    replays, so consumers can drop duplicates); ``payload`` is ``{type, timestamp, data}``.
    """

    __tablename__ = "webhook_event"
    __table_args__ = (Index(None, "created_at"), Index(None, "type"))

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(63))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    rule_id: Mapped[str | None] = mapped_column(String(63))
    severity: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    """One event on its way to one endpoint: ``pending`` (due at ``next_attempt_at``),
    ``succeeded``, ``failed`` (gave up, or refused for good) or ``cancelled`` (endpoint removed).

    A worker claims due deliveries by setting ``claimed_by`` and ``claimed_until``; a claim that
    outlives its worker expires and the delivery is taken over.
    """

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index(None, "status", "next_attempt_at"),
        Index(None, "endpoint_id", "status"),
        Index(None, "event_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("webhook_event.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoint.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery: what came back (or what went wrong) and how long it took."""

    __tablename__ = "webhook_attempt"
    __table_args__ = (Index(None, "delivery_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_delivery.id", ondelete="CASCADE"))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    sent_by: Mapped[str | None] = mapped_column(String(200))  # the worker that made the attempt
