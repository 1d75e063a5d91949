"""Scorecards: a period's ranked reps with their graded, explained scores; one rep's history."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response

from crm_perf_sync.api import listing
from crm_perf_sync.api.deps import ContextDep, ListerDep, Reader, SessionDep
from crm_perf_sync.api.params import PERIOD_HELP, period_key
from crm_perf_sync.api.problems import collection
from crm_perf_sync.api.schemas import Page, ScorecardOut, ScoreOut
from crm_perf_sync.kit.errors import InvalidInput, NotFound
from crm_perf_sync.kpi import scores_repository as scores_repo
from crm_perf_sync.kpi.schemas import ScorecardConfig, display
from crm_perf_sync.org import repository as org_repo

router = APIRouter(tags=["scorecards"])
ScoreGrain = Literal["week", "month", "quarter", "year"]
CardPath = Annotated[str, Path(description="A scorecard id (see /scorecards)", max_length=63)]


def card_out(card: ScorecardConfig) -> dict[str, Any]:
    return {
        "id": card.id,
        "name": card.name,
        "grains": list(card.grains),
        "currency": card.currency,
        "components": [c.model_dump(mode="json") for c in card.components],
        "perspectives": [p.model_dump(mode="json") for p in card.perspectives],
        "grades": [g.model_dump(mode="json") for g in card.grades],
        "i18n": {locale: t.model_dump(mode="json") for locale, t in card.i18n.items()},
        "name_zh": display(card, "zh")[0],
    }


def score_row(s: Any, names: dict[tuple[str, str], str]) -> dict[str, Any]:
    return {
        "scorecard_id": s.scorecard_id,
        "grain": s.grain,
        "period_key": s.period_key,
        "period_start": s.period_start,
        "period_end": s.period_end,
        "scope_id": s.scope_id,
        "owner_name": names.get(("owner", s.scope_id), s.scope_id),
        "team_id": s.team_id,
        "score": s.score,
        "grade": s.grade,
        "rank": s.rank,
        "team_rank": s.team_rank,
        "dropped_components": s.dropped_components,
        "components": s.components,
        "perspectives": s.perspectives or [],
        "computed_at": s.computed_at,
    }


@router.get(
    "/scorecards",
    summary="Every scorecard: its components, weights, normalisation and grade bands",
    response_model=Page[ScorecardOut],
    responses=collection(400, 401, 422),
)
def list_scorecards(
    ctx: ContextDep,
    _key: Reader,
    page: ListerDep,
) -> Response:
    cards = [card_out(c) for c in ctx.kpi_service().section.scorecards]
    return page("scorecards", ScorecardOut, fetch=listing.in_memory(cards, "id"))


@router.get(
    "/scorecards/{scorecard_id}",
    summary="A period's reps ranked by score, with grades, team ranks and each component",
    description=(
        "Without `period`, the latest period of `grain` (default: the scorecard's first grain). "
        "Each row's `components` lists every component's value, target, normalised score and "
        "weight as configured and as applied, and why a dropped one did not count."
    ),
    response_model=Page[ScoreOut],
    responses=collection(401, 404, 409, 422, cached=True),
)
def scorecard(
    request: Request,
    scorecard_id: CardPath,
    session: SessionDep,
    ctx: ContextDep,
    _key: Reader,
    page: ListerDep,
    grain: Annotated[ScoreGrain | None, Query()] = None,
    period: Annotated[str | None, Query(description=PERIOD_HELP, max_length=20)] = None,
    team: Annotated[str | None, Query(max_length=600, description="Only this team's reps")] = None,
) -> Response:
    service = ctx.kpi_service()
    card = service.scorecard(scorecard_id)
    chosen = grain or card.grains[0]
    if chosen not in card.grains:
        raise InvalidInput(f"{scorecard_id} is scored by {', '.join(card.grains)}, not {chosen}")
    version = ctx.scores_version(session, card.id)
    cached = version.not_modified(request)
    if cached is not None:
        return cached
    fiscal = service.business.fiscal_year_start_month
    key = (
        period_key(period, chosen, fiscal)
        if period is not None
        else scores_repo.latest_period(session, card.id, chosen)
    )

    def fetch(s: Any, after: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        if key is None:
            return [], None
        found, next_key = scores_repo.scores_page(
            s, card.id, grain=chosen, period_key=key, scope_id=None, team=team, after=after, limit=limit
        )
        names = org_repo.scope_names(s)  # read with the page: a cached page reads neither
        return [score_row(v, names) for v in found], next_key

    return page(f"scores:{card.id}", ScoreOut, fetch=fetch, version=version, cache=ctx.responses)


@router.get(
    "/scorecards/{scorecard_id}/owners/{owner_id}",
    summary="One rep's scores over time, each with its component breakdown",
    description="`owner_id` is the rep's scope id, `<connection>:<owner id>` (see /owners).",
    response_model=Page[ScoreOut],
    responses=collection(401, 404, 409, 422, cached=True),
)
def owner_scores(
    scorecard_id: CardPath,
    owner_id: Annotated[str, Path(max_length=600)],
    session: SessionDep,
    ctx: ContextDep,
    _key: Reader,
    page: ListerDep,
    grain: Annotated[ScoreGrain | None, Query()] = None,
) -> Response:
    card = ctx.kpi_service().scorecard(scorecard_id)
    names = org_repo.scope_names(session)
    if ("owner", owner_id) not in names:
        raise NotFound(f"no owner {owner_id!r} (owner ids are <connection>:<owner id>, see /owners)")

    def fetch(s: Any, after: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        found, next_key = scores_repo.scores_page(
            s, card.id, grain=grain, period_key=None, scope_id=owner_id, team=None, after=after, limit=limit
        )
        return [score_row(v, names) for v in found], next_key

    return page(
        f"owner-scores:{card.id}:{owner_id}",
        ScoreOut,
        fetch=fetch,
        cache=ctx.responses,
        version=ctx.scores_version(session, card.id),
    )
