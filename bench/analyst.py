"""The analyst's script: the default library computed with pandas from the same store.

What an operations analyst does today instead of running this service: read the tables into data
frames, bucket the records into periods, join the team hierarchy, group and aggregate, per KPI,
grain and scope. It runs in ``kpi-full`` beside the engine and the hand-written SQL floor; its
numbers are checked against every value the engine stored (the same comparison as the floor's),
so the speed-up it reports is between two computations that agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from bench import kpi_full as floor
from bench.kpi_full import GRAINS, SCOPES, FloorQuery, Slices

Frame = pd.DataFrame
Aggregate = Callable[[Any], Any]  # a groupby (or the whole frame) -> value, numerator, denominator, sample


def _read(conn: Any) -> dict[str, Frame]:
    def sql(text: str) -> Frame:
        return pd.read_sql_query(text, conn)

    tables = {
        "opportunity": sql(
            "SELECT id, connection_id, external_id, owner_external_id, amount, currency, stage, probability,"
            " pipeline, created_at, close_date, closed_at, is_closed, is_won, account_external_id"
            " FROM opportunity WHERE NOT is_deleted"
        ),
        "activity": sql(
            "SELECT connection_id, owner_external_id, type, occurred_at, is_completed FROM activity"
            " WHERE NOT is_deleted"
        ),
        "lead": sql(
            "SELECT connection_id, owner_external_id, created_at, is_converted FROM lead WHERE NOT is_deleted"
        ),
        "team": sql("SELECT id, namespace, external_id, parent_id FROM team"),
        "member": sql("SELECT team_id, owner_id FROM team_member"),
        "owner": sql("SELECT id, connection_id, external_id FROM owner WHERE NOT is_deleted"),
        "stage": sql(
            "SELECT connection_id, pipeline, stage, sort_order FROM pipeline_stage"
            " WHERE NOT is_deleted AND (NOT is_closed OR is_won)"
        ),
        "history": sql("SELECT connection_id, opportunity_external_id, to_stage FROM stage_change"),
    }
    opp, lead = tables["opportunity"], tables["lead"]
    for frame, columns in ((opp, ("created_at", "closed_at")), (lead, ("created_at",))):
        for column in columns:
            frame[column] = pd.to_datetime(frame[column], utc=True, format="mixed")
    opp["close_date"] = pd.to_datetime(opp["close_date"], format="mixed")
    for frame, columns in ((opp, ("is_closed", "is_won")), (lead, ("is_converted",))):
        for column in columns:
            frame[column] = frame[column].astype(bool)
    opp["amount"] = opp["amount"].astype(float)
    opp["currency"] = opp["currency"].fillna("")
    activity = tables["activity"]
    activity["occurred_at"] = pd.to_datetime(activity["occurred_at"], utc=True, format="mixed")
    activity["is_completed"] = activity["is_completed"].astype(bool)
    return tables


def _membership(tables: dict[str, Frame]) -> Frame:
    """Every (team, rep) pair: a rep counts in their team and in each team above it."""
    teams = tables["team"].set_index("id")
    parent = teams["parent_id"].to_dict()
    key = (teams["namespace"] + ":" + teams["external_id"]).to_dict()
    owners = tables["owner"].set_index("id")
    rows = []
    for team_id, owner_id in tables["member"].itertuples(index=False):
        if owner_id not in owners.index:
            continue
        connection, external = owners.at[owner_id, "connection_id"], owners.at[owner_id, "external_id"]
        current: Any = team_id
        while current is not None and not pd.isna(current):
            rows.append((key[current], connection, external))
            current = parent.get(current)
    return pd.DataFrame(rows, columns=["team_key", "connection_id", "owner_external_id"]).drop_duplicates()


def _period(values: Any, grain: str) -> Any:
    """The first day of each value's period (UTC calendar), as the ISO date the store keys by."""
    if grain == "month":
        return values.dt.strftime("%Y-%m-01")
    if grain == "year":
        return values.dt.strftime("%Y-01-01")
    quarter_month = (values.dt.month - 1) // 3 * 3 + 1
    return values.dt.strftime("%Y-") + quarter_month.map("{:02d}".format) + "-01"


def _ratio(numerator: str, denominator: str) -> Aggregate:
    def aggregate(g: Any) -> Any:
        out = g.agg(numerator=(numerator, "sum"), denominator=(denominator, "sum"))
        out["value"] = out["numerator"] / out["denominator"].where(out["denominator"] != 0)
        out["sample"] = out["denominator"]
        return out

    return aggregate


def _total(column: str, with_count: bool = False, mean: bool = False) -> Aggregate:
    def aggregate(g: Any) -> Any:
        out = g.agg(numerator=(column, "sum"), sample=(column, "size"))
        out["value"] = out["numerator"] / out["sample"] if mean else out["numerator"]
        out["denominator"] = out["sample"] if with_count else None
        return out

    return aggregate


def _distinct_accounts(g: Any) -> Any:
    out = g.agg(numerator=("account", "nunique"))
    out["value"] = out["numerator"]
    out["denominator"] = None
    out["sample"] = out["numerator"]
    return out


def _repeat_share(g: Any) -> Any:
    out = g.agg(numerator=("repeat", "sum"), denominator=("amount", "sum"), sample=("amount", "size"))
    out["value"] = out["numerator"] / out["denominator"].where(out["denominator"] != 0)
    return out


def _customer_deals(opp: Frame) -> Frame:
    """Won deals with an account and a close date, each with its account's first won date."""
    won = opp[opp["is_won"] & opp["account_external_id"].notna() & opp["close_date"].notna()]
    won = won.assign(account=won["connection_id"] + "|" + won["account_external_id"])
    first = won.groupby("account")["close_date"].transform("min")
    return won.assign(first_date=first)


def _median(g: Any) -> Any:
    out = g.agg(value=("days", "median"), numerator=("days", "sum"), sample=("days", "size"))
    out["denominator"] = out["sample"]
    return out


def _kpis(tables: dict[str, Frame]) -> list[tuple[str, Frame, str, bool, Aggregate | None]]:
    """(kpi id, its records, the period column, by currency, how a group aggregates)."""
    opp, lead = tables["opportunity"], tables["lead"]
    lead = lead.assign(converted=lead["is_converted"].astype(int), one=1)
    closed = opp[opp["is_won"] | opp["is_closed"]]
    closed = closed.assign(won=closed["is_won"].astype(int), closed=closed["is_closed"].astype(int))
    won = opp[opp["is_won"]]
    cycle = won[
        won["created_at"].notna() & won["closed_at"].notna() & (won["closed_at"] >= won["created_at"])
    ]
    cycle = cycle.assign(days=(cycle["closed_at"] - cycle["created_at"]).dt.total_seconds() / 86400.0)
    won_amount = won[won["amount"].notna()]
    open_deals = opp[~opp["is_closed"] & opp["amount"].notna()]
    weighted = open_deals[open_deals["probability"].notna()]
    weighted = weighted.assign(weighted=weighted["amount"] * weighted["probability"])
    return [
        ("lead_conversion_rate", lead, "created_at", False, _ratio("converted", "one")),
        ("win_rate", closed, "closed_at", False, _ratio("won", "closed")),
        ("sales_cycle_days_mean", cycle, "closed_at", False, _total("days", with_count=True, mean=True)),
        ("sales_cycle_days_median", cycle, "closed_at", False, _median),
        ("won_revenue", won_amount, "closed_at", True, _total("amount")),
        ("won_deals", won.assign(one=1), "closed_at", False, _total("one")),
        ("average_deal_size", won_amount, "closed_at", True, _total("amount", with_count=True, mean=True)),
        ("weighted_pipeline", weighted, "close_date", True, _total("weighted")),
        ("open_pipeline", open_deals, "close_date", True, _total("amount")),
        ("opportunities_created", opp.assign(one=1), "created_at", False, _total("one")),
        ("stage_funnel", opp, "created_at", False, None),
        *_activity_kpis(tables["activity"]),
        *_customer_kpis(opp),
    ]


#: The activity KPIs broken down by type: (kpi id, dimension).
BREAKDOWNS = {"activities": "activity_type"}


def _activity_kpis(activity: Frame) -> list[tuple[str, Frame, str, bool, Aggregate | None]]:
    done = activity[activity["is_completed"]].assign(one=1)
    kinds = {"calls": "call", "meetings": "meeting", "visits": "visit", "proposals_sent": "proposal"}
    return [
        ("activities", done, "occurred_at", False, _total("one")),
        *(
            (kpi_id, done[done["type"] == kind], "occurred_at", False, _total("one"))
            for kpi_id, kind in kinds.items()
        ),
    ]


def _customer_kpis(opp: Frame) -> list[tuple[str, Frame, str, bool, Aggregate | None]]:
    won = _customer_deals(opp)
    first = won[won["close_date"] == won["first_date"]]
    priced = won[won["amount"].notna()]
    priced = priced.assign(repeat=priced["amount"].where(priced["close_date"] > priced["first_date"], 0.0))
    return [
        ("new_customers", first, "close_date", False, _distinct_accounts),
        ("repeat_revenue_share", priced, "close_date", True, _repeat_share),
    ]


def _retention(opp: Frame, membership: Frame, slices: Slices) -> None:
    """Accounts of each period (per scope) that won again in the next, up to the last period."""
    won = _customer_deals(opp)
    months = {"month": 1, "quarter": 3, "year": 12}
    for grain in GRAINS:
        if grain == "all":
            continue
        frame = won.assign(period_key=_period(won["close_date"], grain))
        last = frame["period_key"].max()
        following = pd.to_datetime(frame["period_key"]) + pd.DateOffset(months=months[grain])
        frame = frame.assign(next_key=following.dt.strftime("%Y-%m-%d"))
        for scope in SCOPES:
            scoped, keys = frame, []
            if scope == "owner":
                scoped = scoped[scoped["owner_external_id"].notna()]
                keys = ["connection_id", "owner_external_id"]
            elif scope == "team":
                scoped = scoped.merge(membership, on=["connection_id", "owner_external_id"])
                keys = ["team_key"]
            bought = scoped[["period_key", "next_key", *keys, "account"]].drop_duplicates()
            again = bought[["period_key", *keys, "account"]].rename(columns={"period_key": "next_key"})
            again = again.assign(kept=1)
            joined = bought.merge(again, on=["next_key", *keys, "account"], how="left")
            joined = joined[joined["next_key"] <= last]
            grouped = joined.groupby(["next_key", *keys], sort=False).agg(
                numerator=("kept", "count"), denominator=("account", "size")
            )
            grouped["value"] = grouped["numerator"] / grouped["denominator"]
            grouped = grouped.reset_index()
            columns = ["next_key", *keys, "value", "numerator", "denominator"]
            rows = [(*row, int(row[-1])) for row in grouped[columns].itertuples(index=False, name=None)]
            query = FloorQuery("customer_retention_rate", grain, scope, False, False, "")
            slices[("customer_retention_rate", grain, scope)] = floor._plain_values(query, rows)


def _furthest(tables: dict[str, Frame]) -> Frame:
    """Each deal's furthest step along its pipeline, from its current stage and its history."""
    opp, steps, history = tables["opportunity"], tables["stage"], tables["history"]
    current = opp[["id", "connection_id", "stage", "pipeline"]].merge(
        steps, on=["connection_id", "stage"], suffixes=("", "_step")
    )
    current = current[current["pipeline"].isna() | (current["pipeline"] == current["pipeline_step"])]
    visited = history.merge(steps, left_on=["connection_id", "to_stage"], right_on=["connection_id", "stage"])
    visited = visited.groupby(["connection_id", "opportunity_external_id", "pipeline"], as_index=False).agg(
        sort_order=("sort_order", "max")
    )
    visited = visited.merge(
        opp[["id", "connection_id", "external_id", "pipeline"]],
        left_on=["connection_id", "opportunity_external_id"],
        right_on=["connection_id", "external_id"],
        suffixes=("_step", ""),
    )
    visited = visited[visited["pipeline"].isna() | (visited["pipeline"] == visited["pipeline_step"])]
    both = pd.concat([current[["id", "sort_order"]], visited[["id", "sort_order"]]])
    return both.groupby("id", as_index=False).agg(max_order=("sort_order", "max"))


def _funnel_rows(frame: Frame, keys: list[str], steps: Frame) -> list[tuple[Any, ...]]:
    extra = [c for c in ("connection_id", "pipeline", "max_order") if c not in keys]
    grouped = frame.groupby([*keys, *extra], dropna=False, as_index=False).size()
    spread = grouped.merge(steps, on="connection_id", suffixes=("", "_step"))
    spread = spread[
        (spread["pipeline"].isna() | (spread["pipeline"] == spread["pipeline_step"]))
        & (spread["sort_order"] <= spread["max_order"])
    ]
    reached = spread.groupby([*keys, "pipeline_step", "stage", "sort_order"], as_index=False)["size"].sum()
    return list(reached.itertuples(index=False, name=None))


def _rows(frame: Frame, keys: list[str], aggregate: Aggregate) -> list[tuple[Any, ...]]:
    columns = ["value", "numerator", "denominator", "sample"]
    if not keys:
        if frame.empty:
            return []
        out = aggregate(frame.assign(_all=0).groupby("_all"))
        return list(out[columns].itertuples(index=False, name=None))
    out = aggregate(frame.groupby(keys, sort=False)).reset_index()
    return list(out[[*keys, *columns]].itertuples(index=False, name=None))


def _clean(frame: Frame, keys: list[str], aggregate: Aggregate) -> list[tuple[Any, ...]]:
    """The groups' rows with pandas' missing values as None."""
    return [
        (
            *row[:-4],
            None if pd.isna(row[-4]) else row[-4],
            row[-3],
            None if row[-2] is None or pd.isna(row[-2]) else row[-2],
            row[-1],
        )
        for row in _rows(frame, keys, aggregate)
    ]


def compute(tables: dict[str, Frame]) -> Slices:
    """Every KPI of the default library at every grain and scope, as the floor's slices."""
    membership = _membership(tables)
    furthest = _furthest(tables)
    slices: Slices = {}
    for kpi_id, records, period, by_currency, aggregate in _kpis(tables):
        if aggregate is None:
            records = records.merge(furthest, on="id")
        for grain in GRAINS:
            frame = records
            keys: list[str] = []
            if grain != "all":
                frame = frame[frame[period].notna()]
                frame = frame.assign(period_key=_period(frame[period], grain))
                keys.append("period_key")
            for scope in SCOPES:
                scoped, scope_keys = frame, list(keys)
                if scope == "owner":
                    scoped = scoped[scoped["owner_external_id"].notna()]
                    scope_keys += ["connection_id", "owner_external_id"]
                elif scope == "team":
                    scoped = scoped.merge(membership, on=["connection_id", "owner_external_id"])
                    scope_keys.append("team_key")
                if by_currency:
                    scope_keys.append("currency")
                query = FloorQuery(kpi_id, grain, scope, by_currency, aggregate is None, "")
                if aggregate is None:
                    rows = _funnel_rows(scoped, scope_keys, tables["stage"])
                    slices[(kpi_id, grain, scope)] = floor._funnel_values(query, rows)
                else:
                    slices[(kpi_id, grain, scope)] = floor._plain_values(
                        query, _clean(scoped, scope_keys, aggregate)
                    )
                    if kpi_id in BREAKDOWNS:
                        split = FloorQuery(kpi_id, grain, scope, by_currency, False, "", BREAKDOWNS[kpi_id])
                        rows = _clean(scoped, [*scope_keys, "type"], aggregate)
                        slices[(kpi_id, grain, scope)].update(floor._plain_values(split, rows))
    _retention(tables["opportunity"], membership, slices)
    floor._derived(slices)
    return slices


def run(url: str, config_path: Path) -> dict[str, Any]:  # noqa: ARG001 - the same signature as the other sides
    """Read, compute and check; the timed part is what the analyst's script does: read + compute."""
    from crm_perf_sync.kit.db import create_db_engine

    engine = create_db_engine(url)
    with engine.connect() as conn:
        started = time.perf_counter()
        tables = _read(conn)
        read_seconds = time.perf_counter() - started
        slices = compute(tables)
        seconds = time.perf_counter() - started
        comparison = floor._compare(conn, slices)
    engine.dispose()
    comparison.raise_if_different("pandas")
    return {"seconds": seconds, "read_seconds": read_seconds, "checked": comparison.checked}
