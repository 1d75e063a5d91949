"""Writes that must take one lock, taken once for all that wait: a group commit in the event loop.

SQLite lets one writer in at a time, and a KPI refresh holds the write lock throughout. Pushes
that arrive meanwhile must not each wait for it on a worker thread with a pooled connection: the
reads would find none left (a dashboard froze behind a refresh). Nor can they wait one at a time
behind a lock of their own: each would then wait for a whole refresh, and a burst of pushes would
be let in one per refresh. A :class:`GroupWriter` queues them in the event loop; whoever holds
its lock writes every push queued so far in one transaction (one wait for the write lock, one
commit), and each request gets its own answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from fastapi.concurrency import run_in_threadpool

Item = TypeVar("Item")
Answer = TypeVar("Answer")


@dataclass
class GroupWriter(Generic[Item, Answer]):
    """Runs ``write`` (on a worker thread) over the items queued while the previous write ran.

    ``write`` takes the items in their order of arrival and returns one answer per item, or
    raises: then every item of the group gets that error. Create and use it in one event loop.
    """

    write: Callable[[Sequence[Item]], Sequence[Answer]]
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _queued: list[tuple[Item, asyncio.Future[Answer]]] = field(default_factory=list)

    async def submit(self, item: Item) -> Answer:
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._queued.append((item, answer))
        async with self._lock:
            if not answer.done():  # not written by a group before
                group, self._queued = self._queued, []
                try:
                    answers = await run_in_threadpool(self.write, [queued for queued, _ in group])
                    if len(answers) != len(group):
                        raise RuntimeError(f"{len(answers)} answers for {len(group)} writes")
                except BaseException as exc:  # the error of each request of the group (this one's too)
                    error = exc if isinstance(exc, Exception) else RuntimeError("the write was interrupted")
                    for _, waiting in group:
                        if waiting is not answer:
                            waiting.set_exception(error)
                    raise
                for (_, waiting), written in zip(group, answers, strict=True):
                    waiting.set_result(written)
        return await answer
