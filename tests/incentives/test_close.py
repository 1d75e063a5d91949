"""Closing a period freezes its payouts; later CRM changes to its deals become adjustment lines in
the first open period, with the deals that changed, and never rewrite what was paid."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from sqlalchemy import select

from crm_perf_sync.connector_sdk import OpportunityRecord, StreamSpec
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.errors import Conflict
from crm_perf_sync.leases import new_holder_id
from crm_perf_sync.models import IncentiveLine, Opportunity
from crm_perf_sync.sync.service import SyncEngine, SyncOptions
from tests.incentives.conftest import Store
from tests.sync.scripted import Script, scripted

CLOSED_ON = datetime(2017, 4, 10, tzinfo=UTC)
PLAN = "agents-2017"
Q1, Q2, Q3 = "2017-01-01", "2017-04-01", "2017-07-01"


def cents(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def commission(base: Decimal, quota: Decimal) -> Decimal:
    """The agents-2017 commission, independently: 5% to quota, 8% beyond, at most 2x 5% of quota."""
    earned = min(base, quota) * Decimal("0.05") + max(base - quota, Decimal(0)) * Decimal("0.08")
    return cents(min(earned, 2 * quota * Decimal("0.05")))


def lines(store: Store, **where: str) -> dict[tuple[str, str, str, str, str], Any]:
    with session_scope(store.session_factory) as session:
        stmt = select(IncentiveLine).where(IncentiveLine.plan_id == PLAN)
        for name, value in where.items():
            stmt = stmt.where(getattr(IncentiveLine, name) == value)
        found = session.scalars(stmt).all()
        session.expunge_all()
    return {(r.period_key, r.owner_id, r.component_id, r.kind, r.for_period_key): r for r in found}


def frozen_view(found: dict[Any, Any]) -> dict[Any, tuple[Any, ...]]:
    return {k: (r.amount, r.base, r.quota, r.frozen, r.detail) for k, r in found.items()}


def deal(store: Store, owner: str) -> OpportunityRecord:
    """``owner``'s largest won Q1 deal, as the CRM would send it."""
    with session_scope(store.session_factory) as session:
        rows = session.scalars(
            select(Opportunity).where(
                Opportunity.owner_external_id == owner,
                Opportunity.is_won.is_(True),
                Opportunity.close_date >= date(2017, 1, 1),
                Opportunity.close_date < date(2017, 4, 1),
            )
        ).all()
    row = max(rows, key=lambda r: (r.amount, r.external_id))
    return OpportunityRecord(
        external_id=row.external_id,
        owner_external_id=row.owner_external_id,
        amount=row.amount,
        currency=row.currency,
        stage=row.stage,
        probability=row.probability,
        pipeline=row.pipeline,
        account_external_id=row.account_external_id,
        product=row.product,
        created_at=row.created_at,
        close_date=row.close_date,
        closed_at=row.closed_at,
        is_closed=row.is_closed,
        is_won=row.is_won,
        custom=dict(row.custom),
    )


def crm_changes(store: Store, records: list[OpportunityRecord], name: str) -> None:
    """The CRM sends changed deals: synced through the engine (change log and all)."""
    script = Script(streams=[StreamSpec(name, "opportunities")], pages={name: [records]})
    engine = SyncEngine(
        session_factory=store.session_factory,
        connector=scripted(script),
        connection_id="maven",
        options=SyncOptions(),
        holder=new_holder_id(),
    )
    assert engine.run(trigger="manual", full_refresh=False).status == "succeeded"


def close(store: Store, period: str, when: datetime = CLOSED_ON) -> int:
    with store.engine.begin() as conn:
        return store.job().incentives.close(conn, PLAN, period, "finance", when)


def test_a_closed_quarter_is_frozen_and_later_changes_become_adjustments(store: Store) -> None:
    # Periods close in order, once each, after they end.
    with pytest.raises(Conflict, match="close the earlier periods"):
        close(store, Q2, datetime(2017, 7, 5, tzinfo=UTC))
    with pytest.raises(Conflict, match="has not ended"):
        close(store, Q1, datetime(2017, 3, 20, tzinfo=UTC))
    close(store, Q1)
    with pytest.raises(Conflict, match="already closed"):
        close(store, Q1)
    paid = lines(store, period_key=Q1)
    assert all(line.frozen for line in paid.values())
    assert len(paid) == 35 * 2  # every agent, commission and SPIFF

    # Anna Snelling's largest Q1 deal is lost after all; Cecily Lampkin's largest grows by 10,000.
    lost = deal(store, "Anna Snelling")
    grown = deal(store, "Cecily Lampkin")
    assert lost.amount is not None
    assert grown.amount is not None
    lost_record = replace(lost, stage="Lost", is_won=False)
    grown_record = replace(grown, amount=grown.amount + 10_000)
    crm_changes(store, [lost_record, grown_record], "corrections")
    outcome = store.job().refresh()
    assert "agents-2017" in outcome.incentives

    # What was paid for Q1 is untouched.
    assert frozen_view(lines(store, period_key=Q1)) == frozen_view(paid)
    # Exactly two adjustments, paid in Q2, for Q1, with the deal that changed.
    adjustments = lines(store, kind="adjustment")
    assert set(adjustments) == {
        (Q2, "maven:Anna Snelling", "commission", "adjustment", Q1),
        (Q2, "maven:Cecily Lampkin", "commission", "adjustment", Q1),
    }
    for owner, record, change in (("Anna Snelling", lost, -lost.amount), ("Cecily Lampkin", grown, 10_000)):
        before = paid[Q1, f"maven:{owner}", "commission", "payout", Q1]
        base, quota = Decimal(str(before.base)), Decimal(str(before.quota))
        expected = commission(base + change, quota) - commission(base, quota)
        line = adjustments[Q2, f"maven:{owner}", "commission", "adjustment", Q1]
        assert Decimal(str(line.amount)) == expected != 0
        assert line.note == ("clawback" if expected < 0 else "late credit") + " for 2017-01-01"
        (changed,) = line.detail["changes"]
        assert changed["external_id"] == record.external_id
        assert changed["change"] == ("gone" if change < 0 else "changed")
        assert not line.frozen
    # Q2's own payouts do not move (the deals closed in Q1).
    q2 = lines(store, period_key=Q2, kind="payout")
    assert all(not line.frozen for line in q2.values())

    # Q2 closes with the adjustments in it; then the lost deal is won again: the clawback is undone
    # by a late credit in Q3, against what Q1 has been paid so far (its payout and the adjustment).
    close(store, Q2, datetime(2017, 7, 10, tzinfo=UTC))
    clawback = adjustments[Q2, "maven:Anna Snelling", "commission", "adjustment", Q1]
    assert lines(store, period_key=Q2, kind="adjustment")[
        Q2, "maven:Anna Snelling", "commission", "adjustment", Q1
    ].frozen
    crm_changes(store, [lost], "corrections-2")
    store.job().refresh()
    later = lines(store, period_key=Q3, kind="adjustment")
    assert set(later) == {(Q3, "maven:Anna Snelling", "commission", "adjustment", Q1)}
    assert Decimal(str(later[Q3, "maven:Anna Snelling", "commission", "adjustment", Q1].amount)) == -Decimal(
        str(clawback.amount)
    )
    assert frozen_view(lines(store, period_key=Q1)) == frozen_view(paid)
