"""Keyset pages for the repositories: the rows after a cursor position, and the position after them.

A page function takes the position after which to continue (``after``: the last row's key,
``None`` for the first page) and a row count, and returns the rows and the key to continue after,
or ``None`` when there is nothing more. One extra row is read to know whether another page exists.
The position comes from a client (an opaque cursor), so its shape is checked before it reaches SQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session

from crm_perf_sync.kit.errors import BadRequest

Page = tuple[list[dict[str, Any]], Any]


def expect(after: Any, kind: type | tuple[type, ...]) -> Any:
    """``after`` if it is of ``kind`` (a forged cursor with another shape is a 400, not a 500)."""
    if after is not None and not isinstance(after, kind):
        raise BadRequest("the cursor is not one this API issued: pass the `next` value as it came")
    return after


def keyset_page(
    session: Session, stmt: Select[Any], key: Any, after: Any, limit: int
) -> tuple[list[Any], Any]:
    if expect(after, int) is not None:
        stmt = stmt.where(key > after)
    rows = list(session.execute(stmt.order_by(key).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1]._mapping[key.key] if more else None)
