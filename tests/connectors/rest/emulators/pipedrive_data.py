"""Companies for the Pipedrive emulator: the Zoho CRM sample imported into Pipedrive, and synthetic ones.

:func:`zoho_company` reads ``../shared/data/zoho_crm_sample`` (or ``$CRM_DATA_DIR``) the way an
import into Pipedrive would land it:

- users from ``Users.csv`` (id = ``USER_ID``, name = the full name Zoho keeps in "Last Name");
- one pipeline "Zoho" whose stages are the six open Zoho stages in :data:`ZOHO_STAGES` order;
- a deal per row of ``Potentials.csv``: ids 1.. in order of Created Time (then file order),
  title = Potential Name, owner = the user named in Potential Owner, value = Amount in USD,
  add_time = Created Time, expected_close_date = the Closing Date's date; Closed Won / Closed
  Lost deals are won / lost at the Closing Date (``won_time``/``lost_time``/``close_time``) and
  stay in the last stage; update_time = the close time of a closed deal, else add_time;
  probability = the file's Probability; the Zoho LEADID in the custom field
  :data:`~.pipedrive.ZOHO_LEADID_KEY`, and ``source_lead_id`` = the lead it was converted from;
- a lead per row of ``Leads.csv`` with id :func:`~.pipedrive.lead_uuid` of ``zoho-lead-<LEADID>``,
  title "<Company> lead", owner = Lead Owner, source_name = Lead Source, add_time = update_time =
  Created Time, the LEADID in the same custom field. A converted lead (CONVERTED = Yes) is marked
  deleted, as Pipedrive does on conversion; of the others, those Zoho calls "Junk Lead" or "Lost
  Lead" are archived;
- one custom deal field, "Zoho LEADID" (``varchar``), under :data:`~.pipedrive.ZOHO_LEADID_KEY`.

Zoho's times ("15 Apr, 2021 00:02:00") are read as UTC.
"""

from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .pipedrive import (
    ACTIVITY_TYPE_KEYS,
    ZOHO_LEADID_KEY,
    Activity,
    Company,
    Deal,
    DealField,
    Lead,
    Organization,
    Pipeline,
    Stage,
    User,
    lead_uuid,
    seconds,
)

DATA_DIR = Path(
    os.environ.get("CRM_DATA_DIR", Path(__file__).resolve().parents[4].parent / "shared" / "data")
).resolve()
ZOHO_DIR = DATA_DIR / "zoho_crm_sample"

#: Zoho's open stages in pipeline order, with the probability each stage gives a deal.
ZOHO_STAGES: tuple[tuple[str, int], ...] = (
    ("Prospect", 10),
    ("Qualification", 20),
    ("Needs Analysis", 40),
    ("Initial Offer", 60),
    ("Proposal/Price Quote", 75),
    ("Negotiation/Review", 90),
)
_ARCHIVED_STATUSES = frozenset({"Junk Lead", "Lost Lead"})


def zoho_time(text: str) -> int:
    """``"15 Apr, 2021 00:02:00"`` as epoch seconds (UTC)."""
    return seconds(datetime.strptime(text.strip(), "%d %b, %Y %H:%M:%S").replace(tzinfo=UTC))


def zoho_amount(text: str) -> float:
    """``"$22,700.00"`` as a number."""
    return float(text.replace("$", "").replace(",", "").strip() or 0)


def _rows(name: str, directory: Path) -> list[dict[str, str]]:
    with (directory / name).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def zoho_company(directory: Path | None = None) -> Company:
    """The Zoho CRM sample as a Pipedrive company (see the module docstring)."""
    folder = directory or ZOHO_DIR
    potentials = _rows("Potentials.csv", folder)
    lead_rows = _rows("Leads.csv", folder)
    first = min(zoho_time(r["Created Time"]) for r in [*potentials, *lead_rows])
    users = [
        User(int(r["USER_ID"]), " ".join(filter(None, (r["First Name"], r["Last Name"]))), r["Email"], first)
        for r in _rows("Users.csv", folder)
    ]
    users[0].is_admin = True
    by_name = {u.name: u.id for u in users}
    pipeline = Pipeline(1, "Zoho", 1, first, first)
    stages = [Stage(i, 1, name, i, p, first, first) for i, (name, p) in enumerate(ZOHO_STAGES, start=1)]
    stage_ids = {s.name: s.id for s in stages}
    last_stage = stages[-1].id

    ordered = sorted(enumerate(potentials), key=lambda pair: (zoho_time(pair[1]["Created Time"]), pair[0]))
    deals = []
    for deal_id, (_, row) in enumerate(ordered, start=1):
        added = zoho_time(row["Created Time"])
        closing = zoho_time(row["Closing Date"])
        stage = row["Stage"]
        status = {"Closed Won": "won", "Closed Lost": "lost"}.get(stage, "open")
        deals.append(
            Deal(
                id=deal_id,
                title=row["Potential Name"],
                owner_id=by_name[row["Potential Owner"]],
                pipeline_id=1,
                stage_id=stage_ids.get(stage, last_stage),
                value=zoho_amount(row["Amount"]),
                add_time=added,
                update_time=closing if status != "open" else added,
                status=status,
                won_time=closing if status == "won" else None,
                lost_time=closing if status == "lost" else None,
                expected_close_date=datetime.fromtimestamp(closing, UTC).date().isoformat(),
                probability=int(row["Probability"]) if row["Probability"] else None,
                origin="Import",
                source_lead_id=lead_uuid(f"zoho-lead-{row['LEADID']}"),
                custom_fields={ZOHO_LEADID_KEY: row["LEADID"]},
            )
        )

    ordered_leads = sorted(
        enumerate(lead_rows), key=lambda pair: (zoho_time(pair[1]["Created Time"]), pair[0])
    )
    leads = []
    for seq, (_, row) in enumerate(ordered_leads, start=1):
        added = zoho_time(row["Created Time"])
        converted = row["CONVERTED"] == "Yes"
        leads.append(
            Lead(
                id=lead_uuid(f"zoho-lead-{row['LEADID']}"),
                seq=seq,
                title=f"{row['Company']} lead",
                owner_id=by_name[row["Lead Owner"]],
                source_name=row["Lead Source"],
                add_time=added,
                update_time=added,
                is_deleted=converted,
                is_archived=not converted and row["Lead Status"] in _ARCHIVED_STATUSES,
                origin="Import",
                custom_fields={ZOHO_LEADID_KEY: row["LEADID"]},
            )
        )
    return Company(
        users=users,
        pipelines=[pipeline],
        stages=stages,
        deals=deals,
        leads=leads,
        deal_fields=[DealField(ZOHO_LEADID_KEY, "Zoho LEADID")],
    )


@dataclass(frozen=True)
class SyntheticShape:
    users: int = 5
    stages: int = 6
    won_share: float = 0.3
    lost_share: float = 0.2


def synthetic(
    n: int,
    *,
    leads: int | None = None,
    start: datetime | None = None,
    shape: SyntheticShape = SyntheticShape(),
    seed: int = 7,
) -> Company:
    """``n`` deals (and ``leads``, default ``n // 2``) over a year from ``start``, quickly.

    Deal ``i`` (1-based) is added ``i`` minutes after ``start`` and last updated up to a week
    later; several deals share an update second now and then, as ties should.
    """
    origin = start or datetime(2024, 1, 1, tzinfo=UTC)
    t0 = seconds(origin)
    rng = random.Random(seed)
    users = [
        User(i, f"User {i}", f"user{i}@example.com", t0, is_admin=i == 1) for i in range(1, shape.users + 1)
    ]
    stages = [Stage(i, 1, f"Stage {i}", i, min(100, 10 * i), t0, t0) for i in range(1, shape.stages + 1)]
    deals = []
    for i in range(1, n + 1):
        added = t0 + 60 * i
        roll = rng.random()
        status = (
            "won"
            if roll < shape.won_share
            else "lost"
            if roll < shape.won_share + shape.lost_share
            else "open"
        )
        closed = added + rng.randrange(0, 7 * 86400, 30)
        deals.append(
            Deal(
                id=i,
                title=f"Deal {i}",
                owner_id=rng.randrange(1, shape.users + 1),
                pipeline_id=1,
                stage_id=rng.randrange(1, shape.stages + 1),
                value=float(rng.randrange(1, 1000) * 100),
                add_time=added,
                update_time=closed if status != "open" else added,
                status=status,
                won_time=closed if status == "won" else None,
                lost_time=closed if status == "lost" else None,
                expected_close_date=(origin + timedelta(seconds=closed - t0)).date().isoformat(),
            )
        )
    lead_list = [
        Lead(
            id=lead_uuid(f"synthetic-lead-{j}"),
            seq=j,
            title=f"Lead {j}",
            owner_id=rng.randrange(1, shape.users + 1),
            source_name="API",
            add_time=t0 + 90 * j,
            update_time=t0 + 90 * j,
        )
        for j in range(1, (n // 2 if leads is None else leads) + 1)
    ]
    return Company(
        users=users,
        pipelines=[Pipeline(1, "Pipeline", 1, t0, t0)],
        stages=stages,
        deals=deals,
        leads=lead_list,
    )


#: A kind of activity a company added itself (Settings > Activity types), with its key.
CUSTOM_TYPE = "site_visit"


def with_activities(
    company: Company, *, organizations: int = 20, per_deal: int = 3, seed: int = 11
) -> Company:
    """``company`` with organizations its deals belong to and the activities of its reps.

    Organization ``j`` is added with the first deal; deal ``i`` belongs to organization
    ``i % organizations + 1`` (every seventh deal to none). Each deal has up to ``per_deal``
    activities of the six default types and :data:`CUSTOM_TYPE`, due from its add time on, some
    all-day (no due time), some with no duration, some not done; every fifth lead has a call, and
    each organization a meeting of its own.
    """
    rng = random.Random(seed)
    users = [u.id for u in company.users]
    first = min((d.add_time for d in company.deals), default=seconds(datetime(2024, 1, 1, tzinfo=UTC)))
    orgs = [
        Organization(j, f"Organization {j}", rng.choice(users), first, first, address=f"{j} Main Street")
        for j in range(1, organizations + 1)
    ]
    for deal in company.deals:
        deal.org_id = None if deal.id % 7 == 0 else deal.id % organizations + 1
    kinds = (*ACTIVITY_TYPE_KEYS, CUSTOM_TYPE)
    activities: list[Activity] = []

    def add(kind: str, owner: int, due: int, **links: Any) -> None:
        all_day = rng.random() < 0.2
        minutes = rng.choice((None, 15, 30, 45, 60, 90, 150))
        done = rng.random() < 0.7
        moment = datetime.fromtimestamp(due, UTC)
        activities.append(
            Activity(
                id=len(activities) + 1,
                subject=f"{kind.replace('_', ' ').capitalize()} {len(activities) + 1}",
                type=kind,
                owner_id=owner,
                due_date=moment.date().isoformat(),
                due_time=None if all_day else moment.strftime("%H:%M"),
                duration=None if minutes is None else f"{minutes // 60:02d}:{minutes % 60:02d}",
                done=done,
                marked_as_done_time=due if done else None,
                add_time=due - 3600,
                update_time=due if done else due - 3600,
                **links,
            )
        )

    for deal in company.deals:
        for _ in range(rng.randrange(0, per_deal + 1)):
            due = deal.add_time + rng.randrange(0, 30 * 86400, 300)
            add(rng.choice(kinds), deal.owner_id, due, deal_id=deal.id, org_id=deal.org_id, person_id=deal.id)
    for lead in company.leads[::5]:
        add("call", lead.owner_id, lead.add_time + 1800, lead_id=lead.id)
    for org in orgs:
        add("meeting", org.owner_id, first + 86400 * org.id, org_id=org.id)
    company.organizations = orgs
    company.activities = activities
    return company


def due_instant(activity: Activity) -> datetime:
    """When an activity is due, as the API's ``due_date`` and ``due_time`` (UTC) say."""
    text = activity.due_date + (f"T{activity.due_time}" if activity.due_time else "T00:00")
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
