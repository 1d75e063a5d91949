"""The API's HTTP server: uvicorn with httptools, bounded while it parses.

httptools (llhttp) puts no limit on a request's URL or headers: a header that never ends is
buffered whole (eight clients sending 30 MB of headers each took a server from 130 MB to over
400 MB), and a URL over 64 KiB fails inside the parser as a plain-text 400. uvicorn's own bound,
``h11_max_incomplete_event_size``, applies only to its h11 protocol. So the API serves with
:class:`BoundedHttpToolsProtocol`, which counts what it feeds the parser and refuses, as
problem+json like every other error:

- a URL longer than :data:`MAX_URL_BYTES` with ``414``;
- headers larger than :data:`MAX_HEADER_BYTES` (names and values) or more than
  :data:`MAX_HEADERS` of them with ``431``, as soon as the bytes received say so, whether or not
  the header block has ended;
- a request the parser cannot read with ``400``.

A refusal closes the connection after the answer; what the client still sends meanwhile is read
and dropped (for at most :data:`LINGER_SECONDS`), so the client gets to read the answer rather
than a reset. The application checks the same limits itself (:mod:`crm_perf_sync.api.app`), for
any other server it may run under.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from crm_perf_sync.api.problems import PROBLEM_JSON, problem_body

#: The longest URL (path and query) served: far above what any query of this API needs.
MAX_URL_BYTES = 32 * 1024
#: The most header bytes (names and values) a request may carry, and the most header lines.
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100
#: Header bytes beyond names and values: ": " and CRLF per line, the method and version.
_FRAMING_BYTES = 4 * MAX_HEADERS + 64
#: How long a refused client may go on sending before the connection is closed under it.
LINGER_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request refused before it reaches the application."""

    status: int
    code: str
    detail: str

    def body(self, request_id: str) -> bytes:
        return orjson.dumps(problem_body(self.status, self.detail, self.code, request_id=request_id))


URL_TOO_LONG = Refusal(
    414, "url-too-long", f"the URL is longer than {MAX_URL_BYTES:,} bytes: send fewer or shorter parameters"
)
HEADERS_TOO_LARGE = Refusal(
    431,
    "headers-too-large",
    f"the request headers are larger than {MAX_HEADER_BYTES:,} bytes or more than {MAX_HEADERS} lines",
)
MALFORMED = Refusal(400, "malformed-request", "the request is not a valid HTTP/1.1 request")


def url_refusal(length: int) -> Refusal | None:
    return URL_TOO_LONG if length > MAX_URL_BYTES else None


def headers_refusal(header_bytes: int, count: int) -> Refusal | None:
    return HEADERS_TOO_LARGE if header_bytes > MAX_HEADER_BYTES or count > MAX_HEADERS else None


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that is refused."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the URL and the headers bounded (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bytes received since the current request's head began (None: reading a body).
        self._head_bytes: int | None = 0
        self._url_bytes = 0
        self._header_bytes = 0
        self._header_count = 0
        self._refusal: Refusal | None = None
        self._refusal_sent = False

    # --- what the parser is fed ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # the rest of a refused request is dropped
        if self._head_bytes is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        # httptools keeps a header's value to itself until the header ends: bound what it holds
        # by the bytes received, however the header block is cut.
        if (
            self._refusal is None
            and self._head_bytes is not None
            and self._head_bytes - self._url_bytes > MAX_HEADER_BYTES + _FRAMING_BYTES
        ):
            self._refuse(HEADERS_TOO_LARGE)

    # --- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_bytes = self._header_bytes = self._header_count = 0

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)  # called with each piece of the URL as it arrives
        refusal = url_refusal(self._url_bytes)
        if refusal is not None:
            self._refusal = refusal
            raise _Refused
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        self._header_count += 1
        refusal = headers_refusal(self._header_bytes, self._header_count)
        if refusal is not None:
            self._refusal = refusal
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._head_bytes = 0
        super().on_message_complete()

    # --- refusing -----------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:  # noqa: ARG002 (uvicorn's plain-text message)
        """uvicorn's answer to anything the parser raised, a refusal from a callback included."""
        self._refuse(self._refusal or MALFORMED)

    def _refuse(self, refusal: Refusal) -> None:
        self._refusal = refusal
        if self._busy():
            return  # answered once the requests before it on this connection have been
        self._send_refusal()

    def _busy(self) -> bool:
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refusal is not None and not self._refusal_sent and not self._busy():
            self._send_refusal()

    def _send_refusal(self) -> None:
        assert self._refusal is not None
        if self._refusal_sent or self.transport.is_closing():
            return
        self._refusal_sent = True
        self._unset_keepalive_if_required()
        request_id = uuid.uuid4().hex
        body = self._refusal.body(request_id)
        head = [STATUS_LINE[self._refusal.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: ",
            PROBLEM_JSON.encode(),
            b"\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nx-request-id: ",
            request_id.encode(),
            b"\r\nconnection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the answer, then end of stream; go on reading to drop
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


def server_options() -> dict[str, Any]:
    """The uvicorn options every process serving the API uses (``serve``, ``api``, benchmarks)."""
    return {"http": BoundedHttpToolsProtocol}
