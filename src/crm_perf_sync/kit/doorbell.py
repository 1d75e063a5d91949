"""Doorbells: how one part of the service tells another that work waits, at once rather than at
the other's next look.

The push inbox (the API stores what a CRM pushed; a worker fetches it) and the webhook outbox (a
refresh queues alert events; a worker delivers them) are both looked at on a short interval
anyway, because a ring can be missed (a worker busy at the time, a lost connection, a replica
that started later). A ring only shortens the wait: the waiting loop wakes when it rings, and at
its interval when nothing rings.

A ring is sent two ways. In the process itself, an event wakes the loops of the same process
(``serve`` runs the API and the worker together). On PostgreSQL, the writing transaction also
sends ``NOTIFY`` on the bell's channel, delivered when (and only if) it commits, which a worker
in another process or on another machine ``LISTEN``-s for on a connection of its own.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

#: The shortest wait on a listening connection (psycopg takes a timeout of 0 as none at all).
POLL_SECONDS = 0.01


class Doorbell:
    """One kind of waiting work; a process keeps one instance per kind (module constants)."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self._rung = threading.Event()
        self._writers = 0
        self._written = threading.Condition()

    @contextmanager
    def storing(self) -> Iterator[None]:
        """Around a transaction of this process that stores work for the bell, its wait for the
        store's write lock included (see :meth:`settled`)."""
        with self._written:
            self._writers += 1
        try:
            yield
        finally:
            with self._written:
                self._writers -= 1
                if not self._writers:
                    self._written.notify_all()

    def settled(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until no transaction of this process is storing work
        for the bell (:meth:`storing`); whether none was left.

        For a loop about to take the work: on SQLite, a turn's own transaction holds the store's
        only write lock, the pushes that came meanwhile wait for it and then commit one after
        another, and a turn that began at once would take the first of them alone (a small turn,
        which the rest then wait for). Other processes' writers are not seen: they do not wait
        for this one's lock.
        """
        with self._written:
            return self._written.wait_for(lambda: self._writers == 0, timeout)

    def notify(self, on: Session | Connection) -> None:
        """Ring the other processes when ``on``'s transaction commits (PostgreSQL's ``NOTIFY``;
        nothing elsewhere). Call it in the transaction that stored the work, then
        :meth:`wake` once it committed."""
        bind = on.get_bind() if isinstance(on, Session) else on
        if bind.dialect.name == "postgresql":
            on.execute(text(f"NOTIFY {self.channel}"))

    def wake(self) -> None:
        """Ring this process's loops (after the commit: woken earlier, they would find nothing)."""
        self._rung.set()

    def listener(self, engine: Engine) -> Listener:
        """A waiter for rings, for one loop (a context manager: closed when the loop ends)."""
        return Listener(self, engine)


class Listener:
    """Waits for a :class:`Doorbell`'s ring. On PostgreSQL it holds one connection of its own
    (opened at the first wait, opened again after a failure); elsewhere it waits on the bell's
    in-process event."""

    def __init__(self, bell: Doorbell, engine: Engine) -> None:
        self.bell = bell
        self.engine = engine
        self._conn: Connection | None = None
        self._failed = False

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a ring; whether one came. Never raises: a listener
        that cannot listen (the database is away) waits the whole timeout instead."""
        if self.engine.dialect.name != "postgresql":
            rung = self.bell._rung.wait(timeout)
            self.bell._rung.clear()
            return rung
        try:
            driver = self._listening()
            rung = any(True for _ in driver.notifies(timeout=max(timeout, POLL_SECONDS), stop_after=1))
            if rung:
                self._drain(driver)  # (once the first generator is done: it holds the connection's lock)
            return rung
        except Exception as exc:  # the database went away: look at the interval until it is back
            if not self._failed:
                log.warning("listening for %s failed (%s); looking at an interval", self.bell.channel, exc)
            self._failed = True
            self.close()
            threading.Event().wait(timeout)
            return False

    def _listening(self) -> Any:
        if self._conn is None:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                conn.exec_driver_sql(f"LISTEN {self.bell.channel}")
            except BaseException:
                conn.invalidate()
                conn.close()
                raise
            self._conn = conn
            if self._failed:
                log.info("listening for %s again", self.bell.channel)
            self._failed = False
        return self._conn.connection.driver_connection

    def _drain(self, driver: Any) -> None:
        """Take the rings that came meanwhile: one wake-up answers them all."""
        deque(driver.notifies(timeout=POLL_SECONDS, stop_after=1000), maxlen=0)

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.invalidate()  # never back into the pool with LISTEN on it
                conn.close()
            except Exception:
                log.debug("closing the %s listener failed", self.bell.channel, exc_info=True)


#: Changes a CRM pushed wait in the inbox (rung by the ingest endpoint).
INBOX = Doorbell("crm_perf_sync_inbox")
#: Webhook events wait in the outbox (rung by the refresh that queued them).
OUTBOX = Doorbell("crm_perf_sync_outbox")
