"""Evaluating alert rules: one state machine per rule and scope, events through the outbox.

States: ``ok`` → ``pending`` (breaching, fewer than ``for`` times in a row) → ``firing`` →
``resolved`` (→ ``ok`` at the next clear evaluation). A breach that reaches ``firing`` writes one
``alert.firing`` event, its recovery one ``alert.resolved``; an evaluation that finds the state
unchanged writes nothing, so a breach is announced once however often it is evaluated, by any
number of workers (evaluation runs under the refresh lease, in one transaction with the states
it reads and the events it writes).

A period without a value, or with one from fewer records than the rule's ``min_sample``, is no
data: the rule's ``no_data`` says whether that keeps the state, clears or breaches it.

Also here: ``score.published``, once per scorecard, grain and period, when the period is over.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection

from crm_perf_sync.alerts import repository as repo
from crm_perf_sync.alerts.schemas import AlertRule
from crm_perf_sync.config import LoadedConfig
from crm_perf_sync.kpi import periods
from crm_perf_sync.kpi.repository import scope_names
from crm_perf_sync.kpi.schemas import Grain
from crm_perf_sync.kpi.values import pace, tidy
from crm_perf_sync.webhooks.service import emit

log = logging.getLogger(__name__)

ScopeKey = tuple[str, str, str]  # (scope, scope id, currency)


@dataclass(frozen=True, slots=True)
class Observation:
    """What a rule found for one scope: a value, or why it has none."""

    value: float | None
    outcome: str  # value, no_data, low_sample


@dataclass(slots=True)
class Evaluation:
    """What one evaluation did: transitions by ``from→to`` and the events it wrote."""

    transitions: dict[str, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    published: int = 0


def period_of(
    rule: AlertRule, now: datetime, zone: str, fiscal_start_month: int
) -> tuple[str, date | None, date | None]:
    """The key and bounds of the period a rule watches (``current`` or ``previous`` of its grain)."""
    if rule.grain == "all":
        return "all", None, None
    grain: Grain = rule.grain
    index = periods.local_period_index(now, zone, grain, fiscal_start_month)
    if rule.period == "previous":
        index -= {"week": 1, "month": 1, "quarter": 3, "year": 12}[grain]
    start, end = periods.period_bounds(index, grain)
    return start.isoformat(), start, end


def observe(
    conn: Connection, rule: AlertRule, period_key: str, now: datetime, zone: str
) -> dict[ScopeKey, Observation]:
    """The value the rule watches for every scope the store has one for."""
    out: dict[ScopeKey, Observation] = {}
    if rule.scorecard is not None:
        for row in repo.scores(conn, rule.scorecard, rule.grain, period_key):
            observed = Observation(row.score, "value" if row.score is not None else "no_data")
            out[("owner", row.scope_id, "")] = observed
        return out
    assert rule.kpi is not None
    for row in repo.kpi_values(conn, rule.kpi, rule.grain, period_key, rule.scope, rule.currency):
        if row.sample_count < rule.min_sample:
            out[(rule.scope, row.scope_id, rule.currency)] = Observation(None, "low_sample")
            continue
        if rule.measure == "value":
            value = row.value
        elif rule.measure == "attainment":
            value = row.attainment
        else:
            value = pace(row.attainment, row.period_start, row.period_end, now, zone)
        out[(rule.scope, row.scope_id, rule.currency)] = Observation(
            value, "value" if value is not None else "no_data"
        )
    return out


def evaluate(conn: Connection, config: LoadedConfig, now: datetime) -> Evaluation:
    """Evaluate every rule once; the caller's transaction holds the states and the events."""
    business = config.app.business
    rules = config.app.alerts.rules
    result = Evaluation()
    repo.forget_rules(conn, [rule.id for rule in rules])
    names: dict[tuple[str, str], str] | None = None
    for rule in rules:
        period_key, start, end = period_of(rule, now, business.timezone, business.fiscal_year_start_month)
        observed = observe(conn, rule, period_key, now, business.timezone)
        states = repo.states(conn, rule.id)
        wanted = _scopes(conn, rule, observed, states)
        digest = rule.definition_hash()
        for key in sorted(wanted):
            found = observed.get(key, Observation(None, "no_data"))
            before = states.get(key)
            changed = _step(conn, rule, digest, key, found, before, period_key, now, result)
            if changed is None:
                continue
            from_state, to_state = changed
            if to_state not in ("firing", "resolved"):
                continue
            if names is None:
                names = scope_names_safe(conn)
            data = _payload(rule, key, found, period_key, start, end, from_state, to_state, names)
            message_id = emit(
                conn, f"alert.{to_state}", data, now=now, rule_id=rule.id, severity=rule.severity
            )
            result.events.append(message_id)
    result.published = _publish_scores(conn, config, now)
    return result


def scope_names_safe(conn: Connection) -> dict[tuple[str, str], str]:
    from sqlalchemy.orm import Session

    with Session(bind=conn) as session:
        return scope_names(session)


def _scopes(
    conn: Connection,
    rule: AlertRule,
    observed: Mapping[ScopeKey, Observation],
    states: Mapping[ScopeKey, Any],
) -> set[ScopeKey]:
    """The scopes a rule covers: those listed, or every one with a value or a state."""
    if rule.scope_ids is not None:
        return {(rule.scope, scope_id, rule.currency) for scope_id in rule.scope_ids}
    keys = set(observed) | set(states)
    if rule.scope == "company":
        keys.add(("company", "company", rule.currency))
    if rule.level is not None:
        teams = repo.teams_at_level(conn, rule.level)
        keys = {key for key in keys if key[1] in teams}
    return keys


def _step(
    conn: Connection,
    rule: AlertRule,
    digest: str,
    key: ScopeKey,
    found: Observation,
    before: Any,
    period_key: str,
    now: datetime,
    result: Evaluation,
) -> tuple[str, str] | None:
    """Apply one observation to a scope's state; ``(from, to)`` when the state changed."""
    state, breaches, since = "ok", 0, now
    if before is not None and before.rule_hash == digest:
        state, breaches, since = before.state, before.breaches, before.since
    elif before is not None and before.state == "firing":
        state = "firing"  # the rule changed while firing: resolved below unless still breaching
    value = found.value
    if value is None:
        if rule.no_data == "keep":
            _save(conn, before, rule, digest, key, state, breaches, found, since, period_key, now)
            return None
        breach = rule.no_data == "breach"
    else:
        breach = not rule.recovered(value) if state == "firing" else rule.when.holds(value)
    new_state = state
    if state == "firing":
        if not breach:
            new_state, breaches = "resolved", 0
    elif breach:
        breaches += 1
        new_state = "firing" if breaches >= rule.for_ else "pending"
    else:
        new_state, breaches = "ok", 0
    if new_state != state:
        since = now
        repo.record_transition(
            conn,
            rule_id=rule.id,
            scope=key[0],
            scope_id=key[1],
            currency=key[2],
            from_state=state,
            to_state=new_state,
            value=value,
            threshold=rule.recover.value if state == "firing" and rule.recover else rule.when.value,
            period_key=period_key,
            severity=rule.severity,
            at=now,
        )
        label = f"{state}→{new_state}"
        result.transitions[label] = result.transitions.get(label, 0) + 1
    _save(conn, before, rule, digest, key, new_state, breaches, found, since, period_key, now)
    return (state, new_state) if new_state != state else None


def _save(
    conn: Connection,
    before: Any,
    rule: AlertRule,
    digest: str,
    key: ScopeKey,
    state: str,
    breaches: int,
    found: Observation,
    since: datetime,
    period_key: str,
    now: datetime,
) -> None:
    outcome = (
        found.outcome if found.value is None else ("breach" if rule.when.holds(found.value) else "clear")
    )
    repo.save_state(
        conn,
        None if before is None else before.id,
        rule_id=rule.id,
        rule_hash=digest,
        scope=key[0],
        scope_id=key[1],
        currency=key[2],
        state=state,
        breaches=breaches,
        outcome=outcome,
        value=found.value,
        threshold=rule.when.value,
        period_key=period_key,
        since=since,
        evaluated_at=now,
    )


def _payload(
    rule: AlertRule,
    key: ScopeKey,
    found: Observation,
    period_key: str,
    start: date | None,
    end: date | None,
    from_state: str,
    to_state: str,
    names: Mapping[tuple[str, str], str],
) -> dict[str, Any]:
    scope, scope_id, currency = key
    query = {"grain": rule.grain, "period": period_key, "scope": scope, "scope_id": scope_id}
    links: dict[str, str] = {}
    if rule.kpi is not None:
        values = {**query, **({"currency": currency} if currency else {})}
        links["values"] = f"/api/v1/kpis/{rule.kpi}/values?{urlencode(values)}"
        links["explain"] = f"/api/v1/kpis/{rule.kpi}/explain?{urlencode({**query, 'currency': currency})}"
    else:
        links["scorecard"] = f"/api/v1/scorecards/{rule.scorecard}/owners/{scope_id}?grain={rule.grain}"
    return {
        "rule": {
            "id": rule.id,
            "name": rule.name or rule.id,
            "kpi": rule.kpi,
            "scorecard": rule.scorecard,
            "measure": rule.measure,
            "severity": rule.severity,
            "when": rule.when.model_dump(),
            "recover": rule.recover.model_dump() if rule.recover else None,
            "for": rule.for_,
        },
        "state": to_state,
        "previous_state": from_state,
        "scope": scope,
        "scope_id": scope_id,
        "scope_name": names.get((scope, scope_id), "Company" if scope == "company" else scope_id),
        "currency": currency,
        "grain": rule.grain,
        "period_key": period_key,
        "period_start": start.isoformat() if start else None,
        "period_end": end.isoformat() if end else None,
        "value": tidy(found.value),
        "outcome": found.outcome,
        "threshold": (rule.recover or rule.when).value if to_state == "resolved" else rule.when.value,
        "links": links,
    }


def _publish_scores(conn: Connection, config: LoadedConfig, now: datetime) -> int:
    """``score.published`` for each scorecard period that has ended and was not announced yet."""
    business = config.app.business
    published = 0
    for card in config.app.kpis.scorecards:
        for grain in card.grains:
            index = periods.local_period_index(
                now, business.timezone, grain, business.fiscal_year_start_month
            )
            index -= {"week": 1, "month": 1, "quarter": 3, "year": 12}[grain]
            start, end = periods.period_bounds(index, grain)
            key = start.isoformat()
            if repo.published(conn, card.id, grain, key):
                continue
            scored = repo.scores(conn, card.id, grain, key)
            if not scored:
                continue
            ranked = [
                {
                    "scope_id": r.scope_id,
                    "score": r.score,
                    "grade": r.grade,
                    "rank": r.rank,
                    "team_id": r.team_id,
                }
                for r in scored
                if r.rank is not None
            ]
            emit(
                conn,
                "score.published",
                {
                    "scorecard": {"id": card.id, "name": card.name},
                    "grain": grain,
                    "period_key": key,
                    "period_start": start.isoformat(),
                    "period_end": end.isoformat(),
                    "reps": len(scored),
                    "scored": len(ranked),
                    "top": ranked[:10],
                    "links": {"scorecard": f"/api/v1/scorecards/{card.id}?grain={grain}&period={key}"},
                },
                now=now,
            )
            repo.mark_published(conn, card.id, grain, key, now)
            published += 1
    return published
