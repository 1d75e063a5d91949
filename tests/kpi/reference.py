"""An independent reference for the KPI library, computed in plain Python from the CSV exports.

Nothing here imports the csv connector or the KPI engine: the files are read with the ``csv``
module and the definitions of ``config/kpis/default.yaml`` are restated by hand, so the engine and
this reference can only agree by both being right.

A result is keyed like a ``kpi_value`` row: ``(kpi_id, grain, period_key, scope, scope_id, currency)``.
The semantics restated here (the engine's contract):

- a record counts in grain ``all`` always, and in the week, month, quarter and year of its KPI's period
  field when that field is set; ``period_key`` is the ISO date of the period's start (the business
  timezone is UTC and the fiscal year starts in January in every example configuration);
- it counts for the company, for its owner (``<connection>:<owner id>``) and for every team above
  the owner (``<namespace>:<team id>``);
- a ratio is a ratio of sums (``sample_count`` = the denominator's records; value null when the
  denominator is 0); a count's value is the number of records; a sum adds the non-null amounts per
  currency; a duration is the fractional days from start to end of records with both set and
  end >= start, with mean (total / count) or median (mean of the middle two for an even count);
- a (scope, period) has a row only when at least one record of the KPI falls in it.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal

import yaml

from tests.conftest import DATA_DIR, REPO_ROOT

# (kpi_id, grain, period_key, scope, scope_id, currency)
Key = tuple[str, str, str, str, str, str]
Scope = tuple[str, str]
COMPANY: Scope = ("company", "company")
GRAINS = ("week", "month", "quarter", "year", "all")


@dataclass(frozen=True)
class Expected:
    value: float | None
    numerator: float
    # None: the contract leaves the denominator of this KPI type open (sums), so it is not checked.
    denominator: float | None
    sample_count: int
    check_denominator: bool = True


def min_samples() -> dict[str, int]:
    """``min_sample`` of every KPI of the shipped library (a KPI without one flags nothing)."""
    library = yaml.safe_load((REPO_ROOT / "config" / "kpis" / "default.yaml").read_text(encoding="utf-8"))
    return {kpi["id"]: int(kpi.get("min_sample", 1)) for kpi in library["kpis"]}


def periods(day: date | None) -> list[tuple[str, str]]:
    """``(grain, period_key)`` of every period a record dated ``day`` counts in (UTC, fiscal = calendar)."""
    out = [("all", "all")]
    if day is not None:
        out.append(("week", (day - timedelta(days=day.weekday())).isoformat()))  # weeks start on Monday
        out.append(("month", date(day.year, day.month, 1).isoformat()))
        out.append(("quarter", date(day.year, (day.month - 1) // 3 * 3 + 1, 1).isoformat()))
        out.append(("year", date(day.year, 1, 1).isoformat()))
    return out


def period_bounds(grain: str, period_key: str) -> tuple[date | None, date | None]:
    """The start (inclusive) and end (exclusive) dates of a period, ``None`` for grain ``all``."""
    if grain == "all":
        return None, None
    start = date.fromisoformat(period_key)
    if grain == "week":
        return start, start + timedelta(days=7)
    months = {"month": 1, "quarter": 3, "year": 12}[grain]
    index = start.year * 12 + start.month - 1 + months
    return start, date(index // 12, index % 12 + 1, 1)


@dataclass
class _Cell:
    numerator: float = 0.0
    denominator: float = 0.0
    numerator_records: int = 0
    denominator_records: int = 0
    samples: list[float] = field(default_factory=list)


Kind = Literal["ratio", "count", "sum", "mean", "median"]


class Reference:
    """Adds records of KPIs into every (grain, period, scope) cell they count in."""

    def __init__(self) -> None:
        self._cells: dict[Key, _Cell] = defaultdict(_Cell)
        self._kinds: dict[str, Kind] = {}

    def _each(
        self, kpi: str, kind: Kind, day: date | None, scopes: Sequence[Scope], currency: str
    ) -> Iterator[_Cell]:
        assert self._kinds.setdefault(kpi, kind) == kind, kpi
        for grain, period_key in periods(day):
            for scope, scope_id in scopes:
                yield self._cells[(kpi, grain, period_key, scope, scope_id, currency)]

    def ratio(
        self,
        kpi: str,
        day: date | None,
        scopes: Sequence[Scope],
        *,
        numerator: float | None,
        denominator: float | None,
        currency: str = "",
    ) -> None:
        """One record: what it adds to each side, ``None`` for a side it is not a record of."""
        if numerator is None and denominator is None:
            return
        for cell in self._each(kpi, "ratio", day, scopes, currency):
            if numerator is not None:
                cell.numerator += numerator
                cell.numerator_records += 1
            if denominator is not None:
                cell.denominator += denominator
                cell.denominator_records += 1

    def count(self, kpi: str, day: date | None, scopes: Sequence[Scope]) -> None:
        for cell in self._each(kpi, "count", day, scopes, ""):
            cell.numerator += 1
            cell.numerator_records += 1

    def total(
        self, kpi: str, day: date | None, scopes: Sequence[Scope], amount: float, currency: str
    ) -> None:
        for cell in self._each(kpi, "sum", day, scopes, currency):
            cell.numerator += amount
            cell.numerator_records += 1

    def duration(
        self,
        kpi: str,
        stat: Literal["mean", "median"],
        day: date | None,
        scopes: Sequence[Scope],
        days: float,
    ) -> None:
        for cell in self._each(kpi, stat, day, scopes, ""):
            cell.samples.append(days)

    def expected(self) -> dict[Key, Expected]:
        out: dict[Key, Expected] = {}
        for key, cell in self._cells.items():
            kind = self._kinds[key[0]]
            if kind == "ratio":
                out[key] = Expected(
                    value=cell.numerator / cell.denominator if cell.denominator else None,
                    numerator=cell.numerator,
                    denominator=cell.denominator,
                    sample_count=cell.denominator_records,
                )
            elif kind == "count":
                out[key] = Expected(cell.numerator, cell.numerator, None, cell.numerator_records)
            elif kind == "sum":
                out[key] = Expected(
                    cell.numerator, cell.numerator, None, cell.numerator_records, check_denominator=False
                )
            else:
                total, n = sum(cell.samples), len(cell.samples)
                value = total / n if kind == "mean" else statistics.median(cell.samples)
                out[key] = Expected(value, total, float(n), n)
        return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def days_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 86_400


# --- Maven Analytics "CRM + Sales + Opportunities" (config/examples/maven.yaml) -------------------

MAVEN = DATA_DIR / "maven_crm_sales_opportunities"
MAVEN_KPIS = (
    "win_rate",
    "won_deals",
    "won_revenue",
    "average_deal_size",
    "sales_cycle_days_mean",
    "sales_cycle_days_median",
)


def _iso_date(text: str) -> date | None:
    return date.fromisoformat(text) if text.strip() else None


def maven_team_scopes() -> dict[str, list[Scope]]:
    """Agent name -> the owner scope and every team scope above it (manager's team and its region)."""
    out: dict[str, list[Scope]] = {}
    for row in read_csv(MAVEN / "sales_teams.csv"):
        agent = row["sales_agent"]
        out[agent] = [
            ("owner", f"maven:{agent}"),
            ("team", f"maven:team:{row['manager']}"),
            ("team", f"maven:region:{row['regional_office']}"),
        ]
    return out


def maven_reference() -> dict[Key, Expected]:
    agents = maven_team_scopes()
    ref = Reference()
    for row in read_csv(MAVEN / "sales_pipeline.csv"):
        scopes = [COMPANY, *agents[row["sales_agent"]]]
        stage = row["deal_stage"]
        assert stage in {"Prospecting", "Engaging", "Won", "Lost"}, stage
        won, closed = stage == "Won", stage in {"Won", "Lost"}
        engaged, closed_on = _iso_date(row["engage_date"]), _iso_date(row["close_date"])
        amount = float(row["close_value"]) if row["close_value"].strip() else None
        if closed:
            ref.ratio("win_rate", closed_on, scopes, numerator=1.0 if won else None, denominator=1.0)
        if not won:
            continue
        ref.count("won_deals", closed_on, scopes)
        if amount is not None:
            ref.total("won_revenue", closed_on, scopes, amount, "USD")
        ref.ratio(
            "average_deal_size",
            closed_on,
            scopes,
            numerator=amount,
            denominator=None if amount is None else 1.0,
            currency="USD",
        )
        if engaged is not None and closed_on is not None and closed_on >= engaged:
            # Both are dates (midnight UTC): whole days.
            days = float((closed_on - engaged).days)
            ref.duration("sales_cycle_days_mean", "mean", closed_on, scopes, days)
            ref.duration("sales_cycle_days_median", "median", closed_on, scopes, days)
    return ref.expected()


def maven_cycle_days() -> dict[tuple[str, str, str, str], list[float]]:
    """The days from engagement to close of every won deal (``sales_cycle_days_mean``'s records),
    per ``(grain, period_key, scope, scope_id)`` cell they count in."""
    agents = maven_team_scopes()
    out: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for row in read_csv(MAVEN / "sales_pipeline.csv"):
        engaged, closed_on = _iso_date(row["engage_date"]), _iso_date(row["close_date"])
        if row["deal_stage"] != "Won" or engaged is None or closed_on is None or closed_on < engaged:
            continue
        for grain, period_key in periods(closed_on):
            for scope, scope_id in [COMPANY, *agents[row["sales_agent"]]]:
                out[(grain, period_key, scope, scope_id)].append(float((closed_on - engaged).days))
    return dict(out)


def maven_breakdown_reference() -> dict[Key, Expected]:
    """``win_rate`` and ``won_revenue`` broken down by product and by the account's sector.

    The breakdown is folded into the KPI slot of the key: ``"win_rate|product|GTX Pro"``. As in
    config/examples/maven.yaml: the pipeline's "GTXPro" is "GTX Pro", accounts.csv's sector
    "technolgy" is "technology", and a deal without an account has no sector ('').
    """
    sectors = {
        row["account"]: {"technolgy": "technology"}.get(row["sector"], row["sector"])
        for row in read_csv(MAVEN / "accounts.csv")
    }
    agents = maven_team_scopes()
    ref = Reference()
    for row in read_csv(MAVEN / "sales_pipeline.csv"):
        scopes = [COMPANY, *agents[row["sales_agent"]]]
        stage = row["deal_stage"]
        won, closed = stage == "Won", stage in {"Won", "Lost"}
        closed_on = _iso_date(row["close_date"])
        amount = float(row["close_value"]) if row["close_value"].strip() else None
        product = {"GTXPro": "GTX Pro"}.get(row["product"], row["product"])
        sector = sectors.get(row["account"], "") if row["account"].strip() else ""
        for dimension, value in (("product", product), ("custom.account_sector", sector)):
            if closed:
                ref.ratio(
                    f"win_rate|{dimension}|{value}",
                    closed_on,
                    scopes,
                    numerator=1.0 if won else None,
                    denominator=1.0,
                )
            if won and amount is not None:
                ref.total(f"won_revenue|{dimension}|{value}", closed_on, scopes, amount, "USD")
    return ref.expected()


# --- Zoho-CRM-style export (config/examples/zoho.yaml) ---------------------------------------------

ZOHO = DATA_DIR / "zoho_crm_sample"
ZOHO_KPIS = (
    "lead_conversion_rate",
    "win_rate",
    "won_deals",
    "won_revenue",
    "average_deal_size",
    "sales_cycle_days_mean",
    "sales_cycle_days_median",
)
_MONTHS = {name: i for i, name in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}


def zoho_time(text: str) -> datetime | None:
    """``"15 Apr, 2021 00:03:00"`` (no zone; the example reads it in UTC) as a naive UTC datetime."""
    if not text.strip():
        return None
    day, month, rest = text.split(" ", 2)
    year, clock = rest.split(" ")
    hour, minute, second = (int(part) for part in clock.split(":"))
    return datetime(int(year), _MONTHS[month.rstrip(",")], int(day), hour, minute, second)  # noqa: DTZ001


def _fold(name: str) -> str:
    return " ".join(name.split()).casefold()


def zoho_owners() -> dict[str, str]:
    """Owner name (case and spacing folded) -> USER_ID: both files join Users.csv on "Last Name"."""
    return {_fold(row["Last Name"]): row["USER_ID"] for row in read_csv(ZOHO / "Users.csv")}


def zoho_user_names() -> dict[str, str]:
    return {f"zoho:{row['USER_ID']}": row["Last Name"] for row in read_csv(ZOHO / "Users.csv")}


def _zoho_scopes(owners: dict[str, str], owner_name: str) -> list[Scope]:
    user_id = owners.get(_fold(owner_name))
    # No teams in this export: company and owner only.
    return [COMPANY] if user_id is None else [COMPANY, ("owner", f"zoho:{user_id}")]


def zoho_money(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    assert text.startswith("$"), text
    return float(text[1:].replace(",", ""))


def zoho_reference() -> dict[Key, Expected]:
    owners = zoho_owners()
    ref = Reference()
    for row in read_csv(ZOHO / "Leads.csv"):
        assert row["CONVERTED"] in {"Yes", "No"}, row["CONVERTED"]
        created = zoho_time(row["Created Time"])
        ref.ratio(
            "lead_conversion_rate",
            None if created is None else created.date(),
            _zoho_scopes(owners, row["Lead Owner"]),
            numerator=1.0 if row["CONVERTED"] == "Yes" else None,
            denominator=1.0,
        )
    for row in read_csv(ZOHO / "Potentials.csv"):
        stage = row["Stage"]
        if stage not in {"Closed Won", "Closed Lost"}:
            continue  # open: no closed_at (its Closing Date is a forecast), in no closed-deal KPI
        won = stage == "Closed Won"
        scopes = _zoho_scopes(owners, row["Potential Owner"])
        closed_at, created_at = zoho_time(row["Closing Date"]), zoho_time(row["Created Time"])
        day = None if closed_at is None else closed_at.date()
        ref.ratio("win_rate", day, scopes, numerator=1.0 if won else None, denominator=1.0)
        if not won:
            continue
        amount = zoho_money(row["Amount"])
        ref.count("won_deals", day, scopes)
        if amount is not None:
            ref.total("won_revenue", day, scopes, amount, "USD")
        ref.ratio(
            "average_deal_size",
            day,
            scopes,
            numerator=amount,
            denominator=None if amount is None else 1.0,
            currency="USD",
        )
        if created_at is not None and closed_at is not None and closed_at >= created_at:
            days = days_between(created_at, closed_at)
            ref.duration("sales_cycle_days_mean", "mean", day, scopes, days)
            ref.duration("sales_cycle_days_median", "median", day, scopes, days)
    return ref.expected()


# --- X Education lead scoring (config/examples/x_education.yaml) -----------------------------------

X_EDUCATION = DATA_DIR / "x_education_leads"


def x_education_conversions() -> tuple[int, int]:
    """``(converted, leads)`` counted from the file (no dates, no owners: grain ``all``, company only)."""
    rows = read_csv(X_EDUCATION / "Leads.csv")
    assert {row["Converted"] for row in rows} == {"0", "1"}
    return sum(row["Converted"] == "1" for row in rows), len(rows)
