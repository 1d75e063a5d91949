"""``doctor`` on a HubSpot connection: every scope the streams need, a short retry budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crm_perf_sync.kit.timeutil import utc_now
from tests.cli_inprocess import invoke
from tests.connectors.hubspot.emulator import READ_SCOPES, HubSpotEmulator
from tests.connectors.hubspot.portal import small_portal


@pytest.fixture
def live() -> Iterator[HubSpotEmulator]:
    """An emulator on the real clock: ``doctor`` waits for real between its attempts."""
    with HubSpotEmulator(small_portal(utc_now)) as running:
        yield running


def _doctor(tmp_path: Path, emulator: HubSpotEmulator, token: str) -> tuple[int, str]:
    config = tmp_path / "crm-perf-sync.yaml"
    config.write_text(
        "connections:\n"
        "  - id: hs\n"
        "    kind: hubspot\n"
        f"    settings: {{access_token: '${{HUBSPOT_TOKEN}}', base_url: '{emulator.url}'}}\n",
        encoding="utf-8",
    )
    env = {
        "COLUMNS": "200",
        "CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "CRM_PERF_SYNC_CONFIG": str(config),
        "HUBSPOT_TOKEN": token,
    }
    assert invoke("migrate", env=env).exit_code == 0
    result = invoke("doctor", env=env)
    assert "Traceback" not in result.stdout + result.stderr
    assert token not in result.stdout + result.stderr
    return result.exit_code, result.stdout


def test_doctor_names_a_scope_the_token_lacks(tmp_path: Path, live: HubSpotEmulator) -> None:
    token = live.portal.private_app(READ_SCOPES - {"crm.objects.deals.read"})

    code, out = _doctor(tmp_path, live, token)

    assert code == 1
    (line,) = [line for line in out.splitlines() if "connection hs" in line]
    assert line.startswith("FAIL connection hs:")
    assert "lacks the scope crm.objects.deals.read" in line
    assert "opportunities" in line


def test_doctor_passes_a_token_with_every_scope(tmp_path: Path, live: HubSpotEmulator) -> None:
    code, out = _doctor(tmp_path, live, live.portal.private_app(READ_SCOPES))

    assert code == 0, out
    assert "ok   connection hs: hubspot: reachable, credentials accepted" in out


def test_doctor_gives_up_on_a_failing_portal_after_a_short_retry_budget(
    tmp_path: Path, live: HubSpotEmulator
) -> None:
    """Six attempts with backoff are right for a sync at 3 a.m., not for someone at a terminal."""
    live.fail("/crm/v3/owners", 503, times=100)

    code, out = _doctor(tmp_path, live, live.portal.token)

    assert code == 1
    assert "FAIL connection hs:" in out
    assert "2 attempts" in out
    assert live.count("GET", "/crm/v3/owners") == 2
