"""Connector errors, classified by what the sync engine does next.

| error | the engine |
|---|---|
| :class:`RetriableError` | backs off (honouring ``retry_after``) and resumes from the last checkpoint |
| :class:`QuotaExhaustedError` | stops the run gracefully; the next scheduled run resumes |
| :class:`FatalError` | fails the run; a human must act (credentials, permissions) |
| :class:`ConnectorConfigError` | fails the run; the connection's settings are wrong |
| :class:`SkippableRecordError` | counts and reports one bad record, and goes on |
"""

from __future__ import annotations

from typing import ClassVar


class ConnectorError(Exception):
    """Base of every error a connector raises on purpose."""

    recovery: ClassVar[str] = "fatal"


class RetriableError(ConnectorError):
    """A transient failure: network, 5xx, rate limit. Safe to retry from the last checkpoint."""

    recovery = "retriable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QuotaExhaustedError(ConnectorError):
    """The source's quota for the day (or window) is spent; resume on the next run."""

    recovery = "deferred"

    def __init__(self, message: str, *, resume_after: float | None = None) -> None:
        super().__init__(message)
        self.resume_after = resume_after


class FatalError(ConnectorError):
    """Retrying cannot help: authentication refused, permission missing, API gone."""

    recovery = "fatal"


class ConnectorConfigError(FatalError):
    """The connection's settings are invalid or point at something that does not exist."""

    recovery = "config"


class SkippableRecordError(ConnectorError):
    """One record cannot be mapped; it is reported and the stream goes on.

    Raise it from a record parser and wrap the parser with
    :func:`crm_perf_sync.connector_sdk.parse_records`, which turns it into a :class:`BadRecord`.
    """

    recovery = "skippable"

    def __init__(self, message: str, *, key: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.field = field
