"""Requests too large to serve are refused with a problem, over a real socket as in production.

The API process's HTTP server (uvicorn with httptools, configured by
:mod:`crm_perf_sync.api.server`) bounds the URL and the request headers while it parses them,
so an oversized request costs a bounded amount of memory, and it answers every refusal as
problem+json like the application does. The application bounds the body (64 KiB) however it is
sent, and refuses an oversized URL or header block itself under any other server.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from crm_perf_sync.api.app import MAX_BODY_BYTES, create_app
from crm_perf_sync.api.server import MAX_HEADER_BYTES, MAX_HEADERS, MAX_URL_BYTES, server_options
from crm_perf_sync.apikeys import service as keys
from crm_perf_sync.kit.db import create_db_engine, make_session_factory, session_scope
from tests.conftest import REPO_ROOT

PROBLEM = "application/problem+json"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, object]:
        assert self.headers["content-type"] == PROBLEM, self
        found: dict[str, object] = json.loads(self.body)
        assert found["status"] == self.status
        assert found["request_id"] == self.headers["x-request-id"]
        return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> tuple[str, str]:
    """A migrated SQLite store with an admin key: (its URL, the key)."""
    path = tmp_path_factory.mktemp("limits") / "store.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = create_db_engine(url)
    with session_scope(make_session_factory(engine)) as session:
        _, key = keys.create(session, "limits", "admin")
    engine.dispose()
    return url, key


@pytest.fixture(scope="module")
def app(store: tuple[str, str]) -> Iterator[FastAPI]:
    engine = create_db_engine(store[0])
    yield create_app(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def port(app: FastAPI) -> Iterator[int]:
    """The app served as the ``api`` role serves it, on a real socket."""
    chosen = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=chosen, log_level="error", **server_options())
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield chosen
    server.should_exit = True
    thread.join(timeout=10)


class Reader:
    """HTTP/1.1 responses with a Content-Length body, read off a socket one after another."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"the server closed the connection without answering: {self.buffer!r}"
        self.buffer += chunk

    def response(self) -> Response:
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Response(int(status_line.split(" ")[1]), headers, body)


def read_response(sock: socket.socket) -> Response:
    return Reader(sock).response()


def exchange(port: int, request: bytes) -> Response:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request)
        return read_response(sock)


def test_a_url_over_the_limit_is_a_414_problem(port: int) -> None:
    url = "/api/v1/opportunities?stage=" + "x" * 200_000
    response = exchange(port, f"GET {url} HTTP/1.1\r\nHost: api\r\n\r\n".encode())
    assert response.status == 414
    problem = response.problem()
    assert f"{MAX_URL_BYTES:,} bytes" in str(problem["detail"])
    assert str(problem["type"]).endswith("/url-too-long")


def test_a_url_within_the_limit_reaches_the_app(port: int) -> None:
    url = "/api/v1/opportunities?stage=" + "x" * (MAX_URL_BYTES - 100)
    response = exchange(port, f"GET {url} HTTP/1.1\r\nHost: api\r\n\r\n".encode())
    assert response.status == 401  # the app's answer: no key
    assert response.problem()["instance"] == "/api/v1/opportunities"


def test_headers_over_the_limit_are_refused_before_they_end(port: int) -> None:
    # The header block never ends: a server that buffered it whole would never answer.
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Filler: ")
        sock.sendall(b"a" * (2 * MAX_HEADER_BYTES))
        response = read_response(sock)
    assert response.status == 431
    assert f"{MAX_HEADER_BYTES:,} bytes" in str(response.problem()["detail"])


def test_too_many_headers_are_a_431_problem(port: int) -> None:
    many = "".join(f"X-H{n}: {n}\r\n" for n in range(MAX_HEADERS + 1))
    response = exchange(port, f"GET /healthz HTTP/1.1\r\nHost: api\r\n{many}\r\n".encode())
    assert response.status == 431
    assert str(response.problem()["type"]).endswith("/headers-too-large")
    fine = "".join(f"X-H{n}: {n}\r\n" for n in range(MAX_HEADERS - 5))
    assert exchange(port, f"GET /healthz HTTP/1.1\r\nHost: api\r\n{fine}\r\n".encode()).status == 200


def test_a_malformed_request_is_a_400_problem(port: int) -> None:
    response = exchange(port, b"GET /healthz HTTP/1.1\r\nHost api\r\n\r\n")
    assert response.status == 400
    assert "not a valid HTTP/1.1 request" in str(response.problem()["detail"])


def test_a_refusal_waits_for_the_pipelined_request_before_it(port: int) -> None:
    first = b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n"
    second = b"GET /healthz?" + b"x" * (MAX_URL_BYTES + 1) + b" HTTP/1.1\r\nHost: api\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(first + second)
        reader = Reader(sock)
        answered = reader.response()
        refused = reader.response()
    assert (answered.status, json.loads(answered.body)) == (200, {"status": "ok"})
    assert refused.status == 414
    refused.problem()


@pytest.mark.parametrize("over", ["socket", "asgi"])
def test_a_chunked_body_over_the_limit_is_a_413_problem(
    port: int, app: FastAPI, store: tuple[str, str], over: str
) -> None:
    def body() -> Iterator[bytes]:  # no Content-Length: sent chunked, 10 MB in all
        yield b'{"kpi": "won_deals", "value": 1, "period": "2017-01-01", "scope_id": "'
        for _ in range(160):
            yield b"x" * 65536
        yield b'"}'

    headers = {"Authorization": f"Bearer {store[1]}", "Content-Type": "application/json"}
    response: Any  # httpx's, or the test client's
    if over == "socket":
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            response = client.post("/api/v1/targets", content=body(), headers=headers)
    else:
        response = TestClient(app).post("/api/v1/targets", content=body(), headers=headers)
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"].endswith("/body-too-large")
    assert f"{MAX_BODY_BYTES:,} bytes" in problem["detail"]
    assert problem["request_id"] == response.headers["x-request-id"]


def test_any_server_refuses_an_oversized_url_or_header_block_as_a_problem(app: FastAPI) -> None:
    client = TestClient(app)
    long_url = client.get("/api/v1/opportunities?stage=" + "x" * (MAX_URL_BYTES + 1))
    assert long_url.status_code == 414
    assert long_url.headers["content-type"] == PROBLEM
    big_headers = client.get("/healthz", headers={"X-Filler": "a" * (MAX_HEADER_BYTES + 1)})
    assert big_headers.status_code == 431
    assert big_headers.json()["request_id"] == big_headers.headers["x-request-id"]


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def flood_headers(port: int, total: int) -> Response | None:
    """Send ``total`` bytes of one header, stopping as soon as the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"GET /api/v1/kpis HTTP/1.1\r\nHost: api\r\nX-Filler: ")
        chunk = b"a" * 262_144
        sent = 0
        try:
            while sent < total:
                if select.select([sock], [], [], 0)[0]:
                    break  # an answer (or the server closing) before the headers ended
                sock.sendall(chunk)
                sent += len(chunk)
            else:
                sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            return read_response(sock)
        except (AssertionError, ConnectionResetError):
            return None


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's peak memory in /proc")
def test_the_api_role_stays_small_under_concurrent_oversized_headers(
    tmp_path: Path, sqlite_template: Path
) -> None:
    """Eight unauthenticated clients each sending 30 MB of headers to ``crm-perf-sync api``."""
    shutil.copyfile(sqlite_template, tmp_path / "store.db")
    config = tmp_path / "config.yaml"
    config.write_text("connections: []\n")
    chosen = free_port()
    env = {
        **os.environ,
        "CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "CRM_PERF_SYNC_CONFIG": str(config),
        "CRM_PERF_SYNC_PORT": str(chosen),
        "CRM_PERF_SYNC_LOG_LEVEL": "ERROR",
    }
    process = subprocess.Popen(
        [sys.executable, "-c", "from crm_perf_sync.cli import main; main()", "api"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO_ROOT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, "the api role exited"
            assert time.monotonic() < deadline, "the api role did not come up"
            try:
                if httpx.get(f"http://127.0.0.1:{chosen}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        before = peak_rss(process.pid)
        answers: list[Response | None] = [None] * 8

        def client(n: int) -> None:
            answers[n] = flood_headers(chosen, 30 * 1024 * 1024)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert [a.status if a else None for a in answers] == [431] * 8
        growth = peak_rss(process.pid) - before
        assert growth < 32 * 1024 * 1024, f"the server's peak memory grew by {growth / 2**20:.0f} MiB"
        assert httpx.get(f"http://127.0.0.1:{chosen}/healthz", timeout=30).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
