"""What every REST API emulator shares: a threaded HTTP server on 127.0.0.1, recorded requests,
injected faults and a clock the test moves.

A vendor emulator subclasses :class:`Emulator` and implements :meth:`Emulator.handle`, which
turns a :class:`Request` into a :class:`Response` (or raises :class:`Reply` from anywhere).
Faults (:meth:`Emulator.fail`) are answered before ``handle`` sees the request, so they cost the
vendor's own rate limits nothing, as a load balancer's 502 would not.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, urlsplit

import orjson

from crm_perf_sync.kit.timeutil import utc_now


class SimClock:
    """A clock that moves only when told to (or when something sleeps on it)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or utc_now()
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


@dataclass
class Request:
    """One request as the emulator received it. ``body`` is parsed JSON (or a form as a dict)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: Any
    raw: bytes = b""

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The last value of a query parameter."""
        values = self.query.get(name)
        return values[-1] if values else default


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-serialisable, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)


class Reply(Exception):
    """An answer raised from anywhere in a handler (an error, usually)."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body!r}")
        self.response = Response(status, body, dict(headers or {}))


@dataclass
class Fault:
    """Answer the next ``times`` requests matching ``method`` and ``path`` (a prefix) with ``response``.

    ``drop``: close the connection without answering (a network error).
    """

    method: str | None
    path: str
    response: Response
    times: int = 1
    drop: bool = False

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and path.startswith(self.path)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int


class Emulator:
    """The HTTP server. Use as a context manager, or :meth:`start` / :meth:`stop`."""

    def __init__(self, *, clock: Callable[[], datetime] = utc_now, record: bool = True) -> None:
        self.clock = clock
        self.record = record
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- to implement --------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, port: int = 0) -> Self:
        handler = type("Handler", (_Handler,), {"emulator": self})
        self._server = _Server(("127.0.0.1", port), handler)
        # A short poll: stopping the server (each test does) takes no longer than that.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the emulator is not running"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- faults and records --------------------------------------------------------------------

    def fail(
        self,
        path: str,
        status: int = 500,
        *,
        method: str | None = None,
        times: int = 1,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        drop: bool = False,
    ) -> None:
        """Answer the next ``times`` requests to ``path`` (a prefix) with ``status`` and ``body``."""
        response = Response(status, body if body is not None else {"error": "injected"}, dict(headers or {}))
        with self.lock:
            self.faults.append(Fault(method, path, response, times, drop))

    def count(self, path: str, *, method: str | None = None, status: int | None = None) -> int:
        """How many recorded requests went to ``path`` (a prefix), optionally with ``status``."""
        with self.lock:
            return sum(
                1
                for r in self.requests
                if r.path.startswith(path)
                and (method is None or r.method == method)
                and (status is None or r.status == status)
            )

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def _record(self, request: Request, status: int) -> None:
        if self.record:
            with self.lock:
                self.requests.append(
                    Recorded(
                        request.method,
                        request.path,
                        request.query,
                        dict(request.headers),
                        request.body,
                        status,
                    )
                )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    emulator: ClassVar[Emulator]
    protocol_version = "HTTP/1.1"
    timeout = 30

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: ARG002 - the base class's signature
        return None

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        emulator = self.emulator
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type") or ""
        body: Any = None
        if raw and "json" in content_type:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
        elif raw:
            body = {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
        request = Request(
            method,
            split.path,
            parse_qs(split.query, keep_blank_values=True),
            {k.lower(): v for k, v in self.headers.items()},
            body,
            raw,
        )
        fault = emulator._take_fault(method, split.path)
        if fault is not None and fault.drop:
            emulator._record(request, 0)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None:
            response = fault.response
        else:
            try:
                response = emulator.handle(request)
            except Reply as reply:
                response = reply.response
        emulator._record(request, response.status)
        self._send(response)

    def _send(self, response: Response) -> None:
        payload = response.body if isinstance(response.body, bytes) else orjson.dumps(response.body)
        self.send_response(response.status)
        headers = {"Content-Type": "application/json;charset=UTF-8", **response.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
