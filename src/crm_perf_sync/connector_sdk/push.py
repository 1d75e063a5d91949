"""Changes a CRM pushes: what a connector that takes them implements.

A CRM that can push (HubSpot's app webhooks, 简道云's 数据推送, ...) calls the connection's
ingest endpoint, ``POST /api/v1/ingest/<connection>``. The service hands the request, as it was
received, to the connector's :meth:`Pushable.verify_push`, which proves it came from the CRM
(a signature over the request with the connection's secret, a timestamp within the replay
window) and says which records changed; a request it refuses never reaches the store. What a
record is now is never taken from the push: the changes are fetched from the CRM by id.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crm_perf_sync.connector_sdk.base import Message, StreamSpec


@dataclass(frozen=True, slots=True)
class PushRequest:
    """A request the CRM sent to the ingest endpoint, as it was received.

    ``url`` is the address the CRM called (scheme, host, path and query string, as the CRM
    signed it: behind a proxy, the public address, which the connection's settings may give);
    ``headers`` have lower-case names; ``body`` is the raw bytes (a signature covers them as sent).
    """

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class PushedChange:
    """One change a push announces: a record of a stream was created, changed or deleted.

    ``event_id`` is the CRM's id of the event, the same when the CRM delivers it again (it
    retries what was not acknowledged): a change already received under it is dropped.
    ``deleted`` is what the push says; the CRM is asked anyway.
    """

    event_id: str
    stream: str
    external_id: str
    deleted: bool = False
    occurred_at: datetime | None = None


class PushRefused(Exception):
    """A request that is not verifiably from the CRM: unsigned, signed with another secret,
    outside the replay window, or not a push the connector knows. The message says which
    (never the secret or the expected signature); the request is answered 401 and not stored."""


class Pushable(ABC):
    """A connector whose CRM can push changes (mixed into its :class:`~.Connector` subclass)."""

    def takes_pushes(self) -> bool:
        """Whether this connection takes pushes: true unless its configuration says otherwise (a
        declarative connector whose spec describes no pushes). One that does not is answered 404."""
        return True

    @abstractmethod
    def verify_push(self, request: PushRequest) -> Sequence[PushedChange]:
        """The changes ``request`` announces, once it is verified to come from the CRM; raise
        :class:`PushRefused` when it is not. No I/O: the verification uses the settings alone.
        A verified request that announces nothing the connector reads gives no change."""

    @abstractmethod
    def fetch(self, stream: StreamSpec, ids: Sequence[str]) -> Iterator[Message]:
        """The records of ``stream`` with these ids as the CRM has them now, and a
        :class:`~.Tombstone` for each id it no longer has (deleted, archived, merged away): a
        targeted sync of what a push announced. No checkpoint: a fetch moves no cursor. Errors
        are raised as in :meth:`~.Connector.read` (a retriable one is retried)."""
