"""Plans, statement lines and statements as the API and the command line show them.

Amounts leave as numbers, as KPI values do: every amount of a line is a whole number of cents,
which a JSON number (a double) carries exactly to the cent; rates keep their six places. The plan
itself is shown twice: its terms in words, for a rep, and its definition in numbers, as configured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from crm_perf_sync.incentives import repository as repo
from crm_perf_sync.incentives.schemas import Commission, Component, Participant, Plan, ScoreBonus, Spiff
from crm_perf_sync.incentives.service import IncentiveService
from crm_perf_sync.incentives.statements import Progress, Statement
from crm_perf_sync.kit.errors import InvalidInput, NotFound
from crm_perf_sync.org import repository as org_repo

#: The columns of a statement line, in order (the API's rows and CSV, the CLI's CSV).
LINE_COLUMNS = (
    "id",
    "plan_id",
    "period_key",
    "period_start",
    "period_end",
    "owner_id",
    "owner_name",
    "component_id",
    "component_type",
    "kind",
    "for_period_key",
    "currency",
    "amount",
    "base",
    "quota",
    "attainment",
    "rate",
    "units",
    "score",
    "grade",
    "capped",
    "note",
    "detail",
    "frozen",
    "computed_at",
)


def line_filter(
    service: IncentiveService,
    session: Session,
    *,
    plan: str | None = None,
    owner: str | None = None,
    team: str | None = None,
    period: str | None = None,
    component: str | None = None,
    kind: str | None = None,
) -> repo.LineFilter:
    """The lines a reader asks for, each name checked: an unknown plan, component or team is a
    :class:`NotFound`, a period that starts none of the plan's an :class:`InvalidInput`. A plan
    no longer in force is known by the lines it left (its closed periods')."""
    retired = plan is not None and plan not in service.plans and repo.has_lines(session, plan)
    found = None if plan is None or retired else service.plan(plan)
    if found is not None and component is not None and found.component(component) is None:
        known = ", ".join(c.id for c in found.components)
        raise NotFound(f"plan {found.id!r} has no component {component!r} (components: {known})")
    period_key = None
    if period is not None and found is not None:
        period_key = service.period_of(found, period).key
    elif period is not None:
        try:
            period_key = date.fromisoformat(period).isoformat()
        except ValueError:
            raise InvalidInput(f"period {period!r} is not a period's first day (YYYY-MM-DD)") from None
    owners = None
    if team is not None:
        if not org_repo.known_scope(session, "team", team):
            raise NotFound(f"no team {team!r} (team ids are <namespace>:<team id>)")
        owners = org_repo.team_owners(session, team)
    return repo.LineFilter(plan, owner, period_key, component, kind, owners)


def statement_plan(session: Session, owner_id: str, plan: str | None) -> str:
    """The plan asked for, or the only one that pays the rep."""
    if plan is not None:
        return plan
    found = repo.owner_plans(session, owner_id)
    if len(found) == 1:
        return found[0]
    if not found:
        raise NotFound(f"{owner_id} has no payouts in any plan (owner ids are <connection>:<owner id>)")
    raise InvalidInput(f"plan: {owner_id} is paid by several plans; name one of {', '.join(found)}")


def number(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)


def _percent(value: Decimal) -> str:
    return f"{value * 100:.6f}".rstrip("0").rstrip(".") + "%"


def _money(value: Decimal, currency: str) -> str:
    return f"{value:,.2f} {currency}"


def _base(kpi: str, breakdown: Mapping[str, str]) -> str:
    narrowed = "".join(f" ({name} {value})" for name, value in breakdown.items())
    return f"{kpi}{narrowed}"


def terms(component: Component, currency: str) -> str:
    """What a component pays, in one or two sentences."""
    if isinstance(component, Commission):
        return _commission_terms(component, currency)
    if isinstance(component, Spiff):
        text = f"{_money(component.amount, currency)} per unit of {_base(component.kpi, component.breakdown)}"
        if component.cap is not None:
            text += f", at most {_money(component.cap, currency)} a period"
        return text + "."
    if isinstance(component, ScoreBonus):
        if component.grades:
            factors = ", ".join(f"{grade} {factor:g}x" for grade, factor in component.grades.items())
            text = (
                f"{_money(component.amount, currency)} times the factor of the grade on the "
                f"{component.scorecard} scorecard ({factors}; other grades pay nothing)"
            )
        else:
            text = (
                f"{_money(component.amount, currency)} times the score (0 to 1) on the "
                f"{component.scorecard} scorecard"
            )
        if component.min_score is not None:
            text += f", nothing below a score of {component.min_score:g}"
        if component.cap is not None:
            text += f", at most {_money(component.cap, currency)}"
        return text + "."
    by = (
        f"their scores on the {component.scorecard} scorecard"
        if component.split == "score"
        else f"their shares of {component.kpi}"
    )
    amount = _money(component.amount, currency)
    return f"{amount} a period for team {component.team}, split among its members by {by}."


def _commission_terms(component: Commission, currency: str) -> str:
    base = _base(component.base.kpi, component.base.breakdown)
    if component.rate is not None:
        text = f"{_percent(component.rate)} of {base}"
    else:
        bands = []
        for tier in component.tiers:
            upper = " up" if tier.to is None else f" to {_percent(tier.to)}"
            bands.append(f"{_percent(tier.rate)} from {_percent(tier.from_)}{upper}")
        how = (
            "each rate on the part of the base inside its tier"
            if component.tier_mode == "marginal"
            else "the reached tier's rate on the whole base"
        )
        text = f"On {base} by attainment of quota: {'; '.join(bands)} ({how})"
    quota = component.quotas
    if quota is not None:
        if quota.source == "targets":
            text += f"; the quota is the rep's target for {component.base.kpi}"
        else:
            given = "" if quota.amount is None else f"{_money(quota.amount, currency)} a period"
            others = _reps_with_own(len(quota.owners)) if quota.owners else ""
            text += f"; the quota is {', '.join(p for p in (given, others) if p)}"
    if component.threshold is not None:
        text += f"; nothing below {_percent(component.threshold)} of quota"
    if component.cap is not None:
        if component.cap.amount is not None:
            text += f"; at most {_money(component.cap.amount, currency)}"
        else:
            text += f"; at most {component.cap.on_target_multiple:g} times the on-target payout"
    return text + "."


def _participant(who: Participant) -> dict[str, Any]:
    return {"owner": who.owner, "team": who.team, "from": who.from_, "to": who.to}


def plan_out(service: IncentiveService, session: Session, plan: Plan, today: date) -> dict[str, Any]:
    """A plan: its terms, who takes part, and its periods up to ``today`` with their totals and
    who closed them."""
    closes = {row.period_key: row for row in repo.closes(session, plan.id)}
    found_periods = []
    for period in service.periods(plan, today):
        totals = repo.totals(session, plan.id, period.key)
        close = closes.get(period.key)
        found_periods.append(
            {
                "period_key": period.key,
                "period_start": period.start,
                "period_end": period.end,
                "last_day": period.end - timedelta(days=1),
                "lines": totals["lines"],
                "amount": float(totals["amount"]),
                "closed": close is not None,
                "closed_at": None if close is None else close.closed_at,
                "closed_by": None if close is None else close.closed_by,
            }
        )
    return {
        "id": plan.id,
        "source": "api" if plan.id in service.from_api else "configuration",
        "name": plan.name,
        "description": plan.description,
        "i18n": {locale: t.model_dump(mode="json") for locale, t in plan.i18n.items()},
        "period": plan.period,
        "currency": plan.currency,
        "starts": plan.from_,
        "ends": plan.to,
        "participants": [_participant(who) for who in plan.participants],
        "components": [
            {
                "id": c.id,
                "type": c.type,
                "name": c.name,
                "terms": terms(c, plan.currency),
                "definition": c.model_dump(mode="json", by_alias=True, exclude_none=True),
            }
            for c in plan.components
        ],
        "periods": found_periods,
    }


def line_row(line: Mapping[str, Any], names: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    """A stored statement line with the rep's name, its amounts as numbers."""
    row = {column: line.get(column) for column in LINE_COLUMNS}
    row["owner_name"] = names.get(("owner", line["owner_id"]), line["owner_id"])
    for column in ("amount", "base", "quota", "rate"):
        row[column] = number(line[column])
    return row


def progress_out(progress: Progress) -> dict[str, Any]:
    return {
        "component_id": progress.component_id,
        "base": number(progress.base),
        "quota": number(progress.quota),
        "attainment": number(progress.attainment),
        "tier": progress.tier,
        "next_tier": progress.next_tier,
        "next_tier_needs": number(progress.next_tier_needs),
        "elapsed": progress.elapsed,
        "projected_base": number(progress.projected_base),
        "projected_amount": number(progress.projected_amount),
    }


def statement_out(
    found: Statement, names: Mapping[tuple[str, str], str], closes: Sequence[Any]
) -> dict[str, Any]:
    close = next((row for row in closes if row.period_key == found.period.key), None)
    return {
        "plan_id": found.plan.id,
        "plan_name": found.plan.name,
        "owner_id": found.owner_id,
        "owner_name": names.get(("owner", found.owner_id), found.owner_id),
        "period_key": found.period.key,
        "period_start": found.period.start,
        "period_end": found.period.end,
        "currency": found.plan.currency,
        "closed": found.closed,
        "closed_at": None if close is None else close.closed_at,
        "closed_by": None if close is None else close.closed_by,
        "total": float(found.total),
        "lines": [line_row(line, names) for line in found.lines],
        "progress": [progress_out(p) for p in found.progress],
        "periods": list(found.periods),
    }


def explained_out(
    explained: Mapping[str, Any], names: Mapping[tuple[str, str], str], after: int, limit: int
) -> dict[str, Any]:
    """A line explained, with one page of its records (``after`` records skipped): each record's
    ``earned`` and ``tiers`` as numbers, and the totals over every record."""
    records = list(explained["records"])
    page = [_record_out(record) for record in records[after : after + limit]]
    earned = [Decimal(str(r["earned"])) for r in records if r.get("earned") is not None]
    return {
        "plan_id": explained["plan_id"],
        "owner_id": explained["owner_id"],
        "owner_name": names.get(("owner", explained["owner_id"]), explained["owner_id"]),
        "period_key": explained["period_key"],
        "lines": [line_row(line, names) for line in explained["lines"]],
        "record_count": len(records),
        "contribution_total": sum(float(r["contribution"]) for r in records),
        "earned_total": float(sum(earned, Decimal(0))) if earned else None,
        "records": page,
        "next_after": after + limit if after + limit < len(records) else None,
    }


def _record_out(record: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(record)
    if out.get("earned") is not None:
        out["earned"] = float(Decimal(str(out["earned"])))
    if "tiers" in out:
        out["tiers"] = [
            {**t, "rate": float(Decimal(t["rate"])), "portion": float(Decimal(t["portion"]))}
            for t in out["tiers"]
        ]
    return out


def _reps_with_own(count: int) -> str:
    return "1 rep with its own" if count == 1 else f"{count} reps with their own"
