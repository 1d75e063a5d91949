"""``kpi-incremental``: the refresh after a sync that changed 1% of the records, against a full one.

The demo company (as in ``kpi-full``) is synced and fully refreshed. Then a second sync, through
the real sync engine, changes about 1% of the opportunities and leads, which the store's change
log records, in one of two ways:

``clock`` (the target): the demo company as it is a little later (its ``as_of`` moved on by
:data:`ADVANCE`), read incrementally by its own connector. That is what a scheduled sync brings:
new leads and deals, open deals moving through their stages, deals closing, leads converting,
the odd deletion. Changes land where a CRM's do, in recent periods.

``rewrite`` (the worst case, reported without a target): 1% of the opportunities and 1% of the
leads, drawn uniformly from the whole history, rewritten (a deal moves to another rep, closes a
month later for a different amount, is won, lost or reopened; a lead converts). Every period of
every grain is touched, so the medians, which do not add up, are ranked again nearly everywhere.

The timed refresh applies the log; the ratio is its time over the full refresh's (target: at most
10% for ``clock``). Afterwards a full refresh recomputes everything and every value must equal what
the incremental one left. The store is loaded and fully refreshed once per database; each change
is made in a copy of it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.harness import Result, copy_of, database, in_child
from bench.kpi_full import CONNECTION, SIZES, _load, _load_config, _write_config

TARGET = 0.10  # incremental seconds / full seconds
SHARE = 0.01
#: How far the demo company's clock moves for the ``clock`` change: about 1% of its records
#: change in this long (2,000,000 records over two years: some 9,000 changes a day).
ADVANCE = timedelta(hours=52)


def _full(url: str, config_path: Path) -> dict[str, Any]:
    from crm_perf_sync.jobs.refresh import RefreshJob
    from crm_perf_sync.kit.db import create_db_engine, make_session_factory

    engine = create_db_engine(url)
    service = RefreshJob(make_session_factory(engine), _load_config(config_path))
    started = time.perf_counter()
    outcome = service.refresh(full=True)
    seconds = time.perf_counter() - started
    engine.dispose()
    return {"seconds": seconds, "values": sum(outcome.rows.values())}


def _advance(url: str, config_path: Path) -> dict[str, Any]:
    """Sync the demo company as it is :data:`ADVANCE` later, incrementally, with its own connector."""
    from crm_perf_sync.connector_sdk import ConnectorContext
    from crm_perf_sync.kit.db import create_db_engine, make_session_factory
    from crm_perf_sync.leases import new_holder_id
    from crm_perf_sync.sync.service import SyncEngine, SyncOptions
    from crm_perf_sync_demo import DemoConnector, DemoSettings

    settings = _load_config(config_path).connector_settings[CONNECTION]
    assert isinstance(settings, DemoSettings)
    assert settings.as_of is not None
    later = settings.model_copy(update={"as_of": settings.as_of + ADVANCE})
    engine = create_db_engine(url)
    context = ConnectorContext(CONNECTION, config_path.parent, logging.getLogger("bench"))
    sync = SyncEngine(
        session_factory=make_session_factory(engine),
        connector=DemoConnector(later, context),
        connection_id=CONNECTION,
        options=SyncOptions(batch_size=settings.batch_size),
        holder=new_holder_id(),
    )
    started = time.perf_counter()
    outcome = sync.run(trigger="bench", full_refresh=False)
    seconds = time.perf_counter() - started
    with engine.connect() as conn:
        records = conn.exec_driver_sql(
            "SELECT (SELECT count(*) FROM opportunity) + (SELECT count(*) FROM lead)"
        )
        total = int(records.scalar_one())
    engine.dispose()
    if outcome.status != "succeeded":
        raise RuntimeError(outcome.summary())
    changed = sum(
        outcome.streams[name].inserted + outcome.streams[name].updated for name in ("opportunities", "leads")
    )
    return {
        "seconds": seconds,
        "updated": changed,
        "records": total,
        "history_rows": sum(v.inserted for k, v in outcome.streams.items() if k == "stage_changes"),
    }


def _rewrite(url: str, config_path: Path) -> dict[str, Any]:
    """Sync a rewrite of 1% of the opportunities and leads (read back from the store)."""
    from sqlalchemy import select

    from crm_perf_sync.connector_sdk import (
        Checkpoint,
        Connector,
        ConnectorContext,
        ConnectorSettings,
        LeadRecord,
        Message,
        OpportunityRecord,
        StreamSpec,
    )
    from crm_perf_sync.kit.db import create_db_engine, make_session_factory
    from crm_perf_sync.leases import new_holder_id
    from crm_perf_sync.models import Lead, Opportunity, Owner
    from crm_perf_sync.sync.service import SyncEngine, SyncOptions

    engine = create_db_engine(url)
    rng = random.Random(7)
    with engine.connect() as conn:
        owners = list(conn.execute(select(Owner.external_id)).scalars())
        deals = [dict(r._mapping) for r in conn.execute(select(Opportunity.__table__))]
        leads = [dict(r._mapping) for r in conn.execute(select(Lead.__table__))]
    changed_deals = rng.sample(deals, int(len(deals) * SHARE))
    changed_leads = rng.sample(leads, int(len(leads) * SHARE))
    opp_fields = set(OpportunityRecord.__dataclass_fields__) - {"raw"}
    lead_fields = set(LeadRecord.__dataclass_fields__) - {"raw"}

    def deal(row: Mapping[str, Any]) -> OpportunityRecord:
        values = {k: v for k, v in row.items() if k in opp_fields}
        values["owner_external_id"] = rng.choice(owners)
        values["amount"] = Decimal(rng.randrange(1_000, 90_000))
        fate = rng.choice(["won", "lost", "open"])
        created = values["created_at"]
        if fate == "open":
            values.update(is_closed=False, is_won=False, closed_at=None, stage="Negotiation")
        else:
            closed = created + timedelta(days=rng.randrange(5, 120))
            values.update(is_closed=True, is_won=fate == "won", closed_at=closed, close_date=closed.date())
            values["stage"] = "Closed Won" if fate == "won" else "Closed Lost"
        values["remote_updated_at"] = None
        return OpportunityRecord(**values)

    def lead(row: Mapping[str, Any]) -> LeadRecord:
        values = {k: v for k, v in row.items() if k in lead_fields}
        values["is_converted"] = not values["is_converted"]
        values["converted_at"] = values["created_at"] + timedelta(days=3) if values["is_converted"] else None
        values["remote_updated_at"] = None
        return LeadRecord(**values)

    class Changes(Connector[ConnectorSettings]):
        settings_model = ConnectorSettings

        def streams(self) -> Sequence[StreamSpec]:
            return [StreamSpec("opportunities", "opportunities"), StreamSpec("leads", "leads")]

        def read(self, stream: StreamSpec, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:  # noqa: ARG002
            if stream.name == "opportunities":
                yield from (deal(row) for row in changed_deals)
            else:
                yield from (lead(row) for row in changed_leads)
            yield Checkpoint({"done": True})

    context = ConnectorContext(CONNECTION, config_path.parent, logging.getLogger("bench"))
    sync = SyncEngine(
        session_factory=make_session_factory(engine),
        connector=Changes(ConnectorSettings(), context),
        connection_id=CONNECTION,
        options=SyncOptions(batch_size=5000),
        holder=new_holder_id(),
    )
    started = time.perf_counter()
    outcome = sync.run(trigger="bench", full_refresh=False)
    seconds = time.perf_counter() - started
    engine.dispose()
    if outcome.status != "succeeded":
        raise RuntimeError(outcome.summary())
    return {"seconds": seconds, "updated": outcome.total("updated"), "records": len(deals) + len(leads)}


def _incremental(url: str, config_path: Path) -> dict[str, Any]:
    from sqlalchemy import select

    from crm_perf_sync.jobs.refresh import RefreshJob
    from crm_perf_sync.kit.db import create_db_engine, make_session_factory
    from crm_perf_sync.models import KpiValue

    engine = create_db_engine(url)
    service = RefreshJob(make_session_factory(engine), _load_config(config_path))
    started = time.perf_counter()
    outcome = service.refresh()
    seconds = time.perf_counter() - started
    table = KpiValue.__table__
    natural = [
        "kpi_id",
        "grain",
        "period_key",
        "scope",
        "scope_id",
        "currency",
        "dimension",
        "dimension_value",
    ]
    columns = [c for c in table.columns if c.name not in ("id", "computed_at")]

    def stored() -> dict[tuple[Any, ...], Any]:
        with engine.connect() as conn:
            return {tuple(r._mapping[n] for n in natural): r for r in conn.execute(select(*columns))}

    before = stored()
    service.refresh(full=True)
    after = stored()
    engine.dispose()
    differences = [key for key in before.keys() | after.keys() if not _same(before.get(key), after.get(key))]
    if differences:
        raise AssertionError(f"{len(differences)} values differ from a full refresh, e.g. {differences[:5]}")
    return {
        "seconds": seconds,
        "timings": {name: round(value, 3) for name, value in outcome.timings.items()},
        "updated": sorted(outcome.updated),
        "recomputed": sorted(outcome.recomputed),
        "values_checked": len(before),
    }


#: A median's rank state (see ``crm_perf_sync.kpi.ranks``): bookkeeping, not a value.
RANK_STATE = ("rank_pivot", "rank_below", "rank_equal")


def _same(incremental: Any, full: Any) -> bool:
    """One stored value as the incremental refresh left it and as the full refresh computed it.

    A full refresh keeps rank state for all-time values only; an incremental one also keeps the
    state of a period's value it ranked from its samples (a new one, or one without state). Such
    a state is compared only where the full refresh has one too.
    """
    if incremental is None or full is None:
        return incremental is full
    names = getattr(incremental, "_fields", ("",) * len(incremental))  # rows name their columns
    for name, x, y in zip(names, incremental, full, strict=True):
        if name in RANK_STATE and y is None:
            continue
        if isinstance(x, float) and isinstance(y, float):
            if abs(x - y) > 1e-6 * max(1.0, abs(x), abs(y)):
                return False
        elif x != y:
            return False
    return True


CHANGES = {"clock": _advance, "rewrite": _rewrite}


def kpi_incremental(size: str, databases: list[str], workdir: Path) -> Iterator[Result]:
    count = SIZES[size]
    config_path = _write_config(workdir, count)
    for kind in databases:
        # Each change starts from a copy of one loaded and fully refreshed store.
        with database(kind, workdir) as loaded:
            in_child(_load, loaded, config_path)
            full = in_child(_full, loaded, config_path)
            for change, make_change in CHANGES.items():
                yield _measure(size, kind, change, make_change, workdir, loaded, config_path, full)


def _measure(
    size: str,
    kind: str,
    change: str,
    make_change: Callable[[str, Path], dict[str, Any]],
    workdir: Path,
    loaded: str,
    config_path: Path,
    full: dict[str, Any],
) -> Result:
    """The refresh after ``change`` in a copy of the ``loaded`` store, against its ``full`` refresh."""
    with copy_of(kind, workdir, loaded) as url:
        changed = in_child(make_change, url, config_path)
        incremental = in_child(_incremental, url, config_path)
    ratio = incremental["seconds"] / full["seconds"]
    judged = change == "clock"
    return Result(
        scenario="kpi-incremental",
        size=f"{SIZES[size] // 1000}k",
        database=f"{kind}/{change}",
        records=changed["records"],
        seconds=incremental["seconds"],
        rate=changed["updated"] / incremental["seconds"],
        peak_rss_mb=incremental["peak_rss_mb"],
        floor="full refresh",
        floor_rate=changed["records"] / full["seconds"],
        ratio=ratio,
        target=f"incremental/full time <= {TARGET}" if judged else "worst case: reported",
        passed=(ratio <= TARGET if size == "full" else None) if judged else None,
        notes={
            "change": change,
            "full_seconds": round(full["seconds"], 3),
            "changed_records": changed["updated"],
            "changed_share": round(changed["updated"] / changed["records"], 4),
            "change_sync_seconds": round(changed["seconds"], 2),
            "updated_kpis": incremental["updated"],
            "recomputed_kpis": incremental["recomputed"],
            "values_checked": incremental["values_checked"],
            "kpi_seconds": incremental["timings"],
        },
    )
