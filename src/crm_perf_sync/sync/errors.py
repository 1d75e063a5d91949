"""The sync domain's errors, by what the caller does next (see also the connector SDK's errors)."""

from __future__ import annotations

from crm_perf_sync.kit.errors import AppError, Conflict


class SyncAlreadyRunning(Conflict):
    """Another process holds this connection's sync lease."""


class LeaseLost(AppError):
    """This process's claim expired and another took the connection over; its batch was rolled back."""


class ConnectorBug(AppError):
    """The connector broke its contract (wrong record type, unserialisable checkpoint, ...)."""


class StopRequested(Exception):
    """A graceful shutdown was requested between two batches."""


class MassDeletionWithheld(AppError):
    """A read would delete more of its stream than a sync may; none of its deletions was made."""
