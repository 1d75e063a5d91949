"""Payouts: every plan's statement lines, computed from the stored KPI values, targets and scores.

A refresh (:meth:`IncentiveService.refresh`, called by the refresh job in its transaction, after
the KPIs) recomputes the lines of each plan's open periods. A closed period's lines are frozen:
what a later change to the CRM would have it pay instead becomes an *adjustment* line in the
first open period after it (a clawback when it is less, a late credit when it is more), with the
records that changed. Nothing here commits: the job or request that calls it does.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from crm_perf_sync.incentives import definitions, payouts
from crm_perf_sync.incentives import repository as repo
from crm_perf_sync.incentives.payouts import ZERO, Line
from crm_perf_sync.incentives.schemas import Commission, Component, Plan, ScoreBonus, Spiff, TeamPool
from crm_perf_sync.kit.canonical import digest
from crm_perf_sync.kit.errors import Conflict, InvalidInput, NotFound
from crm_perf_sync.kpi import periods
from crm_perf_sync.kpi import targets_repository as targets_repo
from crm_perf_sync.kpi.explain import ValueRef, explain
from crm_perf_sync.kpi.schemas import SumKpi
from crm_perf_sync.kpi.service import KpiService, RefreshOutcome
from crm_perf_sync.kpi.values import TargetCell
from crm_perf_sync.org import repository as org_repo
from crm_perf_sync.org.schemas import Membership


@dataclass(frozen=True, slots=True)
class PlanPeriod:
    index: int
    key: str
    start: date
    end: date  # the day after the last


@dataclass(slots=True)
class Computed:
    """One payout before it is stored: which plan period, rep and component, and the line."""

    period: PlanPeriod
    owner: str
    component: Component
    line: Line
    fraction: Decimal  # of the period the rep took part in (their quota's share)


@dataclass(slots=True)
class PlanOutcome:
    lines: int = 0
    adjustments: int = 0
    #: Of a plan recomputed by periods: each tiered commission line written that stands in a
    #: higher tier than the line it replaced, with the tier that one stood in.
    crossed: list[tuple[dict[str, Any], int | None]] = field(default_factory=list)


#: What a line is computed from, by (period key, owner, component): a commission's base and
#: quota, a SPIFF's units, a bonus's score and grade, a pool share's weight. Equal inputs, equal line.
Inputs = Mapping[tuple[str, str, str], tuple[Any, ...]]


class IncentiveService:
    """The plans of one configuration, over one store."""

    def __init__(
        self,
        kpis: KpiService,
        plans: Iterable[Plan],
        *,
        from_api: Collection[str] = (),
        invalid: Mapping[str, str] | None = None,
    ) -> None:
        self.kpis = kpis
        self.plans = {plan.id: plan for plan in plans}
        #: The ids of the plans set through the API (the others are the configuration file's).
        self.from_api = frozenset(from_api)
        #: Plans set through the API that cannot be computed, and why: their lines stay as they are.
        self.invalid = dict(invalid or {})

    def in_store(self, conn: Connection | Session) -> IncentiveService:
        """These plans (the configuration's) with the valid ones set through the API."""
        configured = [plan for plan in self.plans.values() if plan.id not in self.from_api]
        found = definitions.in_force(conn, self.kpis, configured)
        api = {plan.id for plan in found.plans[len(configured) :]}
        return IncentiveService(self.kpis, found.plans, from_api=api, invalid=found.invalid)

    def configured(self) -> set[str]:
        """The ids of the configuration file's plans."""
        return set(self.plans) - self.from_api

    @property
    def fiscal_start_month(self) -> int:
        return self.kpis.config.business.fiscal_year_start_month

    def plan(self, plan_id: str) -> Plan:
        found = self.plans.get(plan_id)
        if found is None and plan_id in self.invalid:
            raise NotFound(
                f"incentive plan {plan_id!r} set through the API cannot be computed: "
                f"{self.invalid[plan_id]} (change it with PUT /incentives/plans/{plan_id}, or remove it)"
            )
        if found is None:
            raise NotFound(
                f"no incentive plan {plan_id!r} (plans: {', '.join(sorted(self.plans)) or 'none'})"
            )
        return found

    # --- periods and participants ---------------------------------------------------------------

    def period_at(self, plan: Plan, index: int) -> PlanPeriod:
        start, end = periods.period_bounds(index, plan.period)
        return PlanPeriod(index, start.isoformat(), start, end)

    def period_of(self, plan: Plan, key: str) -> PlanPeriod:
        try:
            day = date.fromisoformat(key)
        except ValueError:
            raise InvalidInput(f"period {key!r} is not a date (YYYY-MM-DD)") from None
        found = self.period_at(
            plan, periods.local_period_index(day, "UTC", plan.period, self.fiscal_start_month)
        )
        if found.key != key:
            raise InvalidInput(
                f"{key} does not start a {plan.period} of plan {plan.id!r} (did you mean {found.key}?)"
            )
        return found

    def periods(self, plan: Plan, today: date) -> list[PlanPeriod]:
        """The plan's periods from its start to the one holding ``today`` (or its end)."""
        last_day = today if plan.to is None else min(plan.to, today)
        if last_day < plan.from_:
            return []
        first = periods.local_period_index(plan.from_, "UTC", plan.period, self.fiscal_start_month)
        last = periods.local_period_index(last_day, "UTC", plan.period, self.fiscal_start_month)
        step = periods.STEP[plan.period]
        return [self.period_at(plan, index) for index in range(first, last + step, step)]

    def participants(self, plan: Plan, membership: Membership, period: PlanPeriod) -> dict[str, Decimal]:
        """The reps in the plan during ``period``, with the share of it they were in (0 < share <= 1)."""
        found: dict[str, Decimal] = {}
        days = (period.end - period.start).days
        for who in plan.participants:
            if who.owner is not None:
                owners = [who.owner]
            else:
                owners = sorted({f"{c}:{o}" for team, c, o in membership.rows if team == who.team})
            low = max(d for d in (plan.from_, who.from_, period.start) if d is not None)
            ends = [d + timedelta(days=1) for d in (plan.to, who.to) if d is not None]
            high = min([period.end, *ends])
            inside = (high - low).days
            if inside <= 0:
                continue
            share = Decimal(inside) / Decimal(days)
            for owner in owners:
                found[owner] = max(found.get(owner, ZERO), share)
        return found

    # --- computation -----------------------------------------------------------------------------

    def compute(
        self,
        conn: Connection | Session,
        plan: Plan,
        today: date,
        only: Collection[str] | None = None,
        unchanged: Inputs | None = None,
        membership: Membership | None = None,
    ) -> list[Computed]:
        """Every payout of the plan in every period up to ``today`` (or in those of them whose key
        is in ``only``), from the stored values; with ``unchanged`` (the inputs of the lines
        stored), only those whose inputs differ (a pool's shares: all of a period, or none).
        ``membership``: the teams as read by the caller (else read here)."""
        skip = unchanged or {}
        if membership is None:
            membership = org_repo.load_membership(conn)
        plan_periods = [p for p in self.periods(plan, today) if only is None or p.key in only]
        who = {p.key: self.participants(plan, membership, p) for p in plan_periods}
        keys = [p.key for p in plan_periods]
        from_targets = any(
            isinstance(c, Commission) and c.quotas is not None and c.quotas.source != "plan"
            for c in plan.components
        )
        targets = targets_repo.load_targets(conn) if from_targets else {}
        out: list[Computed] = []
        for component in plan.components:
            if isinstance(component, Commission):
                out += self._commissions(conn, plan, component, plan_periods, who, targets, skip)
            elif isinstance(component, Spiff):
                values = repo.owner_values(
                    conn,
                    component.kpi,
                    plan.period,
                    keys,
                    self._currency(component.kpi, plan),
                    component.dimension,
                )
                for period in plan_periods:
                    for owner, share in who[period.key].items():
                        found = values.get((period.key, owner))
                        units = 0 if found is None else round(found.value)
                        if skip.get((period.key, owner, component.id)) == (units,):
                            continue
                        line = payouts.spiff(component.amount, units, component.cap)
                        out.append(Computed(period, owner, component, line, share))
            elif isinstance(component, ScoreBonus):
                scores = repo.owner_scores(conn, component.scorecard, plan.period, keys)
                for period in plan_periods:
                    for owner, share in who[period.key].items():
                        score, grade = scores.get((period.key, owner), (None, None))
                        if skip.get((period.key, owner, component.id)) == (score, grade):
                            continue
                        exact = None if score is None else Decimal(repr(score))
                        line = payouts.score_bonus(component, exact, grade)
                        out.append(Computed(period, owner, component, line, share))
            else:
                out += self._pools(conn, plan, component, plan_periods, who, membership, skip)
        return out

    def _currency(self, kpi_id: str, plan: Plan) -> str:
        kpi = self.kpis.kpis.get(kpi_id)
        return plan.currency if isinstance(kpi, SumKpi) and kpi.measure.is_money else ""

    def _commissions(
        self,
        conn: Connection | Session,
        plan: Plan,
        component: Commission,
        plan_periods: list[PlanPeriod],
        who: Mapping[str, Mapping[str, Decimal]],
        targets: Mapping[Any, TargetCell],
        unchanged: Inputs,
    ) -> list[Computed]:
        currency = self._currency(component.base.kpi, plan)
        values = repo.owner_values(
            conn,
            component.base.kpi,
            plan.period,
            [p.key for p in plan_periods],
            currency,
            component.base.dimension,
        )
        out: list[Computed] = []
        for period in plan_periods:
            for owner, share in who[period.key].items():
                found = values.get((period.key, owner))
                base = payouts.money(found.value) if found is not None else ZERO
                quota = self.quota(component, plan, targets, period, owner, share, currency)
                if unchanged.get((period.key, owner, component.id)) == _floats(base, quota):
                    continue
                out.append(
                    Computed(period, owner, component, payouts.commission(component, base, quota), share)
                )
        return out

    def quota(
        self,
        component: Commission,
        plan: Plan,
        targets: Mapping[Any, TargetCell],
        period: PlanPeriod,
        owner: str,
        share: Decimal,
        currency: str,
    ) -> Decimal | None:
        """A rep's quota for the period: from the plan or the base KPI's targets, times the share of
        the period they took part in; ``None`` when there is none."""
        source = component.quotas
        if source is None:
            return None
        if source.source == "plan":
            amount = source.owners.get(owner, source.amount)
        else:
            key = (component.base.kpi, plan.period, period.key, "owner", owner)
            cell = targets.get((*key, currency)) or targets.get((*key, ""))
            amount = None if cell is None else payouts.money(cell.value)
        return None if amount is None else payouts.cents(amount * share)

    def _pools(
        self,
        conn: Connection | Session,
        plan: Plan,
        component: TeamPool,
        plan_periods: list[PlanPeriod],
        who: Mapping[str, Mapping[str, Decimal]],
        membership: Membership,
        unchanged: Inputs,
    ) -> list[Computed]:
        keys = [p.key for p in plan_periods]
        members = {f"{c}:{o}" for team, c, o in membership.rows if team == component.team}
        weights: dict[tuple[str, str], Decimal] = {}
        if component.scorecard is not None:
            for cell, (score, _) in repo.owner_scores(conn, component.scorecard, plan.period, keys).items():
                if score is not None:
                    weights[cell] = Decimal(repr(score))
        else:
            assert component.kpi is not None
            currency = self._currency(component.kpi, plan)
            for cell, found in repo.owner_values(conn, component.kpi, plan.period, keys, currency).items():
                weights[cell] = Decimal(repr(found.value))
        out: list[Computed] = []
        for period in plan_periods:
            taking_part = {o: s for o, s in who[period.key].items() if o in members}
            if all(
                unchanged.get((period.key, o, component.id)) == (weights.get((period.key, o)),)
                for o in taking_part
            ):
                continue  # every weight as it was: every share too
            split = payouts.pool_shares(
                component.amount, {o: weights.get((period.key, o), ZERO) for o in sorted(taking_part)}
            )
            for owner, share in taking_part.items():
                line = Line(amount=ZERO)
                if owner in split:
                    line.share, line.amount = split[owner]
                    line.score = weights.get((period.key, owner))
                else:
                    line.note = (
                        "no share of the pool (no score or contribution)"
                        if split
                        else "the pool has no shares"
                    )
                out.append(Computed(period, owner, component, line, share))
        return out

    # --- refresh ---------------------------------------------------------------------------------

    def state_hash(self, plan: Plan, membership: Membership, today: date) -> str:
        return digest(
            {
                "plan": plan.model_dump(mode="json"),
                "teams": [list(row) for row in membership.rows],
                "periods": [p.key for p in self.periods(plan, today)],
            }
        )

    def pending(
        self,
        conn: Connection,
        now: datetime,
        *,
        changed: bool,
        full: bool = False,
        kpis: RefreshOutcome | None = None,
        membership: Membership | None = None,
    ) -> dict[str, set[str] | None]:
        """The plans a refresh recomputes, each with the keys of the periods to recompute (``None``:
        the whole plan). A plan is recomputed whole when asked (``full``), when its definition, the
        teams or its periods changed since, or when the KPI refresh changed values (``changed``)
        and does not say which: given what it did (``kpis``), only the plan's periods whose KPI
        values or scores changed are recomputed (see :meth:`changed_periods`), unless one of its
        inputs was recomputed whole. ``membership``: the teams as read by the caller (else read here)."""
        today = self.today(now)
        states = repo.plan_states(conn)
        if membership is None:
            membership = org_repo.load_membership(conn)
        out: dict[str, set[str] | None] = {}
        for plan in self.plans.values():
            whole = full or states.get(plan.id) != self.state_hash(plan, membership, today)
            keys = None if whole or kpis is None else self.changed_periods(plan, kpis)
            if keys is None and (whole or changed):
                out[plan.id] = None
            elif keys:
                out[plan.id] = keys
        return out

    def stale_reason(self, conn: Connection | Session, now: datetime) -> str | None:
        """Why some plan's open lines are not what its definition, the teams and its periods say
        now (a plan set, changed or removed, a new period), or ``None`` when they all are."""
        connection = conn.connection() if isinstance(conn, Session) else conn
        changed = sorted(self.pending(connection, now, changed=False))
        gone = sorted(set(repo.plan_states(connection)) - set(self.plans) - set(self.invalid))
        if not changed and not gone:
            return None
        said = [f"incentive plan {plan_id} changed" for plan_id in changed]
        said += [f"incentive plan {plan_id} was removed" for plan_id in gone]
        return ", ".join(said)

    def refresh(
        self,
        conn: Connection,
        now: datetime,
        work: Mapping[str, Collection[str] | None],
        membership: Membership | None = None,
    ) -> dict[str, PlanOutcome]:
        """Bring the plans in ``work`` (see :meth:`pending`) up to date: a whole plan's open lines
        are written again; of a plan's periods, only the lines whose numbers changed.
        ``membership``: the teams as read by the caller (else read here)."""
        today = self.today(now)
        repo.drop_plans_except(conn, [*self.plans, *self.invalid], now)
        if not work:
            return {}
        if membership is None:
            membership = org_repo.load_membership(conn)
        out: dict[str, PlanOutcome] = {}
        for plan_id, keys in work.items():
            plan = self.plans[plan_id]
            if keys is None:
                out[plan.id] = self.write_plan(conn, plan, today, now, membership=membership)
            else:
                out[plan.id] = self.write_periods(conn, plan, today, now, keys, membership)
            repo.record_plan_state(conn, plan.id, self.state_hash(plan, membership, today), now)
        return out

    # --- incremental refresh ---------------------------------------------------------------------

    @staticmethod
    def inputs(plan: Plan) -> tuple[set[str], set[str]]:
        """The KPIs and the scorecards a plan's payouts are computed from."""
        kpis: set[str] = set()
        cards: set[str] = set()
        for component in plan.components:
            if isinstance(component, Commission):
                kpis.add(component.base.kpi)
            elif isinstance(component, Spiff):
                kpis.add(component.kpi)
            elif isinstance(component, ScoreBonus):
                cards.add(component.scorecard)
            elif component.scorecard is not None:
                cards.add(component.scorecard)
            elif component.kpi is not None:
                kpis.add(component.kpi)
        return kpis, cards

    def changed_periods(self, plan: Plan, kpis: RefreshOutcome) -> set[str] | None:
        """The keys of the plan's periods whose inputs the KPI refresh (``kpis``) changed: the
        values of its KPIs and the scores of its scorecards at the plan's grain. ``None`` when one
        of them was recomputed whole (every period may have changed).

        A plan's targets and teams need no look: a change to either makes the KPI refresh
        recompute every KPI whole, and the plan's state hash holds the teams.
        """
        kpi_ids, card_ids = self.inputs(plan)
        found: set[str] = set()
        for source, names in ((kpis.touched, kpi_ids), (kpis.scored, card_ids)):
            for name in names:
                if name not in source:
                    continue  # brought up to date without a change
                periods_of = source[name]
                if periods_of is None:
                    return None
                found |= {key for grain, key in periods_of if grain == plan.period}
        return found

    def write_periods(
        self,
        conn: Connection,
        plan: Plan,
        today: date,
        now: datetime,
        keys: Collection[str],
        membership: Membership | None = None,
    ) -> PlanOutcome:
        """Recompute the plan's periods in ``keys`` only: the payouts of the open ones, and the
        adjustments for the closed ones (paid in the first open period after each). Of the
        payouts, only the lines whose inputs changed (:data:`Inputs`) are computed and written
        again: a rep whose numbers did not change keeps their line as it was, and every line of
        another period stays. ``lines`` counts the payout lines written."""
        closed = {row.period_key for row in repo.closes(conn, plan.id)}
        recomputed = {p.key for p in self.periods(plan, today)} & set(keys)
        stored = repo.open_inputs(conn, plan.id, sorted(recomputed - closed))
        kinds = {c.id: c for c in plan.components}
        unchanged = {key: _inputs(kinds[key[2]], row) for key, row in stored.items() if key[2] in kinds}
        computed = self.compute(conn, plan, today, keys, unchanged, membership)
        rows: list[dict[str, Any]] = []
        rewritten: list[tuple[int, dict[str, Any]]] = []
        crossed: list[tuple[dict[str, Any], int | None]] = []
        for c in computed:
            if c.period.key in closed:
                continue
            row = self.row(plan, c, now)
            was = stored.get((c.period.key, c.owner, c.component.id))
            if was is None:
                rows.append(row)
                continue
            rewritten.append((was[0], row))
            if isinstance(c.component, Commission) and c.component.tiers:
                before = payouts.tier_of(c.component, _money(was[1]), _money(was[2]))
                after = payouts.tier_of(c.component, c.line.base, c.line.quota)
                if after is not None and (before is None or after > before):
                    crossed.append((row, before))
        # (Who takes part and what the components are is in the plan's state: when either
        # changes, the plan is recomputed whole, so every stored line here is computed again or kept.)
        adjustments = self.adjustments(conn, plan, computed, closed, now)
        repo.replace_lines(conn, plan.id, rewritten, sorted(recomputed & closed), rows + adjustments)
        return PlanOutcome(len(rows) + len(rewritten), len(adjustments), crossed)

    def today(self, now: datetime) -> date:
        """The business calendar's date at ``now``."""
        return now.astimezone(ZoneInfo(self.kpis.config.business.timezone)).date()

    def write_plan(
        self,
        conn: Connection,
        plan: Plan,
        today: date,
        now: datetime,
        computed: list[Computed] | None = None,
        membership: Membership | None = None,
    ) -> PlanOutcome:
        if computed is None:
            computed = self.compute(conn, plan, today, membership=membership)
        closed = {row.period_key for row in repo.closes(conn, plan.id)}
        rows = [self.row(plan, c, now) for c in computed if c.period.key not in closed]
        adjustments = self.adjustments(conn, plan, computed, closed, now)
        repo.replace_open_lines(conn, plan.id, rows + adjustments)
        return PlanOutcome(len(rows), len(adjustments))

    def row(self, plan: Plan, c: Computed, now: datetime) -> dict[str, Any]:
        line = c.line
        detail: dict[str, Any] = {"participation": str(c.fraction)}
        if line.bands:
            detail["bands"] = [
                {
                    "tier": band.tier,
                    "from": str(band.low),
                    "to": None if band.high is None else str(band.high),
                    "rate": str(band.rate),
                    "portion": str(band.portion),
                    "amount": str(payouts.cents(band.amount)),
                }
                for band in line.bands
            ]
        if line.uncapped is not None:
            detail["uncapped"] = str(payouts.cents(line.uncapped))
        if line.share is not None:
            detail["share"] = str(line.share)
        return {
            "plan_id": plan.id,
            "period_key": c.period.key,
            "period_start": c.period.start,
            "period_end": c.period.end,
            "owner_id": c.owner,
            "component_id": c.component.id,
            "component_type": c.component.type,
            "kind": "payout",
            "for_period_key": c.period.key,
            "currency": plan.currency,
            "amount": line.amount,
            "base": line.base,
            "quota": line.quota,
            "attainment": None if line.attainment is None else float(line.attainment),
            "rate": None if line.rate is None else line.rate.quantize(Decimal("0.000001")),
            "units": line.units,
            "score": None if line.score is None else float(line.score),
            "grade": line.grade,
            "capped": line.capped,
            "note": line.note,
            "detail": detail,
            "frozen": False,
            "computed_at": now,
        }

    # --- period close and adjustments -----------------------------------------------------------

    def adjustments(
        self, conn: Connection, plan: Plan, computed: list[Computed], closed: set[str], now: datetime
    ) -> list[dict[str, Any]]:
        """For every closed period, what it would pay now against what was paid for it (its frozen
        lines and the frozen adjustments to it): the difference, paid in the first open period."""
        if not closed:
            return []
        paid: dict[tuple[str, str, str], Decimal] = {}
        types: dict[str, str] = {}
        for line in repo.frozen_lines(conn, plan.id):
            key = (line.for_period_key, line.owner_id, line.component_id)
            paid[key] = paid.get(key, ZERO) + Decimal(str(line.amount))
            types[line.component_id] = line.component_type
        now_pays: dict[tuple[str, str, str], Computed] = {
            (c.period.key, c.owner, c.component.id): c for c in computed if c.period.key in closed
        }
        rows: list[dict[str, Any]] = []
        snapshot: dict[tuple[str, str, str], dict[tuple[str, str], float]] | None = None
        for key in sorted(paid.keys() | now_pays.keys()):
            period_key, owner, component_id = key
            current = now_pays.get(key)
            if current is None:
                continue  # no longer in the plan (a change of configuration): what was paid stands
            amount = current.line.amount
            delta = amount - paid.get(key, ZERO)
            if delta == 0:
                continue
            if snapshot is None:
                snapshot = repo.closed_records(conn, plan.id)
            closed_period = self.period_of(plan, period_key)
            target = self._first_open_after(plan, closed_period, closed)
            component = plan.component(component_id)
            reasons = self._reasons(conn, plan, component, closed_period, owner, snapshot.get(key, {}))
            rows.append(
                {
                    "plan_id": plan.id,
                    "period_key": target.key,
                    "period_start": target.start,
                    "period_end": target.end,
                    "owner_id": owner,
                    "component_id": component_id,
                    "component_type": component.type
                    if component is not None
                    else types.get(component_id, ""),
                    "kind": "adjustment",
                    "for_period_key": period_key,
                    "currency": plan.currency,
                    "amount": delta,
                    "base": None if current is None else current.line.base,
                    "quota": None if current is None else current.line.quota,
                    "attainment": None
                    if current is None or current.line.attainment is None
                    else float(current.line.attainment),
                    "rate": None,
                    "units": None if current is None else current.line.units,
                    "score": None,
                    "grade": None,
                    "capped": False if current is None else current.line.capped,
                    "note": ("clawback" if delta < 0 else "late credit") + f" for {period_key}",
                    "detail": {
                        "paid": str(paid.get(key, ZERO)),
                        "now": str(amount),
                        "changes": reasons,
                    },
                    "frozen": False,
                    "computed_at": now,
                }
            )
        return rows

    def _first_open_after(self, plan: Plan, period: PlanPeriod, closed: set[str]) -> PlanPeriod:
        index = period.index + periods.STEP[plan.period]
        while self.period_at(plan, index).key in closed:
            index += periods.STEP[plan.period]
        return self.period_at(plan, index)

    def _reasons(
        self,
        conn: Connection,
        plan: Plan,
        component: Component | None,
        period: PlanPeriod,
        owner: str,
        before: Mapping[tuple[str, str], float],
    ) -> list[dict[str, Any]]:
        """The records that changed since the close: gone, new or with another contribution."""
        now = self.records(conn, plan, component, period, owner) if component is not None else {}
        changes: list[dict[str, Any]] = []
        for record in sorted(before.keys() | now.keys()):
            was, is_ = before.get(record), now.get(record)
            if was is not None and is_ is not None and abs(was - is_) < 0.005:
                continue
            what = "gone" if is_ is None else "new" if was is None else "changed"
            changes.append(
                {
                    "connection_id": record[0],
                    "external_id": record[1],
                    "change": what,
                    "was": was,
                    "now": is_,
                }
            )
        return changes

    def records(
        self, conn: Connection | Session, plan: Plan, component: Component, period: PlanPeriod, owner: str
    ) -> dict[tuple[str, str], float]:
        """The records behind a commission's base or a SPIFF's units: (connection, external id) ->
        contribution. Other components have none."""
        found: dict[tuple[str, str], float] = {}
        for record in self.records_detail(conn, plan, component, period, owner):
            key = (str(record["connection_id"]), str(record["external_id"]))
            found[key] = found.get(key, 0.0) + float(record["contribution"])
        return found

    def records_by_owner(
        self, conn: Connection | Session, plan: Plan, component: Component, period: PlanPeriod
    ) -> dict[str, dict[tuple[str, str], float]]:
        """:meth:`records` of every rep at once (one read of the period's records): rep scope id ->
        (connection, external id) -> contribution."""
        found: dict[str, dict[tuple[str, str], float]] = {}
        for record in self.records_detail(conn, plan, component, period, None):
            if record.get("owner_external_id") is None:
                continue
            mine = found.setdefault(f"{record['connection_id']}:{record['owner_external_id']}", {})
            key = (str(record["connection_id"]), str(record["external_id"]))
            mine[key] = mine.get(key, 0.0) + float(record["contribution"])
        return found

    def records_detail(
        self,
        conn: Connection | Session,
        plan: Plan,
        component: Component,
        period: PlanPeriod,
        owner: str | None,
    ) -> list[dict[str, Any]]:
        """The records behind a commission's base or a SPIFF's units (of one rep, or of the whole
        company with ``None``), as the KPI's explanation lists them, in the order they fell in the
        period (then by id)."""
        if isinstance(component, Commission):
            kpi_id, dimension = component.base.kpi, component.base.dimension
        elif isinstance(component, Spiff):
            kpi_id, dimension = component.kpi, component.dimension
        else:
            return []
        kpi = self.kpis.kpis[kpi_id]
        scope = ("company", "company") if owner is None else ("owner", owner)
        ref = ValueRef(kpi_id, plan.period, period.key, *scope, self._currency(kpi_id, plan), *dimension)
        calendar = self.kpis.calendar(conn)
        membership = org_repo.load_membership(conn)
        found: list[dict[str, Any]] = []
        after: int | None = None
        while True:
            explained = explain(conn, kpi, ref, calendar, membership, after=after, limit=1000)
            part = explained.parts[0]
            for record in part.records:
                contribution = record.get("contribution")
                found.append({**record, "contribution": float(1 if contribution is None else contribution)})
            if part.next_after is None:
                break
            after = part.next_after
        field_name = explained.parts[0].period_field
        found.sort(
            key=lambda r: (str(r.get(field_name) or ""), str(r["connection_id"]), str(r["external_id"]))
        )
        return found

    def close(self, conn: Connection, plan_id: str, period_key: str, closed_by: str, now: datetime) -> int:
        """Close a plan's period: its lines, brought up to date first, are frozen, with the records
        behind them. Periods close in order, once each, and only once they have ended."""
        plan = self.plan(plan_id)
        period = self.period_of(plan, period_key)
        today = self.today(now)
        if period.end > today:
            raise Conflict(
                f"{plan_id} {period_key} has not ended yet (it ends on {period.end - timedelta(days=1)})"
            )
        closed = {row.period_key for row in repo.closes(conn, plan.id)}
        if period.key in closed:
            raise Conflict(f"{plan_id} {period_key} is already closed")
        earlier = [p.key for p in self.periods(plan, today) if p.index < period.index and p.key not in closed]
        if earlier:
            raise Conflict(f"close the earlier periods of {plan_id} first: {', '.join(earlier)}")
        computed = self.compute(conn, plan, today)
        self.write_plan(conn, plan, today, now, computed)
        state = self.state_hash(plan, org_repo.load_membership(conn), today)
        repo.record_plan_state(conn, plan.id, state, now)
        by_component = {
            component.id: self.records_by_owner(conn, plan, component, period)
            for component in plan.components
            if isinstance(component, Commission | Spiff)
        }
        records = [
            {
                "owner_id": c.owner,
                "component_id": c.component.id,
                "connection_id": record[0],
                "external_id": record[1],
                "contribution": contribution,
            }
            for c in computed
            if c.period.key == period.key and c.component.id in by_component
            for record, contribution in by_component[c.component.id].get(c.owner, {}).items()
        ]
        return repo.close_period(
            conn, plan.id, (period.key, period.start, period.end), closed_by, now, records
        )


def _floats(base: Decimal, quota: Decimal | None) -> tuple[float, float | None]:
    """A commission's :data:`Inputs`: amounts to the cent, as the floats they are compared as."""
    return float(base), None if quota is None else float(quota)


def _money(value: float | None) -> Decimal | None:
    return None if value is None else payouts.money(value)


def _inputs(component: Component, stored: repo.StoredInputs) -> tuple[Any, ...]:
    """A stored line's :data:`Inputs` (a commission's as :func:`_floats`)."""
    _, base, quota, units, score, grade = stored
    if isinstance(component, Commission):
        return (0.0 if base is None else base, quota)
    if isinstance(component, Spiff):
        return (units,)
    if isinstance(component, ScoreBonus):
        return (score, grade)
    return (None if score is None else Decimal(repr(score)),)
