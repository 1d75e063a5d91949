"""``upsert``: demo opportunities synced into a fresh store through the real engine (bulk upsert,
checkpoints, lease renewal, run counters — everything a sync does). The floor is generating the
same records without storing them; the store rate is what the sync adds on top of generation,
``records / (sync seconds - generation seconds)``, which is the "upserting parsed records" rate
the targets name. Peak RSS is taken at two sizes to show it stays flat as the data grows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.harness import Result, database, in_child

SIZES = {"small": (1_000, 6_000), "full": (100_000, 1_000_000)}
TARGETS = {"sqlite": 30_000.0, "postgresql": 50_000.0}
# Peak RSS at the large size may exceed the small size's by this factor and still count as flat.
RSS_FLAT_FACTOR = 1.5


def demo_settings(count: int) -> Any:
    from crm_perf_sync_demo import DemoSettings

    return DemoSettings(opportunities=count, leads=count)


def generate_only(count: int) -> dict[str, Any]:
    from crm_perf_sync_demo import generate_opportunities

    settings = demo_settings(count)
    started = time.perf_counter()
    records = sum(1 for _ in generate_opportunities(settings))
    return {"records": records, "seconds": time.perf_counter() - started}


def sync(url: str, count: int, batch_size: int) -> dict[str, Any]:
    from crm_perf_sync.config import ConnectionConfig
    from crm_perf_sync.connector_sdk import (
        Checkpoint,
        Connector,
        ConnectorContext,
        ConnectorSettings,
        Message,
        StreamSpec,
    )
    from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
    from crm_perf_sync.kit.timeutil import utc_now
    from crm_perf_sync.leases import new_holder_id
    from crm_perf_sync.sync import repository as repo
    from crm_perf_sync.sync.service import SyncEngine, SyncOptions
    from crm_perf_sync_demo import generate_opportunities

    settings = demo_settings(count)

    class BenchSettings(ConnectorSettings):
        every: int = batch_size

    class DemoOpportunities(Connector[BenchSettings]):
        """Only the opportunities of the demo company, checkpointed every batch."""

        settings_model = BenchSettings

        def streams(self) -> Sequence[StreamSpec]:
            return [StreamSpec("opportunities", "opportunities")]

        def read(self, stream: StreamSpec, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:  # noqa: ARG002
            n = 0
            for n, record in enumerate(generate_opportunities(settings), start=1):
                yield record
                if n % self.settings.every == 0:
                    yield Checkpoint({"n": n})
            yield Checkpoint({"n": n})

    engine = create_db_engine(url)
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        repo.sync_connections(
            session, [ConnectionConfig.model_validate({"id": "bench", "kind": "x"})], utc_now()
        )
    connector = DemoOpportunities(
        BenchSettings(), ConnectorContext("bench", Path.cwd(), logging.getLogger("bench"))
    )
    sync = SyncEngine(
        session_factory=factory,
        connector=connector,
        connection_id="bench",
        options=SyncOptions(batch_size=batch_size),
        holder=new_holder_id(),
    )
    started = time.perf_counter()
    outcome = sync.run(trigger="bench", full_refresh=False)
    seconds = time.perf_counter() - started
    engine.dispose()
    if outcome.status != "succeeded":
        raise RuntimeError(outcome.summary())
    return {"records": outcome.total("inserted"), "seconds": seconds}


def upsert(size: str, databases: list[str], workdir: Path) -> Iterator[Result]:
    small, large = SIZES[size]
    floors = {n: in_child(generate_only, n) for n in (small, large)}
    for kind in databases:
        measured: dict[int, dict[str, Any]] = {}
        for n in (small, large):
            with database(kind, workdir) as url:
                measured[n] = in_child(sync, url, n, 5000)
        for n in (small, large):
            run, floor = measured[n], floors[n]
            gen_rate = floor["records"] / floor["seconds"]
            store_seconds = max(run["seconds"] - floor["seconds"], 1e-9)
            store_rate = run["records"] / store_seconds
            flat = measured[large]["peak_rss_mb"] <= RSS_FLAT_FACTOR * measured[small]["peak_rss_mb"]
            target = TARGETS[kind]
            yield Result(
                scenario="upsert",
                size=f"{n // 1000}k",
                database=kind,
                records=run["records"],
                seconds=run["seconds"],
                rate=run["records"] / run["seconds"],
                peak_rss_mb=run["peak_rss_mb"],
                floor="demo generation only",
                floor_rate=gen_rate,
                ratio=(run["records"] / run["seconds"]) / gen_rate,
                target=f"store >= {target:,.0f}/s, RSS flat",
                passed=(store_rate >= target and flat) if n == large else None,
                notes={
                    "store_rate": round(store_rate),
                    "rss_small_mb": round(measured[small]["peak_rss_mb"], 1),
                    "rss_large_mb": round(measured[large]["peak_rss_mb"], 1),
                    "rss_flat": flat,
                },
            )
