"""Doorbells: a ring reaches a listener only once the work it announces is committed, once per
ring however many came meanwhile, and a listener whose connection is cut listens again."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, text

from crm_perf_sync.kit.db import create_db_engine
from crm_perf_sync.kit.doorbell import Doorbell, Listener


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


@contextmanager
def listening(bell: Doorbell, engine: Engine) -> Iterator[Listener]:
    """A listener of ``bell`` that listens from here on (a ring from before does not count)."""
    with bell.listener(engine) as listener:
        listener.wait(0)
        yield listener


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_ring_in_this_process_wakes_a_waiting_listener_once(engine: Engine) -> None:
    bell = Doorbell("test_bell_local")
    with listening(bell, engine) as listener:
        assert not listener.wait(0.1)  # nothing rang
        ringer = threading.Timer(0.2, bell.wake)
        ringer.start()
        assert listener.wait(30)
        ringer.join()
        bell.wake()
        bell.wake()
        assert listener.wait(0)  # two rings while nobody waited: one wake-up
        assert not listener.wait(0.1)


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_another_process_hears_a_ring_when_the_transaction_commits_and_never_when_it_rolls_back(
    engine: Engine,
) -> None:
    bell = Doorbell("test_bell_remote")
    with listening(bell, engine) as listener:  # on a connection of its own, as a worker elsewhere
        with engine.connect() as conn:
            bell.notify(conn)
            assert not listener.wait(0.2)  # not before the commit: the work is not there to see
            conn.rollback()
        assert not listener.wait(0.2)  # nor after a rollback
        with engine.begin() as conn:
            bell.notify(conn)
            bell.notify(conn)
        assert listener.wait(30)
        assert not listener.wait(0.2)  # one transaction, one ring


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_listener_whose_connection_is_cut_waits_its_interval_then_listens_again(engine: Engine) -> None:
    bell = Doorbell("test_bell_cut")
    with listening(bell, engine) as listener:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            )
        assert not listener.wait(0.2)  # the cut connection: no ring, no error
        listener.wait(0)  # listening again
        with engine.begin() as conn:
            bell.notify(conn)
        assert listener.wait(30)


def test_settled_waits_for_the_work_this_process_is_storing_and_no_longer_than_asked() -> None:
    """The push inbox's loop waits for the pushes the API of its process is storing (on SQLite,
    waiting for the write lock its last turn held), so that they go in one turn, not one by one."""
    bell = Doorbell("test_bell_settled")
    assert bell.settled(0)  # nothing being stored
    entered, release, done = threading.Event(), threading.Event(), threading.Event()

    def store() -> None:
        with bell.storing():
            entered.set()
            release.wait(30)
        done.set()

    writers = [threading.Thread(target=store) for _ in range(2)]
    for writer in writers:
        writer.start()
    assert entered.wait(30)
    assert not bell.settled(0.05)  # still storing: a turn would start without it
    waiter_result: list[bool] = []
    waiter = threading.Thread(target=lambda: waiter_result.append(bell.settled(30)))
    waiter.start()
    release.set()
    waiter.join()
    for writer in writers:
        writer.join()
    assert done.is_set()
    assert waiter_result == [True]
    with pytest.raises(RuntimeError), bell.storing():
        raise RuntimeError("the transaction failed")
    assert bell.settled(0)  # a failed store is no longer storing
