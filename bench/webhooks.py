"""``webhooks``: delivery throughput to a local receiver, and the latency of an alert.

A receiver on 127.0.0.1 runs in a process of its own (asyncio, answering 204 at once and noting
when each webhook-id arrived; one request in fifty is verified with the standardwebhooks library,
so the signatures are checked without the receiver becoming what is measured).

``throughput``: N events in the outbox for one endpoint; one delivery worker (its default
concurrency) sends them all. Deliveries per second, target >= 200.

``alert latency``: the delivery loop runs as in a worker (polling every half second); a KPI
refresh raises an alert (a rule that breaches on the data synced); the latency is from the
moment the refresh committed to the moment the receiver got ``alert.firing``, target <= 2 s,
the worst of ``ALERTS[size]`` refreshes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from bench.harness import Result, child_context, database, in_child

EVENTS = {"small": 100, "full": 5000}
ALERTS = {"small": 2, "full": 5}
TARGET_RATE = 200.0
TARGET_LATENCY = 2.0


def _receive(port_out: Any, report: Any, stop: Any, secret_in: Any) -> None:
    """The receiver process: note each webhook-id's arrival; verify every fiftieth."""
    from standardwebhooks.webhooks import Webhook

    arrivals: dict[str, float] = {}
    verified = 0
    failures = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal verified, failures
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers: dict[str, str] = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                message_id = headers.get("webhook-id", "")
                arrivals.setdefault(message_id, time.time())
                if len(arrivals) % 50 == 1 and not secret_in.empty():
                    secret = secret_in.get()
                    secret_in.put(secret)
                    try:
                        Webhook(secret).verify(body, headers)
                        verified += 1
                    except Exception:
                        failures += 1
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port_out.put(server.sockets[0].getsockname()[1])
        while stop.empty():
            await asyncio.sleep(0.05)
        server.close()

    asyncio.run(main())
    report.put({"arrivals": arrivals, "verified": verified, "failures": failures})


def _throughput(url: str, receiver_url: str, count: int, secret_queue: Any) -> dict[str, Any]:
    from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
    from crm_perf_sync.webhooks import service
    from crm_perf_sync.webhooks.delivery import Deliverer
    from crm_perf_sync.webhooks.security import Guard

    engine = create_db_engine(url)
    factory = make_session_factory(engine)
    guard = Guard(allow=("127.0.0.1",))
    with session_scope(factory) as session:
        _, secret = service.create_endpoint(session, service.EndpointSpec(receiver_url), guard)
        for n in range(count):
            service.emit(session, "sync.completed", {"run_id": n, "connection_id": "bench", "inserted": n})
    secret_queue.put(secret)
    deliverer = Deliverer(factory, guard, "bench")
    started = time.perf_counter()
    sent = 0
    while batch := deliverer.run_once():
        sent += batch
    seconds = time.perf_counter() - started
    deliverer.close()
    engine.dispose()
    return {"sent": sent, "seconds": seconds}


LATENCY_CONFIG = """business: {timezone: UTC}
connections:
  - id: demo
    kind: demo
    settings: {opportunities: 2000, reps: 12, as_of: "2026-01-01T00:00:00Z"}
alerts:
  rules:
    - id: bench-{n}
      kpi: won_deals
      grain: all
      when: {op: ">", value: 0}
"""


def _await_delivery(factory: sessionmaker[Session], rule: str, timeout: float = 30.0) -> None:
    """Wait until the receiver has acknowledged ``rule``'s ``alert.firing`` (before the next round's
    config resolves the rule), polling the outbox rather than sleeping a fixed, generous while."""
    from sqlalchemy import select

    from crm_perf_sync.kit.db import session_scope
    from crm_perf_sync.models import WebhookDelivery, WebhookEvent

    succeeded = (
        select(WebhookDelivery.id)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .where(
            WebhookEvent.type == "alert.firing",
            WebhookEvent.rule_id == rule,
            WebhookDelivery.status == "succeeded",
        )
    )
    deadline = time.monotonic() + timeout
    while True:
        with session_scope(factory) as session:
            if session.scalars(succeeded).first() is not None:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the alert of {rule} was not delivered within {timeout:.0f} s")
        time.sleep(0.05)


def _latency(url: str, receiver_url: str, workdir: str, rounds: int) -> dict[str, Any]:
    """Refreshes that raise an alert while a delivery loop runs; when each committed."""
    import threading

    from crm_perf_sync.config import load_config
    from crm_perf_sync.jobs.refresh import RefreshJob
    from crm_perf_sync.jobs.sync import SyncService
    from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
    from crm_perf_sync.plugins import ConnectorRegistry
    from crm_perf_sync.sync.service import SyncOptions
    from crm_perf_sync.webhooks import service
    from crm_perf_sync.webhooks.delivery import Deliverer
    from crm_perf_sync.webhooks.security import Guard

    engine = create_db_engine(url)
    factory = make_session_factory(engine)
    guard = Guard(allow=("127.0.0.1",))
    registry = ConnectorRegistry.discover()
    with session_scope(factory) as session:
        service.create_endpoint(
            session, service.EndpointSpec(receiver_url, event_types=("alert.firing",)), guard
        )
    stop = threading.Event()
    deliverer = Deliverer(factory, guard, "bench-worker")
    loop = threading.Thread(target=deliverer.run, args=(stop,), daemon=True)
    loop.start()
    committed: dict[str, float] = {}
    try:
        for n in range(rounds):
            path = Path(workdir) / f"latency-{n}.yaml"
            path.write_text(LATENCY_CONFIG.replace("{n}", str(n)), encoding="utf-8")
            config = load_config(path, registry)
            if n == 0:
                sync = SyncService(
                    session_factory=factory, registry=registry, config=config, options=SyncOptions()
                )
                sync.apply_config()
                sync.sync("demo")
            RefreshJob(factory, config).refresh()  # a new rule: evaluated, breaching, fires
            committed[f"bench-{n}"] = time.time()
            _await_delivery(factory, f"bench-{n}")
    finally:
        stop.set()
        loop.join(timeout=30)
        deliverer.close()
    with session_scope(factory) as session:
        from sqlalchemy import select

        from crm_perf_sync.models import WebhookEvent

        # Each round's config drops the previous round's rule, which resolves it (a second event
        # for that rule); the latency measured is the firing one's.
        firing = select(WebhookEvent).where(WebhookEvent.type == "alert.firing")
        ids = {e.rule_id: e.message_id for e in session.scalars(firing)}
    engine.dispose()
    return {"committed": committed, "message_ids": ids}


@dataclass
class Receiving:
    """A running receiver (:func:`_receive`): its URL, the queue that hands it the endpoint's
    secret, and once the block has ended, its ``report`` (arrivals, verified, failures)."""

    url: str
    secrets: Any
    report: dict[str, Any] = field(default_factory=dict)


@contextmanager
def receiving() -> Iterator[Receiving]:
    """A receiver process for the block; its report is read when the block ends."""
    context = child_context()
    port_q, report_q, stop_q, secret_q = (context.Queue() for _ in range(4))
    receiver = context.Process(target=_receive, args=(port_q, report_q, stop_q, secret_q), daemon=True)
    receiver.start()
    found = Receiving(f"http://127.0.0.1:{port_q.get(timeout=30)}/hooks", secret_q)
    try:
        yield found
    finally:
        stop_q.put(True)
        found.report.update(report_q.get(timeout=30))
        receiver.join(timeout=30)


def webhooks(size: str, databases: list[str], workdir: Path) -> Iterator[Result]:
    for kind in databases:
        for measure in ("throughput", "latency"):
            with receiving() as receiver, database(kind, workdir) as url:
                if measure == "throughput":
                    outcome = in_child(_throughput, url, receiver.url, EVENTS[size], receiver.secrets)
                else:
                    outcome = in_child(_latency, url, receiver.url, str(workdir), ALERTS[size])
            report = receiver.report
            arrivals: dict[str, float] = report["arrivals"]
            if measure == "throughput":
                rate = outcome["sent"] / outcome["seconds"]
                if len(arrivals) != EVENTS[size] or report["failures"]:
                    raise RuntimeError(
                        f"{len(arrivals)} of {EVENTS[size]} arrived, {report['failures']} unverified"
                    )
                yield Result(
                    scenario="webhooks",
                    size=f"{EVENTS[size]} events",
                    database=kind,
                    records=outcome["sent"],
                    seconds=outcome["seconds"],
                    rate=rate,
                    peak_rss_mb=outcome["peak_rss_mb"],
                    target=f"deliveries/s >= {TARGET_RATE:.0f}",
                    passed=(rate >= TARGET_RATE) if size == "full" else None,
                    notes={"verified_signatures": report["verified"]},
                )
                continue
            latencies = []
            for rule, at in outcome["committed"].items():
                message_id = outcome["message_ids"].get(rule)
                if message_id is None or message_id not in arrivals:
                    raise RuntimeError(f"the alert of {rule} never arrived")
                latencies.append(arrivals[message_id] - at)
            worst = max(latencies)
            yield Result(
                scenario="webhooks",
                size=f"{ALERTS[size]} alerts",
                database=kind,
                records=len(latencies),
                seconds=worst,
                rate=len(latencies) / sum(max(v, 1e-3) for v in latencies),
                peak_rss_mb=outcome["peak_rss_mb"],
                target=f"alert latency <= {TARGET_LATENCY:.0f} s",
                passed=(worst <= TARGET_LATENCY) if size == "full" else None,
                notes={"latencies_s": [round(v, 3) for v in latencies], "worst_s": round(worst, 3)},
            )
