"""KPIs on measures: entries from outside the CRM combined per period and scope (see
:class:`MeasureKpi`). Entries are few (people enter them), so they are read whole and combined
here; a KPI on a measure is recomputed whole whenever the measure's entries changed, which its
version (the measure's latest change) tells the refresh."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Connection, func, select

from crm_perf_sync.kpi import periods
from crm_perf_sync.kpi.compiler import Scope
from crm_perf_sync.kpi.compute import Computation
from crm_perf_sync.kpi.rollup import Key, Rollup
from crm_perf_sync.kpi.schemas import Grain, MeasureKpi
from crm_perf_sync.kpi.values import Computed
from crm_perf_sync.models import MeasureChange, MeasureEntry

#: How many months a grain's period spans, to tell which entries fit inside which periods.
_MONTHS = {"month": 1, "quarter": 3, "year": 12}


@dataclass(frozen=True, slots=True)
class Entry:
    scope: str
    scope_id: str
    grain: str
    period_key: str
    period_start: date
    value: float
    source: str
    entered_by: str


def measure_version(conn: Connection, measure_id: str) -> str:
    """Changes whenever an entry of the measure is created, changed or removed."""
    latest, count = conn.execute(
        select(func.max(MeasureChange.id), func.count()).where(MeasureChange.measure_id == measure_id)
    ).one()
    return f"{latest or 0}/{count}"


def entries(conn: Connection, measure_id: str) -> list[Entry]:
    rows = conn.execute(
        select(
            MeasureEntry.scope,
            MeasureEntry.scope_id,
            MeasureEntry.grain,
            MeasureEntry.period_key,
            MeasureEntry.period_start,
            MeasureEntry.value,
            MeasureEntry.source,
            MeasureEntry.entered_by,
        )
        .where(MeasureEntry.measure_id == measure_id)
        .order_by(MeasureEntry.period_start, MeasureEntry.scope, MeasureEntry.scope_id)
    )
    return [Entry(r[0], r[1], r[2], r[3], r[4], float(r[5]), r[6], r[7]) for r in rows]


def period_of(entry: Entry, grain: Grain, fiscal_start_month: int) -> int | bool | None:
    """The index of the ``grain`` period the entry counts in, ``None`` for all time, ``False``
    when it counts in none of that grain (a quarter's entry in a month, a month's in a week)."""
    if grain == "all":
        return None
    if (grain == "week") != (entry.grain == "week"):
        return False
    if grain != "week" and _MONTHS[entry.grain] > _MONTHS[grain]:
        return False
    return periods.local_period_index(entry.period_start, "UTC", grain, fiscal_start_month)


def scopes_of(entry: Entry, rollup: Rollup) -> list[tuple[Scope, str]]:
    """The scopes an entry counts for: the company, its own scope, and a rep's teams."""
    found: list[tuple[Scope, str]] = [("company", "company")]
    if entry.scope == "owner":
        found.append(("owner", entry.scope_id))
        connection_id, _, owner = entry.scope_id.partition(":")
        found += [("team", team) for team in rollup.teams_of(connection_id, owner)]
    elif entry.scope == "team":
        found.append(("team", entry.scope_id))
    return found


def combine(kpi: MeasureKpi, found: list[Entry]) -> Computed:
    values = [e.value for e in found]
    if kpi.stat == "sum":
        return sum(values), sum(values), None, len(values)
    if kpi.stat == "last":
        latest = max(e.period_start for e in found)
        last = [e.value for e in found if e.period_start == latest]
        value = sum(last) / len(last)
        return value, value, None, len(last)
    return sum(values) / len(values), sum(values), float(len(values)), len(values)


def measure_values(run: Computation, kpi: MeasureKpi) -> dict[tuple[Grain, Scope], dict[Key, Computed]]:
    """Every value of a KPI on a measure, per grain and scope."""
    rollup = run.rollup()
    groups: dict[tuple[Grain, Scope, int | None, str], list[Entry]] = defaultdict(list)
    found = entries(run.conn, kpi.measure_id)
    for entry in found:
        cells = scopes_of(entry, rollup)
        for grain in run.grains:
            period = period_of(entry, grain, rollup.fiscal_start_month)
            if period is False:
                continue
            for scope, scope_id in cells:
                if scope == "team" and not run.membership.rows and entry.scope != "team":
                    continue
                groups[grain, scope, period if isinstance(period, int) else None, scope_id].append(entry)
    out: dict[tuple[Grain, Scope], dict[Key, Computed]] = defaultdict(dict)
    for (grain, scope, period, scope_id), inside in groups.items():
        out[grain, scope][period, scope_id, "", ""] = combine(kpi, inside)
    return dict(out)


def explain_entries(
    conn: Connection,
    kpi: MeasureKpi,
    grain: Grain,
    period: int | None,
    scope: str,
    scope_id: str,
    run: Computation,
) -> list[dict[str, Any]]:
    """The entries behind one value, in period order."""
    out = []
    rollup = run.rollup()
    for entry in entries(conn, kpi.measure_id):
        index = period_of(entry, grain, run.calendar.fiscal_start_month)
        if index is False or (period is not None and index != period):
            continue
        if (scope, scope_id) not in scopes_of(entry, rollup):
            continue
        out.append(
            {
                # Entries live in this store, not in a CRM: no connection, no page to link to.
                "connection_id": "",
                "external_id": f"{entry.scope_id} {entry.grain} {entry.period_key}",
                "contribution": entry.value,
                "scope": entry.scope,
                "scope_id": entry.scope_id,
                "grain": entry.grain,
                "period_key": entry.period_key,
                "value": entry.value,
                "source": entry.source,
                "entered_by": entry.entered_by,
            }
        )
    return out
