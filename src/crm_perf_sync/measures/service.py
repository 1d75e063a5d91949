"""Entering measures: each value checked against its definition and the store, every change kept.

A value is checked for what its definition allows (the scale and its steps, the scopes and the
grains), for a readable period (any date in it; stored under the period's first day in the fiscal
calendar, as KPI values are) and for a team or rep the store knows. Every creation, change and
removal writes a :class:`~crm_perf_sync.models.MeasureChange` with the old and new value; setting
the value an entry already has changes nothing. An upload is all or nothing: every row is
checked first, and one bad row writes none. Entries the configuration declares belong to it: the
API does not change them. The caller owns the transaction.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm_perf_sync.kit.errors import Conflict, InvalidRows, NotFound
from crm_perf_sync.kit.timeutil import first_day
from crm_perf_sync.measures import repository as repo
from crm_perf_sync.measures.repository import EntryKey
from crm_perf_sync.measures.schemas import (
    GRAINS,
    SCOPES,
    DeclaredValue,
    MeasureDefinition,
    MeasureGrain,
    period_of,
)
from crm_perf_sync.models import MeasureEntry
from crm_perf_sync.org import repository as org_repo

log = logging.getLogger(__name__)

Source = Literal["api", "csv", "cli", "config"]
Outcome = Literal["created", "updated", "unchanged"]
#: The columns an upload needs, each with the header names it is read under (its own first).
UPLOAD_COLUMNS = {
    "measure_id": ("measure_id", "measure"),
    "scope": ("scope",),
    "scope_id": ("scope_id",),
    "grain": ("grain",),
    "period_key": ("period_key", "period"),
    "value": ("value",),
}
#: Columns of the listing's CSV that an upload reads past, so a downloaded file uploads as it is.
LISTING_ONLY = frozenset(
    {"id", "measure_name", "scope_name", "period_start", "period_end", "source", "entered_by", "entered_at"}
)
_FORMULA_GUARD = ("'=", "'+", "'-", "'@")


@dataclass(frozen=True, slots=True)
class Catalog:
    """The measures in force and the fiscal calendar their periods follow."""

    definitions: Mapping[str, MeasureDefinition]
    fiscal_start_month: int = 1

    def definition(self, measure_id: str) -> MeasureDefinition:
        found = self.definitions.get(measure_id)
        if found is None:
            raise NotFound(f"no measure {measure_id!r} (defined: {', '.join(sorted(self.definitions))})")
        return found


@dataclass(frozen=True, slots=True)
class Named:
    """An entry as a person names it: the period is any date inside it."""

    measure_id: str
    scope: str
    scope_id: str
    grain: str
    period: date


@dataclass(frozen=True, slots=True)
class Given(Named):
    """An entry as a person writes it, with its value."""

    value: Decimal


@dataclass(frozen=True, slots=True)
class Checked:
    key: EntryKey
    period_start: date
    period_end: date
    value: Decimal


class _Scopes:
    """Which teams and reps the store knows, read once for a whole upload."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._names: Mapping[tuple[str, str], str] | None = None

    def known(self, scope: str, scope_id: str) -> bool:
        if scope == "company":
            return scope_id == "company"
        if self._names is None:
            self._names = org_repo.scope_names(self.session)
        return (scope, scope_id) in self._names


def _issues(catalog: Catalog, given: Given, scopes: _Scopes) -> tuple[Checked | None, list[tuple[str, str]]]:
    """The entry ``given`` names, or what is wrong with it as (field, message) pairs."""
    definition = catalog.definitions.get(given.measure_id)
    if definition is None:
        known = ", ".join(sorted(catalog.definitions)) or "none"
        return None, [("measure_id", f"unknown measure {given.measure_id!r} (defined: {known})")]
    issues: list[tuple[str, str]] = []
    if given.scope not in SCOPES:
        issues.append(("scope", f"{given.scope!r} is not a scope (company, team or owner)"))
    elif (given.scope == "company") != (given.scope_id == "company"):
        issues.append(("scope_id", "scope_id is 'company' exactly when scope is company"))
    elif not scopes.known(given.scope, given.scope_id):
        says = f"no {given.scope} {given.scope_id!r} (see /teams and /owners for their ids)"
        issues.append(("scope_id", says))
    if given.grain not in GRAINS:
        issues.append(("grain", f"{given.grain!r} is not a grain (week, month, quarter or year)"))
    issues += [
        (name, says)
        for name, says in definition.issues(given.scope, given.grain, given.value)
        if not (name == "scope" and given.scope not in SCOPES)
        and not (name == "grain" and given.grain not in GRAINS)
    ]
    if issues:
        return None, issues
    grain: MeasureGrain = given.grain  # type: ignore[assignment]  # checked against GRAINS above
    try:
        key, start, end = period_of(given.period, grain, catalog.fiscal_start_month)
    except ValueError as exc:
        return None, [("period_key", str(exc))]
    entry_key = EntryKey(given.measure_id, given.scope, given.scope_id, given.grain, key)
    return Checked(entry_key, start, end, given.value), []


def check(session: Session, catalog: Catalog, given: Given) -> Checked:
    """The entry ``given`` names; :class:`InvalidRows` naming each field that is wrong."""
    checked, issues = _issues(catalog, given, _Scopes(session))
    if checked is None:
        errors: list[dict[str, object]] = [
            {"where": name, "field": name, "message": says} for name, says in issues
        ]
        raise InvalidRows("; ".join(f"{name}: {says}" for name, says in issues), errors)
    return checked


@dataclass
class Writer:
    """Writes checked entries and their history, all stamped with one source, author and time.

    New entries and history rows are inserted together by :meth:`done`, one statement per table
    whatever their number (none of their ids is needed); changed and removed entries are the
    session's own rows, flushed with them.
    """

    session: Session
    source: Source
    by: str
    now: datetime
    new: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)

    def _change(self, key: EntryKey, action: str, old: Decimal | None, new: Decimal | None) -> None:
        self.changes.append(
            {
                **key._asdict(),
                "action": action,
                "old_value": old,
                "new_value": new,
                "source": self.source,
                "changed_by": self.by,
                "changed_at": self.now,
            }
        )

    def put(self, entry: Checked, existing: MeasureEntry | None) -> Outcome:
        if existing is None:
            self.new.append(
                {
                    **entry.key._asdict(),
                    "period_start": entry.period_start,
                    "period_end": entry.period_end,
                    "value": entry.value,
                    "source": self.source,
                    "entered_by": self.by,
                    "entered_at": self.now,
                }
            )
            self._change(entry.key, "create", None, entry.value)
            return "created"
        # The same value again changes nothing, unless the configuration takes the entry over
        # (or gives it up): who owns an entry decides who may change it.
        if existing.value == entry.value and (existing.source == "config") == (self.source == "config"):
            return "unchanged"
        self._change(entry.key, "update", existing.value, entry.value)
        existing.value = entry.value
        existing.source = self.source
        existing.entered_by = self.by
        existing.entered_at = self.now
        return "updated"

    def remove(self, existing: MeasureEntry) -> None:
        self._change(repo.key_of(existing), "delete", existing.value, None)
        self.session.delete(existing)

    def done(self) -> None:
        self.session.flush()  # removals and changes first: a new entry may take a removed one's key
        try:
            repo.insert_entries(self.session, self.new)
        except IntegrityError:
            # Another transaction created one of these entries since they were read (PostgreSQL;
            # SQLite writers take the write lock before they read).
            raise Conflict(
                "one of these entries was entered at the same time by another request: retry"
            ) from None
        repo.record_changes(self.session, self.changes)
        self.new, self.changes = [], []


def _not_declared(existing: MeasureEntry | None) -> str | None:
    if existing is not None and existing.source == "config":
        return "declared in the configuration (measures.values): change it there"
    return None


def set_entry(
    session: Session, catalog: Catalog, given: Given, *, source: Source, by: str, now: datetime
) -> tuple[MeasureEntry, Outcome]:
    """Enter one value (creating the entry or changing it)."""
    checked = check(session, catalog, given)
    existing = repo.entry(session, checked.key)
    refused = _not_declared(existing)
    if refused is not None:
        raise Conflict(f"this entry is {refused}")
    writer = Writer(session, source, by, now)
    outcome = writer.put(checked, existing)
    writer.done()
    row = existing if existing is not None else repo.entry(session, checked.key)
    assert row is not None
    return row, outcome


def find(session: Session, catalog: Catalog, given: Named) -> MeasureEntry:
    """The entry ``given`` names (its value is not read); :class:`NotFound` if there is none."""
    catalog.definition(given.measure_id)
    problem: tuple[str, str] | None = None
    if given.grain not in GRAINS:
        problem = ("grain", f"{given.grain!r} is not a grain (week, month, quarter or year)")
    else:
        grain: MeasureGrain = given.grain  # checked just above
        try:
            key = period_of(given.period, grain, catalog.fiscal_start_month)[0]
        except ValueError as exc:
            problem = ("period_key", str(exc))
    if problem is not None:
        name, says = problem
        raise InvalidRows(f"{name}: {says}", [{"where": name, "field": name, "message": says}])
    found = repo.entry(session, EntryKey(given.measure_id, given.scope, given.scope_id, given.grain, key))
    if found is None:
        where = f"{given.scope} {given.scope_id!r}, {given.grain} {key}"
        raise NotFound(f"no {given.measure_id} entry for {where}")
    return found


def remove_entry(
    session: Session, catalog: Catalog, given: Named, *, source: Source, by: str, now: datetime
) -> None:
    """Remove one entry; its history stays, with the removal."""
    found = find(session, catalog, given)
    refused = _not_declared(found)
    if refused is not None:
        raise Conflict(f"this entry is {refused}")
    writer = Writer(session, source, by, now)
    writer.remove(found)
    writer.done()


@dataclass(frozen=True, slots=True)
class UploadOutcome:
    rows: int
    created: int
    updated: int
    unchanged: int


def _cell(text: str | None) -> str:
    """A cell as written, without the apostrophe the product's own CSV puts before a formula."""
    value = (text or "").strip()
    return value[1:] if value.startswith(_FORMULA_GUARD) else value


def _parse_rows(text: str) -> Iterable[tuple[int, dict[str, str]]]:
    """(row number, cells by column) of a CSV whose header row is row 1, as a spreadsheet numbers
    them; raises :class:`InvalidRows` for a header that lacks or mistakes a column."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        header = [name.strip().lower() for name in next(reader, [])]
    except csv.Error as exc:
        raise InvalidRows(f"row 1: not CSV: {exc}", [_error(1, "", f"not CSV: {exc}")]) from None
    errors: list[dict[str, object]] = []
    where: dict[str, int] = {}
    for index, name in enumerate(header):
        column = next((c for c, aliases in UPLOAD_COLUMNS.items() if name in aliases), None)
        if column is not None:
            if column in where:
                errors.append(_error(1, name, f"column {name!r} given twice"))
            where[column] = index
        elif name not in LISTING_ONLY:
            known = ", ".join(UPLOAD_COLUMNS)
            errors.append(_error(1, name or f"column {index + 1}", f"unknown column (the columns: {known})"))
    for column in UPLOAD_COLUMNS:
        if column not in where:
            errors.append(_error(1, column, "missing column"))
    if errors:
        raise InvalidRows(_summary(errors), errors)
    number = 1
    try:
        for number, cells in enumerate(reader, start=2):
            if not any(cell.strip() for cell in cells):
                continue
            yield number, {column: _cell(cells[i] if i < len(cells) else "") for column, i in where.items()}
    except csv.Error as exc:
        raise InvalidRows(
            f"row {number + 1}: not CSV: {exc}", [_error(number + 1, "", f"not CSV: {exc}")]
        ) from None


def _error(row: int, column: str, message: str) -> dict[str, object]:
    return {"where": f"row {row}, {column}", "row": row, "field": column, "message": message}


def _summary(errors: Sequence[Mapping[str, object]]) -> str:
    shown = "; ".join(f"{e['where']}: {e['message']}" for e in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    count = f"{len(errors)} problem{'s' if len(errors) != 1 else ''}"
    return f"{count} in the upload, nothing was saved: {shown}{more}"


def _given(number: int, cells: Mapping[str, str]) -> tuple[Given | None, list[dict[str, object]]]:
    errors = [_error(number, column, "empty") for column, value in cells.items() if not value]
    if errors:
        return None, errors
    try:
        value = Decimal(cells["value"])
        if not value.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        says = f"{cells['value']!r} is not a number (decimals with a dot: 4.5)"
        return None, [_error(number, "value", says)]
    try:
        period = first_day(cells["period_key"])
    except ValueError:
        says = f"{cells['period_key']!r} is not a period (its first day 2026-04-01, or 2026-04 or 2026)"
        return None, [_error(number, "period_key", says)]
    given = Given(cells["measure_id"], cells["scope"], cells["scope_id"], cells["grain"], period, value)
    return given, []


def upload(
    session: Session, catalog: Catalog, text: str, *, source: Source, by: str, now: datetime
) -> UploadOutcome:
    """Enter every row of a CSV (columns :data:`UPLOAD_COLUMNS`), or none if any row is wrong:
    :class:`InvalidRows` then names each bad row and field."""
    errors: list[dict[str, object]] = []
    checked: list[tuple[int, Checked]] = []
    first_row: dict[EntryKey, int] = {}
    scopes = _Scopes(session)
    for number, cells in _parse_rows(text):
        given, problems = _given(number, cells)
        if given is not None:
            entry, issues = _issues(catalog, given, scopes)
            problems += [_error(number, name, says) for name, says in issues]
            if entry is not None:
                if entry.key in first_row:
                    says = f"the same entry as row {first_row[entry.key]}"
                    problems.append(_error(number, "period_key", says))
                else:
                    first_row[entry.key] = number
                    checked.append((number, entry))
        errors += problems
    existing = repo.entries_among(
        session, {e.key.measure_id for _, e in checked}, {e.key.period_key for _, e in checked}
    )
    for number, entry in checked:
        refused = _not_declared(existing.get(entry.key))
        if refused is not None:
            errors.append(_error(number, "value", refused))
    if errors:
        errors.sort(key=lambda e: (e["row"], str(e["field"])))
        raise InvalidRows(_summary(errors), errors)
    if not checked:
        raise InvalidRows("the upload has no rows", [_error(2, "measure_id", "no rows after the header")])
    writer = Writer(session, source, by, now)
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    for _, entry in checked:
        counts[writer.put(entry, existing.get(entry.key))] += 1
    writer.done()
    return UploadOutcome(len(checked), counts["created"], counts["updated"], counts["unchanged"])


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying the configuration's declared values did; ``waiting``: values whose team or
    rep the store does not know yet (applied after a sync brings them)."""

    created: int
    updated: int
    removed: int
    unchanged: int
    waiting: tuple[str, ...]


def apply_declared(
    session: Session, catalog: Catalog, declared: Sequence[DeclaredValue], now: datetime
) -> Applied:
    """Make the store's configuration entries those ``declared`` (idempotent): new and changed
    values are written, entries no longer declared are removed, each change kept in the history.
    The values were checked with the configuration; their team or rep is checked here."""
    scopes = _Scopes(session)
    current = repo.config_entries(session)
    wanted: dict[EntryKey, Checked] = {}
    waiting: list[str] = []
    for value in declared:
        given = Given(value.measure, value.scope, value.scope_id, value.grain, value.period, value.value)
        entry, issues = _issues(catalog, given, scopes)
        if entry is None:
            waiting.append(f"{value.measure} {value.scope} {value.scope_id!r}: {issues[0][1]}")
            period_key = period_of(value.period, value.grain, catalog.fiscal_start_month)[0]
            current.pop(EntryKey(value.measure, value.scope, value.scope_id, value.grain, period_key), None)
            continue
        wanted[entry.key] = entry
    existing = repo.entries_among(session, {k.measure_id for k in wanted}, {k.period_key for k in wanted})
    writer = Writer(session, "config", "config", now)
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    for key, entry in wanted.items():
        current.pop(key, None)
        counts[writer.put(entry, existing.get(key))] += 1
    for row in current.values():
        writer.remove(row)
    writer.done()
    for line in waiting:
        log.info("declared measure value not applied yet: %s", line)
    return Applied(counts["created"], counts["updated"], len(current), counts["unchanged"], tuple(waiting))


def presented(
    rows: Sequence[dict[str, Any]], catalog: Catalog, names: Mapping[tuple[str, str], str]
) -> list[dict[str, Any]]:
    """Listing rows with the measure's and the scope's names beside their ids."""
    out = []
    for row in rows:
        definition = catalog.definitions.get(row["measure_id"])
        scope = (row["scope"], row["scope_id"])
        out.append(
            {
                **row,
                "measure_name": definition.name if definition is not None else row["measure_id"],
                "scope_name": names.get(scope, row["scope_id"]),
            }
        )
    return out
