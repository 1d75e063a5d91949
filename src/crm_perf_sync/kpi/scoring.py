"""Scorecard scores materialised: every rep scored and ranked per period from the stored values.

The scoring itself is pure (:mod:`.scorecards`); this reads the reps' component values, scores
and ranks them per period of the card's grains and replaces the stored scores, in the caller's
transaction. Incrementally only the periods whose component values changed are scored again,
as long as the card, the teams and the active reps are those the stored scores were made with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from crm_perf_sync.kit.canonical import digest
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.kpi import scorecards
from crm_perf_sync.kpi import scores_repository as scores_repo
from crm_perf_sync.kpi.schemas import Kpi, ScorecardConfig
from crm_perf_sync.org import repository as org_repo


@dataclass(frozen=True, slots=True)
class Scored:
    """What :func:`refresh_scorecard` wrote: how many scores, and the (grain, period key) it
    scored again, ``None`` when it scored every period."""

    count: int
    periods: set[tuple[str, str]] | None


def refresh_scorecard(
    conn: Connection,
    card: ScorecardConfig,
    kpis: Mapping[str, Kpi],
    only: set[tuple[str, str]] | None = None,
) -> Scored | None:
    """Score every rep for every period of the card's grains (the caller's transaction).

    ``only``: just the (grain, period key) whose component values changed, when the stored
    scores were computed with this definition, these teams and these active reps (otherwise
    every period). Returns how many scores were written and in which periods, ``None`` when none
    needed to be.
    """
    computed_at = utc_now()
    teams = org_repo.direct_teams(conn)
    active = org_repo.active_owner_scopes(conn)
    fingerprint = digest([card.definition_hash(), sorted(teams.items()), sorted(active)])
    if only is not None and scores_repo.score_hashes(conn, card.id) != {fingerprint}:
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
        observed, bounds = scores_repo.owner_values(conn, [c.kpi for c in card.components], grain, wanted)
        for period_key, reps in sorted(observed.items()):
            scored = [
                scorecards.score_rep(card, kpis, scope_id, reps.get(scope_id, {}))
                for scope_id in sorted(set(reps) | active)
            ]
            scorecards.rank(scored, teams)
            start, end = bounds[period_key]
            out += [
                {
                    "scorecard_id": card.id,
                    "definition_hash": fingerprint,
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
                    "perspectives": s.perspectives,
                    "computed_at": computed_at,
                }
                for s in scored
            ]
    scores_repo.replace_scores(conn, card.id, out, only)
    return Scored(len(out), only)
