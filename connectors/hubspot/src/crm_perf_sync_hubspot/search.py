"""Reading a time window of HubSpot's search API completely, whatever its size.

The search API sorts by one property, pages with an offset (``after``) and refuses to page past
10,000 results of one query (HTTP 400). Offsets are also unsafe while records change: a record
read on page one that is modified meanwhile leaves the window (its new modified date is past the
window's end), every later result moves up one place, and the record that slid over the page
boundary is never seen.

So no query here ever pages. Each page is a fresh query anchored at the last modified date seen
(``GTE``, a closed start: the few records sharing that millisecond come again, which the store's
idempotent upsert absorbs). The window therefore shrinks with every page, a query never reaches
the 10,000-result cap, and a record that moves out of the window cannot push another out of
sight. One case cannot make progress that way: a full page whose records all share the anchor's
millisecond. Then the millisecond is drained with an ``hs_object_id`` keyset (``EQ`` that
millisecond, ``GT`` the last id, sorted by id), and the window resumes just after it. Every query
makes progress, so a read never loops; every record with a modified date in the window is
returned by some query, so a read never skips.

Positions are resumable (they go into checkpoints): ``Position(since)`` means "everything in the
window before ``since`` was read"; ``Position(since, tie_after=id)`` means "also everything of
millisecond ``since`` up to ``id``".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

Filter = Mapping[str, Any]
#: OR-ed groups of AND-ed filters selecting which records a read is about; ``((),)`` is all.
Segment = tuple[tuple[Filter, ...], ...]
Search = Callable[[Mapping[str, Any]], tuple[list[Any], int]]

ALL: Segment = ((),)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a window read stands (epoch milliseconds; see the module docstring)."""

    since: int
    tie_after: int | None = None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_millis(value: datetime) -> int:
    """An aware datetime as epoch milliseconds (HubSpot's resolution), in integer arithmetic."""
    return (value - _EPOCH) // _MS


def from_millis(value: int) -> datetime:
    return _EPOCH + value * _MS


def parse_millis(value: str) -> int:
    """A HubSpot datetime (ISO 8601, or epoch milliseconds as older properties have it) in ms."""
    if value.isdigit():
        return int(value)
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_millis(moment)


def window(
    search: Search,
    *,
    modified: str,
    segment: Segment,
    properties: Sequence[str],
    start: Position,
    until: int,
    page_size: int,
    stamp: Callable[[Any], int],
) -> Iterator[tuple[list[Any], Position]]:
    """Every record of ``segment`` modified from ``start`` to ``until`` (inclusive), page by page.

    Yields each page with the position that covers it. ``modified`` is the modified-date
    property (``hs_lastmodifieddate`` for deals, ``lastmodifieddate`` for contacts); ``stamp``
    gives a result's modified date in ms.
    """
    position = start
    while True:
        if position.tie_after is not None:
            tie = position.since
            results, _ = search(
                _body(
                    segment,
                    [
                        {"propertyName": modified, "operator": "EQ", "value": str(tie)},
                        {"propertyName": "hs_object_id", "operator": "GT", "value": str(position.tie_after)},
                    ],
                    sort="hs_object_id",
                    properties=properties,
                    limit=page_size,
                )
            )
            if len(results) < page_size:
                position = Position(tie + 1)
            else:
                position = Position(tie, max(int(r.id) for r in results))
            yield results, position
            continue
        if position.since > until:
            return
        results, _ = search(
            _body(
                segment,
                [
                    {"propertyName": modified, "operator": "GTE", "value": str(position.since)},
                    {"propertyName": modified, "operator": "LTE", "value": str(until)},
                ],
                sort=modified,
                properties=properties,
                limit=page_size,
            )
        )
        if len(results) < page_size:
            # Everything left in the window fitted in this page.
            yield results, Position(until + 1)
            return
        last = max(stamp(r) for r in results)
        if last <= position.since:
            # A full page inside one millisecond: re-anchoring would return it again. Drain
            # the millisecond by id instead (from the start: ties come in no particular order).
            position = Position(position.since, 0)
            continue
        position = Position(last)
        yield results, position


def keyset(
    search: Search,
    *,
    segment: Segment,
    properties: Sequence[str],
    after_id: int,
    page_size: int,
) -> Iterator[tuple[list[Any], int]]:
    """Every record of ``segment`` with an id above ``after_id``, in id order: (page, last id)."""
    while True:
        results, _ = search(
            _body(
                segment,
                [{"propertyName": "hs_object_id", "operator": "GT", "value": str(after_id)}],
                sort="hs_object_id",
                properties=properties,
                limit=page_size,
            )
        )
        if results:
            after_id = max(int(r.id) for r in results)
        yield results, after_id
        if len(results) < page_size:
            return


def _body(
    segment: Segment, extra: list[dict[str, str]], *, sort: str, properties: Sequence[str], limit: int
) -> dict[str, Any]:
    return {
        "filterGroups": [{"filters": [*group, *extra]} for group in segment],
        "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
        "properties": list(properties),
        "limit": limit,
    }
