"""The KPI refresh: which KPIs to bring up to date, how, and in what order, on one connection.

A refresh decomposes and stores the targets, then takes every KPI in dependency order: it is
recomputed whole (one grouped query per side and breakdown, rolled up into every grain and scope
in Python; :mod:`.compute`, :mod:`.ranks`, :mod:`.funnel`, :mod:`.derived`) when its definition
or the context changed, and otherwise brought up to date from the store's change log
(:mod:`.incremental`, and the incremental paths of ranks, funnels and derived KPIs). Scorecards
come last, from the stored values (:mod:`.scoring`). Everything happens on the caller's
connection and in its transaction: the refresh job (:mod:`crm_perf_sync.jobs.refresh`) owns the
lease, the commit and what follows a refresh (alert evaluation).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from crm_perf_sync.kit.canonical import digest
from crm_perf_sync.kit.errors import NotFound
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.kpi import repository as repo
from crm_perf_sync.kpi import scores_repository as scores_repo
from crm_perf_sync.kpi import targets as target_math
from crm_perf_sync.kpi import targets_repository as targets_repo
from crm_perf_sync.kpi.compiler import Calendar
from crm_perf_sync.kpi.compute import Computation, Touched, additive_values, cells_of
from crm_perf_sync.kpi.customer_changes import apply_customer_changes
from crm_perf_sync.kpi.customers import customer_values
from crm_perf_sync.kpi.derived import apply_derived_changes, derived_rows
from crm_perf_sync.kpi.funnel import apply_funnel_changes, funnel_values
from crm_perf_sync.kpi.incremental import apply_changes
from crm_perf_sync.kpi.library import evaluation_order
from crm_perf_sync.kpi.measured import measure_values, measure_version
from crm_perf_sync.kpi.ranks import apply_percentile_changes, percentile_rows
from crm_perf_sync.kpi.schemas import (
    GRAINS,
    CustomerKpi,
    DerivedKpi,
    DurationKpi,
    FunnelKpi,
    Grain,
    Kpi,
    KpiConfig,
    MeasureKpi,
    ScorecardConfig,
    dimension_column,
)
from crm_perf_sync.kpi.scoring import refresh_scorecard
from crm_perf_sync.kpi.values import apply_targets, value_row
from crm_perf_sync.org import repository as org_repo
from crm_perf_sync.org.schemas import Membership
from crm_perf_sync.sync.repository import incomplete_load


@dataclass(slots=True)
class RefreshOutcome:
    seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)  # values written (recomputed) or changed
    recomputed: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)  # by the change log
    scorecards: dict[str, int] = field(default_factory=dict)
    targets: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per KPI and scorecard
    #: Per KPI brought up to date: the (grain, period key) of the values it changed (a
    #: :class:`Touched` names their cells), or ``None`` when it was recomputed whole. A KPI
    #: absent from it changed nothing.
    touched: dict[str, set[tuple[str, str]] | None] = field(default_factory=dict)
    #: The same per scorecard: the (grain, period key) scored again, ``None`` for every period.
    scored: dict[str, set[tuple[str, str]] | None] = field(default_factory=dict)
    #: What this refresh waits for (a connection's first load): nothing was computed.
    waiting_for: str | None = None
    #: The teams the values were computed with (read once; what follows in the transaction reuses it).
    membership: Membership | None = None

    def summary(self) -> str:
        if self.waiting_for:
            return f"waits for {self.waiting_for}"
        total = sum(self.rows.values())
        if not self.rows:
            return "KPIs already up to date" + self.summary_tail()
        text = (
            f"refreshed {len(self.rows)} KPIs ({len(self.recomputed)} recomputed, "
            f"{len(self.updated)} updated by changes), {total:,} values"
        )
        if self.scorecards:
            cards, scores = len(self.scorecards), sum(self.scorecards.values())
            text += f", {cards} scorecard{'' if cards == 1 else 's'} ({scores:,} scores)"
        return text + self.summary_tail()

    def summary_tail(self) -> str:
        """What follows the KPIs in :meth:`summary` (the refresh job adds its alert events)."""
        return f" in {self.seconds:.1f}s"


class KpiService:
    """The configured KPIs, targets and scorecards, and how to bring their stored values up to date."""

    def __init__(self, config: KpiConfig) -> None:
        self.config = config
        self.kpis: Mapping[str, Kpi] = config.kpis
        self.section = config.section
        self.business = config.business

    def kpi(self, kpi_id: str) -> Kpi:
        found = self.kpis.get(kpi_id)
        if found is None:
            raise NotFound(f"no KPI {kpi_id!r} (defined: {', '.join(sorted(self.kpis)) or 'none'})")
        return found

    def scorecard(self, scorecard_id: str) -> ScorecardConfig:
        for card in self.section.scorecards:
            if card.id == scorecard_id:
                return card
        known = ", ".join(c.id for c in self.section.scorecards) or "none"
        raise NotFound(f"no scorecard {scorecard_id!r} (defined: {known})")

    def dimensions(self, kpi: Kpi) -> list[str]:
        """The breakdowns materialised for ``kpi``: its own, then the section's where they apply."""
        if isinstance(kpi, DerivedKpi | FunnelKpi | CustomerKpi | MeasureKpi):
            return []
        entities = {m.entity for m in kpi.measures()}
        out: list[str] = []
        for name in [*kpi.dimensions, *self.section.dimensions]:
            if name not in out and all(dimension_column(e, name) is not None for e in entities):
                out.append(name)
        return out

    def definition_hash(self, kpi: Kpi) -> str:
        """The KPI's own hash, its breakdowns and (for a derived KPI) its inputs' hashes."""
        parts = [kpi.definition_hash(), *self.dimensions(kpi)]
        if isinstance(kpi, DerivedKpi):
            parts += [self.definition_hash(self.kpis[name]) for name in sorted(kpi.inputs())]
        return hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()

    def state_hash(self, conn: Connection, kpi: Kpi, digest: str) -> str:
        """What the stored values were computed from beyond the store's change log: the definition,
        and for a KPI on a measure the measure's entries (their version)."""
        if not isinstance(kpi, MeasureKpi):
            return digest
        version = measure_version(conn, kpi.measure_id)
        return hashlib.blake2b(f"{digest}|{version}".encode(), digest_size=8).hexdigest()

    def calendar(self, session: Session | Connection) -> Calendar:
        business = self.business
        dialect = session.get_bind().dialect.name if isinstance(session, Session) else session.dialect.name
        return Calendar(dialect, business.timezone, business.fiscal_year_start_month)

    def selection(self, kpi_ids: Iterable[str] | None) -> list[Kpi]:
        """The KPIs to compute in dependency order; a KPI brings the derived KPIs that read it."""
        if kpi_ids is None:
            return evaluation_order(dict(self.kpis))
        wanted = {self.kpi(k).id for k in kpi_ids}
        grew = True
        while grew:
            grew = False
            for kpi in self.kpis.values():
                if isinstance(kpi, DerivedKpi) and kpi.id not in wanted and kpi.inputs() & wanted:
                    wanted.add(kpi.id)
                    grew = True
        return [k for k in evaluation_order(dict(self.kpis)) if k.id in wanted]

    def context_hash(
        self,
        membership: Membership,
        calendar: Calendar,
        grains: list[Grain],
        api_targets: Sequence[tuple[int, str]] = (),
    ) -> str:
        """What every value also depends on: teams, calendar, targets, grains and connections.

        When it changes, incremental updates would mix contexts: every KPI is recomputed whole.
        """
        return digest(
            {
                "membership": membership.rows,
                "regions": membership.regions,
                "calendar": [calendar.timezone, calendar.fiscal_start_month],
                "grains": grains,
                "targets": [t.model_dump(mode="json") for t in self.section.targets],
                "api_targets": list(api_targets),
                "connections": sorted(self.config.connection_ids),
            }
        )

    def refresh(
        self,
        conn: Connection,
        outcome: RefreshOutcome,
        kpi_ids: Iterable[str] | None = None,
        grains: Iterable[Grain] = GRAINS,
        *,
        now: datetime,
        full: bool = False,
        wait_for_first_loads: bool = False,
    ) -> None:
        """Bring every KPI, target and scorecard up to date with the store, on ``conn``.

        A KPI is recomputed whole when asked (``full``, or named in ``kpi_ids``), when its definition
        or the context (teams, calendar, targets) changed since its values were computed, or when it
        cannot be updated by parts (medians, percentiles, funnels, derived KPIs) and the store
        changed. Otherwise the store's change log is applied to its values: each changed record's
        old contribution is taken out and its new one added, per period, scope and breakdown.
        What it did goes into ``outcome``; the caller commits.

        With ``wait_for_first_loads`` (the worker), nothing is computed before the first sync has
        finished or while a connection is on its first load: half a CRM would make every number
        and alert wrong. It is checked in the refresh's own snapshot, so a load that starts later
        cannot be half in it either.
        """
        forced = {k.id for k in self.selection(kpi_ids)} if kpi_ids is not None else set()
        grain_list = list(grains)
        # The first statement writes, so on SQLite this transaction holds the write lock from the
        # start: no sync batch can commit between reading the change log and the data.
        repo.mark_refresh_started(conn, now)
        if wait_for_first_loads:
            outcome.waiting_for = incomplete_load(conn, now)
            if outcome.waiting_for:
                return
        repo.sort_in_memory(conn)
        calendar = self.calendar(conn)
        membership = outcome.membership = org_repo.load_membership(conn)
        context = self.context_hash(membership, calendar, grain_list, targets_repo.api_target_versions(conn))
        states = repo.refresh_states(conn)
        api_targets = targets_repo.api_targets(conn, self.kpis)
        decomposed = target_math.decompose(
            self.section.targets, self.kpis, membership, calendar.fiscal_start_month, api_targets
        )
        outcome.targets = targets_repo.replace_targets(conn, target_math.rows(decomposed, now))
        run = Computation(conn, calendar, membership, grain_list, targets_repo.load_targets(conn))
        repo.load_membership_table(conn, membership)
        pending = repo.load_pending(conn)
        changed = pending.batches > 0
        # A funnel's step counts are kept per stage of the pipelines' order: when the stages
        # themselves changed, every funnel is recomputed whole.
        stages_changed = "pipeline_stages" in pending.entities
        deals_changed = "opportunities" in pending.entities
        if changed and any(isinstance(k, FunnelKpi) for k in self.kpis.values()):
            repo.load_funnel_deals(conn)
        # Derived KPIs and scorecards follow the periods their inputs changed.
        touched = outcome.touched
        for kpi in evaluation_order(dict(self.kpis)):
            kpi_started = time.monotonic()
            digest = self.definition_hash(kpi)
            state = self.state_hash(conn, kpi, digest)
            current = states.get(kpi.id) == (state, context)
            whole = not current or full or kpi.id in forced
            if isinstance(kpi, DerivedKpi):
                inputs = [touched.get(name, set()) for name in kpi.inputs()]
                whole = whole or any(periods_of is None for periods_of in inputs)
            else:
                whole = whole or (changed and stages_changed and isinstance(kpi, FunnelKpi))
            mine = Touched()
            count: int | None = None
            if not whole and changed and isinstance(kpi, CustomerKpi):
                count = apply_customer_changes(run, kpi, digest, mine) if deals_changed else 0
                whole = count is None
            if whole:
                rows = self.compute(run, kpi)
                repo.replace_values(conn, kpi.id, rows)
                outcome.rows[kpi.id] = len(rows)
                outcome.recomputed.append(kpi.id)
                touched[kpi.id] = None
            elif changed:
                if isinstance(kpi, CustomerKpi):
                    assert count is not None  # brought up to date above, by the accounts touched
                elif isinstance(kpi, MeasureKpi):
                    count = 0  # its input did not change (else it was recomputed whole)
                elif isinstance(kpi, DerivedKpi):
                    wanted = cells_of(found for found in inputs if found is not None)
                    count = apply_derived_changes(run, kpi, self.kpis, digest, wanted, mine)
                elif isinstance(kpi, DurationKpi) and kpi.stat != "mean":
                    count = apply_percentile_changes(run, kpi, self.dimensions(kpi), digest, mine)
                elif isinstance(kpi, FunnelKpi):
                    count = apply_funnel_changes(run, kpi, digest, mine)
                else:
                    count = apply_changes(run, kpi, self.dimensions(kpi), digest, mine)
                outcome.rows[kpi.id] = count or 0
                outcome.updated.append(kpi.id)
                touched[kpi.id] = mine
            changed_values = whole or bool(outcome.rows.get(kpi.id))
            repo.record_refresh(conn, kpi.id, state, context, now, changed=changed_values)
            outcome.timings[kpi.id] = time.monotonic() - kpi_started
        if outcome.recomputed:
            repo.analyze_values(conn)
        for card in self.section.scorecards:
            card_started = time.monotonic()
            only: set[tuple[str, str]] | None = set()
            for component in card.components:
                periods_of = touched.get(component.kpi, set())
                only = None if only is None or periods_of is None else only | periods_of
            scored = refresh_scorecard(conn, card, self.kpis, only)
            if scored is not None:
                outcome.scorecards[card.id] = scored.count
                outcome.scored[card.id] = scored.periods
                scores_repo.mark_scores_changed(conn, card.id, now)
            outcome.timings[f"scorecard:{card.id}"] = time.monotonic() - card_started
        repo.consume_pending(conn, pending)

    def refresh_reason(self, session: Session, grains: Iterable[Grain] = GRAINS) -> str | None:
        """Why the stored values are not up to date, or ``None`` when they are (cheap to ask)."""
        if repo.pending_batches(session):
            return "the store changed since the last refresh"
        conn = session.connection()
        calendar = self.calendar(conn)
        context = self.context_hash(
            org_repo.load_membership(conn), calendar, list(grains), targets_repo.api_target_versions(conn)
        )
        states = repo.refresh_states(conn)
        for kpi in self.kpis.values():
            if states.get(kpi.id) != (self.state_hash(conn, kpi, self.definition_hash(kpi)), context):
                return f"{kpi.id} was never computed with this definition, teams, calendar and targets"
        return None

    def compute(self, run: Computation, kpi: Kpi) -> list[dict[str, Any]]:
        """Every ``kpi_value`` row of ``kpi`` (not stored)."""
        computed_at = utc_now()
        digest = self.definition_hash(kpi)
        out: list[dict[str, Any]] = []
        if isinstance(kpi, DerivedKpi):
            out = derived_rows(run, kpi, self.kpis)
        elif isinstance(kpi, FunnelKpi):
            for (grain, scope), breakdowns in funnel_values(run, kpi).items():
                for stage_dimension, computed in breakdowns:
                    for key, result in computed.items():
                        out.append(value_row(kpi, grain, scope, stage_dimension, key, result))
        elif isinstance(kpi, MeasureKpi):
            for (grain, scope), computed in measure_values(run, kpi).items():
                for key, result in computed.items():
                    out.append(value_row(kpi, grain, scope, "", key, result))
        elif isinstance(kpi, CustomerKpi):
            for (grain, scope), computed in customer_values(run, kpi).items():
                for key, result in computed.items():
                    out.append(value_row(kpi, grain, scope, "", key, result))
        elif isinstance(kpi, DurationKpi) and kpi.stat != "mean":
            for dimension in [None, *self.dimensions(kpi)]:
                out += percentile_rows(run, kpi, dimension)
        else:
            for dimension in [None, *self.dimensions(kpi)]:
                values = additive_values(run, kpi, dimension)
                for (grain, scope), computed in values.items():
                    for key, result in computed.items():
                        out.append(value_row(kpi, grain, scope, dimension or "", key, result))
        apply_targets(kpi, out, run.targets)
        for row in out:
            row["definition_hash"] = digest
            row["computed_at"] = computed_at
        return out
