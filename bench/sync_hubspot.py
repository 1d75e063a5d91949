"""``sync-hubspot``: a full sync of N deals from the HubSpot emulator against fetching them alone.

The emulator (``tests/connectors/hubspot/emulator.py``) runs in a process of its own, seeded
with a synthetic portal: N deals with 1-4 stage steps each over a year (one in ten sharing its
modified millisecond with the previous deal), 2,000 contacts, some associated with deals, and
40 owners. Pages are rendered from the seeded records with orjson, so the emulator answers in a
fraction of the time the client spends deserialising: it is not what is measured. Then, each in
a fresh child process:

``floor``: hubspot-api-client alone making the API calls a full sync makes: owners, pipelines,
the companies' search pages, the contacts' search pages and their deal and company
associations, the deals' search pages (the connector's paging: each page re-anchored on the
last modified date) with their contact and company associations, the five engagement objects'
search pages with their company, deal and contact associations, the archived lists, and the
stage-history batch reads (50 deals each) of the deals the second search pass returns. Every
response is deserialised into the client's models; nothing is mapped or stored. The request
count is reported beside the connector's, which must be the same.

``sync``: a full sync of the connection through the real :class:`SyncEngine` into a fresh
migrated store (SQLite and/or PostgreSQL): the connector maps, the engine upserts in batches of
5,000 with their checkpoints.

The rate is deals per second; the ratio is the sync's rate over the floor's (target >= 0.70).
Floor and syncs alternate ``REPEATS[size]`` times and the best of each counts.
Peak RSS is taken for the sync at N / 10 and N deals: flat means the larger is at most
``RSS_FLAT_FACTOR`` times the smaller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.harness import Result, database, in_child, serving

SIZES = {"small": 1_000, "full": 1_000_000}
REPEATS = {"small": 1, "full": 1}
TARGET = 0.70  # sync rate / floor rate
RSS_FLAT_FACTOR = 1.5
CONNECTION = "hubspot-bench"
#: As fast as the emulator announces (X-HubSpot-RateLimit-Max): the benchmark is not about pacing.
LIMITS = {"requests_per_interval": 100_000, "interval": "PT1S", "search_per_second": 100_000}


# -- the emulator's process ------------------------------------------------------------------------


def _serve(deals: int, queue: Any, stop: Any) -> None:
    from tests.connectors.hubspot.emulator import HubSpotEmulator
    from tests.connectors.hubspot.portal import synthetic_portal

    portal = synthetic_portal(deals)
    # Build the search index before the first request, not inside the measurement.
    portal.tables["deals"].by_modified()
    portal.tables["contacts"].by_modified()
    with HubSpotEmulator(portal, record=False) as emulator:
        queue.put((emulator.url, portal.token))
        stop.wait()


@contextmanager
def emulator(deals: int) -> Iterator[Any]:
    """An emulator process serving a synthetic dataset of ``deals`` deals: what its clients need."""
    with serving(_serve, deals) as address:
        yield address


def _settings(url: str, token: str) -> Any:
    from crm_perf_sync_hubspot import HubSpotSettings

    return HubSpotSettings.model_validate({"access_token": token, "base_url": url, "rate_limits": LIMITS})


# -- the floor: the client alone -------------------------------------------------------------------


def _floor(url: str, token: str) -> dict[str, Any]:
    from hubspot import HubSpot  # type: ignore[import-untyped]
    from urllib3.util.retry import Retry

    from crm_perf_sync.kit.timeutil import utc_now
    from crm_perf_sync_hubspot.mapping import (
        CompanyMapper,
        ContactMapper,
        DealMapper,
        EngagementMapper,
        StageTable,
        modified_millis,
    )
    from crm_perf_sync_hubspot.search import ALL, Position, Segment, to_millis, window

    settings = _settings(url, token)
    client = HubSpot(access_token=token, host=url, retry=Retry(total=0, redirect=0))
    crm = client.crm
    engagements = ("calls", "meetings", "emails", "notes", "tasks")
    discovered = {
        "deals": crm.deals,
        "contacts": crm.contacts,
        "companies": crm.companies,
        **{kind: getattr(crm.objects, kind) for kind in engagements},
    }
    search = {kind: found.search_api for kind, found in discovered.items()}
    basic = {kind: found.basic_api for kind, found in discovered.items()}
    deals_batch = crm.deals.batch_api
    associations = crm.associations.v4.batch_api
    owners_api = crm.owners.owners_api
    requests = 0
    deals_seen = 0

    def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal requests
        requests += 1
        return fn(*args, **kwargs)

    def windowed(
        object_type: str, modified: str, segment: Segment, properties: Sequence[str]
    ) -> Iterator[Any]:
        until = to_millis(utc_now()) - 60_000
        api = search[object_type]
        pages = window(
            lambda body: (list(call(api.do_search, public_object_search_request=dict(body)).results), 0),
            modified=modified,
            segment=segment,
            properties=properties,
            start=Position(0),
            until=until,
            page_size=200,
            stamp=lambda obj: modified_millis(obj, modified),
        )
        for page, _ in pages:
            yield page

    def linked(from_type: str, to_type: str, ids: list[str]) -> dict[str, list[str]]:
        if not ids:
            return {}
        body = {"inputs": [{"id": i} for i in ids]}
        result = call(
            associations.get_page,
            from_type,
            to_type,
            batch_input_public_fetch_associations_batch_request=body,
        )
        return {str(r._from.id): [str(t.to_object_id) for t in r.to] for r in result.results or []}

    def archived(object_type: str) -> None:
        after = None
        while True:
            kwargs: dict[str, Any] = {"limit": 100, "properties": ["hs_object_id"], "archived": True}
            if after is not None:
                kwargs["after"] = after
            page = call(basic[object_type].get_page, **kwargs)
            after = page.paging.next.after if page.paging and page.paging.next else None
            if after is None:
                return

    started = time.perf_counter()
    # The check: one cheap read per scope the streams need (owners, deals, contacts, companies,
    # logged emails).
    call(owners_api.get_page, limit=1, archived=False)
    for object_type in ("deals", "contacts", "companies", "emails"):
        call(basic[object_type].get_page, limit=1, properties=["hs_object_id"], archived=False)
    for flag in (False, True):
        after = None
        while True:
            kwargs: dict[str, Any] = {"limit": 100, "archived": flag}
            if after is not None:
                kwargs["after"] = after
            page = call(owners_api.get_page, **kwargs)
            after = page.paging.next.after if page.paging and page.paging.next else None
            if after is None:
                break
    stages = StageTable.from_pipelines(call(crm.pipelines.pipelines_api.get_all, "deals").results)
    for _ in windowed("companies", "hs_lastmodifieddate", ALL, CompanyMapper(settings).properties):
        pass  # deserialised, as every page: nothing else is done with companies
    archived("companies")
    contacts = ContactMapper(settings)
    for page in windowed("contacts", "lastmodifieddate", contacts.segment(), contacts.properties):
        deals_of = linked("contacts", "deals", [str(c.id) for c in page])
        linked("contacts", "companies", [str(c.id) for c in page])
        wanted = sorted(
            {
                min(deals_of[str(c.id)], key=lambda i: (len(i), i))
                for c in page
                if str(c.id) in deals_of and not contacts.has_conversion_date(c)
            }
        )
        for start in range(0, len(wanted), 100):
            body = {"inputs": [{"id": i} for i in wanted[start : start + 100]], "properties": ["createdate"]}
            call(deals_batch.read, batch_read_input_simple_public_object_id=body, archived=False)
    archived("contacts")
    for page in windowed("deals", "hs_lastmodifieddate", ALL, DealMapper(settings, stages).properties):
        deals_seen += len(page)
        linked("deals", "contacts", [str(d.id) for d in page])
        linked("deals", "companies", [str(d.id) for d in page])
    archived("deals")
    for page in windowed("deals", "hs_lastmodifieddate", ALL, ["hs_lastmodifieddate"]):
        ids = [str(d.id) for d in page]
        for start in range(0, len(ids), 50):
            body = {
                "inputs": [{"id": i} for i in ids[start : start + 50]],
                "properties": ["dealstage"],
                "propertiesWithHistory": ["dealstage"],
            }
            call(deals_batch.read, batch_read_input_simple_public_object_id=body, archived=False)
    for kind in engagements:
        for page in windowed(kind, "hs_lastmodifieddate", ALL, EngagementMapper.properties(kind)):
            ids = [str(obj.id) for obj in page]
            for other in ("companies", "deals", "contacts"):
                linked(kind, other, ids)
        archived(kind)
    seconds = time.perf_counter() - started
    return {"records": deals_seen, "seconds": seconds, "requests": requests}


# -- the sync -------------------------------------------------------------------------------------


def _sync(url: str, token: str, db_url: str) -> dict[str, Any]:
    from crm_perf_sync.config import ConnectionConfig
    from crm_perf_sync.connector_sdk import ConnectorContext
    from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
    from crm_perf_sync.kit.timeutil import utc_now
    from crm_perf_sync.leases import new_holder_id
    from crm_perf_sync.sync import repository as repo
    from crm_perf_sync.sync.service import SyncEngine, SyncOptions
    from crm_perf_sync_hubspot import HubSpotConnector

    engine = create_db_engine(db_url)
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        connections = [ConnectionConfig.model_validate({"id": CONNECTION, "kind": "hubspot"})]
        repo.sync_connections(session, connections, utc_now())
    context = ConnectorContext(CONNECTION, Path.cwd(), logging.getLogger("bench.hubspot"))
    connector = HubSpotConnector(_settings(url, token), context)
    sync = SyncEngine(
        session_factory=factory,
        connector=connector,
        connection_id=CONNECTION,
        options=SyncOptions(batch_size=5000),
        holder=new_holder_id(),
    )
    started = time.perf_counter()
    outcome = sync.run(trigger="bench", full_refresh=False)
    seconds = time.perf_counter() - started
    requests = connector.api.requests
    engine.dispose()
    if outcome.status != "succeeded":
        raise RuntimeError(outcome.summary())
    return {
        "records": outcome.streams["opportunities"].inserted,
        "seconds": seconds,
        "requests": requests,
        "streams": {name: stats.inserted for name, stats in outcome.streams.items()},
    }


def sync_hubspot(size: str, databases: list[str], workdir: Path) -> Iterator[Result]:
    """The scenario: floor and sync at N deals, and a sync at N / 10 for the memory comparison."""
    large = SIZES[size]
    small = large // 10
    baseline: dict[str, dict[str, Any]] = {}
    with emulator(small) as (url, token):
        for kind in databases:
            with database(kind, workdir) as db_url:
                baseline[kind] = in_child(_sync, url, token, db_url)
    floors: list[dict[str, Any]] = []
    syncs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in databases}
    with emulator(large) as (url, token):
        # Alternated, best of each: the machine's other load falls on both sides alike.
        for _ in range(REPEATS[size]):
            floors.append(in_child(_floor, url, token))
            for kind in databases:
                with database(kind, workdir) as db_url:
                    syncs[kind].append(in_child(_sync, url, token, db_url))
    floor = min(floors, key=lambda f: f["seconds"])
    floor_rate = floor["records"] / floor["seconds"]
    for kind in databases:
        run = min(syncs[kind], key=lambda r: r["seconds"])
        peak = max(r["peak_rss_mb"] for r in syncs[kind])
        rate = run["records"] / run["seconds"]
        ratio = rate / floor_rate
        flat = peak <= RSS_FLAT_FACTOR * baseline[kind]["peak_rss_mb"]
        same_calls = run["requests"] == floor["requests"]
        yield Result(
            scenario="sync-hubspot",
            size=f"{large // 1000}k",
            database=kind,
            records=run["records"],
            seconds=run["seconds"],
            rate=rate,
            peak_rss_mb=peak,
            floor="hubspot-api-client fetch + parse, same calls",
            floor_rate=floor_rate,
            ratio=ratio,
            target=f"sync/floor >= {TARGET:.2f}, RSS flat",
            passed=ratio >= TARGET and flat and same_calls,
            notes={
                "floor_seconds": round(floor["seconds"], 2),
                "floor_requests": floor["requests"],
                "sync_requests": run["requests"],
                "repeats": REPEATS[size],
                "streams": run["streams"],
                "rss_small_mb": round(baseline[kind]["peak_rss_mb"], 1),
                "rss_large_mb": round(peak, 1),
                "rss_deals_small": small,
                "rss_flat": flat,
            },
        )


def _main() -> None:
    """``python -m bench.sync_hubspot [small|full] [sqlite,postgresql]``: this scenario alone (not saved)."""
    import sys
    import tempfile

    from bench import harness

    size = sys.argv[1] if len(sys.argv) > 1 else "small"
    databases = sys.argv[2].split(",") if len(sys.argv) > 2 else ["sqlite"]
    print(harness.header())
    with tempfile.TemporaryDirectory(prefix="crm-perf-sync-bench-") as tmp:
        for result in sync_hubspot(size, databases, Path(tmp)):
            print(result.row(), flush=True)
            print(result.notes, flush=True)


if __name__ == "__main__":
    _main()
