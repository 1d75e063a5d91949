"""An emulator of "Acme CRM", the invented CRM that the rest connector's guide connects in its Part 2
(docs/connectors/rest.md, "Part 2: writing a spec for your CRM"). It serves exactly what the guide
says Acme's documentation says:

- ``GET /v2/deals?updated_after=…&cursor=…&per_page=…`` answers
  ``{"items": [...], "meta": {"next_cursor": "…"}}``, ``next_cursor`` null on the last page;
- a deal is ``{"id", "title", "owner_id", "amount": "12,500.00", "currency", "stage", "created":
  "2024-05-01 09:30:00" (Berlin time, no zone), "closed_on": "2024-06-01", "updated":
  "2024-06-01T08:00:00Z", "deleted": false}``;
- ``GET /v2/users`` answers ``{"items": [{"id", "full_name", "mail"}]}`` (one page);
- requests carry ``X-Acme-Key: <key>``; a wrong key is HTTP 401 ``{"error": {"code": "bad_key"}}``,
  too many requests HTTP 429 ``{"error": {"code": "rate_limited", "message": …}}``.

Where the guide is silent the emulator chooses: ``updated_after`` is inclusive (``updated >=``)
and accepts any ISO 8601 date-time; deals come in ``(updated, id)`` order; ``per_page`` defaults
to 25 and is capped at 25, so a few dozen deals take several pages; a cursor is opaque text; a
deal's ``closed_on`` is its expected close date while open and its close date once closed (the
guide's example is an open "proposal" deal with a ``closed_on``); ``owner_id`` may be null.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from tests.connectors.rest.emulators.base import Emulator, Reply, Request, Response

BERLIN = ZoneInfo("Europe/Berlin")
STAGES = ("lead", "proposal", "won", "lost")
MAX_PER_PAGE = 25


@dataclass
class AcmeDeal:
    id: int
    title: str
    owner_id: int | None
    amount: Decimal
    currency: str
    stage: str
    created: datetime  # aware, UTC
    closed_on: date
    updated: datetime  # aware, UTC
    deleted: bool = False
    #: raw JSON values sent instead of the typed ones (a malformed amount, say)
    raw: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "owner_id": self.owner_id,
            "amount": f"{self.amount:,.2f}",
            "currency": self.currency,
            "stage": self.stage,
            "created": self.created.astimezone(BERLIN).strftime("%Y-%m-%d %H:%M:%S"),
            "closed_on": self.closed_on.isoformat(),
            "updated": self.updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "deleted": self.deleted,
        } | self.raw


@dataclass
class AcmeUser:
    id: int
    full_name: str
    mail: str


def seed(n_users: int = 5, n_deals: int = 36, rng_seed: int = 7) -> tuple[list[AcmeUser], list[AcmeDeal]]:
    """A deterministic company: users 1..n, deals 101.. over 2024, a couple deleted."""
    rng = random.Random(rng_seed)
    users = [AcmeUser(i, f"Rep {i} Müller", f"rep{i}@acme.example") for i in range(1, n_users + 1)]
    deals: list[AcmeDeal] = []
    start = datetime(2024, 1, 8, 7, 15, tzinfo=UTC)
    for k in range(n_deals):
        created = start + timedelta(days=7 * k, hours=rng.randint(0, 10), minutes=rng.randint(0, 59))
        stage = STAGES[k % 4]
        closed_on = (created + timedelta(days=rng.randint(5, 80))).astimezone(BERLIN).date()
        amount = Decimal(rng.randint(100, 5_000_000)) / 100
        deals.append(
            AcmeDeal(
                id=101 + k,
                title=f"Deal {101 + k}",
                owner_id=None if k == 5 else users[k % n_users].id,
                amount=amount,
                currency="EUR" if k % 3 else "USD",
                stage=stage,
                created=created,
                closed_on=closed_on,
                updated=created + timedelta(days=rng.randint(1, 90), seconds=rng.randint(0, 3600)),
                deleted=k in (7, 22),
            )
        )
    return users, deals


class AcmeEmulator(Emulator):
    """Acme CRM's API v2. Knobs: :attr:`users`, :attr:`deals` (by id), :meth:`change` and
    :meth:`delete` (which stamp ``updated`` with the emulator's clock; ``raw={...}`` sends JSON
    values as they are)."""

    def __init__(self, api_key: str = "acme-test-key", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api_key = api_key
        users, deals = seed()
        self.users: list[AcmeUser] = users
        self.deals: dict[int, AcmeDeal] = {d.id: d for d in deals}

    # -- knobs ---------------------------------------------------------------------------------

    def change(self, deal_id: int, **values: Any) -> None:
        with self.lock:
            deal = self.deals[deal_id]
            for name, value in values.items():
                setattr(deal, name, value)
            deal.updated = self.clock().replace(microsecond=0)

    def delete(self, deal_id: int) -> None:
        self.change(deal_id, deleted=True)

    # -- the API -------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.headers.get("x-acme-key") != self.api_key:
            raise Reply(401, {"error": {"code": "bad_key", "message": "unknown API key"}})
        if request.method != "GET":
            raise Reply(405, {"error": {"code": "method_not_allowed", "message": request.method}})
        if request.path == "/v2/users":
            return Response(body={"items": [dict(vars(u)) for u in self.users]})
        if request.path == "/v2/deals":
            return Response(body=self._deals(request))
        raise Reply(404, {"error": {"code": "not_found", "message": request.path}})

    def _deals(self, request: Request) -> dict[str, Any]:
        since_text = request.arg("updated_after")
        since = None
        if since_text:
            try:
                since = datetime.fromisoformat(since_text.replace("Z", "+00:00"))
            except ValueError:
                raise Reply(
                    400, {"error": {"code": "bad_request", "message": f"updated_after: {since_text}"}}
                ) from None
            if since.tzinfo is None:
                raise Reply(400, {"error": {"code": "bad_request", "message": "updated_after needs a zone"}})
        try:
            per_page = min(int(request.arg("per_page") or MAX_PER_PAGE), MAX_PER_PAGE)
            offset = int((request.arg("cursor") or "c0").removeprefix("c"))
        except ValueError:
            raise Reply(400, {"error": {"code": "bad_request", "message": "per_page or cursor"}}) from None
        with self.lock:
            matching = sorted(
                (d for d in self.deals.values() if since is None or d.updated >= since),
                key=lambda d: (d.updated, d.id),
            )
            page = [d.to_json() for d in matching[offset : offset + per_page]]
        more = offset + per_page < len(matching)
        return {"items": page, "meta": {"next_cursor": f"c{offset + per_page}" if more else None}}
