"""Benchmark plumbing: sizes, databases, measuring in a child process, reporting.

Each measurement runs in a fresh child process so its peak RSS is its own; results are printed as
a table row and appended as JSON lines, stamped with the time they were measured: full-size runs to
``bench/results/full.jsonl``, which is committed with the report it is the source of, and small
runs (which only prove the harness works) to ``bench/results/small.jsonl``, which is not.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import resource
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from queue import Empty
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: The history of full-size results, kept in the repository: ``make bench-report`` renders it.
RESULTS = RESULTS_DIR / "full.jsonl"


def results_file(run_size: str) -> Path:
    """Where a run of ``run_size`` records its results."""
    return RESULTS if run_size == "full" else RESULTS_DIR / f"{run_size}.jsonl"


@dataclass
class Result:
    scenario: str
    size: str
    database: str
    records: int
    seconds: float
    rate: float  # records per second
    peak_rss_mb: float
    floor: str | None = None
    floor_rate: float | None = None
    ratio: float | None = None  # how it compares with the floor; ``target`` says which way
    target: str | None = None
    passed: bool | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def row(self) -> str:
        ratio = f"{self.ratio:.2f}" if self.ratio is not None else "-"
        verdict = {True: "ok", False: "BELOW TARGET", None: "-"}[self.passed]
        store = self.notes.get("store_rate")
        store_text = f"{store:>10,}/s" if isinstance(store, int) else f"{'-':>12}"
        return (
            f"{self.scenario:<10} {self.size:<6} {self.database:<10} {self.records:>10,} "
            f"{self.seconds:>8.2f}s {self.rate:>10,.0f}/s {store_text} {self.peak_rss_mb:>7.1f} MB "
            f"{ratio:>6}  {self.target or '':<32} {verdict}"
        )


def header() -> str:
    return (
        f"{'scenario':<10} {'size':<6} {'database':<10} {'records':>10} {'time':>9} {'rate':>12} "
        f"{'store rate':>12} {'peak RSS':>10} {'ratio':>6}  {'target':<32} verdict"
    )


@cache
def describe_machine() -> dict[str, Any]:
    """Where results are measured: cores, memory, system, and the database and Python versions."""
    versions = {"SQLite": sqlite3.sqlite_version, "Python": platform.python_version()}
    url = pg_admin_url()
    if url:
        try:
            engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
            with engine.connect() as conn:
                versions["PostgreSQL"] = str(conn.execute(text("show server_version")).scalar())
            engine.dispose()
        except Exception as exc:  # the description stands without it
            versions["PostgreSQL"] = f"unknown ({type(exc).__name__})"
    memory = "unknown"
    with suppress(OSError):  # not Linux: the rest of the description stands
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    return {
        "cores": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "memory": memory,
        "system": f"{platform.system()} {platform.release()}",
        "versions": versions,
    }


def append(result: Result, run_size: str) -> Path:
    """Record ``result`` in the results file of ``run_size``; returns that file."""
    target = results_file(run_size)
    target.parent.mkdir(parents=True, exist_ok=True)
    machine = {"host": platform.node(), "python": platform.python_version(), "cpus": os.cpu_count()}
    measured = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds")}
    record = asdict(result) | machine | {"run_size": run_size, "machine": describe_machine()} | measured
    with target.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    return target


def pg_admin_url() -> str | None:
    return os.environ.get("CRM_PERF_SYNC_BENCH_PG_URL") or os.environ.get("CRM_PERF_SYNC_TEST_PG_URL")


@contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    """A fresh, migrated store of ``kind`` (sqlite or postgresql), dropped afterwards.

    Within a :func:`sharing` scope it is a copy of a store migrated once in that scope (a file copy,
    ``CREATE DATABASE ... TEMPLATE``): a run creates some twenty stores of each kind, and copying
    one takes a fraction of the time of running every migration again.
    """
    template = _template(kind, workdir) if _SHARED else None
    with _created(kind, workdir, template) as url:
        yield url


@contextmanager
def _created(kind: str, workdir: Path, template: str | None) -> Iterator[str]:
    """A new store of ``kind``: a copy of ``template`` (a file, or a database name), or migrated."""
    from crm_perf_sync.kit import migrate
    from crm_perf_sync.kit.db import create_db_engine

    if kind == "sqlite":
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
        url = f"sqlite:///{path}"
        if template is not None:
            shutil.copyfile(template, path)
        else:
            engine = create_db_engine(url)
            migrate.upgrade(engine)
            engine.dispose()  # closing the last connection checkpoints the WAL into the file
        try:
            yield url
        finally:
            for suffix in ("", "-wal", "-shm", ".worker-lock"):  # the worker lock of a served copy
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    admin_url = pg_admin_url()
    if admin_url is None:
        raise RuntimeError("no PostgreSQL: set CRM_PERF_SYNC_BENCH_PG_URL")
    name = f"cps_bench_{uuid.uuid4().hex[:10]}"
    admin_target = make_url(admin_url).set(drivername="postgresql+psycopg")
    admin = create_engine(admin_target, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    url = admin_target.set(database=name).render_as_string(hide_password=False)
    try:
        if template is None:
            engine = create_db_engine(url)
            migrate.upgrade(engine)
            engine.dispose()  # a template must have no connection when it is copied
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def copy_of(kind: str, workdir: Path, url: str) -> Iterator[str]:
    """A copy of the store at ``url`` (of ``kind``, with no connection open), dropped afterwards."""
    database = make_url(url).database
    assert database is not None
    with _created(kind, workdir, database) as copy:
        yield copy


def _template(kind: str, workdir: Path) -> str:
    """The innermost :func:`sharing` scope's migrated store of ``kind``, built on first use:
    the path of its file (sqlite) or its database name (postgresql)."""
    scope = _SHARED[-1]
    if kind not in scope.templates:
        url = scope.stack.enter_context(_created(kind, workdir, None))
        database = make_url(url).database
        assert database is not None
        scope.templates[kind] = database
    return scope.templates[kind]


@dataclass
class _Scope:
    """What a :func:`sharing` scope has built, and drops at its end."""

    stack: ExitStack
    #: Migrated stores to copy, by kind: a file path (sqlite) or a database name (postgresql).
    templates: dict[str, str] = field(default_factory=dict)
    #: :func:`shared_store`'s stores, by (kind, name): the URL and what their build returned.
    stores: dict[tuple[str, str], tuple[str, dict[str, Any]]] = field(default_factory=dict)


#: The open :func:`sharing` scopes, innermost last.
_SHARED: list[_Scope] = []


@contextmanager
def sharing() -> Iterator[None]:
    """A scope (a run of the benchmarks) in which every new store is a copy of one migrated store
    of its kind, and :func:`shared_store` builds each named store once."""
    with ExitStack() as stack:
        _SHARED.append(_Scope(stack))
        try:
            yield
        finally:
            _SHARED.pop()


@contextmanager
def shared_store(
    kind: str, workdir: Path, name: str, build: Callable[..., dict[str, Any]], *args: Any
) -> Iterator[tuple[str, dict[str, Any]]]:
    """A store of ``kind`` built by ``build(url, *args)`` in a child; yields its URL and what
    ``build`` returned.

    Scenarios that read the same data (the 500-rep store of ``api-scorecard`` and ``dashboard``)
    name it alike: within a :func:`sharing` scope the first one builds it and the others reuse it,
    and it is dropped when the scope ends. Outside one, each use builds and drops its own. A user of
    a shared store may add to it (a key of its own) but must leave what ``build`` made as it was.
    """
    if not _SHARED:
        with database(kind, workdir) as url:
            yield url, in_child(build, url, *args)
        return
    scope = _SHARED[-1]
    if (kind, name) not in scope.stores:
        url = scope.stack.enter_context(database(kind, workdir))
        scope.stores[(kind, name)] = (url, in_child(build, url, *args))
    yield scope.stores[(kind, name)]


def peak_rss_mb() -> float:
    """This process's peak resident memory, in MiB.

    ``VmHWM`` belongs to the address space the process runs in, so a child counts only its
    own memory; ``ru_maxrss`` survives ``exec`` and starts at the parent's peak, which made every
    child of a parent that had grown report at least the parent's size (and hid real growth from
    the flat-RSS checks). ``ru_maxrss`` stays the fallback where ``/proc`` is missing.
    """
    with suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


#: What a forkserver imports once, before it forks any child: the store and the sync engine, which
#: every measured child that touches the store imports anyway. A spawned child spent seconds on
#: these imports before its measurement could start (most of a small run's time); a forked child
#: starts in milliseconds, already holding them.
PRELOAD = ["crm_perf_sync.kit.db", "crm_perf_sync.sync.service"]


@cache
def child_context() -> Any:
    """The multiprocessing context every benchmark process starts from (measured or serving).

    A forkserver rather than ``fork``: the server forks from a clean, single-threaded process
    (the parent may hold engines, emulator threads and open sockets), and each child still has an
    address space of its own, so its ``VmHWM`` is its own (see :func:`peak_rss_mb`).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _child(target: Callable[..., dict[str, Any]], args: tuple[Any, ...], queue: Any) -> None:
    try:
        outcome = target(*args)
        outcome["peak_rss_mb"] = peak_rss_mb()
        queue.put(("ok", outcome))
    except BaseException as exc:
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def in_child(target: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``target(*args)`` in a fresh process; returns its dict plus ``peak_rss_mb``."""
    context = child_context()
    queue = context.Queue()
    process = context.Process(target=_child, args=(target, args, queue))
    process.start()
    status, payload = queue.get()
    process.join()
    if status != "ok":
        raise RuntimeError(payload)
    return dict(payload)


@contextmanager
def serving(target: Callable[..., None], *args: Any) -> Iterator[Any]:
    """A server process (an emulator) running ``target(*args, queue, stop)``: it puts on ``queue``
    what its clients need (its address, its credentials) once it serves, and runs until ``stop``
    is set. Yields what it put; a server that dies before that raises rather than hangs."""
    context = child_context()
    queue = context.Queue()
    stop = context.Event()
    process = context.Process(target=target, args=(*args, queue, stop), daemon=True)
    process.start()
    try:
        while True:  # seeding a million records takes a while
            try:
                address = queue.get(timeout=1)
                break
            except Empty:
                if not process.is_alive():
                    raise RuntimeError(f"the server process ended (exit code {process.exitcode})") from None
        yield address
    finally:
        stop.set()
        process.join(timeout=30)
        if process.is_alive():
            process.terminate()
