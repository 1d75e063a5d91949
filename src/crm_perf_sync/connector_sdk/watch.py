"""Changes a CRM cannot push, asked for often and cheaply: what a connector that is watched
implements.

A CRM whose changes cannot reach the service as pushes (no app to register, or a push API that
needs more than a Python client keeps) can still be asked, every few seconds, one cheap question:
what is the latest change it holds? A worker asks each watched connection at its
:meth:`Watchable.watch_interval` and runs the connection's incremental sync at once when the
answer is newer than the last it saw: a change reaches the numbers within seconds plus a sync,
while a quiet CRM costs a request per watched object per tick, within the budget the connector
keeps. The connector of that sync is told the change first (:meth:`Watchable.follow`), so one
whose reads stop short of the present (a margin for clock skew) may read up to it: a time in the
CRM's own clock, at which a record exists.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime, timedelta


class Watchable(ABC):
    """A connector whose CRM can be asked cheaply for its latest change (mixed into its
    :class:`~.Connector` subclass)."""

    @abstractmethod
    def watch_interval(self) -> timedelta | None:
        """How long to wait between two questions (``None``: the connection is not watched). From
        the settings, and from what the connector has learnt of the CRM's API budget (the wait
        grows when asking as often as configured would spend more than the share it may)."""

    @abstractmethod
    def latest_change(self) -> datetime | None:
        """The time of the latest change to a record of the streams the connection reads, in the
        CRM's own clock (``None`` when it has no record): one cheap request per object. Errors
        are raised as in :meth:`~.Connector.read`."""

    def follow(self, latest: datetime) -> None:  # noqa: B027 - optional: most connectors need not know
        """Told, before a sync the watch starts, the latest change it saw (from
        :meth:`latest_change` of another instance): reads may go up to it. Nothing by default."""
