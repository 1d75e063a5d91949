"""A real webhook consumer on 127.0.0.1: verifies every request with the standardwebhooks library.

It answers from a script of status codes (then 200s), and keeps what it received: the verified
payloads with their webhook-id, and the requests whose signature did not verify.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    message_id: str
    payload: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Receiver:
    secrets: list[str] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    retry_after: str | None = None
    accepted: list[Received] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)  # the webhook-id of every request
    rejected: list[str] = field(default_factory=list)
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def types(self) -> list[str]:
        with self.lock:
            return [r.payload["type"] for r in self.accepted]

    def handle(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        with self.lock:
            self.attempts.append(headers.get("webhook-id", ""))
            status = self.script.pop(0) if self.script else 200
        if status >= 300:
            extra = {"Retry-After": self.retry_after} if self.retry_after and status in (429, 503) else {}
            return status, extra
        for secret in self.secrets:
            try:
                payload = Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            with self.lock:
                self.accepted.append(Received(headers["webhook-id"], payload, headers))
            return 204, {}
        with self.lock:
            self.rejected.append(headers.get("webhook-id", ""))
        return 401, {}


@contextmanager
def receiving(secrets: Sequence[str] = (), script: Sequence[int] = ()) -> Iterator[Receiver]:
    """A receiver on a free port."""
    with receiving_on(0, secrets, script) as receiver:
        yield receiver


@contextmanager
def receiving_on(port: int, secrets: Sequence[str] = (), script: Sequence[int] = ()) -> Iterator[Receiver]:
    receiver = Receiver(list(secrets), list(script))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, extra = receiver.handle(body, {k.lower(): v for k, v in self.headers.items()})
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: ARG002 - quiet, on purpose
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    # Polled every 50 ms for the shutdown request (the default 0.5 s is a wait at every exit).
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
