"""An emulator of "Kestrel CRM", a CRM invented to differ from the guide's Acme CRM in every part a
spec describes. Its (invented) documentation says:

- base ``https://<region>.kestrel.example/api/v3``; HTTP Basic auth with the account's e-mail and
  an API token;
- every answer is HTTP 200 with ``{"code": 0, "msg": "ok", "data": …}``; an error is a non-zero
  ``code`` in the same envelope, still under HTTP 200: ``40101`` bad credentials, ``42900`` too
  many requests (try again), ``40001`` a bad parameter;
- lists take ``page`` (from 1) and ``size`` (at most 50, default 20) and answer
  ``{"list": [...], "has_more": true|false}``;
- times are epoch milliseconds (UTC);
- ``GET /stages``: ``[{"stage_id": 11, "stage_name": "Discovery"}, …]`` (not paged); a deal names
  its stage by id;
- ``GET /users``: ``{"uid", "name", "email", "enabled"}``;
- ``GET /deals?modified_from=…&modified_to=…`` (both ms, both included, both optional):
  ``{"deal_id", "subject", "uid", "value" (a JSON number), "currency_code", "stage_id",
  "created_ms", "close_ms" (expected or actual close), "modified_ms", "lead_id"}``; a deleted deal
  is no longer listed;
- ``GET /leads?modified_from=…&modified_to=…``: ``{"lead_id", "contact", "email", "org",
  "channel", "status", "uid", "created_ms", "converted", "converted_ms", "deal_id",
  "modified_ms"}``;
- ``GET /deleted?object=deal|lead&since=…&until=…`` (ms, optional): ``{"object_id",
  "deleted_ms"}``.

Lists are in ``(modified_ms, id)`` order.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tests.connectors.rest.emulators.base import Emulator, Reply, Request, Response

#: stage id -> (name, is_closed, is_won)
STAGES: dict[int, tuple[str, bool, bool]] = {
    11: ("Discovery", False, False),
    12: ("Demo", False, False),
    13: ("Negotiation", False, False),
    14: ("Closed Won", True, True),
    15: ("Closed Lost", True, False),
}
MAX_SIZE = 50
OK = 0
BAD_CREDENTIALS = 40101
THROTTLED = 42900
BAD_PARAMETER = 40001


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass
class KestrelUser:
    uid: str
    name: str
    email: str
    enabled: bool

    def to_json(self) -> dict[str, Any]:
        return {"uid": self.uid, "name": self.name, "email": self.email, "enabled": self.enabled}


@dataclass
class KestrelDeal:
    deal_id: int
    subject: str
    uid: str
    value: Decimal
    currency_code: str
    stage_id: int
    created: datetime
    close: datetime
    modified: datetime
    lead_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "deal_id": self.deal_id,
            "subject": self.subject,
            "uid": self.uid,
            "value": float(self.value),
            "currency_code": self.currency_code,
            "stage_id": self.stage_id,
            "created_ms": ms(self.created),
            "close_ms": ms(self.close),
            "modified_ms": ms(self.modified),
            "lead_id": self.lead_id,
        }


@dataclass
class KestrelLead:
    lead_id: str
    contact: str
    email: str
    org: str
    channel: str
    status: str
    uid: str
    created: datetime
    modified: datetime
    converted_at: datetime | None = None
    deal_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id,
            "contact": self.contact,
            "email": self.email,
            "org": self.org,
            "channel": self.channel,
            "status": self.status,
            "uid": self.uid,
            "created_ms": ms(self.created),
            "converted": self.converted_at is not None,
            "converted_ms": None if self.converted_at is None else ms(self.converted_at),
            "deal_id": self.deal_id,
            "modified_ms": ms(self.modified),
        }


class KestrelEmulator(Emulator):
    """Kestrel CRM's API v3. Knobs: :attr:`users`, :attr:`deals`, :attr:`leads` (by id),
    :meth:`change_deal`, :meth:`change_lead`, :meth:`delete_deal`; :meth:`throttle` answers the
    next requests with the ``42900`` code under HTTP 200."""

    def __init__(
        self, account: str = "ops@kestrel.example", token: str = "kt-secret", seed: int = 11, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.account, self.token = account, token
        self.users: list[KestrelUser] = []
        self.deals: dict[int, KestrelDeal] = {}
        self.leads: dict[str, KestrelLead] = {}
        self.deleted: list[tuple[str, str, datetime]] = []  # (object, id, when)
        self._seed(random.Random(seed))

    def _seed(self, rng: random.Random) -> None:
        self.users = [
            KestrelUser(f"u-{i}", f"Kestrel Rep {i}", f"rep{i}@kestrel.example", i != 4) for i in range(1, 5)
        ]
        start = datetime(2024, 2, 1, 3, 0, tzinfo=UTC)
        stage_ids = list(STAGES)
        for k in range(40):
            created = start + timedelta(days=6 * k, minutes=rng.randint(0, 600))
            deal = KestrelDeal(
                deal_id=5001 + k,
                subject=f"Kestrel deal {k}",
                uid=self.users[k % 4].uid,
                value=Decimal(rng.randint(1_000, 900_000)) / 10,
                currency_code="CNY" if k % 4 else "USD",
                stage_id=stage_ids[k % 5],
                created=created,
                close=created + timedelta(days=rng.randint(3, 60), hours=rng.randint(0, 23)),
                modified=created + timedelta(days=rng.randint(1, 70), milliseconds=rng.randint(0, 999)),
            )
            self.deals[deal.deal_id] = deal
        for k in range(30):
            created = start + timedelta(days=5 * k, minutes=rng.randint(0, 600))
            lead = KestrelLead(
                lead_id=f"L-{900 + k}",
                contact=f"Contact {k}",
                email=f"c{k}@example.org",
                org=f"Org {k % 7}",
                channel=("web", "event", "referral")[k % 3],
                status="open",
                uid=self.users[k % 3].uid,
                created=created,
                modified=created + timedelta(hours=rng.randint(1, 200)),
            )
            if k % 3 == 0:  # converted into a deal
                deal = self.deals[5001 + k]
                lead.converted_at, lead.deal_id, lead.status = (
                    created + timedelta(days=2),
                    deal.deal_id,
                    "converted",
                )
                deal.lead_id = lead.lead_id
            self.leads[lead.lead_id] = lead
        for deal_id in (5005, 5017):
            self.delete_deal(deal_id, when=self.deals[deal_id].modified + timedelta(days=1))

    # -- knobs ---------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The clock to the millisecond, as the API writes times."""
        moment = self.clock()
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)

    def change_deal(self, deal_id: int, **values: Any) -> None:
        with self.lock:
            deal = self.deals[deal_id]
            for name, value in values.items():
                setattr(deal, name, value)
            deal.modified = self.now()

    def change_lead(self, lead_id: str, **values: Any) -> None:
        with self.lock:
            lead = self.leads[lead_id]
            for name, value in values.items():
                setattr(lead, name, value)
            lead.modified = self.now()

    def delete_deal(self, deal_id: int, when: datetime | None = None) -> None:
        with self.lock:
            del self.deals[deal_id]
            self.deleted.append(("deal", str(deal_id), when or self.now()))

    def throttle(self, path: str, times: int = 1) -> None:
        self.fail(path, 200, times=times, body={"code": THROTTLED, "msg": "too many requests", "data": None})

    # -- the API -------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        expected = base64.b64encode(f"{self.account}:{self.token}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return _error(BAD_CREDENTIALS, "invalid credentials")
        if request.method != "GET" or not request.path.startswith("/api/v3/"):
            return _error(BAD_PARAMETER, f"no such method: {request.method} {request.path}")
        name = request.path.removeprefix("/api/v3/")
        with self.lock:
            if name == "stages":
                return _ok([{"stage_id": k, "stage_name": v[0]} for k, v in STAGES.items()])
            if name == "users":
                return self._page(request, [(u.uid, u.to_json()) for u in self.users])
            if name == "deals":
                lo, hi = _window(request, "modified_from", "modified_to")
                deals = sorted(
                    (d for d in self.deals.values() if lo <= ms(d.modified) <= hi), key=lambda d: d.modified
                )
                return self._page(request, [(str(d.deal_id), d.to_json()) for d in deals])
            if name == "leads":
                lo, hi = _window(request, "modified_from", "modified_to")
                leads = sorted(
                    (x for x in self.leads.values() if lo <= ms(x.modified) <= hi), key=lambda x: x.modified
                )
                return self._page(request, [(x.lead_id, x.to_json()) for x in leads])
            if name == "deleted":
                lo, hi = _window(request, "since", "until")
                kind = request.arg("object")
                gone = sorted((w, i) for o, i, w in self.deleted if o == kind and lo <= ms(w) <= hi)
                return self._page(
                    request,
                    [
                        (i, {"object_id": int(i) if kind == "deal" else i, "deleted_ms": ms(w)})
                        for w, i in gone
                    ],
                )
        return _error(BAD_PARAMETER, f"no such resource: {name}")

    def _page(self, request: Request, items: list[tuple[str, dict[str, Any]]]) -> Response:
        try:
            page = int(request.arg("page") or 1)
            size = min(int(request.arg("size") or 20), MAX_SIZE)
        except ValueError:
            return _error(BAD_PARAMETER, "page and size are integers")
        if page < 1 or size < 1:
            return _error(BAD_PARAMETER, "page and size start at 1")
        chosen = items[(page - 1) * size : page * size]
        return _ok({"list": [item for _, item in chosen], "has_more": page * size < len(items)})


def _ok(data: Any) -> Response:
    return Response(body={"code": OK, "msg": "ok", "data": data})


def _error(code: int, message: str) -> Response:
    return Response(body={"code": code, "msg": message, "data": None})


def _window(request: Request, low: str, high: str) -> tuple[int, int]:
    try:
        return int(request.arg(low) or 0), int(request.arg(high) or 2**62)
    except ValueError:
        raise Reply(200, {"code": BAD_PARAMETER, "msg": f"{low}/{high} are epoch milliseconds"}) from None
