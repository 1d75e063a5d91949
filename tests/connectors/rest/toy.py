"""A small invented CRM API for the rest connector's own tests: every paging style, auth kind and
error shape the spec language offers, over one table of deals.

- ``GET /v1/deals`` pages by a cursor in the body (``next_cursor``), filtered by ``updated_since``
  and ``updated_until`` (inclusive), ordered by (updated, id);
- ``GET /v1/deals/offset`` by ``offset``/``limit`` (``total`` in the body), ``/v1/deals/page`` by
  ``page`` (``more``), ``/v1/deals/after`` by the last id (``after``), ``/v1/deals/linked`` by
  ``Link`` headers, ``POST /v1/deals/search`` with a JSON body (keyset on ``after``);
- ``GET /v1/deleted?since=`` lists deletions; ``GET /v1/owners`` and ``GET /v1/stages`` small lists;
- auth: ``Authorization: Bearer <key>``, or an OAuth access token from ``POST /oauth/token``
  (refresh-token grant, ``expires_in`` seconds on the clock); anything else is 401;
- errors: ``{"code": 0, ...}`` on success, ``{"code": 4001, "msg": ...}`` under HTTP 200 when
  ``body_errors`` is set; faults from the base.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.connectors.rest.emulators.base import Emulator, Reply, Request, Response

API_KEY = "toy-key"
CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN = "cid", "csecret", "rtoken"


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Deal:
    id: int
    title: str
    owner: str | None
    stage: str
    amount: str | None
    updated: datetime
    created: datetime
    archived: bool = False

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "owner": {"id": self.owner} if self.owner else None,
            "stage_id": self.stage,
            "amount": self.amount,
            "updated_at": stamp(self.updated),
            "created_at": stamp(self.created),
            "archived": self.archived,
        }


class ToyCrm(Emulator):
    def __init__(self, clock: Callable[[], datetime]) -> None:
        super().__init__(clock=clock)
        self.deals: dict[int, Deal] = {}
        self.deleted: list[tuple[int, datetime]] = []
        self.tokens: dict[str, datetime] = {}
        self.token_ttl = 3600
        self.body_errors = 0
        self.stages = {"s1": "Qualified", "s2": "Proposal", "won": "Closed won", "lost": "Closed lost"}
        self._issued = 0

    # -- data --------------------------------------------------------------------------------------

    def add(self, count: int, *, at: datetime | None = None, **fields: Any) -> list[Deal]:
        made = []
        with self.lock:
            for _ in range(count):
                id = max(self.deals, default=0) + 1
                moment = at or self.clock()
                deal = Deal(
                    id=id,
                    title=fields.get("title", f"Deal {id}"),
                    owner=fields.get("owner", f"u{id % 3}"),
                    stage=fields.get("stage", ["s1", "s2", "won", "lost"][id % 4]),
                    amount=fields.get("amount", f"¥{id * 100:,}.50"),
                    updated=moment,
                    created=moment - timedelta(days=30),
                )
                self.deals[id] = deal
                made.append(deal)
        return made

    def touch(self, id: int, at: datetime, **changes: Any) -> None:
        with self.lock:
            deal = self.deals[id]
            for key, value in changes.items():
                setattr(deal, key, value)
            deal.updated = at

    def delete(self, id: int, at: datetime) -> None:
        with self.lock:
            del self.deals[id]
            self.deleted.append((id, at))

    # -- serving -------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.path == "/oauth/token":
            return self._token(request)
        self._authorize(request)
        if self.body_errors:
            self.body_errors -= 1
            return Response(200, {"code": 4001, "msg": "the server is busy, try later"})
        with self.lock:
            if request.path == "/v1/owners":
                owners = sorted({d.owner for d in self.deals.values() if d.owner})
                return Response(200, {"code": 0, "data": [{"id": o, "name": f"Rep {o}"} for o in owners]})
            if request.path == "/v1/stages":
                rows = [{"id": k, "name": v} for k, v in self.stages.items()]
                return Response(200, {"code": 0, "data": rows})
            if request.path == "/v1/deleted":
                since = parse(request.arg("since") or "1970-01-01T00:00:00Z")
                gone = [{"id": i, "at": stamp(at)} for i, at in self.deleted if at >= since]
                return Response(200, {"code": 0, "data": gone})
            return self._deals(request)

    def _authorize(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ").strip()
        if token == API_KEY:
            return
        expires = self.tokens.get(token)
        if expires is not None and self.clock() < expires:
            return
        raise Reply(401, {"code": 401, "msg": "invalid or expired token"})

    def _token(self, request: Request) -> Response:
        form = request.body or {}
        if (form.get("client_id"), form.get("client_secret"), form.get("refresh_token")) != (
            CLIENT_ID,
            CLIENT_SECRET,
            REFRESH_TOKEN,
        ):
            return Response(400, {"error": "invalid_grant"})
        self._issued += 1
        token = f"access-{self._issued}"
        self.tokens[token] = self.clock() + timedelta(seconds=self.token_ttl)
        return Response(200, {"access_token": token, "expires_in": self.token_ttl, "token_type": "Bearer"})

    def _ordered(self, request: Request) -> list[Deal]:
        since = request.arg("updated_since")
        until = request.arg("updated_until")
        rows = sorted(self.deals.values(), key=lambda d: (d.updated, d.id))
        if since:
            rows = [d for d in rows if d.updated >= parse(since)]
        if until:
            rows = [d for d in rows if d.updated <= parse(until)]
        return rows

    def _deals(self, request: Request) -> Response:
        limit = int(request.arg("limit") or 10)
        if request.path == "/v1/deals":
            rows = self._ordered(request)
            start = int(request.arg("cursor") or 0)
            page = rows[start : start + limit]
            more = start + limit < len(rows)
            return Response(
                200,
                {
                    "code": 0,
                    "data": [d.json() for d in page],
                    "next_cursor": str(start + limit) if more else None,
                },
            )
        by_id = sorted(self.deals.values(), key=lambda d: d.id)
        if request.path == "/v1/deals/offset":
            offset = int(request.arg("offset") or 0)
            page = by_id[offset : offset + limit]
            return Response(200, {"code": 0, "data": [d.json() for d in page], "total": len(by_id)})
        if request.path == "/v1/deals/page":
            number = int(request.arg("page") or 1)
            page = by_id[(number - 1) * limit : number * limit]
            return Response(
                200, {"code": 0, "data": [d.json() for d in page], "more": number * limit < len(by_id)}
            )
        if request.path in ("/v1/deals/after", "/v1/deals/search"):
            after = int((request.body or {}).get("after") or request.arg("after") or 0)
            ids = [d.id for d in by_id]
            start = bisect.bisect_right(ids, after)
            return Response(200, {"code": 0, "data": [d.json() for d in by_id[start : start + limit]]})
        if request.path == "/v1/deals/linked":
            offset = int(request.arg("offset") or 0)
            page = by_id[offset : offset + limit]
            headers: dict[str, str] = {}
            if offset + limit < len(by_id):
                following = f"{self.url}/v1/deals/linked?offset={offset + limit}&limit={limit}"
                headers["Link"] = f'<{following}>; rel="next"'
            return Response(200, [d.json() for d in page], headers)
        raise Reply(404, {"code": 404, "msg": f"no such path {request.path}"})
