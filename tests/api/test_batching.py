"""The group writer: what waits while a write runs is written together, each answered in turn."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from crm_perf_sync.api.batching import GroupWriter


def test_what_queues_behind_a_write_is_written_in_one_group_and_each_gets_its_own_answer() -> None:
    calls: list[list[int]] = []
    release = threading.Event()

    def write(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            release.wait(30)  # the write lock, held by a refresh
        return [item * 10 for item in items]

    async def run() -> list[int]:
        writer: GroupWriter[int, int] = GroupWriter(write)
        first = asyncio.create_task(writer.submit(1))
        while not calls:
            await asyncio.sleep(0.01)
        rest = [asyncio.create_task(writer.submit(n)) for n in range(2, 9)]
        await asyncio.sleep(0.1)
        release.set()
        return [await first, *[await task for task in rest]]

    assert asyncio.run(run()) == [10, 20, 30, 40, 50, 60, 70, 80]
    assert calls == [[1], [2, 3, 4, 5, 6, 7, 8]]


def test_a_failed_write_fails_every_request_of_its_group_and_not_the_next() -> None:
    calls: list[list[str]] = []
    release = threading.Event()

    def write(items: Sequence[str]) -> list[str]:
        calls.append(list(items))
        if len(calls) == 1:
            release.wait(30)
        if "bad" in items:
            raise ValueError("the store refused the group")
        return [item.upper() for item in items]

    async def run() -> list[object]:
        writer: GroupWriter[str, str] = GroupWriter(write)
        first = asyncio.create_task(writer.submit("a"))
        while not calls:
            await asyncio.sleep(0.01)
        group = [asyncio.create_task(writer.submit(item)) for item in ("b", "bad")]
        await asyncio.sleep(0.1)
        release.set()
        answers = await asyncio.gather(first, *group, return_exceptions=True)
        return [*answers, await writer.submit("c")]

    first, b, bad, later = asyncio.run(run())
    assert first == "A"
    for failed in (b, bad):
        assert isinstance(failed, ValueError)
        assert str(failed) == "the store refused the group"
    assert later == "C"
    assert calls == [["a"], ["b", "bad"], ["c"]]


def test_a_write_that_answers_for_fewer_items_than_it_was_given_is_an_error() -> None:
    writer: GroupWriter[int, int] = GroupWriter(lambda _items: [])
    with pytest.raises(RuntimeError, match="0 answers for 1 writes"):
        asyncio.run(writer.submit(1))
