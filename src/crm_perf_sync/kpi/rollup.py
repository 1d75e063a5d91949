"""Adding up the database's finest groups into every grain and scope.

The database returns one row per (week, month, connection, owner, currency, breakdown) with a
total and a record count; sums and counts are additive, so a quarter is the sum of its months,
a year of its (fiscal) months, ``all`` of everything, a team the sum of its reps and the company
the sum of everyone (records without an owner included). This loops over groups, never records.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from crm_perf_sync.kpi.compiler import Scope
from crm_perf_sync.kpi.schemas import Grain
from crm_perf_sync.org.schemas import Membership

#: (period index or None for "all", scope id, currency, breakdown value)
Key = tuple[int | None, str, str, Any]


@dataclass(slots=True)
class Totals:
    total: float = 0.0
    records: int = 0


@dataclass(slots=True)
class Rollup:
    grains: Sequence[Grain]
    fiscal_start_month: int
    membership: Membership
    _teams: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        teams: dict[tuple[str, str], list[str]] = {}
        for team, connection_id, owner in self.membership.rows:
            teams.setdefault((connection_id, owner), []).append(team)
        self._teams = {rep: tuple(found) for rep, found in teams.items()}

    def teams_of(self, connection_id: str, owner: str) -> tuple[str, ...]:
        """The teams a rep counts in (their own and every one above it)."""
        return self._teams.get((connection_id, owner), ())

    def period(self, grain: Grain, week: int | None, month: int | None) -> int | None:
        if grain == "week":
            return week
        if grain == "month" or month is None:
            return month
        shift, size = self.fiscal_start_month - 1, 3 if grain == "quarter" else 12
        return ((month - shift) // size) * size + shift

    def __call__(
        self, rows: Iterable[tuple[int | None, int | None, str, str | None, str, Hashable, float, int]]
    ) -> dict[tuple[Grain, Scope], dict[Key, Totals]]:
        """``rows`` are ``(week, month, connection, owner, currency, breakdown, total, records)``."""
        per_owner: dict[Grain, dict[tuple[int | None, str, str | None, str, Hashable], list[float]]] = {
            grain: {} for grain in self.grains
        }
        for week, month, connection_id, owner, currency, dim, total, records in rows:
            amount = float(total or 0)
            for grain in self.grains:
                if grain == "all":
                    index: int | None = -1
                elif month is None:
                    continue  # no period date: counted in "all" only
                else:
                    index = self.period(grain, week, month)
                cell = (index, connection_id, owner, currency, dim)
                acc = per_owner[grain].get(cell)
                if acc is None:
                    per_owner[grain][cell] = [amount, records]
                else:
                    acc[0] += amount
                    acc[1] += records
        out: dict[tuple[Grain, Scope], dict[Key, Totals]] = {}
        for grain, cells in per_owner.items():
            company: dict[Key, Totals] = {}
            owners: dict[Key, Totals] = {}
            teams: dict[Key, Totals] = {}
            for (index, connection_id, owner, currency, dim), (subtotal, count) in cells.items():
                period = None if index == -1 else index
                records = int(count)
                _add(company, (period, "company", currency, dim), subtotal, records)
                if owner is None:
                    continue
                _add(owners, (period, f"{connection_id}:{owner}", currency, dim), subtotal, records)
                for team in self._teams.get((connection_id, owner), ()):
                    _add(teams, (period, team, currency, dim), subtotal, records)
            out[(grain, "company")] = company
            out[(grain, "owner")] = owners
            if self.membership.rows:
                out[(grain, "team")] = teams
        return out


def _add(target: dict[Key, Totals], key: Key, amount: float, records: int) -> None:
    found = target.get(key)
    if found is None:
        target[key] = Totals(amount, records)
    else:
        found.total += amount
        found.records += records
