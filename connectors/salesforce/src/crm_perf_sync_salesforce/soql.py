"""SOQL for the scans, built with simple-salesforce's ``format_soql``: values are always quoted
by it, never pasted into the text. Field and object names are identifiers from the code or from
validated settings, passed through its ``:literal`` format."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from simple_salesforce.format import format_soql


@dataclass(frozen=True, slots=True)
class Position:
    """Where a keyset scan stands on ``(cursor field, Id)``.

    - ``at`` is ``None``: from the very first row;
    - ``last_id`` set: every row up to and including ``(at, last_id)`` is read;
    - otherwise ``inclusive``: rows at ``at`` are still to read (``>=``), or all read (``>``).
    """

    at: datetime | None
    last_id: str | None = None
    inclusive: bool = True

    def clause(self, field: str) -> str | None:
        if self.at is None:
            return None
        if self.last_id is not None:
            # Never a bare ">" on the timestamp: rows sharing it beyond a page boundary would be lost.
            return format_soql(
                "({field:literal} > {at} OR ({field:literal} = {at} AND Id > {last_id}))",
                field=field,
                at=self.at,
                last_id=self.last_id,
            )
        if self.inclusive:
            return format_soql("{field:literal} >= {at}", field=field, at=self.at)
        return format_soql("{field:literal} > {at}", field=field, at=self.at)


def select(
    sobject: str,
    fields: Sequence[str],
    where: Sequence[str | None] = (),
    *,
    order_by: Sequence[str] = (),
    limit: int | None = None,
) -> str:
    """``SELECT fields FROM sobject [WHERE a AND b] [ORDER BY ...] [LIMIT n]``."""
    text = format_soql(
        "SELECT {fields:literal} FROM {sobject:literal}", fields=", ".join(fields), sobject=sobject
    )
    conditions = [part for part in where if part]
    if conditions:
        text += " WHERE " + " AND ".join(conditions)
    if order_by:
        text += format_soql(" ORDER BY {order:literal}", order=", ".join(f"{name} ASC" for name in order_by))
    if limit is not None:
        text += format_soql(" LIMIT {limit}", limit=limit)
    return text


def count(sobject: str, where: Sequence[str | None] = ()) -> str:
    """``SELECT COUNT() FROM sobject [WHERE ...]`` (the count is the answer's ``totalSize``)."""
    text = format_soql("SELECT COUNT() FROM {sobject:literal}", sobject=sobject)
    conditions = [part for part in where if part]
    if conditions:
        text += " WHERE " + " AND ".join(conditions)
    return text


def latest(sobject: str, field: str) -> str:
    """``SELECT field FROM sobject ORDER BY field DESC LIMIT 1``: the latest value (an indexed
    date-time such as ``SystemModstamp``: one cheap request)."""
    return format_soql(
        "SELECT {field:literal} FROM {sobject:literal} ORDER BY {field:literal} DESC LIMIT 1",
        field=field,
        sobject=sobject,
    )


def at_most(field: str, end: datetime) -> str:
    return format_soql("{field:literal} <= {end}", field=field, end=end)


def id_after(last_id: str | None) -> str | None:
    return format_soql("Id > {last_id}", last_id=last_id) if last_id is not None else None


def live_only() -> str:
    """Rows not deleted, for a ``queryAll`` read for its archived rows rather than its deleted ones."""
    return "IsDeleted = false"
