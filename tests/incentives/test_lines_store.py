"""A payout line rewritten in place reads back exactly as it was computed, on both databases.

The incremental refresh writes a changed line over the stored one by its id (on PostgreSQL from
one JSON document of all the lines' numbers): amounts to the cent, rates to the sixth place, the
explanation and the time it was computed must come back as a line inserted with them would.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select

from crm_perf_sync.incentives import repository as repo
from crm_perf_sync.models import IncentiveLine

TABLE = IncentiveLine.__table__


def line(owner: str, **numbers: Any) -> dict[str, Any]:
    return {
        "plan_id": "p",
        "period_key": "2026-01-01",
        "period_start": date(2026, 1, 1),
        "period_end": date(2026, 1, 31),
        "owner_id": owner,
        "component_id": "commission",
        "component_type": "commission",
        "kind": "payout",
        "for_period_key": "2026-01-01",
        "currency": "CNY",
        "frozen": False,
        "amount": Decimal("0.00"),
        "base": None,
        "quota": None,
        "attainment": None,
        "rate": None,
        "units": None,
        "score": None,
        "grade": None,
        "capped": False,
        "note": None,
        "detail": {},
        "computed_at": datetime(2026, 1, 1, tzinfo=UTC),
    } | numbers


def stored(engine: Engine) -> dict[str, tuple[Any, ...]]:
    columns = [c for c in TABLE.columns if c.name != "id"]
    with engine.connect() as conn:
        return {row.owner_id: tuple(row) for row in conn.execute(select(*columns))}


def test_a_line_rewritten_in_place_reads_back_as_one_inserted_with_its_numbers(engine: Engine) -> None:
    new = {
        "amount": Decimal("12345678901.23"),
        "base": Decimal("9876543210987.65"),
        "quota": Decimal("0.01"),
        "attainment": 1.0 / 3.0,
        "rate": Decimal("123456789012.123457"),
        "units": 7,
        "score": 87.65432109876543,
        "grade": '甲 "A", with \\ and \'',
        "capped": True,
        "note": "cap at 2x on-target",
        "detail": {"tiers": [{"from": "0", "rate": "0.05", "amount": "1.10"}], "名": '张三 "x"'},
        "computed_at": datetime(2026, 12, 6, 16, 7, 27, 123456, tzinfo=UTC),
    }
    with engine.begin() as conn:
        repo.replace_open_lines(conn, "p", [line("rewritten"), line("kept"), line("inserted", **new)])
        (line_id,) = conn.execute(select(TABLE.c.id).where(TABLE.c.owner_id == "rewritten")).one()
        repo.replace_lines(conn, "p", [(line_id, line("rewritten", **new))], [], [])
    rows = stored(engine)
    names = [c.name for c in TABLE.columns if c.name != "id"]
    rewritten = dict(zip(names, rows["rewritten"], strict=True))
    # Every number as given, and as the same numbers inserted read back (all but the owner).
    assert {name: rewritten[name] for name in new} == new
    assert rows["rewritten"][names.index("owner_id") + 1 :] == rows["inserted"][names.index("owner_id") + 1 :]
    # The other line is not touched.
    kept = dict(zip(names, rows["kept"], strict=True))
    assert (kept["amount"], kept["detail"], kept["capped"]) == (Decimal("0.00"), {}, False)
    assert kept["computed_at"] == datetime(2026, 1, 1, tzinfo=UTC)
    with engine.connect() as conn:
        (same_id,) = conn.execute(select(TABLE.c.id).where(TABLE.c.owner_id == "rewritten")).one()
    assert same_id == line_id  # the same line, with new numbers
