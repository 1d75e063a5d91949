"""The browser fixtures catch what they are for, on a tiny app served under a strict CSP.

The clean page loads a same-origin script and passes every check; the faulty one has an input
without a label, an image from another host, an inline script the policy refuses and a script
that throws, and each check reports its own fault.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tests.dashboard.browser import (
    Violation,
    assert_no_console_errors,
    assert_same_origin,
    axe,
    live_server,
    traffic,
)

STRICT = {"Content-Security-Policy": "default-src 'self'"}

CLEAN = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Clean</title><script src="/ready.js"></script></head>
<body><main>
<h1>Pipeline</h1>
<label for="owner">Owner</label> <input id="owner" name="owner">
</main></body>
</html>
"""

FAULTY = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Faulty</title><script src="/throws.js"></script></head>
<body><main>
<h1>Pipeline</h1>
<input id="owner" name="owner">
<img src="http://example.invalid/x.png" alt="Logo">
<script>document.title = "inline ran";</script>
</main></body>
</html>
"""


def html(text: str) -> Response:
    return HTMLResponse(text, headers=STRICT)


def javascript(text: str) -> Response:
    return Response(text, media_type="text/javascript", headers=STRICT)


async def clean(_: Request) -> Response:
    return html(CLEAN)


async def faulty(_: Request) -> Response:
    return html(FAULTY)


async def ready(_: Request) -> Response:
    return javascript('document.documentElement.dataset.ready = "yes";')


async def throws(_: Request) -> Response:
    return javascript('throw new Error("thrown on purpose");')


async def favicon(_: Request) -> Response:
    # Chromium asks every origin for one; a 404 would be a console error.
    return Response(status_code=204)


APP = Starlette(
    routes=[
        Route("/", clean),
        Route("/faulty", faulty),
        Route("/ready.js", ready),
        Route("/throws.js", throws),
        Route("/favicon.ico", favicon),
    ]
)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with live_server(APP) as url:
        yield url


def test_a_clean_page_passes_every_check(page: Page, base_url: str, tmp_path: Path) -> None:
    page.goto(base_url)
    # The same-origin script ran: the policy lets the page's own files through.
    assert page.evaluate("document.documentElement.dataset.ready") == "yes"
    assert traffic(page).requests[:2] == [f"{base_url}/", f"{base_url}/ready.js"]
    assert_same_origin(page, base_url)
    assert_no_console_errors(page)
    assert axe(page) == []

    shot = tmp_path / "clean.png"
    page.screenshot(path=shot)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk: the image's size
    assert (width, height) == (1280, 720)  # Playwright's default viewport


def test_axe_runs_under_the_strict_policy_and_finds_the_unlabelled_input(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/faulty")
    # The policy is enforced, not bypassed: the inline script did not run.
    assert page.title() == "Faulty"
    assert axe(page) == [
        Violation(rule="label", impact="critical", help="Form elements must have labels", targets=("#owner",))
    ]


def test_assert_same_origin_reports_the_image_from_another_host(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/faulty")
    with pytest.raises(AssertionError) as raised:
        assert_same_origin(page, base_url)
    # Only the image: the page's own files are on its origin. The policy blocked it, and says so.
    assert str(raised.value).splitlines()[:2] == [
        f"the page reached outside {base_url}:",
        "  http://example.invalid/x.png (failed: csp)",
    ]
    # The same port on another host name is another origin.
    with pytest.raises(AssertionError, match="reached outside"):
        assert_same_origin(page, base_url.replace("127.0.0.1", "localhost"))


def test_assert_no_console_errors_reports_the_refused_script_and_the_uncaught_error(
    page: Page, base_url: str
) -> None:
    page.goto(f"{base_url}/faulty")
    with pytest.raises(AssertionError) as raised:
        assert_no_console_errors(page)
    reported = str(raised.value)
    assert "Executing inline script violates the following Content Security Policy" in reported
    assert "uncaught Error: thrown on purpose" in reported
    assert "example.invalid/x.png" in reported  # the refused image is an error on the console too


def test_live_server_serves_the_app_and_stops_when_the_block_ends() -> None:
    with live_server(APP) as url:
        served = httpx.get(f"{url}/ready.js")
        assert served.status_code == 200
        assert served.headers["content-security-policy"] == "default-src 'self'"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/ready.js")
