"""Pushes from the CRMs: verified by the connection's connector, then put in the inbox before
they are acknowledged (a push answered 2xx is never lost; one refused never reaches the store).

What a record is now is never taken from a push: the inbox says which records changed, and they
are read from the CRM (the scheduled sync reads every change in any case).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from crm_perf_sync.connector_sdk import Connector
from crm_perf_sync.connector_sdk.push import Pushable, PushedChange, PushRefused, PushRequest
from crm_perf_sync.kit.errors import AppError, NotFound


class PushUnverified(AppError):
    """A push that is not verifiably from the CRM (see :class:`PushRefused`): never stored."""

    status = 401
    code = "push-refused"
    challenge = None  # the CRM signs with a scheme of its own, not an HTTP one


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a push announced and what of it was new to the inbox."""

    connection_id: str
    changes: int
    accepted: int

    @property
    def duplicates(self) -> int:
        return self.changes - self.accepted


def verified(connection_id: str, connector: Connector, request: PushRequest) -> Sequence[PushedChange]:  # type: ignore[type-arg]
    """The changes of a push to ``connection_id``, once its connector has verified it; raises
    :class:`NotFound` when the connector takes no pushes and :class:`PushUnverified` when the
    request is not verifiably from the CRM."""
    if not isinstance(connector, Pushable) or not connector.takes_pushes():
        raise NotFound(
            f"connection {connection_id!r} takes no pushes: its connector has no push endpoint "
            "(its changes arrive by the scheduled sync)"
        )
    try:
        changes = connector.verify_push(request)
    except PushRefused as exc:
        raise PushUnverified(f"push to {connection_id!r} refused: {exc}") from None
    streams = {stream.name for stream in connector.streams()}
    for change in changes:
        if change.stream not in streams:
            # The connector's own mistake, not the CRM's: nothing of the push is stored.
            raise ValueError(
                f"connection {connection_id!r}: a push change names stream {change.stream!r}, "
                f"which the connector does not read ({', '.join(sorted(streams))})"
            )
    return changes
