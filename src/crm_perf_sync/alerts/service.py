"""Evaluating alert rules: one state machine per rule and scope, events through the outbox.

States: ``ok`` → ``pending`` (breaching, fewer than ``for`` times in a row) → ``firing`` →
``resolved`` (→ ``ok`` at the next clear evaluation). A breach that reaches ``firing`` writes one
``alert.firing`` event, its recovery one ``alert.resolved``; an evaluation that finds the state
unchanged writes nothing, so a breach is announced once however often it is evaluated, by any
number of workers (evaluation runs under the refresh lease, in one transaction with the states
it reads and the events it writes).

A period without a value, or with one from fewer records than the rule's ``min_sample``, is no
data: the rule's ``no_data`` says whether that keeps the state, clears or breaches it.

Rules change with the configuration, and no alert is left open by it. A rule removed, or a
scope a changed rule no longer covers (other ``scope_ids``, ``scope``, ``level`` or
``currency``), closes its alerts: a firing one with ``alert.resolved`` (``reason``
``rule_removed`` or ``scope_removed``, with the last value known), a pending one silently (it
was never announced); the transition is kept in the history with the reason and the state is
deleted. A rule changed in what it means (any field but ``name`` and ``severity``) counts its
breaches again from this evaluation; an alert firing stays firing, the same breach, for as long
as the changed rule sees a breach, and is resolved (``reason`` ``rule_changed``) at once when it
does not.

An endpoint can ask for the alerts firing now (:func:`crm_perf_sync.webhooks.service.request_firing`):
the evaluation queues their ``alert.firing`` events to it before it evaluates, in the
transaction that reads the states, so every alert is sent to it by that or by the evaluation
that fires it.

A rule on an incentive watches a component of a plan per rep, in the plan's period holding
``now``, from the rep's stored payout line (:mod:`crm_perf_sync.incentives.watch`); its events
name the rep's teams. A rule with ``days_left`` judges only in its period's last days: outside
them every scope is clear (``outside_window``), so a reminder resolves when the period ends.

Also here: ``score.published``, once per scorecard, grain and period, when the period is over.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from crm_perf_sync.alerts import repository as repo
from crm_perf_sync.alerts.schemas import AlertRule
from crm_perf_sync.incentives import watch as incentive_watch
from crm_perf_sync.incentives.events import Reps
from crm_perf_sync.incentives.schemas import Plan
from crm_perf_sync.kpi import periods
from crm_perf_sync.kpi.schemas import Grain, KpiConfig
from crm_perf_sync.kpi.values import pace, tidy
from crm_perf_sync.org import repository as org_repo
from crm_perf_sync.org.repository import scope_names
from crm_perf_sync.webhooks import repository as webhooks_repo
from crm_perf_sync.webhooks.service import emit, wants

log = logging.getLogger(__name__)

ScopeKey = tuple[str, str, str]  # (scope, scope id, currency)
#: The outcome of a rule with ``days_left`` outside its last days: clear, whatever the value.
OUTSIDE = "outside_window"


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
    replayed: int = 0  # alert.firing deliveries queued to endpoints that asked for the firing set


def period_of(
    rule: AlertRule, now: datetime, zone: str, fiscal_start_month: int
) -> tuple[str, date | None, date | None]:
    """The key and bounds of the period a rule watches (``current`` or ``previous`` of its grain)."""
    if rule.grain == "all":
        return "all", None, None
    grain: Grain = rule.grain
    index = periods.local_period_index(now, zone, grain, fiscal_start_month)
    if rule.period == "previous":
        index = periods.previous(index, grain)
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


@dataclass(slots=True)
class Watch:
    """What a rule watches in one evaluation: the period and every scope's observation."""

    period_key: str
    start: date | None
    end: date | None
    grain: str
    observed: dict[ScopeKey, Observation]
    #: An incentive rule's line of each rep, for its events.
    lines: dict[str, incentive_watch.Watched] = field(default_factory=dict)


def watch(
    conn: Connection, rule: AlertRule, plans: Mapping[str, Plan], now: datetime, zone: str, fiscal: int
) -> Watch | None:
    """The period a rule watches and what it finds there; ``None`` for a rule on a plan that is not
    configured (the configuration check refuses it; a caller may still pass no plans)."""
    if rule.incentive is None:
        period_key, start, end = period_of(rule, now, zone, fiscal)
        return Watch(period_key, start, end, rule.grain, observe(conn, rule, period_key, now, zone))
    plan = plans.get(rule.incentive.plan)
    if plan is None:
        log.warning("alert rule %s watches plan %s, which is not configured", rule.id, rule.incentive.plan)
        return None
    period = incentive_watch.current_period(plan, now, zone, fiscal)
    found = Watch(period[0], period[1], period[2], plan.period, {})
    for line in incentive_watch.watch(conn, plan, rule.incentive.component, period, now, zone):
        value = line.measure(rule.measure)
        found.lines[line.owner_id] = line
        found.observed[("owner", line.owner_id, "")] = Observation(
            None if value is None else float(value), "value" if value is not None else "no_data"
        )
    return found


def days_left(end: date | None, now: datetime, zone: str) -> int | None:
    """The days left in a period ending (exclusive) at ``end``, today included."""
    return None if end is None else (end - now.astimezone(ZoneInfo(zone)).date()).days


def evaluate(
    conn: Connection,
    rules: Sequence[AlertRule],
    kpis: KpiConfig,
    now: datetime,
    plans: Mapping[str, Plan] | None = None,
) -> Evaluation:
    """Evaluate every rule once; the caller's transaction holds the states and the events.
    ``plans``: the incentive plans the rules on incentives watch."""
    business = kpis.business
    result = Evaluation()
    names = _Names(conn)
    reps: Reps | None = None
    result.replayed = _send_firing_sets(conn, now)
    for state in repo.states_of_other_rules(conn, [rule.id for rule in rules]):
        _retire(conn, state, "rule_removed", now, result, names)
    for rule in rules:
        watched = watch(conn, rule, plans or {}, now, business.timezone, business.fiscal_year_start_month)
        if watched is None:
            continue
        period_key, start, end, observed = watched.period_key, watched.start, watched.end, watched.observed
        left = days_left(end, now, business.timezone)
        missing = Observation(None, "no_data")
        if rule.days_left is not None and (left is None or not rule.days_left.holds(left)):
            # Outside the rule's last days: every scope it judged is clear.
            observed, missing = {}, Observation(None, OUTSIDE)
        states = repo.states(conn, rule.id)
        wanted = _scopes(conn, rule, observed, states)
        for key in sorted(set(states) - wanted):
            _retire(conn, states[key], "scope_removed", now, result, names)
        digest = rule.definition_hash()
        for key in sorted(wanted):
            found = observed.get(key, missing)
            changed = _step(conn, rule, digest, key, found, states.get(key), period_key, now, result)
            if changed is None:
                continue
            state_id, from_state, to_state, reason = changed
            if to_state not in ("firing", "resolved"):
                continue
            data = _payload(rule, key, found, period_key, start, end, from_state, to_state, names.get())
            data["grain"] = watched.grain
            if rule.days_left is not None:
                data["days_left"] = left
            if rule.incentive is not None:
                reps = reps or Reps(conn)
                data["rep"] = reps.card(key[1])
                data["incentive"] = _incentive(rule, watched.lines.get(key[1]))
            if to_state == "resolved":
                data["reason"] = reason or "recovered"
            message_id = emit(
                conn, f"alert.{to_state}", data, now=now, rule_id=rule.id, severity=rule.severity
            )
            if to_state == "firing":
                repo.set_message_id(conn, state_id, message_id)
            result.events.append(message_id)
    result.published = _publish_scores(conn, kpis, now)
    return result


class _Names:
    """Scope names, read once per evaluation and only if an event needs them."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.found: dict[tuple[str, str], str] | None = None

    def get(self) -> dict[tuple[str, str], str]:
        if self.found is None:
            self.found = scope_names(self.conn)
        return self.found


def _send_firing_sets(conn: Connection, now: datetime) -> int:
    """Queue to each endpoint that asked for them the ``alert.firing`` events of the alerts firing
    now (the events themselves: same ``webhook-id``); how many deliveries were queued."""
    requested = set(webhooks_repo.take_firing_requests(conn))
    if not requested:
        return 0
    endpoints = [e for e in webhooks_repo.endpoints(conn, enabled_only=True) if e.id in requested]
    queued = 0
    for state in repo.current_states(conn, None, "firing"):
        event = _firing_event(conn, state)
        if event is None:
            log.warning(
                "alert %s for %s %s is firing but its alert.firing event is not in the outbox: not sent",
                state.rule_id,
                state.scope,
                state.scope_id,
            )
            continue
        targets = [e.id for e in endpoints if wants(e, event.type, event.rule_id, event.severity)]
        webhooks_repo.insert_deliveries(conn, event.id, targets, now)
        queued += len(targets)
    log.info("sent the alerts firing now to endpoint(s) %s: %d deliveries", sorted(requested), queued)
    return queued


def _firing_event(conn: Connection, state: Any) -> Any:
    """The ``alert.firing`` event that announced a firing state's breach."""
    if state.message_id is not None:
        return webhooks_repo.event_by_message_id(conn, state.message_id)
    # A state that fired before its webhook-id was kept: the newest alert.firing of its scope.
    scope = (state.scope, state.scope_id, state.currency)
    return webhooks_repo.latest_event(
        conn,
        "alert.firing",
        state.rule_id,
        lambda data: (data.get("scope"), data.get("scope_id"), data.get("currency")) == scope,
    )


def _retire(
    conn: Connection, state: Any, reason: str, now: datetime, result: Evaluation, names: _Names
) -> None:
    """Close the alert of a rule or scope no longer evaluated and delete its state.

    A firing alert is resolved with ``alert.resolved`` (the consumer's incident closes); a
    pending or resolved one goes back to ok without an event (nothing open was announced).
    The transition stays in the history with the reason.
    """
    if state.state != "ok":
        to_state = "resolved" if state.state == "firing" else "ok"
        repo.record_transition(
            conn,
            rule_id=state.rule_id,
            scope=state.scope,
            scope_id=state.scope_id,
            currency=state.currency,
            from_state=state.state,
            to_state=to_state,
            value=state.value,
            threshold=state.threshold,
            period_key=state.period_key,
            severity=state.severity,
            at=now,
            reason=reason,
        )
        label = f"{state.state}→{to_state}"
        result.transitions[label] = result.transitions.get(label, 0) + 1
    if state.state == "firing":
        data = _retired_payload(state, _firing_event(conn, state), reason, names)
        message_id = emit(
            conn, "alert.resolved", data, now=now, rule_id=state.rule_id, severity=state.severity
        )
        result.events.append(message_id)
    repo.delete_state(conn, state.id)


def _retired_payload(state: Any, fired: Any, reason: str, names: _Names) -> dict[str, Any]:
    """``alert.resolved`` for an alert whose rule no longer judges it: the breach as it was
    announced (rule, scope, links) with the last value known and the reason."""
    key = (state.scope, state.scope_id, state.currency)
    data: dict[str, Any] = dict(fired.payload["data"]) if fired is not None else {}
    rule = data.get("rule") or {"id": state.rule_id, "name": state.rule_id, "severity": state.severity}
    grain = data.get("grain")
    data.update(
        rule=rule,
        state="resolved",
        previous_state="firing",
        reason=reason,
        scope=state.scope,
        scope_id=state.scope_id,
        scope_name=data.get("scope_name") or _scope_name(names.get(), key),
        currency=state.currency,
        value=tidy(state.value),
        outcome=state.outcome,
        threshold=state.threshold,
    )
    if grain is not None and state.period_key is not None and state.period_key != data.get("period_key"):
        # The alert fired in an earlier period and was last judged in this one.
        start, end = _bounds(state.period_key, grain)
        data.update(
            period_key=state.period_key,
            period_start=start.isoformat() if start else None,
            period_end=end.isoformat() if end else None,
            links=_links(rule.get("kpi"), rule.get("scorecard"), grain, state.period_key, key),
        )
    return data


def _bounds(period_key: str, grain: str) -> tuple[date | None, date | None]:
    """The dates of the period a key (its first day) names."""
    if grain == "all":
        return None, None
    start = date.fromisoformat(period_key)
    if grain == "week":
        return start, start + timedelta(days=7)
    return periods.period_bounds(start.year * 12 + start.month - 1, cast(Grain, grain))


def _scopes(
    conn: Connection,
    rule: AlertRule,
    observed: Mapping[ScopeKey, Observation],
    states: Mapping[ScopeKey, Any],
) -> set[ScopeKey]:
    """The scopes a rule covers: those listed, or every one with a value or a state.

    A state of another kind of scope or currency than the rule's (the rule was changed) is not
    covered: evaluating it would describe a team with an owner rule's words.
    """
    if rule.scope_ids is not None:
        return {(rule.scope, scope_id, rule.currency) for scope_id in rule.scope_ids}
    keys = set(observed) | {key for key in states if key[0] == rule.scope and key[2] == rule.currency}
    if rule.scope == "company":
        keys.add(("company", "company", rule.currency))
    if rule.level is not None:
        teams = org_repo.teams_at_level(conn, rule.level)
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
) -> tuple[int, str, str, str | None] | None:
    """Apply one observation to a scope's state.

    ``(state id, from, to, reason)`` when the state changed: ``reason`` is ``rule_changed`` when
    the rule's definition changed since the state was last saved, else ``None``.
    """
    stored = "ok" if before is None else before.state
    changed_rule = before is not None and before.rule_hash != digest
    state, breaches = "ok", 0
    if before is not None and (not changed_rule or before.state == "firing"):
        # A changed rule counts breaches again, but a firing alert stays the same breach until
        # the changed rule sees it recovered (resolved below, or kept firing without a repeat).
        state, breaches = before.state, before.breaches
    value = found.value
    new_state = state
    if value is not None or rule.no_data != "keep" or found.outcome == OUTSIDE:
        if found.outcome == OUTSIDE:
            breach = False
        elif value is None:
            breach = rule.no_data == "breach"
        else:
            breach = not rule.recovered(value) if state == "firing" else rule.when.holds(value)
        if state == "firing":
            if not breach:
                new_state, breaches = "resolved", 0
        elif breach:
            breaches += 1
            new_state = "firing" if breaches >= rule.for_ else "pending"
        else:
            new_state, breaches = "ok", 0
    since = before.since if before is not None and new_state == stored else now
    reason = "rule_changed" if changed_rule else None
    if new_state != stored:
        repo.record_transition(
            conn,
            rule_id=rule.id,
            scope=key[0],
            scope_id=key[1],
            currency=key[2],
            from_state=stored,
            to_state=new_state,
            value=value,
            threshold=rule.recover.value if state == "firing" and rule.recover else rule.when.value,
            period_key=period_key,
            severity=rule.severity,
            at=now,
            reason=reason,
        )
        label = f"{stored}→{new_state}"
        result.transitions[label] = result.transitions.get(label, 0) + 1
    state_id = _save(conn, before, rule, digest, key, new_state, breaches, found, since, period_key, now)
    return (state_id, stored, new_state, reason) if new_state != stored else None


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
) -> int:
    outcome = (
        found.outcome if found.value is None else ("breach" if rule.when.holds(found.value) else "clear")
    )
    return repo.save_state(
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
        severity=rule.severity,
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
    return {
        "rule": {
            "id": rule.id,
            "name": rule.name or rule.id,
            "kpi": rule.kpi,
            "scorecard": rule.scorecard,
            **({"incentive": rule.incentive.model_dump()} if rule.incentive is not None else {}),
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
        "scope_name": _scope_name(names, key),
        "currency": currency,
        "grain": rule.grain,
        "period_key": period_key,
        "period_start": start.isoformat() if start else None,
        "period_end": end.isoformat() if end else None,
        "value": tidy(found.value),
        "outcome": found.outcome,
        "threshold": (rule.recover or rule.when).value if to_state == "resolved" else rule.when.value,
        "links": _links(rule.kpi, rule.scorecard, rule.grain, period_key, key),
    }


def _incentive(rule: AlertRule, line: incentive_watch.Watched | None) -> dict[str, Any]:
    """The rep's line behind an incentive alert (``None`` values when the rep has none now)."""
    assert rule.incentive is not None

    def text(value: Decimal | None) -> str | None:
        return None if value is None else str(value.quantize(Decimal("0.01")))

    def ratio(value: Decimal | None) -> float | None:
        return None if value is None else round(float(value), 6)

    return {
        "plan": rule.incentive.plan,
        "component": rule.incentive.component,
        "amount": text(None if line is None else line.amount),
        "base": text(None if line is None else line.base),
        "quota": text(None if line is None else line.quota),
        "attainment": ratio(None if line is None else line.attainment),
        "pace": ratio(None if line is None else line.pace),
        "projected_payout": text(None if line is None else line.projected_payout),
    }


def _scope_name(names: Mapping[tuple[str, str], str], key: ScopeKey) -> str:
    scope, scope_id, _ = key
    return names.get((scope, scope_id), "Company" if scope == "company" else scope_id)


def _links(
    kpi: str | None, scorecard: str | None, grain: str, period_key: str, key: ScopeKey
) -> dict[str, str]:
    scope, scope_id, currency = key
    query = {"grain": grain, "period": period_key, "scope": scope, "scope_id": scope_id}
    links: dict[str, str] = {}
    if kpi is None and scorecard is None:
        return links  # an incentive: its rep and plan are in the event
    if kpi is not None:
        values = {**query, **({"currency": currency} if currency else {})}
        links["values"] = f"/api/v1/kpis/{kpi}/values?{urlencode(values)}"
        links["explain"] = f"/api/v1/kpis/{kpi}/explain?{urlencode({**query, 'currency': currency})}"
    else:
        links["scorecard"] = f"/api/v1/scorecards/{scorecard}/owners/{scope_id}?grain={grain}"
    return links


def _publish_scores(conn: Connection, kpis: KpiConfig, now: datetime) -> int:
    """``score.published`` for each scorecard period that has ended and was not announced yet."""
    business = kpis.business
    published = 0
    for card in kpis.section.scorecards:
        for grain in card.grains:
            index = periods.local_period_index(
                now, business.timezone, grain, business.fiscal_year_start_month
            )
            index = periods.previous(index, grain)
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
