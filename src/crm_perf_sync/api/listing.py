"""Collections for BI tools: JSON or CSV, cursor-paginated, cached by version, streamed when large.

Every collection endpoint answers the same way:

- **format**: JSON (``{"data": [...], "next": url | null}``) by default; CSV with ``?format=csv``
  or ``Accept: text/csv`` (a header row, ISO dates, dot decimals, UTF-8 without a BOM; nested
  values as JSON text; text a spreadsheet would run as a formula starts with an apostrophe, see
  :mod:`crm_perf_sync.kit.csvout`).
- **pagination**: ``limit`` rows a page (default :data:`DEFAULT_LIMIT`, at most :data:`MAX_LIMIT`)
  after an opaque ``cursor``; the next page's URL is in ``next`` and in the ``Link`` header. A CSV
  request without ``limit`` streams the whole collection in one response, a page of
  :data:`STREAM_CHUNK` rows at a time from the database, never all in memory.
- **caching**: where the results have a version (KPI values, scores), ``ETag`` and
  ``Last-Modified`` name it and ``If-None-Match`` / ``If-Modified-Since`` answer 304 without
  reading the rows. A cursor remembers the version it was issued for; once the results are
  recomputed it is refused (409) instead of skipping or repeating rows.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.api.cache import Rendered, ResponseCache, accepts_gzip, render
from crm_perf_sync.kit.csvout import cell
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.errors import BadRequest, Stale
from crm_perf_sync.kit.paging import expect

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
STREAM_CHUNK = 2000
CSV_MEDIA = "text/csv; charset=utf-8"
JSON = "application/json"

Format = Literal["json", "csv"]
#: ``fetch(session, after, limit) -> (rows, next key or None)``: one page of a collection.
Fetch = Callable[[Session, Any, int], tuple[list[dict[str, Any]], Any]]


@dataclass(frozen=True, slots=True)
class PageParams:
    """The paging and format parameters every collection endpoint takes."""

    limit: int | None
    cursor: str | None
    format: Format | None


async def page_params(
    limit: Annotated[
        int | None,
        Query(
            ge=1, le=MAX_LIMIT, description=f"Rows per page (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})."
        ),
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=2000, description="The `next` cursor of the previous page.")
    ] = None,
    format: Annotated[
        Format | None, Query(description="json (default) or csv; `Accept: text/csv` also selects CSV.")
    ] = None,
) -> PageParams:
    return PageParams(limit, cursor, format)


def chosen_format(request: Request, params: PageParams) -> Format:
    if params.format is not None:
        return params.format
    accept = request.headers.get("accept", "")
    return "csv" if "text/csv" in accept and "application/json" not in accept else "json"


def encode_cursor(kind: str, after: Any, version: str | None) -> str:
    raw = orjson.dumps({"k": kind, "a": after, "v": version})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(text: str, kind: str, version: str | None) -> Any:
    """The position a cursor of this collection points after; 400 if malformed, 409 if stale."""
    try:
        padded = text + "=" * (-len(text) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, orjson.JSONDecodeError):
        raise BadRequest("the cursor is not one this API issued: pass the `next` value as it came") from None
    if not isinstance(data, dict) or data.get("k") != kind or "a" not in data:
        raise BadRequest("the cursor belongs to another collection or query: start from the first page")
    if data.get("v") != version:
        raise Stale("the results were recomputed since this cursor was issued: start from the first page")
    after = data["a"]
    if not _plain_key(after):
        raise BadRequest("the cursor is not one this API issued: pass the `next` value as it came")
    return after


def _plain_key(value: Any, depth: int = 0) -> bool:
    """A position this API writes into cursors: a row id, a short text, or a short list of them."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 <= value < 2**63
    if isinstance(value, str):
        return len(value) <= 1000
    if isinstance(value, list) and depth == 0:
        return len(value) <= 8 and all(_plain_key(item, 1) for item in value)
    return False


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(row.get(column)) for column in columns])
    return buffer.getvalue()


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )


@dataclass(frozen=True, slots=True)
class Version:
    """What a collection's results were computed as of: the source of its ETag."""

    changed_at: datetime | None

    @property
    def token(self) -> str | None:
        return None if self.changed_at is None else self.changed_at.isoformat()

    def etag(self, request: Request) -> str:
        """Weak: the same results as JSON, CSV, gzipped or not, are one version."""
        query = sorted((k, v) for k, v in request.query_params.multi_items() if k != "cursor")
        seed = orjson.dumps([request.url.path, self.token, query, request.query_params.get("cursor")])
        return 'W/"' + hashlib.blake2b(seed, digest_size=12).hexdigest() + '"'

    def headers(self, request: Request) -> dict[str, str]:
        out = {"ETag": self.etag(request), "Cache-Control": "no-cache", "Vary": "Accept, Accept-Encoding"}
        if self.changed_at is not None:
            out["Last-Modified"] = format_datetime(self.changed_at, usegmt=True)
        return out

    def not_modified(self, request: Request) -> Response | None:
        """A 304 when the client already holds this version of the results."""
        headers = self.headers(request)
        match = request.headers.get("if-none-match")
        if match is not None:
            tags = {tag.strip().removeprefix("W/") for tag in match.split(",")}
            if headers["ETag"].removeprefix("W/") in tags or "*" in tags:
                return Response(status_code=304, headers=headers)
            return None
        since = request.headers.get("if-modified-since")
        if since and self.changed_at is not None:
            try:
                moment = parsedate_to_datetime(since)
            except (TypeError, ValueError):
                return None
            if self.changed_at.replace(microsecond=0) <= moment:
                return Response(status_code=304, headers=headers)
        return None


def query_digest(request: Request) -> str:
    """What a cursor's query is: the path and the parameters other than the paging ones."""
    kept = sorted(
        (k, v) for k, v in request.query_params.multi_items() if k not in ("cursor", "limit", "format")
    )
    return hashlib.blake2b(orjson.dumps([request.url.path, kept]), digest_size=6).hexdigest()


def _next_url(request: Request, cursor: str) -> str:
    return str(request.url.include_query_params(cursor=cursor))


def listing(
    request: Request,
    session: Session,
    factory: sessionmaker[Session],
    params: PageParams,
    *,
    kind: str,
    columns: Sequence[str],
    fetch: Fetch,
    version: Version | None = None,
    cache: ResponseCache | None = None,
) -> Response:
    """One collection response: a page as JSON or CSV, or the whole collection streamed as CSV.

    ``kind`` names the collection and its query in cursors (so a cursor cannot be replayed
    against another one); ``fetch`` reads one page in key order. With a ``version`` and a
    ``cache``, a page is rendered once per version and then served from memory.
    """
    fmt = chosen_format(request, params)
    extra: dict[str, str] = {}
    if version is not None:
        cached = version.not_modified(request)
        if cached is not None:
            return cached
        extra = version.headers(request)
    token = version.token if version is not None else None
    kind = f"{kind}:{query_digest(request)}"
    after = decode_cursor(params.cursor, kind, token) if params.cursor else None
    if fmt == "csv" and params.limit is None:
        return StreamingResponse(_stream(factory, fetch, after, columns), media_type=CSV_MEDIA, headers=extra)
    cache_key: tuple[Any, ...] | None = None
    if cache is not None and version is not None:
        cache_key = (str(request.url), fmt, token)
        hit = cache.get(cache_key)
        if hit is not None:
            return _send(hit, request)
    limit = params.limit or DEFAULT_LIMIT
    rows, next_key = fetch(session, after, limit)
    next_cursor = encode_cursor(kind, next_key, token) if next_key is not None else None
    headers = dict(extra)
    next_url = _next_url(request, next_cursor) if next_cursor else None
    if next_url is not None:
        headers["Link"] = f'<{next_url}>; rel="next"'
    if fmt == "csv":
        body, media_type = csv_text(rows, columns, header=True).encode(), CSV_MEDIA
    else:
        body = orjson.dumps({"data": rows, "next": next_url}, option=orjson.OPT_NON_STR_KEYS)
        media_type = JSON
    if cache_key is None or cache is None:
        return Response(body, media_type=media_type, headers=headers)
    rendered = render(body, media_type, headers)
    cache.put(cache_key, rendered)
    return _send(rendered, request)


def _send(rendered: Rendered, request: Request) -> Response:
    """A rendered response, gzipped for a client that accepts it."""
    if rendered.compressed is not None and accepts_gzip(request.headers):
        headers = {**rendered.headers, "Content-Encoding": "gzip"}
        return Response(rendered.compressed, media_type=rendered.media_type, headers=headers)
    return Response(rendered.body, media_type=rendered.media_type, headers=dict(rendered.headers))


def _stream(
    factory: sessionmaker[Session], fetch: Fetch, after: Any, columns: Sequence[str]
) -> Iterator[str]:
    """The whole collection as CSV, read a chunk at a time in a session of its own (the request's
    session is closed by the time the body is sent)."""
    yield csv_text([], columns, header=True)
    with session_scope(factory) as session:
        while True:
            rows, after = fetch(session, after, STREAM_CHUNK)
            if rows:
                yield csv_text(rows, columns, header=False)
            if after is None:
                return


def in_memory(rows: Sequence[dict[str, Any]], key: str) -> Fetch:
    """A fetch over a small collection already in memory, keyed (and ordered) by ``key``."""

    def fetch(_session: Session, after: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        start = 0
        if rows and after is not None:
            expect(after, type(rows[0][key]))
            start = next((i + 1 for i, row in enumerate(rows) if row[key] == after), len(rows))
        page = list(rows[start : start + limit])
        more = start + limit < len(rows)
        return page, page[-1][key] if more and page else None

    return fetch


def in_memory_by_position(rows: Sequence[dict[str, Any]]) -> Fetch:
    """A fetch over a small collection in memory with no key of its own: paged by position."""
    numbered = [{**row, "_n": n} for n, row in enumerate(rows)]
    fetch = in_memory(numbered, "_n")

    def by_position(session: Session, after: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        page, next_key = fetch(session, after, limit)
        return [{k: v for k, v in r.items() if k != "_n"} for r in page], next_key

    return by_position
