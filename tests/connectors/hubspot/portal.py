"""Portals for the emulator: the recorded fixtures, a small realistic account, a synthetic big one."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from crm_perf_sync.kit.timeutil import utc_now
from tests.connectors.hubspot.emulator import Portal, iso, ms, parse_instant

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA_DIR = Path(os.environ.get("CRM_DATA_DIR", REPO_ROOT.parent / "shared" / "data")).resolve()
FIXTURES = DATA_DIR / "fixtures"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"hubspot_{name}.json").read_text(encoding="utf-8"))


def recorded_pipelines() -> list[dict[str, Any]]:
    """The recorded ``GET /crm/v3/pipelines/deals`` results, verbatim."""
    return list(fixture("v3_deal_pipelines__nango")["results"])


def add_recorded_deals(portal: Portal) -> list[int]:
    """The 21 recorded deals (list response), with what the recorded search adds (``pipeline``)."""
    searched = {r["id"]: r["properties"] for r in fixture("v3_deals_search_paging__nango")["results"]}
    ids = []
    for item in fixture("v3_deals_list__nango")["results"]:
        props = dict(item["properties"])
        props.update({k: v for k, v in searched.get(item["id"], {}).items() if k not in props})
        key = int(item["id"])
        created = parse_instant(item["createdAt"])
        history = {"dealstage": [(props["dealstage"], created)]} if props.get("dealstage") else {}
        portal.create(
            "deals",
            props,
            id=key,
            created=created,
            at=parse_instant(item["updatedAt"]),
            history=history,
        )
        ids.append(key)
    return ids


def recorded_portal(clock: Callable[[], datetime] = utc_now) -> Portal:
    """The recorded responses only: 21 deals of the default pipeline, no owners, no contacts."""
    portal = Portal(clock)
    portal.pipelines["deals"] = recorded_pipelines()
    add_recorded_deals(portal)
    return portal


def owner(
    id: int, first: str, last: str, teams: list[tuple[str, str, bool]], *, archived: bool = False
) -> dict[str, Any]:
    """An owner as ``GET /crm/v3/owners`` returns one."""
    return {
        "id": str(id),
        "email": f"{first.lower()}.{last.lower()}@example.com",
        "type": "PERSON",
        "firstName": first,
        "lastName": last,
        "userId": 9000 + id,
        "userIdIncludingInactive": 9000 + id,
        "createdAt": "2024-01-15T09:30:00.000Z",
        "updatedAt": "2025-11-02T16:04:11.512Z",
        "archived": archived,
        "teams": [{"id": t, "name": n, "primary": p} for t, n, p in teams],
    }


#: A second pipeline with stage ids of its own (HubSpot's are unique per portal).
ENTERPRISE = {
    "label": "Enterprise",
    "displayOrder": 1,
    "id": "enterprise",
    "stages": [
        {
            "label": label,
            "displayOrder": order,
            "metadata": {"isClosed": closed, "probability": probability},
            "id": stage,
            "createdAt": "2024-03-01T10:00:00Z",
            "updatedAt": "2024-03-01T10:00:00Z",
            "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
            "archived": False,
        }
        for order, (stage, label, closed, probability) in enumerate(
            [
                ("ent_discovery", "Discovery", "false", "0.1"),
                ("ent_proposal", "Proposal", "false", "0.5"),
                ("ent_won", "Signed", "true", "1.0"),
                ("ent_lost", "Lost", "true", "0.0"),
            ]
        )
    ],
    "createdAt": "2024-03-01T10:00:00Z",
    "updatedAt": "2024-03-01T10:00:00Z",
    "archived": False,
}


def small_portal(clock: Callable[[], datetime] = utc_now) -> Portal:
    """A small account as a sales team would have it, around the recorded deals.

    Three active owners in two teams and one deactivated; the recorded default pipeline and an
    enterprise pipeline; the 21 recorded deals plus eight owned deals with stage history (won,
    lost, open, in both pipelines, in EUR); contacts from subscriber to customer, some associated
    with deals; one archived deal and one archived contact.
    """
    portal = recorded_portal(clock)
    portal.pipelines["deals"].append(ENTERPRISE)
    portal.owners = [
        owner(101, "Ana", "Lopez", [("7", "EMEA", True)]),
        owner(102, "Ben", "Okafor", [("7", "EMEA", False), ("8", "Americas", True)]),
        owner(103, "Chen", "Wu", [("8", "Americas", True)]),
        owner(104, "Dora", "Ilic", [("7", "EMEA", True)], archived=True),
    ]
    base = ms(datetime.fromisoformat("2025-06-02T09:00:00+00:00"))
    day = 86_400_000
    stages = [
        # (id, owner, pipeline, stage path, amount, currency)
        (9001, "101", "default", ["appointmentscheduled", "contractsent", "closedwon"], "12000.00", None),
        (9002, "101", "default", ["appointmentscheduled", "closedlost"], "4000", None),
        (9003, "102", "default", ["qualifiedtobuy", "presentationscheduled"], "8500.50", None),
        (9004, "102", "enterprise", ["ent_discovery", "ent_proposal", "ent_won"], "150000", "EUR"),
        (9005, "103", "enterprise", ["ent_discovery", "ent_lost"], "90000", "EUR"),
        (9006, "103", "enterprise", ["ent_discovery"], None, None),
        (
            9007,
            "104",
            "default",
            ["appointmentscheduled", "decisionmakerboughtin", "closedwon"],
            "2500",
            None,
        ),
        (9008, "101", "default", ["appointmentscheduled"], "600", None),
    ]
    for n, (key, owner_id, pipeline, path, amount, currency) in enumerate(stages):
        created = base + n * 7 * day
        steps = [(stage, created + i * 5 * day + 3_600_000) for i, stage in enumerate(path)]
        closed = path[-1] in ("closedwon", "closedlost", "ent_won", "ent_lost")
        props = {
            "dealname": f"Deal {key}",
            "amount": amount,
            "deal_currency_code": currency,
            "dealstage": path[-1],
            "pipeline": pipeline,
            "closedate": iso(steps[-1][1]) if closed else iso(created + 60 * day),
            "createdate": iso(created),
            "hubspot_owner_id": owner_id,
            "dealtype": "newbusiness" if n % 2 == 0 else "existingbusiness",
        }
        portal.create(
            "deals", props, id=key, created=created, at=steps[-1][1] + 1000, history={"dealstage": steps}
        )
    lifecycle = [
        (501, "subscriber", None),
        (502, "lead", None),
        (503, "marketingqualifiedlead", None),
        (504, "salesqualifiedlead", 9003),
        (505, "opportunity", 9001),
        (506, "customer", 9004),
        (507, "lead", 9008),  # associated with a deal, lifecycle never moved: converted by the deal
        (508, "other", None),
    ]
    stage_order = [
        "subscriber",
        "lead",
        "marketingqualifiedlead",
        "salesqualifiedlead",
        "opportunity",
        "customer",
    ]
    for n, (key, stage, deal) in enumerate(lifecycle):
        created = base + n * 3 * day
        contact: dict[str, str | None] = {
            "firstname": f"Contact{key}",
            "lastname": "Example",
            "email": f"contact{key}@example.org",
            "company": "Example GmbH" if n % 2 else "Sample Inc",
            "hubspot_owner_id": "101" if n % 2 else "102",
            "lifecyclestage": stage,
            "hs_analytics_source": "ORGANIC_SEARCH" if n % 3 else "PAID_SOCIAL",
            "createdate": iso(created),
        }
        if stage in stage_order:
            for i, reached in enumerate(stage_order[: stage_order.index(stage) + 1]):
                contact[f"hs_v2_date_entered_{reached}"] = iso(created + i * day)
        portal.create("contacts", contact, id=key, created=created, at=created + 10 * day)
        if deal is not None:
            portal.associate("deals", deal, "contacts", key)
    portal.create(
        "deals",
        {"dealname": "Removed", "dealstage": "qualifiedtobuy", "pipeline": "default"},
        id=9099,
        created=base,
        at=base,
    )
    portal.archive("deals", 9099, at=base + day)
    portal.create(
        "contacts",
        {"lifecyclestage": "lead", "hs_v2_date_entered_lead": iso(base)},
        id=599,
        created=base,
        at=base,
    )
    portal.archive("contacts", 599, at=base + day)
    add_companies(portal, base)
    add_engagements(portal, base)
    return portal


#: HubSpot's default call outcome ids (``hs_call_disposition``), and one a portal added itself.
CONNECTED = "f240bbac-87c9-4f6e-bf70-924b57d47db7"
NO_ANSWER = "73a0d17f-1163-4015-bdd5-ec830791da20"
LEFT_VOICEMAIL = "b2cf5968-551e-4856-9783-52b3da59a7d0"
CUSTOM_OUTCOME = "3c1f0a52-6b7e-4d8e-9a41-5b2e8f0c7d19"


def add_companies(portal: Portal, base: int) -> None:
    """Four companies (one a subsidiary of another) linked to deals and contacts, one archived.

    Deal 9001's company is its primary one; 9003 has two and the second is primary; 9004 has two
    and none primary (HubSpot lets an import or an integration leave it so); contacts likewise.
    """
    day = 86_400_000
    companies = [
        # (id, name, owner, industry, type, parent, tier)
        (301, "Example GmbH", "101", "COMPUTER_SOFTWARE", "CUSTOMER", None, "gold"),
        (302, "Sample Inc", "102", "RETAIL", "PROSPECT", None, None),
        (303, "Sample Inc Europe", "102", "RETAIL", "CUSTOMER", "302", "silver"),
        (304, "Northwind Traders", "103", None, "PARTNER", None, None),
    ]
    for n, (key, name, owner_id, industry, kind, parent, tier) in enumerate(companies):
        created = base - 30 * day + n * day
        portal.create(
            "companies",
            {
                "name": name,
                "domain": f"{name.split()[0].lower()}{key}.example.com",
                "hubspot_owner_id": owner_id,
                "industry": industry,
                "type": kind,
                "hs_parent_company_id": parent,
                "account_tier": tier,
            },
            id=key,
            created=created,
            at=created + 2 * day,
        )
    portal.create("companies", {"name": "Duplicate of Sample Inc"}, id=399, created=base, at=base)
    portal.archive("companies", 399, at=base + day)
    portal.associate("deals", 9001, "companies", 301, primary=True)
    portal.associate("deals", 9003, "companies", 302)
    portal.associate("deals", 9003, "companies", 303, primary=True)
    portal.associate("deals", 9004, "companies", 304)
    portal.associate("deals", 9004, "companies", 302)
    portal.associate("contacts", 504, "companies", 304)
    portal.associate("contacts", 505, "companies", 301, primary=True)
    portal.associate("contacts", 506, "companies", 302)
    portal.associate("contacts", 506, "companies", 303, primary=True)


#: The portal's engagements: (object, id, owner, day after base, properties, company, deal, contact).
ENGAGEMENT_ROWS: list[
    tuple[str, int, str | None, int, dict[str, str | None], int | None, int | None, int | None]
] = [
    (
        "calls",
        7001,
        "101",
        1,
        {
            "hs_call_title": "Discovery call",
            "hs_call_duration": "125400",
            "hs_call_disposition": CONNECTED,
            "hs_call_status": "COMPLETED",
            "hs_call_direction": "OUTBOUND",
        },
        301,
        9001,
        505,
    ),
    (
        "calls",
        7002,
        "102",
        2,
        {
            "hs_call_title": "Follow-up",
            "hs_call_duration": "0",
            "hs_call_disposition": NO_ANSWER,
            "hs_call_status": "NO_ANSWER",
            "hs_call_direction": "OUTBOUND",
        },
        302,
        None,
        None,
    ),
    (
        "calls",
        7003,
        "101",
        3,
        {
            "hs_call_title": "Pricing questions",
            "hs_call_duration": "61500",
            "hs_call_disposition": CUSTOM_OUTCOME,
            "hs_call_status": "COMPLETED",
            "hs_call_direction": "INBOUND",
            "hs_activity_type": "Proposal sent",
        },
        301,
        9001,
        None,
    ),
    (
        "calls",
        7004,
        "103",
        4,
        {"hs_call_title": "Scheduled call", "hs_call_status": "QUEUED", "hs_call_direction": "OUTBOUND"},
        304,
        9006,
        None,
    ),
    (
        "meetings",
        7101,
        "102",
        5,
        {
            "hs_meeting_title": "Onsite workshop",
            "hs_meeting_outcome": "COMPLETED",
            "hs_activity_type": "Site visit",
        },
        303,
        9003,
        504,
    ),
    (
        "meetings",
        7102,
        "103",
        6,
        {"hs_meeting_title": "Quarterly review", "hs_meeting_outcome": "SCHEDULED", "hs_activity_type": None},
        304,
        None,
        None,
    ),
    (
        "emails",
        7201,
        "101",
        7,
        {"hs_email_subject": "Your quote", "hs_email_direction": "EMAIL", "hs_email_status": "SENT"},
        301,
        9001,
        505,
    ),
    (
        "emails",
        7202,
        "102",
        8,
        {
            "hs_email_subject": "Re: Your quote",
            "hs_email_direction": "INCOMING_EMAIL",
            "hs_email_status": None,
        },
        302,
        9003,
        None,
    ),
    ("notes", 7301, "103", 9, {"hs_note_body": "<p>Met at the trade fair.</p>"}, 304, None, None),
    (
        "tasks",
        7401,
        "101",
        10,
        {"hs_task_subject": "Send the contract", "hs_task_status": "COMPLETED", "hs_task_type": "EMAIL"},
        301,
        9001,
        None,
    ),
    (
        "tasks",
        7402,
        "102",
        11,
        {"hs_task_subject": "Call back", "hs_task_status": "NOT_STARTED", "hs_task_type": "CALL"},
        None,
        9003,
        504,
    ),
    (
        "tasks",
        7403,
        None,
        12,
        {"hs_task_subject": "Tidy up", "hs_task_status": "WAITING", "hs_task_type": "TODO"},
        None,
        None,
        None,
    ),
]


def add_engagements(portal: Portal, base: int) -> None:
    """Calls, meetings, emails, a note and tasks of the owners, linked to companies, deals and
    contacts as :data:`ENGAGEMENT_ROWS` says; and an archived call.

    Each happens at 10:00 on its day; a meeting lasts 90 minutes from then, a completed task was
    completed two hours after it was due.
    """
    hour = 3_600_000
    day = 24 * hour
    for kind, key, owner_id, offset, props, company, deal, contact in ENGAGEMENT_ROWS:
        at = base + offset * day + hour
        values: dict[str, str | None] = {"hs_timestamp": iso(at), "hubspot_owner_id": owner_id, **props}
        if kind == "meetings":
            values["hs_meeting_start_time"] = iso(at)
            values["hs_meeting_end_time"] = iso(at + 90 * 60_000)
        if kind == "tasks" and props.get("hs_task_status") == "COMPLETED":
            values["hs_task_completion_date"] = iso(at + 2 * hour)
        portal.create(kind, values, id=key, created=at - hour, at=at + hour)
        for other, linked in (("companies", company), ("deals", deal), ("contacts", contact)):
            if linked is not None:
                portal.associate(kind, key, other, linked)
    portal.create(
        "calls", {"hs_timestamp": iso(base), "hs_call_title": "Logged by mistake"}, id=7099, at=base
    )
    portal.archive("calls", 7099, at=base + hour)


#: Kinds of call and meeting a portal defines (``hs_activity_type``), as the random portal uses them.
CALL_AND_MEETING_TYPES: tuple[str | None, ...] = (None, None, "Site visit", "Demo", "Proposal sent")


def add_random_engagements(
    portal: Portal,
    count: int,
    *,
    owners: Sequence[str],
    companies: Sequence[int] = (),
    deals: Sequence[int] = (),
    seed: int = 11,
    start: int,
    span: int,
    first_id: int = 20_000_000,
) -> list[tuple[str, int]]:
    """``count`` engagements of random kinds, owners, times and links (deterministic for a seed).

    About one in eight shares its modified millisecond with the previous one (logging tools write
    in bursts). Returns (object, id) of each, in creation order.
    """
    rng = random.Random(seed)
    kinds = ("calls", "meetings", "emails", "notes", "tasks")
    created: list[tuple[str, int]] = []
    modified = start
    for n in range(count):
        kind = kinds[rng.randrange(len(kinds))]
        key = first_id + n
        if n == 0 or rng.random() >= 0.125:
            modified += rng.randint(1, max(1, 2 * span // max(1, count)))
        at = modified - rng.randint(0, 3_600_000)
        values: dict[str, str | None] = {
            "hs_timestamp": iso(at),
            "hubspot_owner_id": owners[rng.randrange(len(owners))] if rng.random() < 0.95 else None,
        }
        if kind == "calls":
            values.update(
                hs_call_title=f"Call {n}",
                hs_call_duration=str(rng.randint(0, 3_600_000)),
                hs_call_disposition=rng.choice([CONNECTED, NO_ANSWER, LEFT_VOICEMAIL]),
                hs_call_status="COMPLETED",
                hs_activity_type=rng.choice(CALL_AND_MEETING_TYPES),
            )
        elif kind == "meetings":
            values.update(
                hs_meeting_title=f"Meeting {n}",
                hs_meeting_start_time=iso(at),
                hs_meeting_end_time=iso(at + rng.randint(15, 120) * 60_000),
                hs_meeting_outcome=rng.choice(["COMPLETED", "COMPLETED", "SCHEDULED", "NO_SHOW"]),
                hs_activity_type=rng.choice(CALL_AND_MEETING_TYPES),
            )
        elif kind == "emails":
            values.update(
                hs_email_subject=f"Email {n}", hs_email_direction=rng.choice(["EMAIL", "INCOMING_EMAIL"])
            )
        elif kind == "tasks":
            values.update(
                hs_task_subject=f"Task {n}",
                hs_task_status=rng.choice(["COMPLETED", "NOT_STARTED"]),
                hs_task_type=rng.choice(["CALL", "EMAIL", "TODO"]),
            )
        portal.create(kind, values, id=key, created=at, at=modified)
        if companies and rng.random() < 0.8:
            portal.associate(kind, key, "companies", rng.choice(list(companies)))
        if deals and rng.random() < 0.5:
            portal.associate(kind, key, "deals", rng.choice(list(deals)))
        created.append((kind, key))
    return created


# -- a synthetic portal of any size, for the benchmark ---------------------------------------------

_DEFAULT_PATHS = [
    ["appointmentscheduled"],
    ["appointmentscheduled", "qualifiedtobuy"],
    ["appointmentscheduled", "qualifiedtobuy", "presentationscheduled"],
    ["appointmentscheduled", "qualifiedtobuy", "contractsent", "closedwon"],
    ["appointmentscheduled", "qualifiedtobuy", "closedlost"],
    ["appointmentscheduled", "decisionmakerboughtin", "closedwon"],
]


def synthetic_portal(
    deals: int,
    *,
    contacts: int = 2000,
    owners: int = 40,
    seed: int = 7,
    end: datetime | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> Portal:
    """``deals`` deals over the year before ``end`` (default: an hour ago), with history and contacts.

    Deterministic for a seed. Deals get 1-4 stage steps; about one in ten shares its modified
    millisecond with the previous one (HubSpot imports and workflows write in bursts).
    """
    rng = random.Random(seed)
    portal = Portal(clock)
    portal.pipelines["deals"] = recorded_pipelines()
    portal.owners = [
        owner(200 + i, f"Rep{i}", "Synthetic", [(str(10 + i % 4), f"Team {i % 4}", True)])
        for i in range(owners)
    ]
    finish = ms(end or utc_now() - timedelta(hours=1))
    span = 365 * 86_400_000
    start = finish - span
    step = span // max(1, deals)
    modified = start
    for n in range(deals):
        key = 100_000 + n
        if n == 0 or rng.random() >= 0.1:
            modified += rng.randint(1, max(1, 2 * step))
        path = _DEFAULT_PATHS[n % len(_DEFAULT_PATHS)]
        created = modified - rng.randint(1, 30) * 86_400_000
        gap = max(1, (modified - created) // len(path))
        history = {"dealstage": [(stage, created + i * gap) for i, stage in enumerate(path)]}
        closed = path[-1] in ("closedwon", "closedlost")
        props = {
            "dealname": f"Synthetic deal {n}",
            "amount": f"{rng.randint(5, 5000) * 100}.00" if n % 17 else None,
            "deal_currency_code": "EUR" if n % 11 == 0 else None,
            "dealstage": path[-1],
            "pipeline": "default",
            "closedate": iso(modified if closed else modified + 30 * 86_400_000),
            "createdate": iso(created),
            "hubspot_owner_id": str(200 + n % owners),
        }
        portal.create("deals", props, id=key, created=created, at=modified, history=history)
    for n in range(contacts):
        key = 5_000_000 + n
        created = start + n * (span // max(1, contacts))
        stage = ("lead", "marketingqualifiedlead", "opportunity", "customer")[n % 4]
        props = {
            "firstname": f"First{n}",
            "lastname": "Synthetic",
            "email": f"c{n}@example.org",
            "lifecyclestage": stage,
            "createdate": iso(created),
            "hs_v2_date_entered_lead": iso(created),
        }
        portal.create("contacts", props, id=key, created=created, at=created + 1000)
        if deals and n % 2 == 0:
            portal.associate("deals", 100_000 + (n * 7919) % deals, "contacts", key)
    return portal
