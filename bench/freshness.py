"""``freshness``: how soon a change in the CRM reaches the numbers and the alerts, pushed or polled.

The store holds the demo company at ``STORE[size]`` deals (a million at full size) and a CRM served
by its emulator as a second connection: a HubSpot portal (``tests/connectors/hubspot``), then a
简道云 app (``tests/connectors/rest/emulators/jiandaoyun.py``, read through the ``rest``
connector's ``jiandaoyun`` spec, at its documented 10 requests a second). The service
runs as deployed, in processes of its own: ``serve`` on SQLite, ``api`` and ``worker`` on
PostgreSQL; a receiver process notes when each webhook arrives (:func:`bench.webhooks._receive`).
This process plays the CRM: it wins one open deal after another, ``RATE[size]`` a second for
``SECONDS[size]`` seconds, and posts the events to the ingest endpoint as the CRM does: HubSpot
signs and batches them (what happened in the last 100 ms, at most 100 events a request), 简道云
signs and sends each change on its own (``数据推送``: a request per record). A thread polls
``GET /api/v1/kpis/won_deals/values`` (the company's won deals of all time) every 20 ms, as a
BI tool might; another keeps the dashboard's overview open as a browser does (signed in, following
``/dashboard/updates`` and fetching the page at each ``refreshed``); alert rules on that value fire
at every ``ALERT_EVERY[size]``-th win.

The lag of the k-th change is from its write in the CRM to the moment the API first shows k more
won deals (likewise the open dashboard; and, for the change that crosses a rule's threshold, to the
arrival of that rule's ``alert.firing`` at the receiver). Targets: p50 <= 1 s and p95 <= 3 s at the
sustained rate.
Then a burst, ``BURST_RATE[size]`` a second for ``BURST_SECONDS[size]`` seconds: every change must
arrive (the count ends exactly ``n`` higher), however the lag grows meanwhile.

``poll`` is the same changes without pushes, the connection synced on the shortest schedule the
product allows (every 5 s), side by side.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.harness import Result, copy_of, database, in_child
from bench.webhooks import receiving

STORE = {"small": 1_000, "full": 1_000_000}
PORTAL = {"small": 400, "full": 80_000}  # half the synthetic portal's deals are open
RATE = {"small": 10, "full": 50}
SECONDS = {"small": 1.5, "full": 60.0}
BURST_RATE = {"small": 40, "full": 500}
BURST_SECONDS = {"small": 1.0, "full": 60.0}
POLLED = {"small": 5, "full": 100}  # changes of the polled run
ALERT_EVERY = {"small": 5, "full": 100}
SCHEDULE_SECONDS = 5  # the shortest schedule the product allows
TARGET_P50, TARGET_P95 = 1.0, 3.0
SECRET = "bench-app-secret"
PORTAL_ID = 4_040_404
BATCH_SECONDS = 0.1
SETTLE_SECONDS = {"small": 30.0, "full": 300.0}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _config(workdir: Path, crm: dict[str, Any] | None, size: str, *, rules: list[dict[str, Any]]) -> Path:
    """The demo company and the CRM's connection (``crm``, none while the store is built)."""
    config = {
        "business": {"timezone": "UTC", "currency": "USD"},
        "connections": [
            {
                "id": "demo",
                "kind": "demo",
                "settings": {
                    "opportunities": STORE[size],
                    "leads": STORE[size],
                    "reps": 50,
                    "batch_size": 5000,
                    "as_of": "2026-01-01T00:00:00Z",
                },
            },
            *([crm] if crm else []),
        ],
        "alerts": {"rules": rules},
    }
    path = (
        workdir
        / f"freshness-{crm['id'] if crm else 'build'}-{'poll' if crm and 'schedule' in crm else 'push'}.json"
    )
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return path


class HubSpot:
    """A HubSpot portal in its emulator; its app webhooks batched and signed as HubSpot sends them."""

    name = "HubSpot"
    connection = "hs"

    def __init__(self, size: str) -> None:
        from tests.connectors.hubspot.emulator import HubSpotEmulator
        from tests.connectors.hubspot.portal import synthetic_portal

        self.size = size
        self.portal = synthetic_portal(PORTAL[size], contacts=100)
        self.emulator = HubSpotEmulator(self.portal, record=False)

    def __enter__(self) -> HubSpot:
        self.emulator.__enter__()
        os.environ["BENCH_HUBSPOT_TOKEN"] = self.emulator.portal.token
        return self

    def __exit__(self, *exc: object) -> None:
        self.emulator.__exit__(*exc)

    def connection_config(self, *, schedule: bool, first: bool) -> dict[str, Any]:
        del first  # the portal serves as fast as it is asked
        hubspot: dict[str, Any] = {
            "id": self.connection,
            "kind": "hubspot",
            "settings": {
                "access_token": "${BENCH_HUBSPOT_TOKEN}",
                "base_url": self.emulator.url,
                "rate_limits": {
                    "requests_per_interval": 100_000,
                    "interval": "PT1S",
                    "search_per_second": 100_000,
                },
                "portal_id": PORTAL_ID,
                "webhook_secret": SECRET,
            },
        }
        if schedule:
            hubspot["schedule"] = {"interval": f"{SCHEDULE_SECONDS}s"}
        if self.size == "small":
            # A polled read stops at now - index_lag (60 s by default: HubSpot's search index trails
            # its database). The emulator's does not: small runs, which only prove the harness works,
            # poll with a lag of 1 s so as not to wait a minute; full runs keep the default.
            hubspot["settings"]["index_lag"] = "1s"
        return hubspot

    def open_deals(self) -> list[Any]:
        return [
            obj.id
            for obj in self.portal.tables["deals"].rows.values()
            if obj.props.get("dealstage") not in ("closedwon", "closedlost")
        ]

    def win(self, deal: Any) -> Any:
        """Win ``deal`` in the CRM; returns the event that says so."""
        from tests.connectors.hubspot.pushes import event

        closed = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        self.emulator.portal.update("deals", deal, {"dealstage": "closedwon", "closedate": closed})
        return event("deal.propertyChange", deal, portal=PORTAL_ID, propertyName="dealstage")

    def pusher(self, ingest: str) -> Pusher:
        return Batched(ingest)


class Jiandaoyun:
    """A 简道云 app's 商机 form in its emulator; its 数据推送, a signed request per change."""

    name = "简道云"
    connection = "jdy"

    def __init__(self, size: str) -> None:
        from tests.connectors.rest.emulators.jiandaoyun import JiandaoyunEmulator
        from tests.connectors.rest.emulators.jiandaoyun_data import synthetic

        self.emulator = JiandaoyunEmulator(synthetic(PORTAL[size]), record=False)

    def __enter__(self) -> Jiandaoyun:
        self.emulator.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.emulator.__exit__(*exc)

    def connection_config(self, *, schedule: bool, first: bool) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "spec": "jiandaoyun",
            "base_url": self.emulator.url,
            "inputs": {
                "api_key": self.emulator.api_key,
                "app_id": self.emulator.app_id,
                "entry_id": self.emulator.entry_id,
                "labels": {"name": "商机编号", "created": "接洽日期"},
                "push_secret": SECRET,
            },
        }
        if first:
            # The first load is not measured: read as fast as the emulator serves. The measured
            # service keeps 简道云's documented 10 requests a second.
            settings["requests_per_second"] = 0
        jdy: dict[str, Any] = {"id": self.connection, "kind": "rest", "settings": settings}
        if schedule:
            jdy["schedule"] = {"interval": f"{SCHEDULE_SECONDS}s"}
        return jdy

    def open_deals(self) -> list[Any]:
        stage = self.emulator.widget("销售阶段").name
        return [r["_id"] for r in self.emulator.records() if r[stage] not in ("赢单", "输单")]

    def win(self, deal: Any) -> Any:
        from crm_perf_sync.kit.timeutil import utc_now

        self.emulator.update(deal, {"销售阶段": "赢单", "成交日期": utc_now()})
        return self.emulator.get_record(deal)

    def pusher(self, ingest: str) -> Pusher:
        return EachOnItsOwn(ingest)


CRMS: dict[str, type[HubSpot] | type[Jiandaoyun]] = {"hubspot": HubSpot, "jiandaoyun": Jiandaoyun}


def _signed(body: bytes, url: str) -> dict[str, str]:
    import base64
    import hashlib
    import hmac

    stamp = str(int(time.time() * 1000))
    digest = hmac.new(SECRET.encode(), f"POST{url}{body.decode()}{stamp}".encode(), hashlib.sha256).digest()
    return {
        "X-HubSpot-Signature-v3": base64.b64encode(digest).decode(),
        "X-HubSpot-Request-Timestamp": stamp,
        "Content-Type": "application/json",
    }


#: How long a CRM goes on retrying a push nobody acknowledged (HubSpot: up to a day).
RETRY_SECONDS = 900.0


def _acknowledged(request: Callable[[], tuple[str, bytes, dict[str, str]]]) -> None:
    """POST until answered 200, as the CRMs retry what was not acknowledged: ``request`` gives
    the URL, the body and the headers, signed anew at each attempt as the CRM signs what it sends
    (a push that waited in the sender's queue is not refused as a replay)."""
    deadline = time.monotonic() + RETRY_SECONDS
    while time.monotonic() < deadline:
        url, body, headers = request()
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, data=body, headers=headers, method="POST"), timeout=30
            ) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise RuntimeError("a push was never acknowledged")


class Pusher:
    """Posts the CRM's events to the ingest endpoint as they happen."""

    def __init__(self, ingest: str) -> None:
        self.ingest = ingest
        self.failures: list[BaseException] = []

    def add(self, event: Any) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError


class Batched(Pusher):
    """HubSpot: what happened in the last :data:`BATCH_SECONDS`, at most 100 events a request."""

    def __init__(self, ingest: str) -> None:
        super().__init__(ingest)
        self.pending: list[Any] = []
        self.last_post = time.monotonic()
        self.posts: list[threading.Thread] = []

    def add(self, event: Any) -> None:
        self.pending.append(event)
        if len(self.pending) >= 100 or time.monotonic() - self.last_post >= BATCH_SECONDS:
            thread = threading.Thread(target=self._post, args=(self.pending,), daemon=True)
            thread.start()
            self.posts.append(thread)
            self.pending, self.last_post = [], time.monotonic()

    def _post(self, events: list[Any]) -> None:
        body = json.dumps(events).encode()
        _acknowledged(lambda: (self.ingest, body, _signed(body, self.ingest)))

    def finish(self) -> None:
        if self.pending:
            self._post(self.pending)
        for thread in self.posts:
            thread.join(timeout=120)


class EachOnItsOwn(Pusher):
    """简道云: a signed request per change, sent as it happens (by a pool of senders)."""

    def __init__(self, ingest: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        super().__init__(ingest)
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="jdy-push")
        self.sent: list[Any] = []

    def add(self, event: Any) -> None:
        import uuid

        from tests.connectors.rest.jiandaoyun_pushes import delivery

        from crm_perf_sync.kit.timeutil import utc_now

        deliver_id = f"sha1={uuid.uuid4().hex}"  # the same on every attempt, as 简道云 retries

        def signed() -> tuple[str, bytes, dict[str, str]]:
            sent = delivery(
                "data_update", event, secret=SECRET, at=utc_now(), url=self.ingest, deliver_id=deliver_id
            )
            return sent.url, sent.body, sent.headers

        self.sent.append(self.pool.submit(_acknowledged, signed))

    def finish(self) -> None:
        self.pool.shutdown(wait=True)
        for future in self.sent:
            future.result()


class Poller(threading.Thread):
    """Polls the company's won deals through the API; notes when each count was first seen."""

    def __init__(self, base_url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{base_url}/api/v1/kpis/won_deals/values?grain=all&scope=company&limit=5"
        self.key = key
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()
        self.errors = 0

    def value(self) -> int | None:
        request = urllib.request.Request(self.url, headers={"Authorization": f"Bearer {self.key}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                rows = json.loads(answer.read())["data"]
        except (urllib.error.URLError, OSError, ValueError):
            self.errors += 1
            return None
        values = [r["value"] for r in rows if r.get("dimension", "") == "" and r.get("currency", "") == ""]
        return int(values[0]) if values else None

    def run(self) -> None:
        while not self.stop.is_set():
            value = self.value()
            if value is not None and value not in self.seen:
                self.seen[value] = time.time()
            time.sleep(0.02)

    def first_at_least(self, count: int) -> float | None:
        times = [at for value, at in self.seen.items() if value >= count]
        return min(times) if times else None


class Dashboard(threading.Thread):
    """The dashboard's overview (all time) open as a browser keeps it: signed in with the key,
    following ``/dashboard/updates`` and fetching the page again at each ``refreshed`` (what its
    script does); notes when each count of won deals was first on the page."""

    def __init__(self, base_url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.key = key
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()
        self.errors = 0

    def run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(10.0, read=60.0)) as client:
            client.post("/dashboard/sign-in", data={"key": self.key, "next": "/dashboard"})
            version = self.page(client)
            while not self.stop.is_set():
                try:
                    with client.stream("GET", "/dashboard/updates", params={"since": version}) as stream:
                        for line in stream.iter_lines():
                            if self.stop.is_set():
                                return
                            if line.startswith("data: ") and json.loads(line[6:])["version"] != version:
                                version = self.page(client)
                except httpx.HTTPError:
                    self.errors += 1
                    time.sleep(0.2)

    def page(self, client: Any) -> str:
        """Fetch the overview, note the count it shows; returns the version it was rendered from."""
        import re

        text = client.get("/dashboard", params={"grain": "all"}).text
        shown = re.search(r'data-kpi="won_deals".*?data-value="([^"]*)"', text, re.S)
        if shown and shown.group(1):
            self.seen.setdefault(int(float(shown.group(1))), time.time())
        live = re.search(r'<body data-live="([^"]*)"', text)
        return live.group(1) if live else ""

    def first_at_least(self, count: int) -> float | None:
        times = [at for value, at in self.seen.items() if value >= count]
        return min(times) if times else None


def _service(kind: str, url: str, config: Path, port: int, workdir: Path) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "CRM_PERF_SYNC_DATABASE_URL": url,
        "CRM_PERF_SYNC_CONFIG": str(config),
        "CRM_PERF_SYNC_PORT": str(port),
        "CRM_PERF_SYNC_DEMO_KEY": "false",
        "CRM_PERF_SYNC_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "CRM_PERF_SYNC_LOG_LEVEL": "WARNING",
    }
    cli = str(Path(sys.executable).with_name("crm-perf-sync"))
    roles = ["serve"] if kind == "sqlite" else ["api", "worker"]
    return [
        subprocess.Popen(
            [cli, role], env=env, stdout=(workdir / f"{role}.log").open("wb"), stderr=subprocess.STDOUT
        )
        for role in roles
    ]


def _await_ready(base_url: str, processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"the service ended (exit {process.returncode}) before it answered")
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError("the service did not answer /readyz within 120 s")


def _synced(url: str, config_path: Path, connection: str) -> tuple[Any, Any, Any]:
    """``connection`` synced into the store at ``url`` with the configuration at ``config_path``,
    and the KPIs refreshed; returns the engine, the session factory and the registry."""
    from crm_perf_sync.config import load_config
    from crm_perf_sync.jobs.refresh import RefreshJob
    from crm_perf_sync.jobs.sync import SyncService
    from crm_perf_sync.kit.db import create_db_engine, make_session_factory
    from crm_perf_sync.plugins import ConnectorRegistry
    from crm_perf_sync.sync.service import SyncOptions

    registry = ConnectorRegistry.discover()
    engine = create_db_engine(url)
    factory = make_session_factory(engine)
    config = load_config(config_path, registry)
    sync = SyncService(session_factory=factory, registry=registry, config=config, options=SyncOptions())
    sync.apply_config()
    outcome = sync.sync(connection)
    if outcome.status != "succeeded":
        raise RuntimeError(f"the first sync of {connection}: {outcome.summary()}")
    RefreshJob(factory, config).refresh()
    return engine, factory, registry


def _build(url: str, workdir_text: str, size: str) -> dict[str, Any]:
    """The demo company's deals synced and refreshed (in a child process): the store every run of
    a database copies."""
    config = _config(Path(workdir_text), None, size, rules=[])
    engine, _, _ = _synced(url, config, "demo")
    engine.dispose()
    return {}


def _run(
    kind: str, url: str, workdir_text: str, size: str, crm_name: str, mode: str, receiver_url: str
) -> dict[str, Any]:
    """One measured run (in a child process) on a copy of the built store: the CRM's deals synced,
    the service started with nothing left to refresh, the changes made (and pushed, in ``push``
    mode), the lags measured."""
    from crm_perf_sync.apikeys import service as keys
    from crm_perf_sync.config import load_config
    from crm_perf_sync.jobs.refresh import RefreshJob
    from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
    from crm_perf_sync.kit.timeutil import utc_now
    from crm_perf_sync.webhooks import service as webhooks
    from crm_perf_sync.webhooks.security import Guard

    workdir = Path(workdir_text) / f"freshness-{kind}-{crm_name}-{mode}"
    workdir.mkdir(parents=True, exist_ok=True)
    push = mode == "push"
    with CRMS[crm_name](size) as crm:
        first = _config(workdir, crm.connection_config(schedule=False, first=True), size, rules=[])
        engine, factory, registry = _synced(url, first, crm.connection)
        open_deals = crm.open_deals()
        changes = (
            int(RATE[size] * SECONDS[size]) + int(BURST_RATE[size] * BURST_SECONDS[size])
            if push
            else POLLED[size]
        )
        if len(open_deals) < changes:
            raise RuntimeError(f"the portal has {len(open_deals)} open deals for {changes} changes")
        with session_scope(factory) as session:
            _, key = keys.create(session, "bench (read)", "read")
            webhooks.create_endpoint(
                session,
                webhooks.EndpointSpec(receiver_url, event_types=("alert.firing",)),
                Guard(allow=("127.0.0.1",)),
            )
        base = _won(factory)
        sustained = int(RATE[size] * SECONDS[size]) if push else changes
        every = ALERT_EVERY[size]
        crossings = {f"won-{k}": k for k in range(every, sustained + 1, every)}
        rules: list[dict[str, Any]] = [
            {"id": rule, "kpi": "won_deals", "grain": "all", "when": {"op": ">=", "value": base + k}}
            for rule, k in crossings.items()
        ]
        config = _config(workdir, crm.connection_config(schedule=not push, first=False), size, rules=rules)
        # Brought up to date with the rules before the service starts, so that it has nothing to
        # refresh then: what is measured is the changes' way through it, not its start.
        RefreshJob(factory, load_config(config, registry)).refresh()
        engine.dispose()

        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        processes = _service(kind, url, config, port, workdir)
        poller = Poller(base_url, key)
        dashboard = Dashboard(base_url, key)
        try:
            _await_ready(base_url, processes)
            poller.start()
            dashboard.start()
            deadline = time.monotonic() + 120
            while poller.first_at_least(base) is None:  # the service has refreshed the new rules
                if time.monotonic() > deadline:
                    raise RuntimeError("the API never showed the first count")
                time.sleep(0.05)
            time.sleep(1.0)
            changed = _change(crm, open_deals[:sustained], RATE[size], push, base_url)
            burst: list[float] = []
            if push:
                burst = _change(crm, open_deals[sustained:changes], BURST_RATE[size], push, base_url)
            settle = time.monotonic() + SETTLE_SECONDS[size]
            while poller.first_at_least(base + changes) is None and time.monotonic() < settle:
                time.sleep(0.1)
            time.sleep(1.0)
        finally:
            poller.stop.set()
            dashboard.stop.set()
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
        final = max(poller.seen) if poller.seen else base
        visible = [poller.first_at_least(base + k + 1) for k in range(len(changed))]
        burst_visible = [poller.first_at_least(base + len(changed) + k + 1) for k in range(len(burst))]
        shown = [dashboard.first_at_least(base + k + 1) for k in range(len(changed))]
        engine = create_db_engine(url)
        firing = _firing(make_session_factory(engine))
        engine.dispose()
        return {
            "base": base,
            "final": final,
            "changes": changes,
            "changed": changed,
            "visible": visible,
            "shown": shown,
            "burst": burst,
            "burst_visible": burst_visible,
            "rules": crossings,
            "firing": firing,
            "api_errors": poller.errors,
            "dashboard_errors": dashboard.errors,
            "utc": utc_now().isoformat(),
        }


def _won(factory: Any) -> int:
    from sqlalchemy import select

    from crm_perf_sync.kit.db import session_scope
    from crm_perf_sync.models import KpiValue

    with session_scope(factory) as session:
        value = session.execute(
            select(KpiValue.value).where(
                KpiValue.kpi_id == "won_deals",
                KpiValue.grain == "all",
                KpiValue.scope == "company",
                KpiValue.dimension == "",
            )
        ).scalar_one()
    return int(value or 0)


def _firing(factory: Any) -> dict[str, str]:
    from sqlalchemy import select

    from crm_perf_sync.kit.db import session_scope
    from crm_perf_sync.models import WebhookEvent

    with session_scope(factory) as session:
        rows = session.execute(
            select(WebhookEvent.rule_id, WebhookEvent.message_id).where(WebhookEvent.type == "alert.firing")
        ).all()
    return {str(rule): str(message) for rule, message in rows}


def _change(
    crm: HubSpot | Jiandaoyun, deals: list[Any], rate: float, push: bool, base_url: str
) -> list[float]:
    """Win ``deals`` in the CRM at ``rate`` a second; in push mode post the events as the CRM
    does. Returns when each deal was won (epoch seconds)."""
    changed: list[float] = []
    pusher = crm.pusher(f"{base_url}/api/v1/ingest/{crm.connection}") if push else None
    start = time.monotonic()
    for n, deal in enumerate(deals):
        due = start + n / rate
        while (now := time.monotonic()) < due:
            time.sleep(min(due - now, 0.005))
        event = crm.win(deal)
        changed.append(time.time())
        if pusher is not None:
            pusher.add(event)
    if pusher is not None:
        pusher.finish()
    return changed


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def freshness(size: str, databases: list[str], workdir: Path) -> Iterator[Result]:
    for kind in databases:
        outcomes: dict[tuple[str, str], dict[str, Any]] = {}
        with database(kind, workdir) as built:
            in_child(_build, built, str(workdir), size)
            for crm in CRMS:
                for mode in ("push", "poll"):
                    with receiving() as receiver, copy_of(kind, workdir, built) as url:
                        outcome = in_child(_run, kind, url, str(workdir), size, crm, mode, receiver.url)
                    outcome["arrivals"] = receiver.report["arrivals"]
                    outcomes[(crm, mode)] = outcome
        for (crm, mode), outcome in outcomes.items():
            yield _result(size, kind, crm, mode, outcome)
            if mode == "push" and outcome["burst"]:
                yield _burst(size, kind, crm, outcome)


def _dashboard_lags(outcome: dict[str, Any]) -> list[float]:
    """From each change to the dashboard's first showing of it (changes it never showed left out:
    the page shows a count after a refresh, and several changes often arrive together)."""
    return [
        seen - at for at, seen in zip(outcome["changed"], outcome["shown"], strict=True) if seen is not None
    ]


def _lags(outcome: dict[str, Any]) -> tuple[list[float], list[float], int]:
    changed, visible = outcome["changed"], outcome["visible"]
    lags = [seen - at for at, seen in zip(changed, visible, strict=True) if seen is not None]
    missing = sum(1 for seen in visible if seen is None)
    alerts = []
    for rule, crossing in outcome["rules"].items():
        message = outcome["firing"].get(rule)
        arrived = outcome["arrivals"].get(message) if message else None
        if arrived is None:
            missing += 1
            continue
        alerts.append(arrived - changed[crossing - 1])
    return lags, alerts, missing


def _where(kind: str, crm: str, mode: str) -> str:
    """The report's database column: HubSpot's rows keep the name they were first reported under."""
    return f"{kind}/{mode}" if crm == "hubspot" else f"{kind}/{mode}/{crm}"


def _result(size: str, kind: str, crm: str, mode: str, outcome: dict[str, Any]) -> Result:
    lags, alerts, missing = _lags(outcome)
    if not lags:
        raise RuntimeError(f"freshness {crm} {mode} on {kind}: no change was ever visible ({outcome})")
    p50, p95 = statistics.median(lags), _percentile(lags, 0.95)
    shown = _dashboard_lags(outcome)
    span = outcome["changed"][-1] - outcome["changed"][0] if len(outcome["changed"]) > 1 else 0.0
    notes = {
        "crm": CRMS[crm].name,
        "api_p50_s": round(p50, 3),
        "api_p95_s": round(p95, 3),
        "api_max_s": round(max(lags), 3),
        "alert_p50_s": round(statistics.median(alerts), 3) if alerts else None,
        "alert_p95_s": round(_percentile(alerts, 0.95), 3) if alerts else None,
        "dashboard_p50_s": round(statistics.median(shown), 3) if shown else None,
        "dashboard_p95_s": round(_percentile(shown, 0.95), 3) if shown else None,
        "alerts": len(alerts),
        "never_seen": missing,
        "store_deals": STORE[size],
        "api_errors": outcome["api_errors"],
        "dashboard_errors": outcome["dashboard_errors"],
    }
    judged = mode == "push"
    passed = None
    if size == "full" and judged:
        alert_p95 = notes["alert_p95_s"]
        passed = (
            p50 <= TARGET_P50
            and p95 <= TARGET_P95
            and missing == 0
            and alert_p95 is not None
            and alert_p95 <= TARGET_P95
            and bool(shown)
            and statistics.median(shown) <= TARGET_P50
            and _percentile(shown, 0.95) <= TARGET_P95
        )
    return Result(
        scenario="freshness",
        size=f"{len(lags)}@{RATE[size] if judged else 'poll'}/s",
        database=_where(kind, crm, mode),
        records=len(lags),
        seconds=p50,
        rate=len(lags) / span if span else 0.0,
        peak_rss_mb=outcome["peak_rss_mb"],
        floor=None if judged else f"schedule every {SCHEDULE_SECONDS} s",
        ratio=p95,
        target=f"p50 <= {TARGET_P50:.0f} s, p95 <= {TARGET_P95:.0f} s" if judged else "reported: polled",
        passed=passed,
        notes=notes,
    )


def _burst(size: str, kind: str, crm: str, outcome: dict[str, Any]) -> Result:
    burst, seen = outcome["burst"], outcome["burst_visible"]
    arrived = outcome["final"] - outcome["base"]
    lost = outcome["changes"] - arrived
    lags = [at - when for when, at in zip(burst, seen, strict=True) if at is not None]
    return Result(
        scenario="freshness",
        size=f"burst {len(burst)}@{BURST_RATE[size]}/s",
        database=_where(kind, crm, "push"),
        records=len(burst),
        seconds=max(lags) if lags else 0.0,
        rate=len(burst) / max(burst[-1] - burst[0], 1e-9),
        peak_rss_mb=outcome["peak_rss_mb"],
        target="every change arrives, once",
        passed=(lost == 0) if size == "full" else None,
        notes={
            "crm": CRMS[crm].name,
            "changes": outcome["changes"],
            "arrived": arrived,
            "lost": lost,
            "lag_p50_s": round(statistics.median(lags), 3) if lags else None,
            "lag_max_s": round(max(lags), 3) if lags else None,
        },
    )
