"""KPI refresh: compute every definition at every grain and scope, materialise atomically.

Order of a refresh: targets are decomposed and stored; each base KPI is computed in the database
(one grouped query per measure, grain, scope and breakdown) and swapped in its own transaction;
derived KPIs follow the KPIs they read; scorecards come last, from the stored values.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal, cast

import orjson
from sqlalchemy import Connection
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import LoadedConfig
from crm_perf_sync.db import session_scope
from crm_perf_sync.errors import Conflict, NotFound
from crm_perf_sync.kpi import periods, scorecards
from crm_perf_sync.kpi import repository as repo
from crm_perf_sync.kpi import targets as target_math
from crm_perf_sync.kpi.compiler import (
    FUNNEL_OPPORTUNITY,
    Calendar,
    FunnelDeals,
    Membership,
    Part,
    Scope,
    equal_count_query,
    funnel_grouped_query,
    funnel_steps_query,
    grouped_query,
    neighbour_query,
    part_for,
    percentile_query,
    rank_state_query,
    sample_query,
)
from crm_perf_sync.kpi.library import evaluation_order
from crm_perf_sync.kpi.rollup import Key, Rollup, Totals
from crm_perf_sync.kpi.schemas import (
    GRAINS,
    CountKpi,
    DerivedKpi,
    DurationKpi,
    FunnelKpi,
    Grain,
    Kpi,
    Measure,
    RatioKpi,
    ScorecardConfig,
    SumKpi,
    dimension_column,
)
from crm_perf_sync.leases import new_holder_id, release, try_acquire
from crm_perf_sync.metrics import REFRESH_DURATION
from crm_perf_sync.models import PRIOR_TABLES
from crm_perf_sync.sync.repository import incomplete_load
from crm_perf_sync.timeutil import utc_now

log = logging.getLogger(__name__)

#: The database lease that makes one refresh run at a time across worker replicas.
REFRESH_LEASE = "kpi-refresh"

# (value, numerator, denominator, sample count)
Computed = tuple[float | None, float, float | None, int]

#: An all-time median or percentile's rank state (see :func:`compiler.rank_state_query`): the
#: value at the lower rank read, how many values are below it and how many equal it.
RankState = tuple[float, int, int]
NO_RANK_STATE: dict[str, Any] = {"rank_pivot": None, "rank_below": None, "rank_equal": None}


@dataclass(slots=True)
class RefreshOutcome:
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)  # values written (recomputed) or changed
    recomputed: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)  # by the change log
    scorecards: dict[str, int] = field(default_factory=dict)
    targets: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per KPI and scorecard
    alerts: Any = None  # the alert evaluation that ended the refresh (alerts.service.Evaluation)
    #: What this refresh waits for (a connection's first load): nothing was computed.
    waiting_for: str | None = None

    def summary(self) -> str:
        if self.waiting_for:
            return f"waits for {self.waiting_for}"
        total = sum(self.rows.values())
        if not self.rows:
            return f"KPIs already up to date ({self.seconds:.1f}s)"
        text = (
            f"refreshed {len(self.rows)} KPIs ({len(self.recomputed)} recomputed, "
            f"{len(self.updated)} updated by changes), {total:,} values"
        )
        if self.scorecards:
            cards, scores = len(self.scorecards), sum(self.scorecards.values())
            text += f", {cards} scorecard{'' if cards == 1 else 's'} ({scores:,} scores)"
        events = len(self.alerts.events) if self.alerts is not None else 0
        if events:
            text += f", {events} alert event{'' if events == 1 else 's'}"
        return text + f" in {self.seconds:.1f}s"


class KpiService:
    """Computes and stores KPI values, targets and scores. One instance per command or job."""

    def __init__(self, session_factory: sessionmaker[Session], config: LoadedConfig) -> None:
        self.session_factory = session_factory
        self.config = config
        self.kpis: Mapping[str, Kpi] = config.kpis
        self.section = config.app.kpis

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
        if isinstance(kpi, DerivedKpi | FunnelKpi):
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

    def calendar(self, session: Session | Connection) -> Calendar:
        business = self.config.app.business
        dialect = session.get_bind().dialect.name if isinstance(session, Session) else session.dialect.name
        return Calendar(dialect, business.timezone, business.fiscal_year_start_month)

    def _selection(self, kpi_ids: Iterable[str] | None) -> list[Kpi]:
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
        payload = orjson.dumps(
            {
                "membership": membership.rows,
                "regions": membership.regions,
                "calendar": [calendar.timezone, calendar.fiscal_start_month],
                "grains": grains,
                "targets": [t.model_dump(mode="json") for t in self.section.targets],
                "api_targets": list(api_targets),
                "connections": sorted(c.id for c in self.config.app.connections),
            }
        )
        return hashlib.blake2b(payload, digest_size=8).hexdigest()

    def refresh(
        self,
        kpi_ids: Iterable[str] | None = None,
        grains: Iterable[Grain] = GRAINS,
        *,
        full: bool = False,
        wait_for_first_loads: bool = False,
    ) -> RefreshOutcome:
        """Bring every KPI, target and scorecard up to date with the store, in one transaction.

        A KPI is recomputed whole when asked (``full``, or named in ``kpi_ids``), when its definition
        or the context (teams, calendar, targets) changed since its values were computed, or when it
        cannot be updated by parts (medians, percentiles, funnels, derived KPIs) and the store
        changed. Otherwise the store's change log is applied to its values: each changed record's
        old contribution is taken out and its new one added, per period, scope and breakdown.
        Readers see the old values until the whole refresh commits.

        With ``wait_for_first_loads`` (the worker), nothing is computed before the first sync has
        finished or while a connection is on its first load: half a CRM would make every number
        and alert wrong. It is checked in the refresh's own snapshot, so a load that starts later
        cannot be half in it either.
        """
        started = time.monotonic()
        started_at = utc_now()
        forced = {k.id for k in self._selection(kpi_ids)} if kpi_ids is not None else set()
        grain_list = list(grains)
        outcome = RefreshOutcome(0.0)
        engine = self.session_factory.kw["bind"]
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # One snapshot for the change log and the data it describes.
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            try:
                self._refresh_in(conn, forced, grain_list, full, outcome, wait_for_first_loads)
                if outcome.waiting_for:
                    conn.rollback()
                    outcome.seconds = time.monotonic() - started
                    return outcome
                kind = "full" if full or set(outcome.recomputed) == set(self.kpis) else "changes"
                REFRESH_DURATION.labels(kind).observe(time.monotonic() - started)
                repo.record_refresh_run(
                    conn,
                    started_at=started_at,
                    finished_at=utc_now(),
                    duration_seconds=time.monotonic() - started,
                    kind=kind,
                    status="succeeded",
                    values_written=sum(outcome.rows.values()),
                    recomputed=outcome.recomputed,
                    updated=outcome.updated,
                )
                conn.commit()
            except BaseException as exc:
                conn.rollback()
                if isinstance(exc, Exception):
                    try:
                        repo.record_refresh_run(
                            conn,
                            started_at=started_at,
                            finished_at=utc_now(),
                            duration_seconds=time.monotonic() - started,
                            kind="full" if full else "changes",
                            status="failed",
                            values_written=0,
                            recomputed=[],
                            updated=[],
                            error=f"{type(exc).__name__}: {exc}"[:4000],
                        )
                        conn.commit()
                    except Exception:  # the database itself may be what failed
                        conn.rollback()
                        log.warning("could not record the failed KPI refresh", exc_info=True)
                raise
            finally:
                repo.drop_temporary_tables(conn)
                conn.commit()
        outcome.seconds = time.monotonic() - started
        return outcome

    def _refresh_in(
        self,
        conn: Connection,
        forced: set[str],
        grains: list[Grain],
        full: bool,
        outcome: RefreshOutcome,
        wait_for_first_loads: bool = False,
    ) -> None:
        now = utc_now()
        # The first statement writes, so on SQLite this transaction holds the write lock from the
        # start: no sync batch can commit between reading the change log and the data.
        repo.mark_refresh_started(conn, now)
        if wait_for_first_loads:
            outcome.waiting_for = incomplete_load(conn, now)
            if outcome.waiting_for:
                return
        if conn.dialect.name == "postgresql":
            # Grouping and ranking a million records sorts in memory rather than in spill files;
            # SET LOCAL ends with this transaction.
            conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
        calendar = self.calendar(conn)
        membership = repo.load_membership(conn)
        context = self.context_hash(membership, calendar, grains, repo.api_target_versions(conn))
        states = repo.refresh_states(conn)
        api_targets = repo.api_targets(conn, self.kpis)
        decomposed = target_math.decompose(
            self.section.targets, self.kpis, membership, calendar.fiscal_start_month, api_targets
        )
        outcome.targets = repo.replace_targets(conn, target_math.rows(decomposed, now))
        target_values = repo.load_targets(conn)
        repo.load_membership_table(conn, membership)
        pending = repo.load_pending(conn)
        changed = pending.batches > 0
        # A funnel's step counts are kept per stage of the pipelines' order: when the stages
        # themselves changed, every funnel is recomputed whole.
        stages_changed = "pipeline_stages" in pending.entities
        if changed and any(isinstance(k, FunnelKpi) for k in self.kpis.values()):
            repo.load_funnel_deals(conn)
        # Per KPI brought up to date: the (grain, period key) of the values it changed, or None
        # when it was recomputed whole. Derived KPIs and scorecards follow their inputs.
        touched: dict[str, set[tuple[str, str]] | None] = {}
        for kpi in evaluation_order(dict(self.kpis)):
            kpi_started = time.monotonic()
            digest = self.definition_hash(kpi)
            current = states.get(kpi.id) == (digest, context)
            whole = not current or full or kpi.id in forced
            if isinstance(kpi, DerivedKpi):
                inputs = [touched.get(name, set()) for name in kpi.inputs()]
                whole = whole or any(periods_of is None for periods_of in inputs)
            else:
                whole = whole or (changed and stages_changed and isinstance(kpi, FunnelKpi))
            mine: set[tuple[str, str]] = set()
            if whole:
                rows = self.compute(conn, kpi, calendar, membership, grains, target_values)
                repo.replace_values(conn, kpi.id, rows)
                outcome.rows[kpi.id] = len(rows)
                outcome.recomputed.append(kpi.id)
                touched[kpi.id] = None
            elif changed:
                if isinstance(kpi, DerivedKpi):
                    wanted = {period for found in inputs if found is not None for period in found}
                    count = self._apply_derived_changes(conn, kpi, grains, target_values, wanted)
                    mine = wanted
                elif isinstance(kpi, DurationKpi) and kpi.stat != "mean":
                    count = self._apply_percentile_changes(
                        conn, kpi, calendar, membership, grains, target_values, mine
                    )
                elif isinstance(kpi, FunnelKpi):
                    count = self._apply_funnel_changes(
                        conn, kpi, calendar, membership, grains, target_values, mine
                    )
                else:
                    count = self._apply_changes(conn, kpi, calendar, membership, grains, target_values, mine)
                outcome.rows[kpi.id] = count
                outcome.updated.append(kpi.id)
                touched[kpi.id] = mine
            changed_values = whole or bool(outcome.rows.get(kpi.id))
            repo.record_refresh(conn, kpi.id, digest, context, now, changed=changed_values)
            outcome.timings[kpi.id] = time.monotonic() - kpi_started
        for card in self.section.scorecards:
            card_started = time.monotonic()
            only: set[tuple[str, str]] | None = set()
            for component in card.components:
                periods_of = touched.get(component.kpi, set())
                only = None if only is None or periods_of is None else only | periods_of
            scored = self.refresh_scorecard(card, conn, only)
            if scored is not None:
                outcome.scorecards[card.id] = scored
                repo.mark_scores_changed(conn, card.id, now)
            outcome.timings[f"scorecard:{card.id}"] = time.monotonic() - card_started
        repo.consume_pending(conn, pending)
        self._evaluate_alerts(conn, now, outcome)

    def _evaluate_alerts(self, conn: Connection, now: datetime, outcome: RefreshOutcome) -> None:
        """Alert rules and score publications, in the refresh's transaction (a savepoint: a
        failing evaluation is logged and retried at the next one, it does not undo the refresh)."""
        from crm_perf_sync.alerts import service as alerts

        # Even with no rule left: the alerts of removed rules are resolved by an evaluation.
        started = time.monotonic()
        try:
            with conn.begin_nested():
                outcome.alerts = alerts.evaluate(conn, self.config, now)
        except Exception:
            log.exception("evaluating the alert rules failed; the next evaluation tries again")
        outcome.timings["alerts"] = time.monotonic() - started

    def evaluate_alerts(self) -> Any:
        """Evaluate the alert rules on their own (no refresh), in one transaction.

        For periods that roll over with no new data (a new month begins). Run it under the
        refresh lease (:meth:`evaluate_alerts_exclusive`) so it never interleaves with a refresh.
        """
        from crm_perf_sync.alerts import service as alerts

        engine = self.session_factory.kw["bind"]
        with engine.begin() as conn:
            return alerts.evaluate(conn, self.config, utc_now())

    def refresh_reason(self, session: Session, grains: Iterable[Grain] = GRAINS) -> str | None:
        """Why the stored values are not up to date, or ``None`` when they are (cheap to ask)."""
        if repo.pending_batches(session):
            return "the store changed since the last refresh"
        conn = session.connection()
        calendar = self.calendar(conn)
        context = self.context_hash(
            repo.load_membership(conn), calendar, list(grains), repo.api_target_versions(conn)
        )
        states = repo.refresh_states(conn)
        for kpi in self.kpis.values():
            if states.get(kpi.id) != (self.definition_hash(kpi), context):
                return f"{kpi.id} was never computed with this definition, teams, calendar and targets"
        return None

    def evaluate_alerts_exclusive(self, *, ttl: timedelta, holder: str | None = None) -> Any:
        """:meth:`evaluate_alerts` under the refresh lease; ``None`` if a refresh holds it (that
        refresh evaluates them)."""
        holder = holder or new_holder_id()
        with session_scope(self.session_factory) as session:
            if try_acquire(session, REFRESH_LEASE, holder, ttl) is not None:
                return None
        try:
            return self.evaluate_alerts()
        finally:
            with session_scope(self.session_factory) as session:
                release(session, REFRESH_LEASE, holder)

    def refresh_exclusive(
        self,
        *,
        ttl: timedelta,
        wait: timedelta,
        should_stop: Callable[[], bool] = lambda: False,
        holder: str | None = None,
        kpi_ids: Iterable[str] | None = None,
        full: bool = False,
        wait_for_first_loads: bool = False,
    ) -> RefreshOutcome | None:
        """Refresh under the cluster-wide refresh lease, waiting up to ``wait`` for another one.

        A refresh already running elsewhere may have started before this process's data landed,
        so this one waits for it and then runs, rather than skipping. ``None`` when stopped
        while waiting.
        """
        holder = holder or new_holder_id()
        deadline = time.monotonic() + wait.total_seconds()
        while True:
            with session_scope(self.session_factory) as session:
                held = try_acquire(session, REFRESH_LEASE, holder, ttl)
            if held is None:
                break
            if should_stop():
                return None
            if time.monotonic() >= deadline:
                raise Conflict(f"the KPI refresh lease is held by {held.holder}; try again later")
            time.sleep(0.5)
        try:
            return self.refresh(kpi_ids, full=full, wait_for_first_loads=wait_for_first_loads)
        finally:
            with session_scope(self.session_factory) as session:
                release(session, REFRESH_LEASE, holder)

    # -- computation ------------------------------------------------------------------------------

    def compute(
        self,
        conn: Connection,
        kpi: Kpi,
        calendar: Calendar,
        membership: Membership,
        grains: list[Grain],
        target_values: Mapping[repo.TargetKey, repo.TargetCell] | None = None,
    ) -> list[dict[str, Any]]:
        """Every ``kpi_value`` row of ``kpi`` (not stored)."""
        computed_at = utc_now()
        digest = self.definition_hash(kpi)
        out: list[dict[str, Any]] = []
        if isinstance(kpi, DerivedKpi):
            out = self._derived(conn, kpi, grains, target_values or {})
        elif isinstance(kpi, FunnelKpi):
            for (grain, scope), breakdowns in self._funnel(conn, kpi, calendar, membership, grains).items():
                for stage_dimension, computed in breakdowns:
                    for key, result in computed.items():
                        out.append(_row(kpi, grain, scope, stage_dimension, key, result))
        elif isinstance(kpi, DurationKpi) and kpi.stat != "mean":
            for dimension in [None, *self.dimensions(kpi)]:
                out += self._percentile_rows(conn, kpi, calendar, grains, dimension)
        else:
            for dimension in [None, *self.dimensions(kpi)]:
                values = self._values(conn, kpi, calendar, membership, grains, dimension)
                for (grain, scope), computed in values.items():
                    for key, result in computed.items():
                        out.append(_row(kpi, grain, scope, dimension or "", key, result))
        self._apply_targets(kpi, out, target_values or {})
        for row in out:
            row["definition_hash"] = digest
            row["computed_at"] = computed_at
        return out

    def _apply_targets(
        self,
        kpi: Kpi,
        out: list[dict[str, Any]],
        target_values: Mapping[repo.TargetKey, repo.TargetCell],
        *,
        add_missing: bool = True,
    ) -> None:
        """Set target, attainment and gap; an additive KPI with a target but no records scores 0."""
        if not target_values:
            return
        mine = {key[1:]: value for key, value in target_values.items() if key[0] == kpi.id}
        if not mine:
            return
        matched: set[tuple[str, str, str, str, str]] = set()
        for row in out:
            if row["dimension"]:
                continue
            base = (row["grain"], row["period_key"], row["scope"], row["scope_id"])
            key = (*base, row["currency"])
            if key not in mine:
                key = (*base, "")
            cell = mine.get(key)
            if cell is None:
                continue
            matched.add(key)
            _set_attainment(kpi, row, cell.value)
        if not add_missing or not target_math.is_additive(kpi):
            return
        for key, cell in mine.items():
            if key in matched:
                continue
            grain, period_key, scope, scope_id, currency = key
            row = _row(kpi, "all", scope, "", (None, scope_id, currency, ""), (0.0, 0.0, None, 0))
            row.update(grain=grain, period_key=period_key, period_start=cell.start, period_end=cell.end)
            _set_attainment(kpi, row, cell.value)
            out.append(row)

    def _rolled(
        self, conn: Connection, part: Part, calendar: Calendar, rollup: Rollup, dimension: str | None
    ) -> dict[tuple[Grain, Scope], dict[Key, Totals]]:
        """One grouped pass over a part's records, added up into every grain and scope."""
        rows = conn.execute(grouped_query(part, calendar, dimension))
        return rollup(
            (r.week, r.month, r.connection_id, r.owner, r.currency, r.dim, r.total, r.records) for r in rows
        )

    def _values(
        self,
        conn: Connection,
        kpi: Kpi,
        calendar: Calendar,
        membership: Membership,
        grains: list[Grain],
        dimension: str | None,
    ) -> dict[tuple[Grain, Scope], dict[Key, Computed]]:
        rollup = Rollup(grains, calendar.fiscal_start_month, membership)
        out: dict[tuple[Grain, Scope], dict[Key, Computed]] = {}
        if isinstance(kpi, CountKpi | SumKpi):
            part = part_for(kpi.measure, calendar, by_currency=kpi.measure.is_money)
            for cell, totals in self._rolled(conn, part, calendar, rollup, dimension).items():
                out[cell] = {key: (t.total, t.total, None, t.records) for key, t in totals.items()}
        elif isinstance(kpi, RatioKpi):
            by_currency = kpi.numerator.is_money
            num = self._rolled(
                conn, part_for(kpi.numerator, calendar, by_currency=by_currency), calendar, rollup, dimension
            )
            den = self._rolled(
                conn,
                part_for(kpi.denominator, calendar, by_currency=by_currency),
                calendar,
                rollup,
                dimension,
            )
            for cell in num.keys() | den.keys():
                n_cell, d_cell = num.get(cell, {}), den.get(cell, {})
                values: dict[Key, Computed] = {}
                for key in n_cell.keys() | d_cell.keys():
                    n, d = n_cell.get(key, Totals()), d_cell.get(key, Totals())
                    value = n.total / d.total * kpi.scale if d.total else None
                    values[key] = (value, n.total, d.total, d.records)
                out[cell] = values
        elif isinstance(kpi, DurationKpi):
            if kpi.stat == "mean":  # medians and percentiles: see _percentile_rows
                part = part_for(kpi.measure, calendar, by_currency=False, kpi=kpi)
                for cell, totals in self._rolled(conn, part, calendar, rollup, dimension).items():
                    out[cell] = {
                        key: (
                            t.total / t.records if t.records else None,
                            t.total,
                            float(t.records),
                            t.records,
                        )
                        for key, t in totals.items()
                    }
        return out

    def _percentile_rows(
        self,
        conn: Connection,
        kpi: DurationKpi,
        calendar: Calendar,
        grains: list[Grain],
        dimension: str | None,
        only: Mapping[Grain, set[int | None]] | None = None,
    ) -> list[dict[str, Any]]:
        """The values of a median or p90 KPI for one breakdown, ranked from :class:`KpiSample`.

        Without ``only`` the samples are replaced and every grain is ranked (all-time values with
        their rank state); with it, only these periods of the grains below ``all``, from samples
        the caller brought up to date. Numerator and denominator are the values' sum and count.
        """
        assert kpi.stat != "mean"
        if only is None:
            part = part_for(kpi.measure, calendar, by_currency=False, kpi=kpi)
            repo.replace_sample(conn, kpi.id, dimension, sample_query(part, calendar, kpi.id, dimension))
        rows: list[dict[str, Any]] = []
        scopes: list[Scope] = ["company", "owner", "team"]
        for grain in grains:
            wanted = None if only is None else only.get(grain, set())
            if grain == "all":
                if only is None:
                    for scope in scopes:
                        for key, (result, state) in self._all_time(
                            conn, calendar, kpi, dimension, scope
                        ).items():
                            rows.append(
                                _with_state(_row(kpi, grain, scope, dimension or "", key, result), state)
                            )
                continue
            if wanted is not None and not wanted:
                continue
            indexes = None if wanted is None else sorted(p for p in wanted if p is not None)
            for scope in scopes:
                stmt = percentile_query(calendar, kpi.id, dimension, grain, scope, kpi.stat, indexes)
                for r in conn.execute(stmt):
                    key = (int(r.period), str(r.scope_id), str(r.currency), str(r.dim))
                    result = (float(r.value), float(r.total), float(r.records), int(r.records))
                    rows.append(_row(kpi, grain, scope, dimension or "", key, result))
        return rows

    @staticmethod
    def _all_time(
        conn: Connection, calendar: Calendar, kpi: DurationKpi, dimension: str | None, scope: Scope
    ) -> dict[Key, tuple[Computed, RankState]]:
        """Every all-time cell of one scope, ranked whole, with its rank state."""
        assert kpi.stat != "mean"
        picked: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
        for r in conn.execute(rank_state_query(calendar, kpi.id, dimension, scope, kpi.stat)):
            picked[(str(r.scope_id), str(r.currency), str(r.dim))].append(r)
        out: dict[Key, tuple[Computed, RankState]] = {}
        for (scope_id, currency, dim), found in picked.items():
            found.sort(key=lambda r: int(r.rn))
            low, high = found[0], found[-1]
            value = (float(low.v) + float(high.v)) / 2 if len(found) > 1 else float(low.v)
            n = int(low.n)
            state = (float(low.v), int(low.below), int(low.equal))
            out[(None, scope_id, currency, dim)] = ((value, float(low.total), float(n), n), state)
        return out

    def _funnel(
        self,
        conn: Connection,
        kpi: FunnelKpi,
        calendar: Calendar,
        membership: Membership,
        grains: list[Grain],
    ) -> dict[tuple[Grain, Scope], list[tuple[str, dict[Key, Computed]]]]:
        """Per stage: reached(stage) / reached(previous stage); the total: last / first stage."""
        steps = self._funnel_steps(conn, kpi)
        rollup = Rollup(grains, calendar.fiscal_start_month, membership)
        rolled = self._funnel_reached(conn, kpi, calendar, rollup, steps, ("all",))
        several = len({pipeline for _, pipeline in steps}) > 1
        out: dict[tuple[Grain, Scope], list[tuple[str, dict[Key, Computed]]]] = {}
        for cell, totals in rolled.items():
            groups: dict[tuple[int | None, str], dict[str, list[tuple[int, str, int]]]] = defaultdict(
                lambda: defaultdict(list)
            )
            for (period, scope_id, _, (pipeline, order, stage)), t in totals.items():
                groups[(period, scope_id)][pipeline].append((order, stage, round(t.total)))
            stages: dict[Key, Computed] = {}
            overall: dict[Key, Computed] = {}
            for (period, scope_id), pipelines in groups.items():
                total, per_stage = _funnel_group(period, scope_id, pipelines, several)
                stages.update(per_stage)
                if total is not None:
                    overall[(period, scope_id, "", "")] = total
            out[cell] = [("", overall), ("stage", stages)]
        return out

    @staticmethod
    def _funnel_steps(conn: Connection, kpi: FunnelKpi) -> dict[tuple[str, str], list[tuple[int, str]]]:
        """Each (connection, pipeline)'s steps in order: ``[(sort order, stage)]``."""
        pipeline_steps: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
        for step in conn.execute(funnel_steps_query(kpi)):
            pipeline_steps[(step.connection_id, step.pipeline)].append(
                (int(step.sort_order), str(step.stage))
            )
        return pipeline_steps

    def _funnel_reached(
        self,
        conn: Connection,
        kpi: FunnelKpi,
        calendar: Calendar,
        rollup: Rollup,
        steps: Mapping[tuple[str, str], list[tuple[int, str]]],
        sources: Iterable[FunnelDeals],
    ) -> dict[tuple[Grain, Scope], dict[Key, Totals]]:
        """Deals that reached each step, keyed ``(period, scope id, "", (pipeline, order, stage))``.

        ``sources`` are added up (see :data:`FunnelDeals`); each group of deals reached every
        step up to its furthest one.
        """

        def rows() -> Iterator[tuple[int | None, int | None, str, str | None, str, Any, float, int]]:
            for deals in sources:
                table = {"prior": PRIOR_TABLES[kpi.measure.entity], "all": None}.get(
                    deals, FUNNEL_OPPORTUNITY
                )
                part = part_for(kpi.measure, calendar, by_currency=False, table=table)
                for r in conn.execute(funnel_grouped_query(kpi, part, calendar, deals)):
                    for order, stage in steps.get((r.connection_id, r.pipeline), ()):
                        if order <= r.max_order:
                            yield (
                                r.week, r.month, r.connection_id, r.owner, "",
                                (r.pipeline, order, stage), r.total, r.total,
                            )  # fmt: skip

        return rollup(rows())

    def _derived(
        self,
        conn: Connection,
        kpi: DerivedKpi,
        grains: list[Grain],
        target_values: Mapping[repo.TargetKey, repo.TargetCell],
        only: set[tuple[str, str]] | None = None,
    ) -> list[dict[str, Any]]:
        """The formula per (grain, period, scope, currency) over the stored values of its inputs
        (``only``: in these (grain, period key) only)."""
        names, target_names = _formula_names(kpi.formula)
        inputs: dict[str, dict[tuple[str, str, str, str, str], Any]] = {}
        cells: dict[tuple[str, str, str, str], set[str]] = defaultdict(set)
        bounds: dict[tuple[str, str], tuple[date | None, date | None]] = {}
        for name in names:
            found: dict[tuple[str, str, str, str, str], Any] = {}
            for row in repo.total_values(conn, name, grains, only):
                cell = (row.grain, row.period_key, row.scope, row.scope_id)
                found[(*cell, row.currency)] = row
                cells[cell].add(row.currency)
                bounds[(row.grain, row.period_key)] = (row.period_start, row.period_end)
            inputs[name] = found
        additive = {name for name in names if target_math.is_additive(self.kpis[name])}
        out: list[dict[str, Any]] = []
        for cell, currencies in cells.items():
            grain, period_key, scope, scope_id = cell
            for currency in sorted({c for c in currencies if c} or {""}):
                env: dict[str, float | None] = {}
                samples: list[int] = []
                for name in names:
                    stored = inputs[name].get((*cell, currency))
                    if stored is None and self.kpis[name].unit != "currency":
                        stored = inputs[name].get((*cell, ""))  # a count or rate has no currency
                    if stored is None:
                        env[name] = 0.0 if name in additive else None
                    else:
                        env[name] = stored.value
                        samples.append(stored.sample_count)
                for name in target_names:
                    goal = target_values.get((name, grain, period_key, scope, scope_id, currency))
                    if goal is None:
                        goal = target_values.get((name, grain, period_key, scope, scope_id, ""))
                    env[f"target.{name}"] = None if goal is None else goal.value
                value = evaluate(kpi.formula, env)
                if value is None:
                    continue  # an input or a target is missing, or a divisor is 0: no value
                start, end = bounds[(grain, period_key)]
                sample = min(samples) if samples else 0
                out.append(
                    {
                        "kpi_id": kpi.id,
                        "grain": grain,
                        "period_key": period_key,
                        "period_start": start,
                        "period_end": end,
                        "scope": scope,
                        "scope_id": scope_id,
                        "currency": currency,
                        "dimension": "",
                        "dimension_value": "",
                        "value": value,
                        "numerator": value if value is not None else 0.0,
                        "denominator": None,
                        "sample_count": sample,
                        "low_sample": sample < kpi.min_sample,
                        "target": None,
                        "attainment": None,
                        "gap": None,
                        **NO_RANK_STATE,
                    }
                )
        return out

    def _apply_derived_changes(
        self,
        conn: Connection,
        kpi: DerivedKpi,
        grains: list[Grain],
        target_values: Mapping[repo.TargetKey, repo.TargetCell],
        only: set[tuple[str, str]],
    ) -> int:
        """Recompute a derived KPI in the periods where its inputs changed; returns the rows."""
        if not only:
            return 0
        rows = self._derived(conn, kpi, grains, target_values, only)
        self._apply_targets(kpi, rows, target_values, add_missing=False)
        digest = self.definition_hash(kpi)
        computed_at = utc_now()
        for row in rows:
            row["definition_hash"] = digest
            row["computed_at"] = computed_at
        by_grain: dict[str, set[str]] = defaultdict(set)
        for grain, period_key in only:
            by_grain[grain].add(period_key)
        for grain, keys in by_grain.items():
            repo.delete_periods(conn, kpi.id, grain, "", keys)
        repo.replace_cells(conn, [], rows)
        return len(rows)

    # -- incremental ------------------------------------------------------------------------------

    def _change_totals(
        self,
        conn: Connection,
        kpi: Kpi,
        calendar: Calendar,
        rollup: Rollup,
        dimension: str | None,
        changes: Literal["new", "old"],
    ) -> tuple[dict[tuple[Grain, Scope], dict[Key, Totals]], dict[tuple[Grain, Scope], dict[Key, Totals]]]:
        """Numerator and denominator totals of the change log's new or old record versions."""
        if isinstance(kpi, RatioKpi):
            by_currency = kpi.numerator.is_money
            num, den = (
                self._change_part(m, calendar, by_currency, changes) for m in (kpi.numerator, kpi.denominator)
            )
            return (
                self._rolled(conn, num, calendar, rollup, dimension),
                self._rolled(conn, den, calendar, rollup, dimension),
            )
        if isinstance(kpi, DurationKpi):
            part = self._change_part(kpi.measure, calendar, False, changes, kpi)
        else:
            assert isinstance(kpi, CountKpi | SumKpi)
            part = self._change_part(kpi.measure, calendar, kpi.measure.is_money, changes)
        return self._rolled(conn, part, calendar, rollup, dimension), {}

    @staticmethod
    def _change_part(
        measure: Measure,
        calendar: Calendar,
        by_currency: bool,
        changes: Literal["new", "old"],
        duration: DurationKpi | None = None,
    ) -> Part:
        table = PRIOR_TABLES[measure.entity] if changes == "old" else None
        return part_for(
            measure, calendar, by_currency=by_currency, kpi=duration, table=table, changes=changes
        )

    def _apply_changes(
        self,
        conn: Connection,
        kpi: Kpi,
        calendar: Calendar,
        membership: Membership,
        grains: list[Grain],
        target_values: Mapping[repo.TargetKey, repo.TargetCell],
        touched: set[tuple[str, str]],
    ) -> int:
        """Update a KPI's stored values by the change log; returns how many values changed.

        ``touched`` collects the (grain, period key) of every value changed.
        """
        digest = self.definition_hash(kpi)
        computed_at = utc_now()
        changed = 0
        rollup = Rollup(grains, calendar.fiscal_start_month, membership)
        for dimension in [None, *self.dimensions(kpi)]:
            new_num_all, new_den_all = self._change_totals(conn, kpi, calendar, rollup, dimension, "new")
            old_num_all, old_den_all = self._change_totals(conn, kpi, calendar, rollup, dimension, "old")
            cells = new_num_all.keys() | new_den_all.keys() | old_num_all.keys() | old_den_all.keys()
            deltas: dict[repo.CellKey, tuple[dict[str, Any], Totals, Totals]] = {}
            for grain, scope in sorted(cells):
                new_num, new_den = new_num_all.get((grain, scope), {}), new_den_all.get((grain, scope), {})
                old_num, old_den = old_num_all.get((grain, scope), {}), old_den_all.get((grain, scope), {})
                for key in new_num.keys() | new_den.keys() | old_num.keys() | old_den.keys():
                    template = _row(kpi, grain, scope, dimension or "", key, (None, 0.0, None, 0))
                    num, den = Totals(), Totals()
                    for side, new, old in ((num, new_num, old_num), (den, new_den, old_den)):
                        plus, minus = new.get(key, Totals()), old.get(key, Totals())
                        side.total = plus.total - minus.total
                        side.records = plus.records - minus.records
                    cell: repo.CellKey = (grain, scope, template["period_key"], key[1], key[2], key[3])
                    deltas[cell] = (template, num, den)
            if not deltas:
                continue
            stored = repo.stored_cells(conn, kpi.id, dimension or "", {cell[2] for cell in deltas})
            replaced: list[int] = []
            rows: list[dict[str, Any]] = []
            for cell, (template, num, den) in deltas.items():
                touched.add((cell[0], cell[2]))
                before = stored.get(cell)
                row = _merge(kpi, template, before, num, den)
                if before is not None:
                    replaced.append(before.id)
                if row is None:
                    continue
                if not row["dimension"]:
                    self._apply_targets(kpi, [row], target_values, add_missing=False)
                if row["sample_count"] == 0 and row["target"] is None and not isinstance(kpi, RatioKpi):
                    continue  # no record left (a total with a target stays, at 0)
                row["definition_hash"] = digest
                row["computed_at"] = computed_at
                rows.append(row)
            repo.replace_cells(conn, replaced, rows)
            changed += len(deltas)
        return changed

    def _apply_percentile_changes(
        self,
        conn: Connection,
        kpi: DurationKpi,
        calendar: Calendar,
        membership: Membership,
        grains: list[Grain],
        target_values: Mapping[repo.TargetKey, repo.TargetCell],
        touched: set[tuple[str, str]],
    ) -> int:
        """Bring a median or percentile KPI up to date with the change log.

        A median does not add up, so each period a changed record was or is in is ranked again
        (every scope of it), from samples the log keeps current; the others keep their values.
        All-time values hold every record: each is moved from its stored rank state by the values
        the log removed and added, reading only the few samples next to it. Returns how many
        values were written; ``touched`` collects the (grain, period key) written.
        """
        digest = self.definition_hash(kpi)
        computed_at = utc_now()
        rollup = Rollup(grains, calendar.fiscal_start_month, membership)
        written = 0
        for dimension in [None, *self.dimensions(kpi)]:
            changes = {
                side: list(
                    conn.execute(
                        sample_query(
                            part_for(kpi.measure, calendar, by_currency=False, kpi=kpi, changes=side,
                                     table=PRIOR_TABLES[kpi.measure.entity] if side == "old" else None),
                            calendar, kpi.id, dimension,
                        )
                    )
                )
                for side in ("new", "old")
            }  # fmt: skip
            if not changes["new"] and not changes["old"]:
                continue
            periods_touched: dict[Grain, set[int | None]] = defaultdict(set)
            for r in (*changes["new"], *changes["old"]):
                for grain in grains:
                    if grain != "all" and r.month is not None:
                        periods_touched[grain].add(rollup.period(grain, r.week, r.month))
            new_rows = sample_query(
                part_for(kpi.measure, calendar, by_currency=False, kpi=kpi, changes="new"),
                calendar,
                kpi.id,
                dimension,
            )
            repo.update_sample(conn, kpi.id, dimension, kpi.measure.entity, new_rows)
            rows = self._percentile_rows(conn, kpi, calendar, grains, dimension, periods_touched)
            for grain, indexes in periods_touched.items():
                keys = {_period_key(index, grain) for index in indexes}
                touched.update((grain, key) for key in keys)
                repo.delete_periods(conn, kpi.id, grain, dimension or "", keys)
            if "all" in grains:
                all_rows, replaced = self._move_all_time(conn, kpi, calendar, rollup, dimension, changes)
                rows += all_rows
                repo.replace_cells(conn, replaced, [])
                touched.add(("all", "all"))
            if dimension is None:
                self._apply_targets(kpi, rows, target_values, add_missing=False)
            for row in rows:
                row["definition_hash"] = digest
                row["computed_at"] = computed_at
            repo.replace_cells(conn, [], rows)
            written += len(rows)
        return written

    def _move_all_time(
        self,
        conn: Connection,
        kpi: DurationKpi,
        calendar: Calendar,
        rollup: Rollup,
        dimension: str | None,
        changes: Mapping[str, Sequence[Any]],
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """The all-time cells the changes touch, updated; and the ids of the rows they replace."""
        assert kpi.stat != "mean"
        # (scope, scope id, currency, dim) -> (values removed, values added)
        moves: dict[tuple[Scope, str, str, str], tuple[list[float], list[float]]] = defaultdict(
            lambda: ([], [])
        )
        for side, index in (("old", 0), ("new", 1)):
            for r in changes[side]:
                currency, dim = str(r.currency), str(r.dimension_value)
                value = float(r.value)
                moves[("company", "company", currency, dim)][index].append(value)
                if r.owner_external_id is None:
                    continue
                owner = f"{r.connection_id}:{r.owner_external_id}"
                moves[("owner", owner, currency, dim)][index].append(value)
                for team in rollup.teams_of(str(r.connection_id), str(r.owner_external_id)):
                    moves[("team", team, currency, dim)][index].append(value)
        stored = repo.stored_cells(conn, kpi.id, dimension or "", {"all"})
        # A scope with a cell that has no rank state to move from (new, or stored before there
        # was one) is ranked whole instead; it has few cells (one per team or rep).
        whole: set[Scope] = set()
        for (scope, scope_id, currency, dim), (_, added) in moves.items():
            before = stored.get(("all", scope, "all", scope_id, currency, dim))
            if (before is None and added) or (before is not None and before.rank is None):
                whole.add(scope)
        rows: list[dict[str, Any]] = []
        replaced = [cell.id for key, cell in stored.items() if key[1] in whole]
        for scope in sorted(whole):
            for key, (result, state) in self._all_time(conn, calendar, kpi, dimension, scope).items():
                rows.append(_with_state(_row(kpi, "all", scope, dimension or "", key, result), state))
        for (scope, scope_id, currency, dim), (removed, added) in moves.items():
            before = stored.get(("all", scope, "all", scope_id, currency, dim))
            if scope in whole or before is None:
                continue
            replaced.append(before.id)
            moved = self._move_rank(
                conn, kpi, dimension or "", scope, scope_id, currency, dim, before, removed, added
            )
            if moved is None:
                continue  # no value left in the cell
            statistic, n, state = moved
            total = before.numerator - sum(removed) + sum(added)
            row = _row(
                kpi, "all", scope, dimension or "", (None, scope_id, currency, dim), (statistic, total, n, n)
            )
            rows.append(_with_state(row, state))
        return rows, replaced

    @staticmethod
    def _move_rank(
        conn: Connection,
        kpi: DurationKpi,
        dimension: str,
        scope: Scope,
        scope_id: str,
        currency: str,
        dim: str,
        before: repo.StoredCell,
        removed: Sequence[float],
        added: Sequence[float],
    ) -> tuple[float, int, RankState] | None:
        """An all-time cell's statistic after ``removed`` left and ``added`` joined its values.

        The stored state says the value ``p`` at the lower rank read had ``below`` values under
        it and ``equal`` values equal to it. Counting the changes against ``p`` gives both
        anew; the rank now read is either within the values equal to ``p``, or a few values
        away from it, which are read from the samples nearest to ``p`` (already up to date).
        Returns ``(value, count, new state)``, ``None`` when no value is left.
        """
        assert before.rank is not None
        assert kpi.stat != "mean"
        pivot, below, equal = before.rank
        below += sum(1 for v in added if v < pivot) - sum(1 for v in removed if v < pivot)
        equal += sum(1 for v in added if v == pivot) - sum(1 for v in removed if v == pivot)
        n = before.sample_count + len(added) - len(removed)
        if n <= 0:
            return None
        ranks = [(n + 1) // 2, (n + 2) // 2] if kpi.stat == "median" else [(9 * n + 9) // 10]
        cell = (kpi.id, dimension, scope, scope_id, currency, dim)

        def nearest(start: float, above: bool, count: int) -> list[float]:
            found = [float(v) for v in conn.execute(neighbour_query(*cell, start, above, count)).scalars()]
            assert len(found) == count, f"rank state of {kpi.id} {scope_id} out of step with its samples"
            return found

        k = ranks[0]
        if below < k <= below + equal:
            low = pivot
        elif k <= below:
            found = nearest(pivot, False, below - k + 1)
            low = found[-1]
            equal_low = int(conn.execute(equal_count_query(*cell, low)).scalar_one())
            below, equal = below - sum(1 for v in found if v > low) - equal_low, equal_low
        else:
            found = nearest(pivot, True, k - below - equal)
            low = found[-1]
            equal_low = int(conn.execute(equal_count_query(*cell, low)).scalar_one())
            below, equal = below + equal + sum(1 for v in found if v < low), equal_low
        value = low
        if len(ranks) > 1 and ranks[1] != k:
            high = low if ranks[1] <= below + equal else nearest(low, True, 1)[0]
            value = (low + high) / 2
        return value, n, (low, below, equal)

    def _apply_funnel_changes(
        self,
        conn: Connection,
        kpi: FunnelKpi,
        calendar: Calendar,
        membership: Membership,
        grains: list[Grain],
        target_values: Mapping[repo.TargetKey, repo.TargetCell],
        touched: set[tuple[str, str]],
    ) -> int:
        """Update a funnel's stored values by the change log; returns how many values changed.

        The deals that reached each step are additive: the touched deals' old contributions (as
        the stored values counted them) are taken out and their new ones added, and each
        touched period and scope is recomputed from its updated step counts.
        """
        steps = self._funnel_steps(conn, kpi)
        several = len({pipeline for _, pipeline in steps}) > 1
        labels = {
            (f"{pipeline}: {stage}" if several else stage): (pipeline, order, stage)
            for (_, pipeline), ordered in steps.items()
            for order, stage in ordered
        }
        rollup = Rollup(grains, calendar.fiscal_start_month, membership)
        new = self._funnel_reached(conn, kpi, calendar, rollup, steps, ("changed",))
        old = self._funnel_reached(conn, kpi, calendar, rollup, steps, ("prior", "unchanged"))
        # (grain, scope, period, scope id) -> step -> change in the deals that reached it
        deltas: dict[_FunnelGroup, dict[tuple[str, int, str], int]] = defaultdict(dict)
        for grain, scope in new.keys() | old.keys():
            plus, minus = new.get((grain, scope), {}), old.get((grain, scope), {})
            for key in plus.keys() | minus.keys():
                period, scope_id, _, step = key
                change = round(plus.get(key, Totals()).total - minus.get(key, Totals()).total)
                if change:
                    deltas[(grain, scope, period, scope_id)][step] = change
        if not deltas:
            return 0
        keys = {(grain, _period_key(period, cast(Grain, grain))): period for grain, _, period, _ in deltas}
        period_keys = {key for _, key in keys}
        reached: dict[_FunnelGroup, dict[tuple[str, int, str], int]] = defaultdict(dict)
        replaced: list[int] = []
        for dimension in ("stage", ""):
            for (grain_name, scope_name, period_key, scope_id, _, label), cell in repo.stored_cells(
                conn, kpi.id, dimension, period_keys
            ).items():
                if (grain_name, period_key) not in keys:
                    continue
                group = (grain_name, scope_name, keys[(grain_name, period_key)], scope_id)
                if group not in deltas:
                    continue
                if dimension:
                    reached[group][labels[label]] = round(cell.numerator)
                replaced.append(cell.id)
        digest = self.definition_hash(kpi)
        computed_at = utc_now()
        rows: list[dict[str, Any]] = []
        for group, group_deltas in deltas.items():
            grain_name, scope_name, period, scope_id = group
            grain, scope = cast(Grain, grain_name), cast(Scope, scope_name)
            touched.add((grain, _period_key(period, grain)))
            counts = reached[group]
            for step, amount in group_deltas.items():
                counts[step] = counts.get(step, 0) + amount
            pipelines: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
            for (pipeline, order, stage), count in counts.items():
                pipelines[pipeline].append((order, stage, count))
            total, per_stage = _funnel_group(period, scope_id, pipelines, several)
            if total is not None:
                rows.append(_row(kpi, grain, scope, "", (period, scope_id, "", ""), total))
            rows += [_row(kpi, grain, scope, "stage", k, v) for k, v in per_stage.items()]
        self._apply_targets(kpi, rows, target_values, add_missing=False)
        for row in rows:
            row["definition_hash"] = digest
            row["computed_at"] = computed_at
        repo.replace_cells(conn, replaced, rows)
        return len(rows)

    # -- scorecards -------------------------------------------------------------------------------

    def refresh_scorecard(
        self, card: ScorecardConfig, session: Connection, only: set[tuple[str, str]] | None = None
    ) -> int | None:
        """Score every rep for every period of the card's grains (the caller's transaction).

        ``only``: just the (grain, period key) whose component values changed, when the stored
        scores were computed with this definition, these teams and these active reps (otherwise
        every period). Returns how many scores were written, ``None`` when none needed to be.
        """
        computed_at = utc_now()
        teams = repo.direct_teams(session)
        active = repo.active_owner_scopes(session)
        digest = hashlib.blake2b(
            orjson.dumps([card.definition_hash(), sorted(teams.items()), sorted(active)]), digest_size=8
        ).hexdigest()
        if only is not None and repo.score_hashes(session, card.id) != {digest}:
            only = None
        if only is not None:
            only = {(grain, key) for grain, key in only if grain in card.grains}
            if not only:
                return None
        out: list[dict[str, Any]] = []
        for grain in card.grains:
            wanted = None if only is None else {key for g, key in only if g == grain}
            if wanted is not None and not wanted:
                continue
            observed, bounds = repo.owner_values(session, [c.kpi for c in card.components], grain, wanted)
            for period_key, reps in sorted(observed.items()):
                scored = [
                    scorecards.score_rep(card, self.kpis, scope_id, reps.get(scope_id, {}))
                    for scope_id in sorted(set(reps) | active)
                ]
                scorecards.rank(scored, teams)
                start, end = bounds[period_key]
                out += [
                    {
                        "scorecard_id": card.id,
                        "definition_hash": digest,
                        "grain": grain,
                        "period_key": period_key,
                        "period_start": start,
                        "period_end": end,
                        "scope_id": s.scope_id,
                        "team_id": s.team_id,
                        "score": s.score,
                        "grade": s.grade,
                        "rank": s.rank,
                        "team_rank": s.team_rank,
                        "dropped_components": s.dropped,
                        "components": s.components,
                        "computed_at": computed_at,
                    }
                    for s in scored
                ]
        repo.replace_scores(session, card.id, out, only)
        return len(out)


def _row(kpi: Kpi, grain: Grain, scope: str, dimension: str, key: Key, result: Computed) -> dict[str, Any]:
    period_index, scope_id, currency, dim_value = key
    value, numerator, denominator, sample = result
    if period_index is None:
        period_key, start, end = "all", None, None
    else:
        start, end = periods.period_bounds(period_index, grain)
        period_key = start.isoformat()
    return {
        "kpi_id": kpi.id,
        "grain": grain,
        "period_key": period_key,
        "period_start": start,
        "period_end": end,
        "scope": scope,
        "scope_id": scope_id,
        "currency": currency,
        "dimension": dimension,
        "dimension_value": dim_value,
        "value": value,
        "numerator": numerator,
        "denominator": denominator,
        "sample_count": sample,
        "low_sample": sample < kpi.min_sample,
        "target": None,
        "attainment": None,
        "gap": None,
        **NO_RANK_STATE,
    }


#: (grain, scope, period index, scope id) of a funnel's values
_FunnelGroup = tuple[str, str, int | None, str]


def _with_state(row: dict[str, Any], state: RankState) -> dict[str, Any]:
    row["rank_pivot"], row["rank_below"], row["rank_equal"] = state
    return row


def _period_key(period: int | None, grain: Grain) -> str:
    return "all" if period is None else periods.period_bounds(period, grain)[0].isoformat()


def _funnel_group(
    period: int | None, scope_id: str, pipelines: Mapping[str, list[tuple[int, str, int]]], several: bool
) -> tuple[Computed | None, dict[Key, Computed]]:
    """One period and scope of a funnel from the deals that reached each step of each pipeline.

    Returns the total (deals that reached the last step over those that entered, summed over
    the pipelines) and one value per stage (reached it / reached the step before). Steps no deal
    reached have no value; deals that reached a step reached every one before it.
    """
    stages: dict[Key, Computed] = {}
    first = last = 0.0
    for pipeline, steps in sorted(pipelines.items()):
        reached_steps = sorted(step for step in steps if step[2] > 0)
        if not reached_steps:
            continue
        previous = reached_steps[0][2]
        for _, stage, reached in reached_steps:
            label = f"{pipeline}: {stage}" if several else stage
            value = reached / previous if previous else None
            stages[(period, scope_id, "", label)] = (value, float(reached), float(previous), previous)
            previous = reached
        first += reached_steps[0][2]
        last += reached_steps[-1][2]
    if not stages:
        return None, stages
    return (last / first if first else None, last, first, int(first)), stages


def _by_parts(kpi: Kpi) -> bool:
    """Whether the change log can bring a KPI's values up to date without recomputing them all.

    Sums and counts (ratios and means of them too) and a funnel's step counts are updated record
    by record; a median or percentile is recomputed for the periods the changed records touch.
    Derived KPIs follow their inputs.
    """
    return isinstance(kpi, CountKpi | SumKpi | RatioKpi | FunnelKpi | DurationKpi)


def _merge(
    kpi: Kpi, template: dict[str, Any], before: repo.StoredCell | None, num: Totals, den: Totals
) -> dict[str, Any] | None:
    """A stored value plus a change (``num``/``den``); ``None`` when no record is left in it."""
    row = dict(template)
    numerator = (before.numerator if before else 0.0) + num.total
    if isinstance(kpi, RatioKpi):
        denominator = (before.denominator or 0.0 if before else 0.0) + den.total
        records = (before.sample_count if before else 0) + den.records
        if records <= 0 and abs(numerator) < 1e-9:
            return None
        value = numerator / denominator * kpi.scale if abs(denominator) > 1e-12 else None
        row.update(numerator=numerator, denominator=denominator, value=value)
    elif isinstance(kpi, DurationKpi):
        records = (before.sample_count if before else 0) + num.records
        if records <= 0:
            return None
        row.update(numerator=numerator, denominator=float(records), value=numerator / records)
    else:
        records = (before.sample_count if before else 0) + num.records
        if records <= 0:
            row.update(numerator=0.0, value=0.0)
        else:
            row.update(numerator=numerator, value=numerator)
    row["sample_count"] = max(records, 0)
    row["low_sample"] = row["sample_count"] < kpi.min_sample
    return row


def _set_attainment(kpi: Kpi, row: dict[str, Any], target: float) -> None:
    row["target"] = target
    value = row["value"]
    if value is None:
        return
    row["gap"] = target - value
    if kpi.direction == "higher":
        row["attainment"] = value / target if target else None
    else:
        row["attainment"] = target / value if value else None


def _formula_names(formula: str) -> tuple[list[str], list[str]]:
    from crm_perf_sync.kpi.schemas import formula_inputs

    values, targets = formula_inputs(formula)
    return sorted(values), sorted(targets)


def evaluate(formula: str, env: Mapping[str, float | None]) -> float | None:
    """The value of a validated formula; ``None`` when an input is missing or a divisor is 0."""

    def walk(node: ast.AST) -> float | None:
        match node:
            case ast.Expression(body=body):
                return walk(body)
            case ast.Constant(value=int() | float() as number):
                return float(number)
            case ast.Name(id=name):
                return env.get(name)
            case ast.Attribute(value=ast.Name(id="target"), attr=name):
                return env.get(f"target.{name}")
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                inner = walk(operand)
                return None if inner is None else -inner
            case ast.BinOp(left=left, op=op, right=right):
                a, b = walk(left), walk(right)
                if a is None or b is None:
                    return None
                if isinstance(op, ast.Add):
                    return a + b
                if isinstance(op, ast.Sub):
                    return a - b
                if isinstance(op, ast.Mult):
                    return a * b
                return a / b if b else None
        raise ValueError(f"unsupported formula element {type(node).__name__}")

    return walk(_parsed(formula))


@lru_cache(maxsize=256)
def _parsed(formula: str) -> ast.Expression:
    return ast.parse(formula, mode="eval")


def pace(
    attainment: float | None, start: date | None, end: date | None, now: datetime, zone: str
) -> float | None:
    """Attainment ÷ the elapsed fraction of the period: above 1 is ahead of a straight line."""
    if attainment is None or start is None or end is None:
        return None
    elapsed = periods.elapsed_fraction(start, end, now, zone)
    return attainment / elapsed if elapsed > 0 else None


def tidy(number: float | None) -> float | None:
    """A stored sum as people read it: 12 significant digits, without binary floating-point noise.

    Amounts are summed as doubles, so a total of cents can come back as ``222128.38999999998``;
    12 digits keep every cent of a trillion while dropping the noise in the last bits.
    """
    return None if number is None else float(f"{number:.12g}")
