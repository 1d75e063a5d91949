"""The synthetic company: a deterministic function of the settings and an instant.

How it is built
- Every opportunity and every lead has an index. Its whole life (creation, owner, amount, stage
  path, close, deletion) is planned from 64 bytes of ``blake2b(index, key=seed-derived key)``,
  i.e. independently of every other record and of the process (no global ``random``, no salted
  ``hash()``). Planning one record costs about a microsecond of hashing, where seeding a
  ``random.Random`` per record would cost four, which is what keeps generation above 100,000
  opportunities per second.
- Record ``i`` of ``N`` is created at ``start + (i + u) * history / N`` (``u`` in [0, 1)), so
  creation time is monotone in the index: the records that exist as of an instant are a prefix
  of the indices, and the history holds exactly ``N`` of them.
- A record's state as of an instant ``T`` follows its precomputed path: the last step at or
  before ``T`` gives the stage (or lead status), and ``remote_updated_at`` is the time of that
  last change. Nothing happens to a record later than ``created_at + lifetime`` (271 days for an
  opportunity), which bounds how far back an incremental read must look for changed records.

What a sales company looks like here
- Regions x teams, reps assigned round-robin to teams, each rep with a personal win rate between
  22% and 34% (+8 points on Existing Business): about 30% of closed deals are won.
- 30% of deals are Existing Business; three quarters of New Business deals come from a converted
  lead (owned by the lead's rep, created the moment the lead converts, with its lead source).
- Amounts are log-normal (median 25,000 for New and 12,000 for Existing Business) in the main
  currency or, by the configured shares, in another one; every amount carries its currency.
- Cycle lengths are log-normal (median 45 days, 5%-95% about 18-110 days; Existing Business 30%
  shorter); a deal walks Prospecting → … → Negotiation and closes Won, or is lost after the stage
  it reached (most losses early). The amount is discounted 0-15% on reaching Negotiation.
- Seasonality: half the won deals (a quarter of the lost ones) that would close in the last 30
  days of a quarter slip to its last week, so closes pile up at quarter end.
- Accounts (``accounts``; a third of the deal count by default) are the company's customer base,
  in the CRM from the first day: ``ACC-00000001`` ..., named like "Blue River Logistics", with an
  industry from the kind of business in the name, a segment (15% Enterprise, 35% Mid-Market, 50%
  SMB, with employees to match), a rep, and for 5% a parent among the older accounts. Deals and
  leads name their account by id; a converted lead works at its deal's account. An account whose
  rep leaves passes to another rep that day (its only change).
- Activities come with the deals, planned from the deal's index like everything else: the rep
  calls, emails, meets and visits the account from three weeks before the deal is opened (on the
  lead, for a deal from one) until it closes; ``activities_per_deal`` on average, weighted by how
  far the deal gets (a won deal about four times a deal lost at once). One in seven is a
  prospecting call or email to some other account, with no deal. A deal entering Proposal gets
  the proposal, sent then. 0.3% of activities are deleted within three days; none is done by a
  rep who has left.

The dirt a real CRM has, on purpose
- 0.5% of opportunities have no amount (``amount`` is ``None``; the currency is still set).
- 0.2% of the leads that never convert have no owner (unassigned, left in the queue); 1% of
  all leads have no email.
- Two reps (when there are at least four) leave the company part-way through the history: their
  owner record turns inactive, new deals stop going to them, and the open deals they held stay
  theirs.
- One rep's email is stored in mixed case (``Maria.Garcia@Demo-Sales.Example`` style).
- 0.3% of opportunities that did not come from a lead are deleted 1-181 days after creation, and
  0.5% of the leads that never convert are deleted within 90 days: the record stays, with
  ``is_deleted`` set and ``remote_updated_at`` at the deletion; it changes no more afterwards.
- ``close_date`` of an open deal is the rep's forecast (the planned close ± a week); a deal that
  slips to quarter end keeps its stale forecast until it closes, so some open deals have a
  ``close_date`` in the past.
- Existing Business deals have no ``lead_source``; 15% of leads are never contacted and stay Open.
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache, lru_cache
from hashlib import blake2b
from statistics import NormalDist
from typing import Final, NamedTuple, TypeVar

from crm_perf_sync.connector_sdk import (
    AccountRecord,
    ActivityRecord,
    LeadRecord,
    OpportunityRecord,
    OwnerRecord,
    PipelineStageRecord,
    StageChangeRecord,
    TeamRecord,
)
from crm_perf_sync_demo import vocabulary as vocab
from crm_perf_sync_demo.ordering import Key, Keyed, merge_by_key
from crm_perf_sync_demo.settings import DemoSettings

T = TypeVar("T")

DAY: Final = 86_400
PIPELINE: Final = "Sales"

#: A record changes no more than this long after it was created (see the draws below: a cycle
#: of at most 240 days, a quarter-end slip of at most 30, a deletion at most 181 days in).
OPPORTUNITY_LIFETIME: Final = 271 * DAY

_U: Final = 1.0 / 65536.0  # draws are uint16; this maps one onto [0, 1)
_DRAWS: Final = struct.Struct("<32H").unpack
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()

# Shares, as thresholds on a uint16 draw.
_EXISTING: Final = int(0.30 * 65536)
_FROM_LEAD: Final = int(0.75 * 65536)
_NO_AMOUNT: Final = int(0.005 * 65536)
_OPP_DELETED: Final = int(0.003 * 65536)
_SLIP_WON: Final = int(0.50 * 65536)
_SLIP_LOST: Final = int(0.25 * 65536)
_LEAD_UNOWNED: Final = int(0.002 * 65536)
_LEAD_NO_EMAIL: Final = int(0.01 * 65536)
_LEAD_CONTACTED: Final = int(0.85 * 65536)
_LEAD_UNQUALIFIED: Final = int(0.70 * 65536)
_LEAD_DELETED: Final = int(0.005 * 65536)

_AMOUNT_MU_NEW: Final = math.log(25_000)
_AMOUNT_MU_EXISTING: Final = math.log(12_000)
_AMOUNT_SIGMA: Final = 0.8
_CYCLE_MU: Final = math.log(45)
_CYCLE_SIGMA: Final = 0.55
_EXISTING_WIN_BONUS: Final = 0.08
#: How long before its conversion a converted lead was created, roughly.
_LEAD_LAG_DAYS: Final = 21

#: Where lost deals stop: cumulative shares of "lost after reaching stage k" for k = 0..4.
_LOST_AFTER: Final = tuple(int(share * 65536) for share in (0.35, 0.60, 0.78, 0.92))

# Accounts.
_PARENTLESS: Final = 20  # the first accounts have no parent, so a parent is an older account
_SUBSIDIARY: Final = int(0.05 * 65536)
#: Employees of an account by segment: a log-uniform draw between these.
_EMPLOYEES: Final = {"Enterprise": (2_000, 100_000), "Mid-Market": (200, 2_000), "SMB": (5, 200)}

# Activities.
#: How long before a deal is opened its rep starts working the account.
ACTIVITY_LEAD_IN: Final = 21 * DAY
#: An activity's key is never later than this after its deal's creation: the deal closes or is
#: deleted within a lifetime, and an activity is deleted at most 3 days and an hour after it.
ACTIVITY_LIFETIME: Final = OPPORTUNITY_LIFETIME + 4 * DAY
_WON_ACTIVITY_BONUS: Final = 3
_PROSPECTING: Final = int(0.15 * 65536)
_ACTIVITY_DELETED: Final = int(0.003 * 65536)
_PROPOSAL: Final = 3  # the index of the Proposal stage
_PROPOSAL_KIND: Final = ("proposal", "Proposal sent", 0.0)
#: Seconds a call, meeting or visit takes: uniform between these.
_DURATIONS: Final = {"call": (60, 1_800), "meeting": (1_800, 5_400), "visit": (3_600, 10_800)}
#: The mean weight of a deal (see :meth:`Company.activities`) from the shares above: won deals
#: (the reps' 22-34% plus the Existing Business bonus on 30% of deals) walk all five open stages;
#: a lost deal walks as far as ``_LOST_AFTER`` says.
_NOMINAL_WIN_SHARE: Final = 0.28 + 0.30 * _EXISTING_WIN_BONUS
_LOST_REACHED: Final = tuple(
    b - a for a, b in zip((0.0, 0.35, 0.60, 0.78, 0.92), (0.35, 0.60, 0.78, 0.92, 1.0), strict=True)
)
_MEAN_ACTIVITY_WEIGHT: Final = _NOMINAL_WIN_SHARE * (5 + _WON_ACTIVITY_BONUS) + (
    1 - _NOMINAL_WIN_SHARE
) * sum(share * (1 + reached) for reached, share in enumerate(_LOST_REACHED))


def _thresholds(shares: Iterable[tuple[T, float]]) -> tuple[tuple[int, T], ...]:
    """Cumulative shares as thresholds on a uint16 draw."""
    out: list[tuple[int, T]] = []
    total = 0.0
    for choice, share in shares:
        total += share
        out.append((int(total * 65536), choice))
    return tuple(out)


_ACTIVITY_KINDS: Final = vocab.ACTIVITY_KINDS
_ACTIVITY_KIND_THRESHOLDS: Final = _thresholds((kind, kind[2]) for kind in _ACTIVITY_KINDS)
_ACTIVITY_KIND_NAMES: Final = _ACTIVITY_KINDS
_CALL_OUTCOME_THRESHOLDS: Final = _thresholds(vocab.CALL_OUTCOMES)
_CALL_OUTCOME_NAMES: Final = tuple(name for name, _ in vocab.CALL_OUTCOMES)
_SEGMENT_THRESHOLDS: Final = _thresholds(vocab.ACCOUNT_SEGMENTS)
_SEGMENT_NAMES: Final = tuple(name for name, _ in vocab.ACCOUNT_SEGMENTS)


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage of the demo pipeline."""

    name: str
    probability: float
    is_closed: bool
    is_won: bool
    forecast_category: str


STAGES: Final = (
    Stage("Prospecting", 0.1, False, False, "Pipeline"),
    Stage("Qualification", 0.2, False, False, "Pipeline"),
    Stage("Needs Analysis", 0.4, False, False, "Best Case"),
    Stage("Proposal", 0.6, False, False, "Best Case"),
    Stage("Negotiation", 0.8, False, False, "Commit"),
    Stage("Closed Won", 1.0, True, True, "Closed"),
    Stage("Closed Lost", 0.0, True, False, "Omitted"),
)
_NEGOTIATION: Final = 4
_WON: Final = 5
_LOST: Final = 6
_WON_PATH: Final = (0, 1, 2, 3, 4, _WON)
_LOST_PATHS: Final = tuple((*range(reached + 1), _LOST) for reached in range(5))
_PRODUCTS: Final = vocab.PRODUCTS
_EMAIL_DOMAINS: Final = vocab.ACCOUNT_CORES
_DIRECT_SOURCES: Final = vocab.DIRECT_SOURCES


class Opportunity(NamedTuple):
    """An opportunity's whole planned life, independent of any "as of" instant."""

    number: int  # position in creation order, from 0
    external_id: str
    created: int  # epoch seconds, as are all times here
    owner: int
    existing: bool
    lead: int  # index of the lead it was converted from, or -1
    lead_source: str | None
    cents: int | None
    negotiated_cents: int | None
    currency: str
    stages: tuple[int, ...]  # indices into STAGES, in the order the deal walks them
    times: tuple[int, ...]  # when it entered each of those stages, strictly increasing
    deleted: int  # when it was deleted, or -1
    forecast_day: int  # proleptic ordinal of the forecast close date
    account: int  # index of the account
    product: str


class Lead(NamedTuple):
    """A lead's whole planned life, independent of any "as of" instant."""

    number: int  # position in creation order, from 0
    external_id: str
    created: int
    owner: int  # -1: unassigned
    name: str
    email: str | None
    account: int  # index of the account (the company) the lead works at
    source: str
    statuses: tuple[str, ...]
    times: tuple[int, ...]  # when it took each status, strictly increasing
    deleted: int  # -1: never
    opportunity: int  # index of the opportunity it converts into, or -1


class Account(NamedTuple):
    """An account's plan: who owns it when, and what it is."""

    number: int  # index, from 0
    external_id: str
    name: str
    industry: str
    segment: str
    parent: int  # index of the parent account, or -1
    owners: tuple[int, ...]  # its reps in turn
    changes: tuple[int, ...]  # when each of them took it over, the first at the start
    employees: int


class Activity(NamedTuple):
    """An activity's plan: it happens once and never changes, unless it is deleted."""

    external_id: str
    occurred: int
    type: str
    subtype: str
    owner: int
    account: int
    opportunity: int  # index, or -1
    lead: int  # index, or -1
    duration: int | None  # seconds
    outcome: str | None
    deleted: int  # -1: never


class Rep(NamedTuple):
    """A sales rep of the demo company."""

    number: int  # from 0
    external_id: str
    name: str
    email: str
    team_external_id: str
    win_rate: float
    left_at: int  # when the rep left the company; a far-future sentinel for those who stay


_FOREVER: Final = 2**62


@cache
def _normal_quantiles() -> tuple[float, ...]:
    """Standard normal quantiles at 4096 evenly spaced probabilities: a normal draw in one lookup."""
    dist = NormalDist()
    return tuple(dist.inv_cdf((k + 0.5) / 4096) for k in range(4096))


_LEAD_SOURCE_THRESHOLDS: Final = tuple(
    (int(sum(share for _, share in vocab.LEAD_SOURCES[: n + 1]) * 65536), name)
    for n, (name, _) in enumerate(vocab.LEAD_SOURCES)
)


def _lead_source(draw: int) -> str:
    """A lead source by its share, from one uint16 draw."""
    for threshold, name in _LEAD_SOURCE_THRESHOLDS:
        if draw < threshold:
            return name
    return _LEAD_SOURCE_THRESHOLDS[-1][1]


def _hasher(seed: int, purpose: str) -> blake2b:
    """A keyed blake2b, ready to be copied per record: the key is absorbed once, not per record."""
    key = blake2b(f"crm-perf-sync-demo:{seed}:{purpose}".encode(), digest_size=32).digest()
    return blake2b(digest_size=64, key=key)


def _draws(hasher: blake2b, index: int) -> tuple[int, ...]:
    """32 independent uniform uint16 draws for record ``index``."""
    h = hasher.copy()
    h.update(b"%d" % index)
    return _DRAWS(h.digest())


@lru_cache(maxsize=8192)
def _next_quarter_start(day_number: int) -> int:
    """Epoch seconds of the first quarter start after day ``day_number`` (days since 1970)."""
    day = date.fromordinal(_EPOCH_ORDINAL + day_number)
    month = (day.month - 1) // 3 * 3 + 4
    year = day.year + (month > 12)
    month = month - 12 if month > 12 else month
    return (date(year, month, 1).toordinal() - _EPOCH_ORDINAL) * DAY


_FROM_TIMESTAMP: Final = datetime.fromtimestamp


def to_datetime(ts: int) -> datetime:
    """Epoch seconds → an aware UTC datetime."""
    return _FROM_TIMESTAMP(ts, UTC)


def to_timestamp(value: datetime) -> int:
    """An aware datetime → whole epoch seconds (rounded down)."""
    return math.floor(value.timestamp())


@cache
def _account_names() -> tuple[str, ...]:
    """Every distinct account name, so that naming an account is one lookup."""
    return tuple(
        f"{prefix} {core} {kind}"
        for kind in vocab.ACCOUNT_KINDS
        for core in vocab.ACCOUNT_CORES
        for prefix in vocab.ACCOUNT_PREFIXES
    )


def _account_kind(index: int, names: tuple[str, ...]) -> str:
    """The kind of business in account ``index``'s name (see :func:`_account_name`)."""
    position = index % len(names) * 7919 % len(names)
    return vocab.ACCOUNT_KINDS[position // (len(vocab.ACCOUNT_CORES) * len(vocab.ACCOUNT_PREFIXES))]


def _pair_draws(hasher: blake2b, index: int, part: int) -> tuple[int, ...]:
    """32 independent uniform uint16 draws for part ``part`` of record ``index``."""
    h = hasher.copy()
    h.update(b"%d.%d" % (index, part))
    return _DRAWS(h.digest())


def _by_occurrence(activity: Activity) -> tuple[int, str]:
    return activity.occurred, activity.external_id


def _account_name(index: int, names: tuple[str, ...]) -> str:
    rest, position = divmod(index, len(names))
    # A stride coprime with the table size spreads neighbouring accounts over every kind of
    # business, so a small company is not all "Logistics".
    name = names[position * 7919 % len(names)]
    return f"{name} {rest + 1}" if rest else name


class Company:
    """The demo company for one set of settings.

    Plans (:meth:`opportunity`, :meth:`lead`) do not depend on time; the ``*_record`` methods
    render a plan as the CRM shows it as of an instant (epoch seconds). The ``changed_*`` methods
    stream records in ``(remote_updated_at, external_id)`` order with bounded memory.
    """

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        self.start = to_timestamp(settings.history_start)
        span = settings.history_days * DAY
        self.opportunity_count = settings.opportunities
        self.lead_count = settings.lead_count
        self.opportunity_slot = span / self.opportunity_count if self.opportunity_count else math.inf
        self.lead_slot = span / self.lead_count if self.lead_count else math.inf
        self._opp_hasher = _hasher(settings.seed, "opportunity")
        self._lead_hasher = _hasher(settings.seed, "lead")
        self._z = _normal_quantiles()
        self._account_names = _account_names()
        self._accounts = settings.account_count
        self._account_hasher = _hasher(settings.seed, "account")
        self._activity_hasher = _hasher(settings.seed, "activity")
        # Activities per unit of a deal's weight (see :meth:`activities`), so that the mean per
        # deal is the configured one.
        self._activity_rate = settings.activities_per_deal / _MEAN_ACTIVITY_WEIGHT

        # A converted lead turns into opportunity j = lag + ceil(i x opportunities / leads): the
        # lag (in opportunity slots) puts the lead about three weeks before its deal, and at
        # least one lead slot before it, so every converted lead exists before its opportunity.
        self.lead_lag = 0
        self.lead_lifetime = 91 * DAY
        if self.opportunity_count and self.lead_count:
            self.lead_lag = max(
                1,
                round(_LEAD_LAG_DAYS * DAY / self.opportunity_slot),
                math.ceil((self.lead_slot + 2) / self.opportunity_slot) + 1,
            )
            conversion_bound = math.ceil((self.lead_lag + 2) * self.opportunity_slot) + 2
            self.lead_lifetime = max(self.lead_lifetime, conversion_bound + DAY)

        base = settings.currency
        shares = sorted(settings.currencies.items())
        thresholds: list[tuple[int, str]] = []
        total = 0.0
        for code, share in shares:
            total += share
            thresholds.append((int(total * 65536), code))
        self._currencies = tuple(thresholds)
        self._base_currency = base

        self.teams = self._build_teams()
        self.reps = self._build_reps()
        self._left = tuple(rep.left_at for rep in self.reps)
        self._win = tuple(rep.win_rate for rep in self.reps)
        self._rep_ids = tuple(rep.external_id for rep in self.reps)
        self._rep_count = len(self.reps)

    # -- structure ---------------------------------------------------------------------------------

    def _build_teams(self) -> tuple[TeamRecord, ...]:
        teams: list[TeamRecord] = []
        for r in range(self.settings.regions):
            region_name = vocab.REGION_NAMES[r] if r < len(vocab.REGION_NAMES) else f"Region {r + 1}"
            region_id = f"REGION-{r + 1:02d}"
            teams.append(TeamRecord(external_id=region_id, name=region_name, level="region"))
            for t in range(self.settings.teams_per_region):
                segments = vocab.TEAM_SEGMENTS
                segment = segments[t] if t < len(segments) else f"Team {t + 1}"
                teams.append(
                    TeamRecord(
                        external_id=f"TEAM-{r + 1:02d}-{t + 1:02d}",
                        name=f"{region_name} {segment}",
                        parent_external_id=region_id,
                        level="team",
                    )
                )
        return tuple(teams)

    def _build_reps(self) -> tuple[Rep, ...]:
        settings = self.settings
        count = settings.reps
        hasher = _hasher(settings.seed, "rep")
        team_ids = [team.external_id for team in self.teams if team.level == "team"]
        width = max(3, len(str(count)))
        span = settings.history_days * DAY
        pick = _draws(hasher, -1)
        leavers: dict[int, int] = {}
        if count >= 4:
            first = pick[0] % count
            second = (first + 1 + pick[1] % (count - 1)) % count
            leavers[first] = self.start + int(span * (0.40 + 0.10 * pick[2] * _U))
            leavers[second] = self.start + int(span * (0.65 + 0.10 * pick[3] * _U))
        mixed_case = pick[4] % count
        reps: list[Rep] = []
        emails: set[str] = set()
        for r in range(count):
            v = _draws(hasher, r)
            first_name = vocab.FIRST_NAMES[v[0] % len(vocab.FIRST_NAMES)]
            last_name = vocab.LAST_NAMES[v[1] % len(vocab.LAST_NAMES)]
            local = f"{first_name}.{last_name}".lower()
            email = f"{local}@{vocab.COMPANY_DOMAIN}"
            number = 1
            while email in emails:  # two reps with the same name get distinct addresses
                number += 1
                email = f"{local}{number}@{vocab.COMPANY_DOMAIN}"
            emails.add(email)
            if r == mixed_case:
                name_part, domain = email.split("@")
                email = f"{name_part.title()}@{domain.title()}"
            reps.append(
                Rep(
                    number=r,
                    external_id=f"REP-{r + 1:0{width}d}",
                    name=f"{first_name} {last_name}",
                    email=email,
                    team_external_id=team_ids[r % len(team_ids)],
                    win_rate=0.22 + 0.12 * v[2] * _U,
                    left_at=leavers.get(r, _FOREVER),
                )
            )
        return tuple(reps)

    @staticmethod
    def _bucket_width(slot: float) -> int:
        """Time buckets of about 32 creations each (see :mod:`crm_perf_sync_demo.ordering`)."""
        return max(1, min(DAY, int(slot * 32)))

    def _pick_rep(self, draw: int, at: int) -> int:
        """A rep still with the company at ``at`` (at most two ever leave, so this ends quickly)."""
        left = self._left
        count = len(left)
        rep = draw % count
        if left[rep] <= at:
            # A second, independent choice, so a leaver's share spreads over the whole team
            # rather than landing on one neighbour.
            rep = draw // count % count
            while left[rep] <= at:
                rep = (rep + 1) % count
        return rep

    def pipeline_stages(self) -> tuple[PipelineStageRecord, ...]:
        """The stages of the one pipeline, in order."""
        return tuple(
            PipelineStageRecord(
                pipeline=PIPELINE,
                stage=stage.name,
                sort_order=order,
                probability=stage.probability,
                is_closed=stage.is_closed,
                is_won=stage.is_won,
                label=stage.name,
            )
            for order, stage in enumerate(STAGES)
        )

    def owner_records(self, as_of: int) -> list[OwnerRecord]:
        """The reps as of ``as_of`` (none before the company starts)."""
        if as_of < self.start:
            return []
        return [
            OwnerRecord(
                external_id=rep.external_id,
                name=rep.name,
                email=rep.email,
                active=rep.left_at > as_of,
                team_external_id=rep.team_external_id,
                remote_updated_at=to_datetime(rep.left_at if rep.left_at <= as_of else self.start),
            )
            for rep in self.reps
        ]

    # -- opportunities -----------------------------------------------------------------------------

    def _lead_of_opportunity(self, j: int) -> int:
        """The lead index opportunity ``j`` would be converted from, or -1 (before the flags)."""
        if not self.lead_count or j < self.lead_lag:
            return -1
        lead = (j - self.lead_lag) * self.lead_count // self.opportunity_count
        # With fewer leads than deals several j map to one lead: only the first converts it.
        if j > self.lead_lag and (j - 1 - self.lead_lag) * self.lead_count // self.opportunity_count == lead:
            return -1
        return lead

    def _opportunity_created(self, j: int, v: tuple[int, ...]) -> int:
        # The +1 keeps record j strictly inside its slot, so the history ends with exactly N.
        # (Inlined in :meth:`opportunity`.)
        return self.start + int((j + (v[0] + 0.5) * _U) * self.opportunity_slot) + 1

    def opportunity(self, j: int) -> Opportunity:
        """The plan of opportunity ``j``."""
        # This is the hot path of every read and benchmark: draws are unpacked once, constants
        # are module-level, the common cases of the helpers are inlined, and the plan is built
        # positionally.
        h = self._opp_hasher.copy()
        h.update(b"%d" % j)
        v = _DRAWS(h.digest())
        created = self.start + int((j + (v[0] + 0.5) * _U) * self.opportunity_slot) + 1
        existing = v[1] < _EXISTING
        lead = -1 if existing or v[2] >= _FROM_LEAD else self._lead_of_opportunity(j)
        owner = v[3] % self._rep_count
        if self._left[owner] <= created:
            owner = self._pick_rep(v[3], created)
        lead_source: str | None
        if lead >= 0:
            # The lead takes its source (and owner) from these draws too, so both sides agree
            # without hashing the lead again.
            lead_source = _lead_source(v[25])
        else:
            lead_source = None if existing else _DIRECT_SOURCES[v[24] % len(_DIRECT_SOURCES)]

        z = self._z
        cents: int | None = None
        negotiated: int | None = None
        if v[5] >= _NO_AMOUNT:
            mu = _AMOUNT_MU_EXISTING if existing else _AMOUNT_MU_NEW
            units = math.exp(mu + _AMOUNT_SIGMA * z[v[4] >> 4])
            cents = max(1, int(units / 10 + 0.5)) * 1000  # quoted in whole tens
            negotiated = cents * (8500 + v[6] % 1501) // 10_000
        currency = self._base_currency
        for threshold, code in self._currencies:
            if v[7] < threshold:
                currency = code
                break

        won = v[8] * _U < self._win[owner] + (_EXISTING_WIN_BONUS if existing else 0.0)
        days = math.exp(_CYCLE_MU + _CYCLE_SIGMA * z[v[9] >> 4]) * (0.7 if existing else 1.0)
        # Each of the five stages gets at least 0.3 of a share, so steps are hours apart.
        scale = min(240.0, max(5.0, days)) * DAY / (1.5 + (v[10] + v[11] + v[12] + v[13] + v[14]) * _U)
        stages: tuple[int, ...]
        if won:
            reached = _NEGOTIATION
            stages = _WON_PATH
        else:
            reached = 0
            while reached < 4 and v[15] >= _LOST_AFTER[reached]:
                reached += 1
            stages = _LOST_PATHS[reached]
        times = [created]
        elapsed = 0.0
        for stage in range(reached):
            elapsed += 0.3 + v[10 + stage] * _U
            times.append(created + int(scale * elapsed))  # enters stage + 1
        planned_close = created + int(scale * (elapsed + 0.3 + v[10 + reached] * _U))
        close = planned_close
        if v[16] < (_SLIP_WON if won else _SLIP_LOST):
            quarter_end = _next_quarter_start(planned_close // DAY)
            if quarter_end - planned_close <= 30 * DAY:
                close = max(planned_close, quarter_end - 3600 - int(v[17] * _U * 6 * DAY))
        times.append(close)
        forecast = planned_close + int((v[18] * _U - 0.5) * 14 * DAY)

        deleted = -1
        if lead < 0 and v[19] < _OPP_DELETED:
            deleted = created + DAY + int(v[20] * _U * 180 * DAY)
            kept = bisect_right(times, deleted)
            times = times[:kept]
            stages = stages[:kept]

        return Opportunity(
            j,
            f"OPP-{j + 1:08d}",
            created,
            owner,
            existing,
            lead,
            lead_source,
            cents,
            negotiated,
            currency,
            stages,
            tuple(times),
            deleted,
            _EPOCH_ORDINAL + forecast // DAY,
            ((v[21] << 16) | v[22]) % self._accounts,
            _PRODUCTS[v[23] % len(_PRODUCTS)],
        )

    def opportunities_as_of(self, as_of: int, first: int = 0) -> Iterator[Opportunity]:
        """Plans of the opportunities created by ``as_of``, from index ``first``, in index order."""
        if not self.opportunity_count:
            return
        j = first
        while True:
            opp = self.opportunity(j)
            if opp.created > as_of:
                return
            yield opp
            j += 1

    @staticmethod
    def opportunity_updated_at(opp: Opportunity, as_of: int) -> int:
        """When ``opp`` last changed at or before ``as_of`` (it must exist by then)."""
        if 0 <= opp.deleted <= as_of:
            return opp.deleted
        return opp.times[bisect_right(opp.times, as_of) - 1]

    def opportunity_record(self, opp: Opportunity, as_of: int) -> OpportunityRecord:
        """``opp`` as the CRM shows it at ``as_of``."""
        times = opp.times
        steps = bisect_right(times, as_of)
        at = times[steps - 1]
        stage = STAGES[opp.stages[steps - 1]]
        deleted = 0 <= opp.deleted <= as_of
        cents = opp.negotiated_cents if steps > _NEGOTIATION else opp.cents
        closed = stage.is_closed
        product = opp.product
        changed = _FROM_TIMESTAMP(at, UTC)
        return OpportunityRecord(
            external_id=opp.external_id,
            owner_external_id=self._rep_ids[opp.owner],
            name=f"{_account_name(opp.account, self._account_names)} - {product}",
            amount=None if cents is None else Decimal(cents).scaleb(-2),
            currency=opp.currency,
            stage=stage.name,
            probability=stage.probability,
            pipeline=PIPELINE,
            forecast_category=stage.forecast_category,
            type="Existing Business" if opp.existing else "New Business",
            lead_source=opp.lead_source,
            account_external_id=_account_id(opp.account),
            product=product,
            created_at=_FROM_TIMESTAMP(opp.created, UTC),
            close_date=date.fromordinal((_EPOCH_ORDINAL + at // DAY) if closed else opp.forecast_day),
            closed_at=changed if closed else None,
            is_closed=closed,
            is_won=stage.is_won,
            lead_external_id=None if opp.lead < 0 else f"LEAD-{opp.lead + 1:08d}",
            is_deleted=deleted,
            remote_updated_at=_FROM_TIMESTAMP(opp.deleted, UTC) if deleted else changed,
        )

    def stage_change_records(self, opp: Opportunity, as_of: int) -> list[StageChangeRecord]:
        """``opp``'s stage history up to ``as_of``, the creation (from no stage) included."""
        steps = bisect_right(opp.times, as_of)
        return [self._stage_change(opp, step) for step in range(steps)]

    @staticmethod
    def _stage_change(opp: Opportunity, step: int) -> StageChangeRecord:
        return StageChangeRecord(
            external_id=f"{opp.external_id}-{step}",
            opportunity_external_id=opp.external_id,
            from_stage=STAGES[opp.stages[step - 1]].name if step else None,
            to_stage=STAGES[opp.stages[step]].name,
            changed_at=to_datetime(opp.times[step]),
        )

    def first_opportunity_at(self, at: int) -> int:
        """An index at or before the first opportunity created at or after ``at``."""
        if not self.opportunity_count:
            return 0
        return max(0, int((at - self.start - 1) / self.opportunity_slot) - 2)

    def changed_opportunities(self, as_of: int, lower: Key) -> Iterator[Keyed[OpportunityRecord]]:
        """Opportunities as of ``as_of`` whose key (remote_updated_at, id) is ``>= lower``, in key
        order."""

        def scan() -> Iterator[tuple[int, Iterable[Keyed[Opportunity]]]]:
            for opp in self._changeable_opportunities(as_of, lower):
                updated = self.opportunity_updated_at(opp, as_of)
                yield (
                    opp.created,
                    ((updated, opp.external_id, opp),)
                    if (
                        updated,
                        opp.external_id,
                    )
                    >= lower
                    else (),
                )

        width = self._bucket_width(self.opportunity_slot)
        for updated, external_id, opp in merge_by_key(scan(), width):
            yield updated, external_id, self.opportunity_record(opp, as_of)

    def changed_stage_changes(self, as_of: int, lower: Key) -> Iterator[Keyed[StageChangeRecord]]:
        """Stage changes up to ``as_of`` whose key (changed_at, id) is ``>= lower``, in key order."""

        def scan() -> Iterator[tuple[int, Iterable[Keyed[tuple[Opportunity, int]]]]]:
            for opp in self._changeable_opportunities(as_of, lower):
                times = opp.times
                entries = [
                    (times[step], f"{opp.external_id}-{step}", (opp, step))
                    for step in range(bisect_right(times, as_of))
                ]
                yield opp.created, [entry for entry in entries if (entry[0], entry[1]) >= lower]

        width = self._bucket_width(self.opportunity_slot)
        for changed_at, external_id, (opp, step) in merge_by_key(scan(), width):
            yield changed_at, external_id, self._stage_change(opp, step)

    def _changeable_opportunities(self, as_of: int, lower: Key) -> Iterator[Opportunity]:
        # Only deals created within one lifetime before ``lower`` can have changed since.
        first = self.first_opportunity_at(lower[0] - OPPORTUNITY_LIFETIME)
        return self.opportunities_as_of(as_of, first)

    # -- leads -------------------------------------------------------------------------------------

    def _lead_created(self, i: int, v: tuple[int, ...]) -> int:
        return self.start + int((i + (v[0] + 0.5) * _U) * self.lead_slot) + 1

    def _opportunity_of_lead(self, i: int) -> tuple[int, int, int, str, int] | None:
        """(index, created, owner, lead source, account) of the opportunity lead ``i`` converts
        into, if it ever does: the same values :meth:`opportunity` computes for it."""
        if not self.opportunity_count:
            return None
        j = self.lead_lag - (-i * self.opportunity_count // self.lead_count)  # lag + ceil(i·O/L)
        if self._lead_of_opportunity(j) != i:
            return None
        v = _draws(self._opp_hasher, j)
        if v[1] < _EXISTING or v[2] >= _FROM_LEAD:
            return None
        created = self._opportunity_created(j, v)
        account = ((v[21] << 16) | v[22]) % self._accounts
        return j, created, self._pick_rep(v[3], created), _lead_source(v[25]), account

    def lead(self, i: int) -> Lead:
        """The plan of lead ``i``."""
        v = _draws(self._lead_hasher, i)
        created = self._lead_created(i, v)
        first_name = vocab.FIRST_NAMES[v[4] % len(vocab.FIRST_NAMES)]
        last_name = vocab.LAST_NAMES[v[5] % len(vocab.LAST_NAMES)]
        conversion = self._opportunity_of_lead(i)
        # A lead that converts works at the account its deal is for.
        account = ((v[6] << 16) | v[7]) % self._accounts if conversion is None else conversion[4]
        email = None
        if v[8] >= _LEAD_NO_EMAIL:
            email = (
                f"{first_name}.{last_name}@{_EMAIL_DOMAINS[account % len(_EMAIL_DOMAINS)]}{account}.example"
            )
            email = email.lower()
        times = [created]
        statuses = ["Open"]
        opportunity = -1
        deleted = -1
        if conversion is not None:
            # The rep who converts the lead owned it all along: reps never come back, so one
            # still there at the conversion was there when the lead came in.
            opportunity, converted, owner, source, _ = conversion
            gap = converted - created
            for status, fraction in (("Contacted", 0.25), ("Qualified", 0.6)):
                moment = created + int(gap * fraction)
                if times[-1] < moment < converted:
                    times.append(moment)
                    statuses.append(status)
            times.append(converted)
            statuses.append("Converted")
        else:
            # Only leads that never convert can be unassigned: nobody works those.
            owner = -1 if v[1] < _LEAD_UNOWNED else self._pick_rep(v[2], created)
            source = _lead_source(v[3])
            if v[9] < _LEAD_CONTACTED:
                contacted = created + int((0.5 + 4.5 * v[10] * _U) * DAY)
                times.append(contacted)
                statuses.append("Contacted")
                if v[11] < _LEAD_UNQUALIFIED:
                    times.append(contacted + int((2 + 40 * v[12] * _U) * DAY))
                    statuses.append("Unqualified")
                else:
                    times.append(contacted + int((5 + 30 * v[12] * _U) * DAY))
                    statuses.append("Nurturing")
            if v[13] < _LEAD_DELETED:
                deleted = created + DAY + int(v[14] * _U * 89 * DAY)
                kept = bisect_right(times, deleted)
                times = times[:kept]
                statuses = statuses[:kept]
        return Lead(
            number=i,
            external_id=_lead_id(i),
            created=created,
            owner=owner,
            name=f"{first_name} {last_name}",
            email=email,
            account=account,
            source=source,
            statuses=tuple(statuses),
            times=tuple(times),
            deleted=deleted,
            opportunity=opportunity,
        )

    def leads_as_of(self, as_of: int, first: int = 0) -> Iterator[Lead]:
        """Plans of the leads created by ``as_of``, from index ``first``, in index order."""
        if not self.lead_count:
            return
        i = first
        while True:
            lead = self.lead(i)
            if lead.created > as_of:
                return
            yield lead
            i += 1

    @staticmethod
    def lead_updated_at(lead: Lead, as_of: int) -> int:
        """When ``lead`` last changed at or before ``as_of`` (it must exist by then)."""
        if 0 <= lead.deleted <= as_of:
            return lead.deleted
        return lead.times[bisect_right(lead.times, as_of) - 1]

    def lead_record(self, lead: Lead, as_of: int) -> LeadRecord:
        """``lead`` as the CRM shows it at ``as_of``."""
        steps = bisect_right(lead.times, as_of)
        at = lead.times[steps - 1]
        status = lead.statuses[steps - 1]
        converted = status == "Converted"
        deleted = 0 <= lead.deleted <= as_of
        return LeadRecord(
            external_id=lead.external_id,
            owner_external_id=None if lead.owner < 0 else self._rep_ids[lead.owner],
            name=lead.name,
            email=lead.email,
            company=_account_name(lead.account, self._account_names),
            account_external_id=_account_id(lead.account),
            source=lead.source,
            status=status,
            created_at=to_datetime(lead.created),
            is_converted=converted,
            converted_at=to_datetime(at) if converted else None,
            converted_opportunity_external_id=_opportunity_id(lead.opportunity) if converted else None,
            is_deleted=deleted,
            remote_updated_at=to_datetime(lead.deleted if deleted else at),
        )

    def first_lead_at(self, at: int) -> int:
        """An index at or before the first lead created at or after ``at``."""
        if not self.lead_count:
            return 0
        return max(0, int((at - self.start - 1) / self.lead_slot) - 2)

    def changed_leads(self, as_of: int, lower: Key) -> Iterator[Keyed[LeadRecord]]:
        """Leads as of ``as_of`` whose key (remote_updated_at, id) is ``>= lower``, in key order."""

        def scan() -> Iterator[tuple[int, Iterable[Keyed[Lead]]]]:
            first = self.first_lead_at(lower[0] - self.lead_lifetime)
            for lead in self.leads_as_of(as_of, first):
                updated = self.lead_updated_at(lead, as_of)
                yield (
                    lead.created,
                    ((updated, lead.external_id, lead),)
                    if (
                        updated,
                        lead.external_id,
                    )
                    >= lower
                    else (),
                )

        width = self._bucket_width(self.lead_slot)
        for updated, external_id, lead in merge_by_key(scan(), width):
            yield updated, external_id, self.lead_record(lead, as_of)

    # -- accounts ----------------------------------------------------------------------------------

    def account(self, a: int) -> Account:
        """The plan of account ``a``."""
        v = _draws(self._account_hasher, a)
        owners = [self._pick_rep(v[0], self.start)]
        changes = [self.start]
        # An account whose rep leaves goes to another rep on the day they leave (a second, later
        # leaver may hand it on once more).
        while self._left[owners[-1]] < _FOREVER:
            at = self._left[owners[-1]]
            owners.append(self._pick_rep(v[1 + len(owners)], at))
            changes.append(at)
        segment = _SEGMENT_NAMES[-1]
        for threshold, name in _SEGMENT_THRESHOLDS:
            if v[4] < threshold:
                segment = name
                break
        parent = -1
        if a >= _PARENTLESS and v[5] < _SUBSIDIARY:
            parent = ((v[6] << 16) | v[7]) % a  # an older account: no account is its own ancestor
        low, high = _EMPLOYEES[segment]
        return Account(
            number=a,
            external_id=_account_id(a),
            name=_account_name(a, self._account_names),
            industry=vocab.INDUSTRIES[_account_kind(a, self._account_names)],
            segment=segment,
            parent=parent,
            owners=tuple(owners),
            changes=tuple(changes),
            employees=int(low * (high / low) ** (v[8] * _U)),
        )

    def account_record(self, account: Account, as_of: int) -> AccountRecord:
        """``account`` as the CRM shows it at ``as_of`` (it must exist by then)."""
        step = bisect_right(account.changes, as_of) - 1
        return AccountRecord(
            external_id=account.external_id,
            name=account.name,
            owner_external_id=self._rep_ids[account.owners[step]],
            industry=account.industry,
            segment=account.segment,
            parent_external_id=None if account.parent < 0 else _account_id(account.parent),
            created_at=to_datetime(self.start),
            remote_updated_at=to_datetime(account.changes[step]),
            custom={"employees": account.employees},
        )

    def accounts_as_of(self, as_of: int, first: int = 0) -> Iterator[Account]:
        """Plans of the accounts that exist at ``as_of``, from index ``first``, in index order.

        The company's customer base is in the CRM from the first day of the history: every
        account exists from ``start`` on; deals and leads are spread over all of them.
        """
        if as_of < self.start:
            return
        for a in range(first, self._accounts):
            yield self.account(a)

    def changed_accounts(self, as_of: int, lower: Key) -> Iterator[Keyed[AccountRecord]]:
        """Accounts as of ``as_of`` whose key (remote_updated_at, id) is ``>= lower``, in key order.

        An account changes only at the start and when its rep leaves, so the keys take a handful
        of times: one pass over the accounts per time, in id order (the ids sort by index), holds
        nothing. A read after the last of those times costs nothing.
        """
        if as_of < self.start:
            return
        moments = sorted({self.start, *(t for t in self._left if t <= as_of)})
        for moment in moments:
            if moment < lower[0]:
                continue
            for account in self.accounts_as_of(as_of):
                step = bisect_right(account.changes, as_of) - 1
                if account.changes[step] == moment and (moment, account.external_id) >= lower:
                    yield moment, account.external_id, self.account_record(account, as_of)

    # -- activities --------------------------------------------------------------------------------

    def activities(self, opp: Opportunity) -> list[Activity]:
        """The plans of the activities around opportunity ``opp``, in occurrence order.

        The rep works the account from up to three weeks before the deal is opened (on the lead,
        when the deal comes from one) until it closes or is deleted. A deal's weight is one plus
        the open stages it walks past, plus three if it is won: the number of its activities is
        that weight times the configured rate, rounded at random. About one in seven is a
        prospecting touch on some other account instead (a call or an email, no deal). A deal
        that reaches Proposal also gets the proposal, sent the moment it enters that stage.
        Nothing is done by a rep after they leave.
        """
        stages = opp.stages
        walked = sum(1 for stage in stages if stage < _WON) - 1
        won = stages[-1] == _WON
        weight = 1 + walked + (_WON_ACTIVITY_BONUS if won else 0)
        d = _draws(self._activity_hasher, opp.number)
        count = int(self._activity_rate * weight + d[0] * _U)
        created = opp.created
        # Nothing happens before the company's first day, when its accounts come into the CRM.
        first = max(created - ACTIVITY_LEAD_IN, self.start)
        lead = opp.lead
        if lead >= 0:
            # Before the deal the rep worked its lead, which came in shortly before: not earlier.
            lead_created = self._lead_created(lead, _draws(self._lead_hasher, lead))
            first = max(first, lead_created)
        end = opp.deleted if opp.deleted >= 0 else opp.times[-1]
        span = max(0, end - first)
        left = self._left[opp.owner]
        out: list[Activity] = []
        base = opp.number
        for k in range(count):
            e = _pair_draws(self._activity_hasher, base, k)
            occurred = first + int(span * ((e[0] << 16) | e[1]) / 4_294_967_296)
            if occurred >= left:
                continue
            kind = _ACTIVITY_KIND_NAMES[-1]
            for threshold, choice in _ACTIVITY_KIND_THRESHOLDS:
                if e[2] < threshold:
                    kind = choice
                    break
            account = opp.account
            opportunity = opp.number if occurred >= created else -1
            on_lead = lead if occurred < created else -1
            if e[3] < _PROSPECTING:
                # A prospecting touch: a call or an email to another account, no deal yet.
                account = ((e[4] << 16) | e[5]) % self._accounts
                kind = _ACTIVITY_KINDS[0] if e[2] & 1 else _ACTIVITY_KINDS[1]
                opportunity = on_lead = -1
            out.append(
                self._activity(
                    f"ACT-{base + 1:08d}-{k + 1}", occurred, kind, opp.owner, account, opportunity, on_lead, e
                )
            )
        if _PROPOSAL in stages:
            sent = opp.times[stages.index(_PROPOSAL)]
            if sent < left:
                e = _pair_draws(self._activity_hasher, base, -1)
                out.append(
                    self._activity(
                        f"ACT-{base + 1:08d}-P",
                        sent,
                        _PROPOSAL_KIND,
                        opp.owner,
                        opp.account,
                        opp.number,
                        -1,
                        e,
                    )
                )
        out.sort(key=_by_occurrence)
        return out

    @staticmethod
    def _activity(
        external_id: str,
        occurred: int,
        kind: tuple[str, str, float],
        owner: int,
        account: int,
        opportunity: int,
        lead: int,
        e: tuple[int, ...],
    ) -> Activity:
        kind_name, subtype, _ = kind
        low, high = _DURATIONS.get(kind_name, (0, 0))
        duration = low + (high - low) * e[6] // 65536 if high else None
        outcome = None
        if kind_name == "call":
            outcome = _CALL_OUTCOME_NAMES[-1]
            for threshold, name in _CALL_OUTCOME_THRESHOLDS:
                if e[7] < threshold:
                    outcome = name
                    break
        deleted = -1
        if e[8] < _ACTIVITY_DELETED:
            deleted = occurred + 3600 + int(e[9] * _U * 3 * DAY)
        return Activity(
            external_id,
            occurred,
            kind_name,
            subtype,
            owner,
            account,
            opportunity,
            lead,
            duration,
            outcome,
            deleted,
        )

    def activity_record(self, activity: Activity, as_of: int) -> ActivityRecord:
        """``activity`` as the CRM shows it at ``as_of`` (it must have occurred by then)."""
        deleted = 0 <= activity.deleted <= as_of
        occurred = to_datetime(activity.occurred)
        name = _account_name(activity.account, self._account_names)
        return ActivityRecord(
            external_id=activity.external_id,
            type=activity.type,
            occurred_at=occurred,
            owner_external_id=self._rep_ids[activity.owner],
            subtype=activity.subtype,
            subject=f"{activity.subtype}: {name}",
            duration_seconds=activity.duration,
            outcome=activity.outcome,
            is_completed=True,
            account_external_id=_account_id(activity.account),
            opportunity_external_id=None
            if activity.opportunity < 0
            else _opportunity_id(activity.opportunity),
            lead_external_id=None if activity.lead < 0 else _lead_id(activity.lead),
            created_at=occurred,
            is_deleted=deleted,
            remote_updated_at=to_datetime(activity.deleted) if deleted else occurred,
        )

    @staticmethod
    def activity_updated_at(activity: Activity, as_of: int) -> int:
        """When ``activity`` last changed at or before ``as_of`` (it must have occurred by then)."""
        return activity.deleted if 0 <= activity.deleted <= as_of else activity.occurred

    def activity_deals_as_of(self, as_of: int, first: int = 0) -> Iterator[Opportunity]:
        """Plans of the opportunities, from index ``first``, that may have activities by ``as_of``
        (those opened up to three weeks after it, whose lead-in has begun)."""
        if not self.opportunity_count:
            return
        j = first
        while True:
            opp = self.opportunity(j)
            if opp.created - ACTIVITY_LEAD_IN > as_of:
                return
            yield opp
            j += 1

    def activities_as_of(self, opp: Opportunity, as_of: int) -> list[Activity]:
        """The activities around ``opp`` that have occurred by ``as_of``."""
        return [a for a in self.activities(opp) if a.occurred <= as_of]

    def changed_activities(self, as_of: int, lower: Key) -> Iterator[Keyed[ActivityRecord]]:
        """Activities as of ``as_of`` whose key (remote_updated_at, id) is ``>= lower``, in key order."""

        def scan() -> Iterator[tuple[int, Iterable[Keyed[Activity]]]]:
            first = self.first_opportunity_at(lower[0] - ACTIVITY_LIFETIME)
            for opp in self.activity_deals_as_of(as_of, first):
                entries = [
                    (self.activity_updated_at(a, as_of), a.external_id, a)
                    for a in self.activities_as_of(opp, as_of)
                ]
                yield opp.created - ACTIVITY_LEAD_IN, [e for e in entries if (e[0], e[1]) >= lower]

        width = self._bucket_width(self.opportunity_slot / max(1.0, self.settings.activities_per_deal))
        for updated, external_id, activity in merge_by_key(scan(), width):
            yield updated, external_id, self.activity_record(activity, as_of)


def _account_id(a: int) -> str:
    return f"ACC-{a + 1:08d}"


def _lead_id(i: int) -> str:
    return f"LEAD-{i + 1:08d}"


def _opportunity_id(j: int) -> str:
    return f"OPP-{j + 1:08d}"


def _default_as_of(settings: DemoSettings, as_of: datetime | None) -> int:
    chosen = as_of or settings.as_of or settings.history_end
    if chosen.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    return to_timestamp(chosen)


def generate_opportunities(
    settings: DemoSettings, as_of: datetime | None = None, *, company: Company | None = None
) -> Iterator[OpportunityRecord]:
    """Every opportunity that exists as of ``as_of``, in creation order, streamed.

    ``as_of`` defaults to the settings' pinned ``as_of``, else the end of the history, where the
    count is exactly ``settings.opportunities``. Needs no connector context: for benchmarks and
    fixtures. Pass ``company`` to reuse one across calls.
    """
    company = company or Company(settings)
    at = _default_as_of(settings, as_of)
    for opp in company.opportunities_as_of(at):
        yield company.opportunity_record(opp, at)


def generate_leads(
    settings: DemoSettings, as_of: datetime | None = None, *, company: Company | None = None
) -> Iterator[LeadRecord]:
    """Every lead that exists as of ``as_of``, in creation order, streamed.

    ``as_of`` as for :func:`generate_opportunities` (exactly ``settings.lead_count`` leads at the
    end of the history).
    """
    company = company or Company(settings)
    at = _default_as_of(settings, as_of)
    for lead in company.leads_as_of(at):
        yield company.lead_record(lead, at)


def generate_stage_changes(
    settings: DemoSettings, as_of: datetime | None = None, *, company: Company | None = None
) -> Iterator[StageChangeRecord]:
    """The stage history of every opportunity as of ``as_of``, opportunity by opportunity in
    creation order, streamed (``as_of`` as for :func:`generate_opportunities`)."""
    company = company or Company(settings)
    at = _default_as_of(settings, as_of)
    for opp in company.opportunities_as_of(at):
        yield from company.stage_change_records(opp, at)


def generate_accounts(
    settings: DemoSettings, as_of: datetime | None = None, *, company: Company | None = None
) -> Iterator[AccountRecord]:
    """Every account as of ``as_of`` (``settings.account_count`` of them from the start of the
    history on), in index order, streamed (``as_of`` as for :func:`generate_opportunities`)."""
    company = company or Company(settings)
    at = _default_as_of(settings, as_of)
    for account in company.accounts_as_of(at):
        yield company.account_record(account, at)


def generate_activities(
    settings: DemoSettings, as_of: datetime | None = None, *, company: Company | None = None
) -> Iterator[ActivityRecord]:
    """Every activity that has occurred by ``as_of``, deal by deal in creation order (each deal's
    in occurrence order), streamed (``as_of`` as for :func:`generate_opportunities`)."""
    company = company or Company(settings)
    at = _default_as_of(settings, as_of)
    for opp in company.activity_deals_as_of(at):
        for activity in company.activities_as_of(opp, at):
            yield company.activity_record(activity, at)
