"""Datasets for the Zoho CRM emulator: the sample org exported from Zoho CRM, and synthetic orgs.

:func:`zoho_org` reads ``../shared/data/zoho_crm_sample`` (or ``$CRM_DATA_DIR/zoho_crm_sample``):

- ``Users.csv`` (11 users; the full name is in "Last Name", "First Name" is empty; the first user
  is taken for the org's administrator, which the export does not name);
- ``Potentials.csv`` (3,632 rows) served as the ``Deals`` module ("Potentials" is the module's
  old name): ``Deal_Name``, ``Owner`` ``{name, id, email}`` (the user whose full name matches
  "Potential Owner", case-insensitive), ``Amount`` and ``Expected_Revenue`` as numbers (from
  ``"$22,700.00"``), ``Closing_Date`` as a date, ``Stage``, ``Probability``, ``Lead_Source``,
  ``Type``, and the CSV's ``LEADID`` kept in a custom field ``LEADID`` (a string);
- ``Leads.csv`` (3,900 rows) served as ``Leads``: ``Last_Name``, ``Full_Name``, ``Company``,
  ``Email``, ``Mobile``, ``Website``, ``Industry``, ``Lead_Source``, ``Lead_Status``, ``Owner``,
  the CSV's LEADID in ``LEADID``, and conversion as Zoho reports it: ``Converted__s`` (boolean),
  ``Converted_Deal`` (the lookup ``{name, id}`` of the deal carrying the same LEADID) and
  ``Converted_Date_Time`` (that deal's created time); both null for a lead not converted.

Times in the CSVs (``"15 Apr, 2021 00:02:00"``) are read as UTC. The export has no modified
time, so ``Modified_Time`` starts equal to ``Created_Time`` (which makes many ties: 49 deals were
created in the same second). Record ids are 19-digit numbers in Zoho's style, stable across runs.
"""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

#: Zoho ids are 19-digit numbers whose high digits are the org's; the low ones count up.
ID_BASE = 4_150_868_000_000_000_000
_USER_OFFSET = 400_000
_DEAL_OFFSET = 1_000_000
_LEAD_OFFSET = 5_000_000

DEAL_STAGES: tuple[tuple[str, int, str], ...] = (
    # (stage, default probability, forecast type): the Deals pipeline of the sample org.
    ("Prospect", 10, "Open"),
    ("Qualification", 20, "Open"),
    ("Needs Analysis", 40, "Open"),
    ("Initial Offer", 60, "Open"),
    ("Proposal/Price Quote", 75, "Open"),
    ("Negotiation/Review", 90, "Open"),
    ("Closed Won", 100, "Closed Won"),
    ("Closed Lost", 0, "Closed Lost"),
)
LEAD_STATUSES: tuple[str, ...] = (
    "Not Contacted",
    "Attempted to Contact",
    "Contact in Future",
    "Contacted",
    "Pre Qualified",
    "Junk Lead",
    "Lost Lead",
)
LEAD_SOURCES: tuple[str, ...] = (
    "Advertisement",
    "Cold Call",
    "Employee Referral",
    "External Referral",
    "OnlineStore",
    "Partner",
    "Public Relations",
    "Sales Mail Alias",
    "Trade Show",
    "Web Research",
)


def data_dir() -> Path:
    """The shared data folder: ``$CRM_DATA_DIR`` or ``../shared/data`` beside the repository."""
    env = os.environ.get("CRM_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4].parent / "shared" / "data"


@dataclass
class User:
    id: int
    full_name: str
    email: str
    first_name: str | None = None
    status: str = "active"  # active, inactive (deactivated) or deleted
    confirm: bool = True
    admin: bool = False
    created: datetime = field(default_factory=lambda: datetime(2019, 1, 1, tzinfo=UTC))
    modified: datetime = field(default_factory=lambda: datetime(2019, 1, 1, tzinfo=UTC))

    @property
    def last_name(self) -> str:
        if self.first_name and self.full_name.startswith(self.first_name + " "):
            return self.full_name[len(self.first_name) + 1 :]
        return self.full_name

    def ref(self, *, email: bool = True) -> dict[str, Any]:
        """The user as a lookup value (``Owner``, ``Created_By``...)."""
        value: dict[str, Any] = {"name": self.full_name, "id": str(self.id)}
        if email:
            value["email"] = self.email
        return value


@dataclass(slots=True)
class Record:
    """One record: its field values as Zoho renders them, but for id and the two timestamps."""

    id: int
    module: str
    values: dict[str, Any]
    created: datetime
    modified: datetime
    owner_id: int | None = None


@dataclass
class Org:
    users: list[User]
    records: dict[str, list[Record]]  # module API name -> records

    @property
    def deals(self) -> list[Record]:
        return self.records["Deals"]

    @property
    def leads(self) -> list[Record]:
        return self.records["Leads"]


# -- parsing ------------------------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    """``"15 Apr, 2021 00:02:00"`` (UTC) as an aware datetime."""
    return datetime.strptime(text.strip(), "%d %b, %Y %H:%M:%S").replace(tzinfo=UTC)


def parse_date(text: str) -> date | None:
    return parse_time(text).date() if text.strip() else None


def parse_money(text: str) -> float | None:
    """``"$22,700.00"`` as ``22700.0``; empty as None."""
    cleaned = text.strip().replace("$", "").replace(",", "")
    return float(cleaned) if cleaned else None


def _int_or_none(text: str) -> int | None:
    return int(text) if text.strip() else None


def _str_or_none(text: str) -> str | None:
    return text.strip() or None


def _read(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        yield from csv.DictReader(handle)


# -- the sample org -----------------------------------------------------------------------------


def zoho_org(folder: Path | None = None) -> Org:
    """The sample org of ``zoho_crm_sample`` (see the module docstring)."""
    folder = folder or data_dir() / "zoho_crm_sample"
    users = [
        User(
            id=ID_BASE + _USER_OFFSET + int(row["USER_ID"]),
            full_name=row["Last Name"].strip(),
            email=row["Email"].strip(),
            first_name=_str_or_none(row["First Name"]),
        )
        for row in _read(folder / "Users.csv")
    ]
    users[0].admin = True  # every org has an administrator; the export does not say who: the first user
    by_name = {user.full_name.lower(): user for user in users}

    def owner(name: str) -> User | None:
        return by_name.get(name.strip().lower())

    deals: list[Record] = []
    converted_to: dict[str, Record] = {}  # LEADID -> the deal the lead was converted to
    for index, row in enumerate(_read(folder / "Potentials.csv"), start=1):
        created = parse_time(row["Created Time"])
        closing = parse_date(row["Closing Date"])
        user = owner(row["Potential Owner"])
        values: dict[str, Any] = {
            "Deal_Name": row["Potential Name"],
            "Owner": user.ref() if user else None,
            "Amount": parse_money(row["Amount"]),
            "Expected_Revenue": parse_money(row["Expected Revenue"]),
            "Closing_Date": closing.isoformat() if closing else None,
            "Stage": _str_or_none(row["Stage"]),
            "Probability": _int_or_none(row["Probability"]),
            "Lead_Source": _str_or_none(row["Lead Source"]),
            "Type": _str_or_none(row["Type"]),
            "LEADID": _str_or_none(row["LEADID"]),
        }
        deals.append(
            Record(
                ID_BASE + _DEAL_OFFSET + index, "Deals", values, created, created, user.id if user else None
            )
        )
        if values["LEADID"]:
            converted_to.setdefault(values["LEADID"], deals[-1])

    leads: list[Record] = []
    for row in _read(folder / "Leads.csv"):
        created = parse_time(row["Created Time"])
        user = owner(row["Lead Owner"])
        lead_id = row["LEADID"].strip()
        converted = row["CONVERTED"].strip().lower() == "yes"
        deal = converted_to.get(lead_id) if converted else None
        values = {
            "Last_Name": row["Last Name"],
            "Full_Name": row["Last Name"],
            "Company": _str_or_none(row["Company"]),
            "Email": _str_or_none(row["Email"]),
            "Mobile": _str_or_none(row["Mobile"]),
            "Website": _str_or_none(row["Website"]),
            "Industry": _str_or_none(row["Industry"]),
            "Lead_Source": _str_or_none(row["Lead Source"]),
            "Lead_Status": _str_or_none(row["Lead Status"]),
            "Owner": user.ref() if user else None,
            "LEADID": lead_id,
            "Converted__s": converted,
            # rendered in the org's time zone by the emulator
            "Converted_Date_Time": deal.created if deal else None,
            "Converted_Deal": {"name": deal.values["Deal_Name"], "id": str(deal.id)} if deal else None,
        }
        leads.append(
            Record(
                ID_BASE + _LEAD_OFFSET + int(lead_id),
                "Leads",
                values,
                created,
                created,
                user.id if user else None,
            )
        )
    return Org(users, {"Deals": deals, "Leads": leads})


# -- synthetic orgs -----------------------------------------------------------------------------


def synthetic(
    n: int, *, leads: int | None = None, users: int = 10, seed: int = 0, start: datetime | None = None
) -> Org:
    """An org of ``n`` deals and ``leads`` leads (``n // 2`` unless told), built quickly.

    Created times step one second apart from ``start`` (2024-01-01 UTC unless told), with every
    tenth record sharing its predecessor's second, so sorts and increments meet ties.
    """
    rng = random.Random(seed)
    start = start or datetime(2024, 1, 1, tzinfo=UTC)
    people = [
        User(
            id=ID_BASE + _USER_OFFSET + 1 + i,
            full_name=f"User {i + 1}",
            email=f"user{i + 1}@example.com",
            first_name="User",
            admin=i == 0,
        )
        for i in range(users)
    ]
    second = timedelta(seconds=1)

    def stamp(i: int) -> datetime:
        return start + (i - i // 10) * second

    refs = [user.ref() for user in people]  # shared: records never change a lookup in place
    random_ = rng.random  # randrange is several times slower, and 100k records call it thrice each
    deals: list[Record] = []
    for i in range(n):
        stage, probability, _ = DEAL_STAGES[int(random_() * len(DEAL_STAGES))]
        user = people[i % users]
        created = stamp(i)
        values: dict[str, Any] = {
            "Deal_Name": f"Deal {i + 1}",
            "Owner": refs[i % users],
            "Amount": float(1_000 + 100 * int(random_() * 990)),
            "Expected_Revenue": None,
            "Closing_Date": (created + timedelta(days=1 + int(random_() * 119))).date().isoformat(),
            "Stage": stage,
            "Probability": probability,
            "Lead_Source": LEAD_SOURCES[i % len(LEAD_SOURCES)],
            "Type": "New Business" if i % 3 else "Existing Business",
            "LEADID": None,
        }
        deals.append(Record(ID_BASE + _DEAL_OFFSET + 1 + i, "Deals", values, created, created, user.id))
    count = n // 2 if leads is None else leads
    lead_records: list[Record] = []
    for i in range(count):
        user = people[i % users]
        created = stamp(i)
        lead_values: dict[str, Any] = {
            "Last_Name": f"Lead {i + 1}",
            "Full_Name": f"Lead {i + 1}",
            "Company": f"Company {i % 97}",
            "Email": f"lead{i + 1}@example.com",
            "Mobile": None,
            "Website": None,
            "Industry": None,
            "Lead_Source": LEAD_SOURCES[i % len(LEAD_SOURCES)],
            "Lead_Status": LEAD_STATUSES[i % len(LEAD_STATUSES)],
            "Owner": refs[i % users],
            "LEADID": str(i + 1),
            "Converted__s": False,
            "Converted_Date_Time": None,
            "Converted_Deal": None,
        }
        lead_records.append(
            Record(ID_BASE + _LEAD_OFFSET + 1 + i, "Leads", lead_values, created, created, user.id)
        )
    return Org(people, {"Deals": deals, "Leads": lead_records})


_ACCOUNT_OFFSET = 7_000_000
_ACTIVITY_OFFSET = 8_000_000
INDUSTRIES = ("Retail", "Manufacturing", "Technology", "Government", "Consulting")
ACCOUNT_TYPES = ("Customer", "Prospect", "Partner", "Reseller")
CALL_TYPES = ("Outbound", "Inbound", "Missed")
CALL_RESULTS = ("Interested", "Not interested", "No response", "Requested more info", None)
TASK_STATUSES = ("Not Started", "Deferred", "In Progress", "Completed", "Waiting for input")


def with_activities(org: Org, *, accounts: int = 25, seed: int = 5) -> Org:
    """``org`` with accounts its deals belong to, and calls, meetings (Events) and tasks.

    Account ``j`` (1-based) is the parent of account ``j + 1`` when ``j`` is a multiple of 5;
    deal ``i`` belongs to account ``i % accounts`` (every sixth deal to none). Each deal has a call
    (or two), every third deal a meeting and every fourth a task, related to it (``What_Id`` with
    ``$se_module`` Deals); each account has a call of its own, and every fifth lead a call related
    to the lead (``$se_module`` Leads). Activities happen after their deal was created; a call
    lasts a whole number of seconds, some not yet made (``Outgoing_Call_Status`` Scheduled).
    """
    rng = random.Random(seed)
    refs = {user.id: user.ref() for user in org.users}
    people = [user.id for user in org.users]
    first = min((d.created for d in org.deals), default=datetime(2024, 1, 1, tzinfo=UTC))
    account_records: list[Record] = []
    for j in range(1, accounts + 1):
        owner = people[j % len(people)]
        parent = account_records[-1] if j % 5 == 1 and j > 1 else None
        values: dict[str, Any] = {
            "Account_Name": f"Account {j}",
            "Owner": refs[owner],
            "Industry": INDUSTRIES[j % len(INDUSTRIES)],
            "Account_Type": ACCOUNT_TYPES[j % len(ACCOUNT_TYPES)],
            "Parent_Account": (
                {"name": parent.values["Account_Name"], "id": str(parent.id)} if parent is not None else None
            ),
            "Website": f"https://account{j}.example.com",
        }
        created = first + timedelta(hours=j)
        account_records.append(
            Record(ID_BASE + _ACCOUNT_OFFSET + j, "Accounts", values, created, created, owner)
        )
    for i, deal in enumerate(org.deals):
        account = None if i % 6 == 5 else account_records[i % accounts]
        deal.values["Account_Name"] = (
            {"name": account.values["Account_Name"], "id": str(account.id)} if account is not None else None
        )

    calls: list[Record] = []
    events: list[Record] = []
    tasks: list[Record] = []
    ids = iter(range(ID_BASE + _ACTIVITY_OFFSET + 1, ID_BASE + _ACTIVITY_OFFSET + 10_000_000))

    def related(record: Record, module: str) -> dict[str, Any]:
        name = record.values.get(_NAMES[module])
        return {"What_Id": {"name": name, "id": str(record.id)}, "$se_module": module, "Who_Id": None}

    def call(owner: int, when: datetime, link: dict[str, Any]) -> None:
        scheduled = rng.random() < 0.15
        kind = "Outbound" if scheduled else CALL_TYPES[int(rng.random() * len(CALL_TYPES))]
        seconds = 0 if scheduled or kind == "Missed" else 30 + int(rng.random() * 1800)
        values: dict[str, Any] = {
            "Subject": f"Call {len(calls) + 1}",
            "Owner": refs[owner],
            "Call_Type": kind,
            "Call_Purpose": "Prospecting",
            "Call_Start_Time": when,
            "Call_Duration": f"{seconds // 60:02d}:{seconds % 60:02d}",
            "Call_Duration_in_seconds": seconds,
            "Call_Result": None if scheduled else CALL_RESULTS[int(rng.random() * len(CALL_RESULTS))],
            "Outgoing_Call_Status": ("Scheduled" if scheduled else "Completed")
            if kind == "Outbound"
            else None,
            **link,
        }
        calls.append(Record(next(ids), "Calls", values, when, when, owner))

    for i, deal in enumerate(org.deals):
        owner = deal.owner_id or people[0]
        start = deal.created + timedelta(hours=1 + int(rng.random() * 200))
        for n in range(1 + (i % 2)):
            call(owner, start + timedelta(days=n), related(deal, "Deals"))
        if i % 3 == 0:
            minutes = 30 * (1 + int(rng.random() * 4))
            meeting: dict[str, Any] = {
                "Event_Title": f"Meeting {len(events) + 1}",
                "Owner": refs[owner],
                "Start_DateTime": start + timedelta(days=2),
                "End_DateTime": start + timedelta(days=2, minutes=minutes),
                "All_day": False,
                "Venue": "Customer site" if i % 2 else "Online",
                **related(deal, "Deals"),
            }
            events.append(Record(next(ids), "Events", meeting, start, start, owner))
        if i % 4 == 0:
            status = TASK_STATUSES[int(rng.random() * len(TASK_STATUSES))]
            due = (start + timedelta(days=5)).date()
            task: dict[str, Any] = {
                "Subject": f"Task {len(tasks) + 1}",
                "Owner": refs[owner],
                "Due_Date": due.isoformat(),
                "Status": status,
                "Priority": "High" if i % 8 == 0 else "Normal",
                "Closed_Time": start + timedelta(days=4) if status == "Completed" else None,
                **related(deal, "Deals"),
            }
            tasks.append(Record(next(ids), "Tasks", task, start, start, owner))
    for account in account_records:
        call(account.owner_id or people[0], account.created + timedelta(days=1), related(account, "Accounts"))
    for lead in org.leads[::5]:
        call(lead.owner_id or people[0], lead.created + timedelta(hours=2), related(lead, "Leads"))
    org.records.update({"Accounts": account_records, "Calls": calls, "Events": events, "Tasks": tasks})
    return org


_NAMES = {"Deals": "Deal_Name", "Accounts": "Account_Name", "Leads": "Full_Name"}
