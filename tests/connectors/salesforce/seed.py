"""Realistic org contents for the emulator: the standard sales stages, roles, reps, accounts and
their contacts, leads, deals, and the calls, emails, tasks and meetings around them.

Everything is drawn from a seeded ``random.Random``: the same arguments give the same org.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from tests.connectors.salesforce.emulator import Org, Row

#: The stages a new Salesforce org ships with:
#: (label, sort order, default probability, closed, won, forecast category API name, label).
STANDARD_STAGES: tuple[tuple[str, int, int, bool, bool, str, str], ...] = (
    ("Prospecting", 1, 10, False, False, "Pipeline", "Pipeline"),
    ("Qualification", 2, 10, False, False, "Pipeline", "Pipeline"),
    ("Needs Analysis", 3, 20, False, False, "Pipeline", "Pipeline"),
    ("Value Proposition", 4, 50, False, False, "Pipeline", "Pipeline"),
    ("Id. Decision Makers", 5, 60, False, False, "BestCase", "Best Case"),
    ("Perception Analysis", 6, 70, False, False, "BestCase", "Best Case"),
    ("Proposal/Price Quote", 7, 75, False, False, "BestCase", "Best Case"),
    ("Negotiation/Review", 8, 90, False, False, "Forecast", "Commit"),
    ("Closed Won", 9, 100, True, True, "Closed", "Closed"),
    ("Closed Lost", 10, 0, True, False, "Omitted", "Omitted"),
)
STAGE = {stage[0]: stage for stage in STANDARD_STAGES}
OPEN_STAGES = [stage[0] for stage in STANDARD_STAGES if not stage[3]]
LEAD_SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other")
TYPES = ("New Customer", "Existing Customer - Upgrade", "Existing Customer - Replacement")
INDUSTRIES = ("Technology", "Manufacturing", "Retail", "Healthcare", "Finance", None)
ACCOUNT_TYPES = ("Prospect", "Customer - Direct", "Customer - Channel", "Channel Partner / Reseller")
#: The kinds of task a sales org logs: (TaskSubtype, Type picklist value), in proportion.
TASK_KINDS: tuple[tuple[str, str | None], ...] = (
    ("Call", "Call"),
    ("Call", None),
    ("Call", "Call"),
    ("Email", "Email"),
    ("Email", None),
    ("ListEmail", None),
    ("Task", "Site Visit"),
    ("Task", "Proposal"),
    ("Task", None),
    ("Task", "Other"),
    ("LinkedIn", None),
    ("Cadence", None),
)
EVENT_TYPES = ("Meeting", "Meeting", "Site Visit", None, "Demo")
CALL_RESULTS = ("Connected", "Left voicemail", "No answer", "Meeting booked")


@dataclass
class Seeded:
    """Ids of what :func:`seed_org` created, for tests to refer to."""

    roles: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)
    contacts: list[str] = field(default_factory=list)
    leads: list[str] = field(default_factory=list)
    opportunities: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


def add_standard_stages(org: Org, at: datetime) -> None:
    stages = org.table("OpportunityStage")
    for label, order, probability, closed, won, _category, category_label in STANDARD_STAGES:
        stages.insert(
            {
                "MasterLabel": label,
                "ApiName": label,
                "IsActive": True,
                "IsClosed": closed,
                "IsWon": won,
                "DefaultProbability": float(probability),
                "SortOrder": order,
                "ForecastCategoryName": category_label,
            },
            at=at,
        )


def opportunity_values(stage: str, **values: Any) -> dict[str, Any]:
    """The stage-derived fields of an opportunity in ``stage``, as Salesforce fills them."""
    label, _order, probability, closed, won, category, category_label = STAGE[stage]
    return {
        "StageName": label,
        "Probability": float(probability),
        "IsClosed": closed,
        "IsWon": won,
        "ForecastCategory": category,
        "ForecastCategoryName": category_label,
        **values,
    }


def seed_org(
    org: Org,
    *,
    opportunities: int = 40,
    leads: int = 60,
    reps: int = 4,
    accounts: int = 12,
    activities: int = 90,
    end: datetime | None = None,
    span: timedelta = timedelta(days=120),
    history: bool = True,
    seed: int = 1,
) -> Seeded:
    """Fill ``org`` with a small sales company whose last change is at ``end`` (an hour ago).

    Roles VP Sales > EMEA / AMER; ``reps`` active reps plus one who left; ``accounts`` accounts
    (every fourth a subsidiary of an earlier one) with two contacts each; leads (a third of them
    converted into opportunities and their account); opportunities spread evenly over ``span``,
    in every stage, with their stage history and an account; ``activities`` tasks and events
    (two tasks to one event) about those deals, accounts, contacts and leads, a tenth of them
    more than a year old and archived; the standard stages. One login user ``admin@example.com``.
    """
    rng = random.Random(seed)
    end = end or org.now().replace(microsecond=0) - timedelta(hours=1)
    start = end - span
    made = Seeded()
    add_standard_stages(org, start)
    roles = org.table("UserRole")
    vp = roles.insert({"Name": "VP Sales"}, at=start)
    made.roles = [vp["Id"]]
    for name in ("EMEA Sales", "AMER Sales"):
        made.roles.append(roles.insert({"Name": name, "ParentRoleId": vp["Id"]}, at=start)["Id"])
    users = org.table("User")
    first_names = ("Ana", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo")
    for number in range(reps + 1):
        first = first_names[number % len(first_names)]
        user = users.insert(
            {
                "Name": f"{first} Rep{number + 1}",
                "Email": f"{first.lower()}.rep{number + 1}@example.com",
                "Username": f"{first.lower()}.rep{number + 1}@example.com.org",
                "IsActive": number < reps,
                "UserRoleId": made.roles[1 + number % 2],
                "UserType": "Standard",
            },
            at=start + timedelta(minutes=number),
        )
        made.users.append(user["Id"])
    if "admin@example.com" not in org.users:
        org.add_user(
            "admin@example.com",
            "admin-password",
            "TOKEN",
            at=start,  # in the past like everything else: a later sync finds nothing new
            Email="admin@example.com",
            UserRoleId=vp["Id"],
        )
    owners = made.users
    # Creation dates fill the first 70% of the span, so that later changes still fit before ``end``.
    spread = span * 0.7
    account_table = org.table("Account")
    contact_table = org.table("Contact")
    for number in range(accounts):
        parent = made.accounts[number // 4 - 1] if number % 4 == 3 and number >= 4 else None
        account = account_table.insert(
            {
                "Name": f"Customer {number + 1} Inc",
                "OwnerId": owners[number % len(owners)],
                "Industry": INDUSTRIES[number % len(INDUSTRIES)],
                "Type": ACCOUNT_TYPES[number % len(ACCOUNT_TYPES)],
                "ParentId": parent,
            },
            at=start + timedelta(hours=number),
        )
        made.accounts.append(account["Id"])
        for person in range(2):
            contact = contact_table.insert(
                {
                    "Name": f"Contact {number + 1}.{person + 1}",
                    "Email": f"c{number + 1}.{person + 1}@customer.example",
                    "AccountId": account["Id"],
                },
                at=start + timedelta(hours=number),
            )
            made.contacts.append(contact["Id"])
    lead_table = org.table("Lead")
    opp_table = org.table("Opportunity")
    history_table = org.table("OpportunityHistory")
    for number in range(leads):
        created = start + spread * (number / max(1, leads))
        converted = number % 3 == 0 and number // 3 < opportunities
        row: Row = lead_table.insert(
            {
                "Name": f"Lead {number + 1}",
                "Email": f"lead{number + 1}@prospect.example",
                "Company": f"Prospect {number % 17 + 1} Ltd",
                "OwnerId": owners[number % len(owners)],
                "LeadSource": LEAD_SOURCES[number % len(LEAD_SOURCES)],
                "Status": "Closed - Converted"
                if converted
                else rng.choice(("Open - Not Contacted", "Working - Contacted")),
                "IsConverted": converted,
            },
            at=created,
        )
        made.leads.append(row["Id"])
    for number in range(opportunities):
        created = start + spread * (number / max(1, opportunities))
        stage = rng.choice([*OPEN_STAGES, "Closed Won", "Closed Lost", "Closed Won"])
        amount = float(rng.randrange(5, 500) * 1000)
        close = (created + timedelta(days=rng.randrange(10, 90))).date()
        modified = min(end, created + timedelta(days=rng.randrange(0, 30), seconds=rng.randrange(0, 86400)))
        opp = opp_table.insert(
            opportunity_values(
                stage,
                Name=f"Deal {number + 1}",
                OwnerId=owners[number % len(owners)],
                Amount=amount,
                CloseDate=close,
                Type=TYPES[number % len(TYPES)],
                LeadSource=LEAD_SOURCES[number % 5],
                AccountId=made.accounts[number % len(made.accounts)] if made.accounts else None,
                CreatedDate=created,
                LastModifiedDate=modified,
                SystemModstamp=modified,
            ),
            at=created,
        )
        made.opportunities.append(opp["Id"])
        if history:
            path = _path_to(stage)
            for position, step_stage in enumerate(path):
                at = created + (modified - created) * (position / max(1, len(path) - 1))
                history_table.insert(
                    {
                        "OpportunityId": opp["Id"],
                        "StageName": step_stage,
                        "Amount": amount,
                        "Probability": float(STAGE[step_stage][2]),
                        "CloseDate": close,
                        "CreatedDate": at,
                        "SystemModstamp": at,
                    },
                    at=at,
                )
    # Converted leads point at an opportunity, and were converted when it was created.
    for position, lead_id in enumerate(made.leads[::3]):
        if position >= len(made.opportunities):
            break
        opportunity = opp_table.rows[made.opportunities[position]]
        converted_on: date = opportunity["CreatedDate"].date()
        lead = lead_table.rows[lead_id]
        lead_table.rows[lead_id] = {
            **lead,
            "ConvertedDate": converted_on,
            "ConvertedOpportunityId": opportunity["Id"],
            "ConvertedAccountId": opportunity["AccountId"],
            "SystemModstamp": max(lead["SystemModstamp"], opportunity["CreatedDate"]),
        }
    lead_table.version += 1
    # Drawn from a generator of their own, so that the deals above stay what they always were.
    add_activities(org, made, activities, start=start, end=end, seed=seed)
    return made


def add_activities(
    org: Org, made: Seeded, count: int, *, start: datetime, end: datetime, seed: int = 1
) -> None:
    """``count`` activities of ``made``'s reps, two tasks to one event, spread over ``[start, end]``
    (a tenth of them more than a year before ``start``, archived): calls, emails, site visits,
    proposals and other tasks, meetings and visits (one all-day), each about a deal, an account,
    a contact or a lead; Salesforce derives their AccountId."""
    if count <= 0 or not made.users:
        return
    rng = random.Random(seed * 7919 + 11)
    tasks, events = org.table("Task"), org.table("Event")
    span = end - start
    for number in range(count):
        archived = number % 10 == 9
        at = start + span * (number / count) * 0.95
        if archived:
            at = start - timedelta(days=400 + number)
        at = at.replace(microsecond=0)
        owner = made.users[number % len(made.users)]
        what: str | None = None
        who: str | None = None
        link = number % 4
        if link == 0 and made.opportunities:
            what = made.opportunities[number % len(made.opportunities)]
        elif link == 1 and made.accounts:
            what = made.accounts[number % len(made.accounts)]
        elif link == 2 and made.contacts:
            who = made.contacts[number % len(made.contacts)]
        elif made.leads:
            who = made.leads[number % len(made.leads)]
        if number % 3 == 2:
            minutes = rng.choice((30, 45, 60, 90))
            all_day = number % 27 == 2
            values: dict[str, Any] = {
                "Subject": f"Meeting {number + 1}",
                "Type": EVENT_TYPES[number % len(EVENT_TYPES)],
                "EventSubtype": "Event",
                "OwnerId": owner,
                "WhoId": who,
                "WhatId": what,
                "Location": "Customer site" if number % 2 else "Video call",
                "IsArchived": archived,
            }
            if all_day:
                # An all-day event has a date only: its start is that day's midnight GMT.
                day = at.date()
                midnight = datetime.combine(day, datetime.min.time(), tzinfo=at.tzinfo)
                values.update(
                    IsAllDayEvent=True,
                    ActivityDate=day,
                    ActivityDateTime=None,
                    StartDateTime=midnight,
                    EndDateTime=midnight + timedelta(days=1),
                    DurationInMinutes=1440,
                )
            else:
                values.update(
                    IsAllDayEvent=False,
                    ActivityDate=at.date(),
                    ActivityDateTime=at,
                    StartDateTime=at,
                    EndDateTime=at + timedelta(minutes=minutes),
                    DurationInMinutes=minutes,
                )
            made.events.append(events.insert(values, at=at - timedelta(days=2))["Id"])
            continue
        subtype, kind = TASK_KINDS[len(made.tasks) % len(TASK_KINDS)]
        done = archived or number % 7 != 3
        values = {
            "Subject": f"{kind or subtype} {number + 1}",
            "TaskSubtype": subtype,
            "Type": kind,
            "Status": "Completed" if done else rng.choice(("Not Started", "In Progress")),
            "Priority": "Normal",
            "IsClosed": done,
            "ActivityDate": at.date(),
            "CompletedDateTime": at if done else None,
            "OwnerId": owner,
            "WhoId": who,
            "WhatId": what,
            "IsArchived": archived,
        }
        if subtype == "Call":
            values.update(
                CallType="Outbound",
                CallDurationInSeconds=rng.randrange(20, 1800) if done else None,
                CallDisposition=rng.choice(CALL_RESULTS) if done else None,
            )
        made.tasks.append(tasks.insert(values, at=at)["Id"])


def _path_to(stage: str) -> list[str]:
    """The stages a deal walked to reach ``stage`` (a lost deal was lost after a few)."""
    if stage == "Closed Lost":
        return [*OPEN_STAGES[:3], stage]
    if stage == "Closed Won":
        return [*OPEN_STAGES, stage]
    return OPEN_STAGES[: OPEN_STAGES.index(stage) + 1]


def bulk_opportunities(org: Org, count: int, *, end: datetime, owners: int = 50, seed: int = 3) -> None:
    """``count`` opportunities (no leads, no history) for benchmarks: one row every few seconds up to
    ``end``, every twentieth sharing its ``SystemModstamp`` with the one before (ties happen)."""
    rng = random.Random(seed)
    add_standard_stages(org, end - timedelta(days=3650))
    users = org.table("User")
    owner_ids = [
        users.insert({"Name": f"Rep {n}", "Email": f"rep{n}@example.com", "IsActive": True}, at=end)["Id"]
        for n in range(owners)
    ]
    if "admin@example.com" not in org.users:
        org.add_user("admin@example.com", "admin-password", "TOKEN", at=end)
    table = org.table("Opportunity")
    stages = [stage[0] for stage in STANDARD_STAGES]
    values = {stage: opportunity_values(stage) for stage in stages}
    first = end - timedelta(seconds=3 * count)
    base = dict.fromkeys(table.fields)
    for number in range(count):
        stage = stages[number % len(stages)]
        # Every twentieth row shares its predecessor's timestamp.
        slot = number - 1 if number % 20 == 1 else number
        at = first + timedelta(seconds=3 * slot)
        row = dict(base)
        row.update(values[stage])
        row.update(
            {
                "Id": table.new_id(),
                "Name": f"Deal {number}",
                "OwnerId": owner_ids[number % owners],
                "AccountId": None,
                "Amount": float(rng.randrange(1, 10_000) * 100),
                "CloseDate": (at + timedelta(days=30)).date(),
                "Type": TYPES[number % 3],
                "LeadSource": LEAD_SOURCES[number % 5],
                "CreatedDate": at,
                "LastModifiedDate": at,
                "SystemModstamp": at,
                "IsDeleted": False,
            }
        )
        table.rows[str(row["Id"])] = row
    table.version += 1


def minimal_org(org: Org) -> None:
    """The standard stages and the login user, nothing else."""
    add_standard_stages(org, org.now() - timedelta(days=400))
    if "admin@example.com" not in org.users:
        org.add_user("admin@example.com", "admin-password", "TOKEN", at=org.now() - timedelta(days=400))


def add_opportunities(
    org: Org,
    count: int,
    *,
    start: datetime,
    step: timedelta = timedelta(seconds=1),
    stage: str = "Prospecting",
) -> list[str]:
    """``count`` deals, the n-th last modified at ``start + n * step`` (``step`` 0: all tied)."""
    table = org.table("Opportunity")
    ids = []
    for number in range(count):
        at = start + step * number
        row = table.insert(
            opportunity_values(
                stage,
                Name=f"Deal {number}",
                Amount=float(1000 + number),
                CloseDate=(start + timedelta(days=30)).date(),
            ),
            at=at,
        )
        ids.append(str(row["Id"]))
    return ids
