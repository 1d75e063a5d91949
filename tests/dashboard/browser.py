"""A real browser for the dashboard's tests: Debian's Chromium, driven by Playwright.

Its fixtures (``browser``, ``page``) are registered once, in tests/conftest.py, so that one
Chromium serves every test folder of a worker (a second Playwright in the same thread fails).

The browser is the system's ``chromium`` (or the executable ``CRM_PERF_SYNC_CHROMIUM`` names),
launched through ``executable_path``: Playwright's downloaded browsers are never used. Without a
Chromium the browser tests are skipped, except in CI (``CI`` set), where they must run.

Each test's ``page`` lives in a fresh browser context and records every request and everything
said on its console, so a test can assert that the page stayed on its own server
(:func:`assert_same_origin`), ran without errors (:func:`assert_no_console_errors`) and meets
axe-core's WCAG 2 A and AA rules (:func:`axe`). The page's Content-Security-Policy stays enforced:
axe is evaluated through the DevTools protocol, which the policy does not govern, rather than
added as a ``<script>``, which it would refuse. :func:`live_server` serves an ASGI app on a real
socket for the browser to load.

Playwright's sync API marks its event loop as running in the test thread while the browser is
open (the whole session, in a worker that ran a browser test): code that calls ``asyncio.run()``
in the test thread cannot run in a test that shares the worker afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, Request, sync_playwright
from starlette.types import ASGIApp

CHROMIUM_ENV = "CRM_PERF_SYNC_CHROMIUM"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium")  # a path, then a name looked up on PATH
AXE_SCRIPT = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
# Only the loopback interface resolves: a page that reaches for another host fails at once (and
# assert_same_origin reports it) instead of waiting on a network the tests must not depend on.
LOOPBACK_ONLY = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"
# Schemes that name no server: nothing of these leaves the browser.
LOCAL_SCHEMES = frozenset({"data", "blob", "about"})
DEFAULT_PORTS = {"http": 80, "https": 443}

RUN_AXE = """async tags => {
    const results = await axe.run(document, {
        runOnly: {type: "tag", values: tags},
        resultTypes: ["violations"],
    });
    return results.violations.map(violation => ({
        rule: violation.id,
        impact: violation.impact,
        help: violation.help,
        targets: violation.nodes.map(node => node.target.flat().join(" >>> ")),
    }));
}"""


def chromium_executable() -> str | None:
    """The Chromium to launch: ``CRM_PERF_SYNC_CHROMIUM``, else the system's, else None."""
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return configured
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = chromium_executable()
    if executable is None:
        why = (
            "no Chromium found: install Debian's package (apt-get install -y chromium) "
            f"or set {CHROMIUM_ENV} to a Chromium executable"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{why}; CI must run the browser tests", pytrace=False)
        pytest.skip(why)
    if not os.access(executable, os.X_OK):
        pytest.fail(f"{CHROMIUM_ENV}={executable} is not an executable", pytrace=False)
    args = [LOOPBACK_ONLY]
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium's sandbox refuses to start as root
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=args)
        yield launched
        launched.close()


@dataclass
class Traffic:
    """What a page asked the network for and said on its console, in order."""

    requests: list[str] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)  # URL -> why it failed (e.g. "csp")
    console: list[ConsoleMessage] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    # Playwright wraps each handler in an attribute set on it: methods, not bound builtins like
    # list.append, which take no attributes.
    def on_request(self, request: Request) -> None:
        self.requests.append(request.url)

    def on_request_failed(self, request: Request) -> None:
        self.blocked[request.url] = request.failure or "failed"

    def on_console(self, message: ConsoleMessage) -> None:
        self.console.append(message)

    def on_page_error(self, error: Error) -> None:
        self.page_errors.append(f"{error.name}: {error.message}")


_TRAFFIC: dict[Page, Traffic] = {}


def traffic(page: Page) -> Traffic:
    """The recording of a page from the ``page`` fixture."""
    return _TRAFFIC[page]


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a context of its own (no cookies or storage shared), recording its traffic."""
    context = browser.new_context()
    recorded = Traffic()
    context.on("request", recorded.on_request)
    context.on("requestfailed", recorded.on_request_failed)
    opened = context.new_page()
    opened.on("console", recorded.on_console)
    opened.on("pageerror", recorded.on_page_error)
    _TRAFFIC[opened] = recorded
    try:
        yield opened
    finally:
        del _TRAFFIC[opened]
        context.close()


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port or DEFAULT_PORTS.get(parts.scheme)


def assert_same_origin(page: Page, base_url: str) -> None:
    """Every request the page made went to ``base_url``'s origin (blocked attempts included)."""
    recorded = traffic(page)
    assert recorded.requests, "the page made no request at all: was it loaded?"
    origin = _origin(base_url)
    outside = [
        url
        for url in recorded.requests
        if urlsplit(url).scheme not in LOCAL_SCHEMES and _origin(url) != origin
    ]
    described = [
        f"  {url} (failed: {recorded.blocked[url]})" if url in recorded.blocked else f"  {url}"
        for url in outside
    ]
    if outside:  # raised, not asserted: pytest would append its own rendering of the list
        raise AssertionError(f"the page reached outside {base_url}:\n" + "\n".join(described))


def assert_no_console_errors(page: Page) -> None:
    """The page logged no error to its console and threw no uncaught exception."""
    recorded = traffic(page)
    errors = [
        f"  console.{message.type}: {message.text} ({message.location['url']})"
        for message in recorded.console
        if message.type == "error"
    ]
    errors += [f"  uncaught {error}" for error in recorded.page_errors]
    if errors:
        raise AssertionError("the page reported errors:\n" + "\n".join(errors))


@dataclass(frozen=True)
class Violation:
    """One axe-core rule a page breaks, with the CSS selectors of the elements that break it."""

    rule: str
    impact: str | None
    help: str
    targets: tuple[str, ...]


def axe(page: Page, tags: Sequence[str] = ("wcag2a", "wcag2aa")) -> list[Violation]:
    """The page's violations of the axe-core rules with these tags (WCAG 2 A and AA by default).

    ``assert axe(page) == []`` prints each violation's rule, impact and elements when it fails.
    """
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(AXE_SCRIPT.read_text())
    found: list[dict[str, Any]] = page.evaluate(RUN_AXE, list(tags))
    return [
        Violation(
            rule=str(entry["rule"]),
            impact=None if entry["impact"] is None else str(entry["impact"]),
            help=str(entry["help"]),
            targets=tuple(str(target) for target in entry["targets"]),
        )
        for entry in found
    ]


@contextmanager
def live_server(app: ASGIApp) -> Iterator[str]:
    """``app`` served by uvicorn on 127.0.0.1 in a background thread: yields its base URL.

    The socket is bound here and handed to uvicorn, so no other process can take the port between
    choosing it and serving on it.
    """
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [listening]}, name=f"uvicorn:{port}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped before it served"
            assert time.monotonic() < deadline, "uvicorn did not start within 60 s"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listening.close()
    assert not thread.is_alive(), "uvicorn did not stop within 30 s"
