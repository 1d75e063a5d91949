"""Process logs: one JSON object per line with the context of the work, and never a secret."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from crm_perf_sync.kit.logs import JsonFormatter, TextFormatter, log_context, register_secrets
from crm_perf_sync.kit.logs import _ContextFilter as ContextFilter
from tests.connectors.hubspot.emulator import HubSpotEmulator
from tests.connectors.hubspot.portal import small_portal

REPO = Path(__file__).resolve().parents[1]
CLIENT_SECRET = "cs-77f1-CLIENTSECRET"
REFRESH = "rt-5e2a-REFRESHSECRET"


@pytest.fixture
def emulator() -> Iterator[HubSpotEmulator]:
    portal = small_portal()
    portal.oauth_clients["app-9"] = (CLIENT_SECRET, {REFRESH})
    with HubSpotEmulator(portal) as running:
        yield running


def test_a_sync_logs_json_lines_with_its_context_and_none_of_its_credentials(
    tmp_path: Path, emulator: HubSpotEmulator
) -> None:
    config = tmp_path / "crm-perf-sync.yaml"
    config.write_text(
        f"""
connections:
  - id: hs
    kind: hubspot
    settings:
      base_url: {emulator.url}
      oauth: {{client_id: app-9, client_secret: "${{HS_SECRET}}", refresh_token: "${{HS_REFRESH}}"}}
      rate_limits: {{requests_per_interval: 100000, interval: PT1S, search_per_second: 100000}}
"""
    )
    env = {
        **os.environ,
        "CRM_PERF_SYNC_CONFIG": str(config),
        "CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "CRM_PERF_SYNC_LOG_FORMAT": "json",
        "CRM_PERF_SYNC_LOG_LEVEL": "DEBUG",  # the HTTP clients log requests and headers here
        "HS_SECRET": CLIENT_SECRET,
        "HS_REFRESH": REFRESH,
    }
    # Trouble on the way, so the sync has warnings to log (each retried inside its stream).
    emulator.fail("/crm/v3/objects/deals/search", 502, method="POST")
    emulator.fail("/crm/v3/objects/contacts/search", 503, method="POST")
    result = subprocess.run(
        [sys.executable, "-c", "from crm_perf_sync.cli import main; main()", "sync", "hs"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    issued = list(emulator.portal.oauth_tokens)
    assert issued, "the sync authenticated through the OAuth refresh flow"
    for secret in (CLIENT_SECRET, REFRESH, *issued):
        assert secret not in result.stderr
        assert secret not in result.stdout
    events = [orjson.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "message"} <= set(event) for event in events)
    assert all(e.get("connection") == "hs" and e.get("run_id") == 1 for e in events), events
    retried = {e["stream"] for e in events if e["level"] == "warning" and "stream" in e}
    assert retried == {"leads", "opportunities"}, events


def _capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    logger = logging.getLogger(f"tests.redaction.{id(buffer)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, buffer


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_secrets_are_blanked_wherever_a_line_carries_them(formatter: logging.Formatter) -> None:
    register_secrets(["sf-consumer-SECRET-4411"])
    logger, buffer = _capture(formatter)
    with log_context(connection="sf", request_id="r-1"):
        logger.info("sending headers %s", {"Authorization": "Bearer 00Dxx0000001gPL!AR8AQJXg5oj8"})
        logger.warning("endpoint created with secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        logger.info("key cps_hVHnA0rW4Hc8yZb1VQlWyUy3u2zOhUxp7aN0gPqR6Tk was used")
        logger.error("connect to postgresql+psycopg://crm:pg-PASSWORD-99@db.internal:5432/crm failed")
        logger.info("token request: grant_type=refresh_token&refresh_token=rt-XYZ-0987654&client_id=a")
        logger.info("login with %s", {"client_secret": "sf-consumer-SECRET-4411", "user": "ops"})
        try:
            raise RuntimeError("upstream said: access_token=ya29.A0ARrdaM-very-secret rejected")
        except RuntimeError:
            logger.exception("the call failed")
    text = buffer.getvalue()
    for secret in (
        "00Dxx0000001gPL!AR8AQJXg5oj8",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "hVHnA0rW4Hc8yZb1VQlWyUy3u2zOhUxp7aN0gPqR6Tk",
        "pg-PASSWORD-99",
        "rt-XYZ-0987654",
        "sf-consumer-SECRET-4411",
        "ya29.A0ARrdaM-very-secret",
    ):
        assert secret not in text
    # What is not secret survives: the words around the secret, hosts, non-secret parameters.
    for kept in ("Bearer ***", "whsec_***", "cps_***", "crm:***@db.internal:5432/crm", "client_id=a", "ops"):
        assert kept in text
    if isinstance(formatter, JsonFormatter):
        lines = [orjson.loads(line) for line in text.splitlines()]
        assert len(lines) == 7
        assert all(line["connection"] == "sf" and line["request_id"] == "r-1" for line in lines)
        assert "RuntimeError" in lines[-1]["exc_info"]
