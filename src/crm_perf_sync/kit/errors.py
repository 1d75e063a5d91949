"""The application's error family. Each class says what the caller can do about it; the CLI and
the API render them (one line on a terminal, problem+json over HTTP). Services never raise HTTP
exceptions."""

from __future__ import annotations


class AppError(Exception):
    """Base of every expected failure. ``str(error)`` is a complete, user-facing sentence."""

    status: int = 500
    code: str = "internal"
    #: A 401's ``WWW-Authenticate`` challenge: how to authenticate (``None``: no HTTP scheme).
    challenge: str | None = "Bearer"


class NotFound(AppError):
    status = 404
    code = "not-found"


class Conflict(AppError):
    """The request is valid but clashes with current state (e.g. a sync already running)."""

    status = 409
    code = "conflict"


class InvalidInput(AppError):
    status = 422
    code = "invalid-input"


class DatabaseUnavailable(AppError):
    """The store cannot be reached or is not migrated; retry later or fix the URL."""

    status = 503
    code = "database-unavailable"


class StoreBusy(AppError):
    """The SQLite store stayed write-locked by another process past the wait; retry later."""

    status = 503
    code = "store-busy"


class ConfigurationError(AppError):
    """The configuration is invalid; the message lists each issue with file, line and key."""

    status = 500
    code = "configuration"


class BadRequest(AppError):
    """The request cannot be understood as sent (a malformed cursor, an unknown format)."""

    status = 400
    code = "bad-request"


class Stale(AppError):
    """A page cursor refers to results that have since been recomputed: start again."""

    status = 409
    code = "stale-cursor"


class InvalidRows(InvalidInput):
    """Several parts of one input are invalid (the rows and fields of an uploaded file): each is
    in ``errors`` as ``{"where", "message"}`` plus what locates it (``row``, ``field``)."""

    def __init__(self, message: str, errors: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.errors = errors
