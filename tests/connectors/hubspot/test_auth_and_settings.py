"""Credentials: private app tokens, OAuth refresh, refused credentials, secrets kept out of sight."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from crm_perf_sync.config import ConfigIssues, load_config
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync_hubspot import HubSpotSettings
from tests.connectors.hubspot.emulator import HubSpotEmulator, Portal, Recorded
from tests.connectors.hubspot.support import UNLIMITED, Harness

SECRET = "pat-na1-0f1e2d3c-SUPERSECRET"
CLIENT_SECRET = "cs-4b5a-CLIENTSECRET"
REFRESH = "rt-9c8d-REFRESHSECRET"


def oauth_settings(emulator: HubSpotEmulator, *, refresh: str = REFRESH) -> dict[str, object]:
    return {
        "base_url": emulator.url,
        "oauth": {"client_id": "app-123", "client_secret": CLIENT_SECRET, "refresh_token": refresh},
        "rate_limits": dict(UNLIMITED),
    }


def assert_hidden(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


def test_a_wrong_token_fails_the_run_as_a_config_error_without_showing_it(
    hs: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # urllib3 and the client log requests and bodies at DEBUG
    outcome = hs.sync(access_token=SECRET)
    assert (outcome.status, outcome.error_kind) == ("failed", "config")
    assert "refused the access token" in (outcome.error or "")
    assert "settings.access_token" in (outcome.error or "")
    assert "INVALID_AUTHENTICATION" in (outcome.error or "")
    assert_hidden(outcome.error or "", SECRET)
    assert_hidden(caplog.text, SECRET)
    assert_hidden(str(hs.last_run()), SECRET)
    assert hs.opportunities() == {}


def test_oauth_refreshes_before_the_first_request_and_again_on_a_401(
    hs: Harness, emulator: HubSpotEmulator, portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    portal.oauth_clients["app-123"] = (CLIENT_SECRET, {REFRESH})
    revoked: list[bool] = []

    def revoke_once(_: Recorded) -> None:
        # HubSpot invalidates a token early (the portal's admin reinstalls the app, ...).
        if not revoked:
            revoked.append(True)
            portal.oauth_tokens.clear()

    emulator.on("POST", "/crm/v3/objects/deals/search", revoke_once)
    hs.settings.update(oauth_settings(emulator))
    hs.settings["access_token"] = None
    outcome = hs.ok()
    assert emulator.count("POST", "/oauth/v1/token", status=200) == 2
    assert sum(1 for r in emulator.requests if r.status == 401) == 1
    assert outcome.retries == 0
    assert len(hs.opportunities()) == 29
    issued = [r for r in emulator.requests if r.path == "/oauth/v1/token"]
    assert issued[0].body["grant_type"] == "refresh_token"
    assert_hidden(caplog.text, CLIENT_SECRET, REFRESH, *portal.oauth_tokens)


def test_oauth_renews_a_token_shortly_before_it_expires(
    hs: Harness, emulator: HubSpotEmulator, portal: Portal
) -> None:
    portal.oauth_clients["app-123"] = (CLIENT_SECRET, {REFRESH})
    portal.oauth_lifetime = timedelta(minutes=5)
    hs.settings.update(oauth_settings(emulator), access_token=None)
    hs.settings["rate_limits"] = {"requests_per_interval": 1, "interval": "PT60S", "search_per_second": 0.02}
    started = hs.clock.now()
    hs.ok()  # a minute a request: the 5-minute token is renewed on the way, never refused
    assert (hs.clock.now() - started).total_seconds() > 600
    assert emulator.count("POST", "/oauth/v1/token") >= 2
    assert sum(1 for r in emulator.requests if r.status == 401) == 0


def test_a_refused_refresh_token_is_a_config_error_without_the_secrets(
    hs: Harness, emulator: HubSpotEmulator, portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    portal.oauth_clients["app-123"] = (CLIENT_SECRET, {"another-token"})
    hs.settings.update(oauth_settings(emulator), access_token=None)
    outcome = hs.sync()
    assert (outcome.status, outcome.error_kind) == ("failed", "config")
    assert "BAD_REFRESH_TOKEN" in (outcome.error or "")
    assert "check settings.oauth" in (outcome.error or "")
    assert "app-123" in (outcome.error or "")
    assert_hidden(outcome.error or "", CLIENT_SECRET, REFRESH)
    assert_hidden(caplog.text, CLIENT_SECRET, REFRESH)


def test_a_missing_scope_is_a_config_error(hs: Harness, emulator: HubSpotEmulator) -> None:
    emulator.fail("/crm/v3/owners", 403)
    outcome = hs.sync()
    assert (outcome.status, outcome.error_kind) == ("failed", "config")
    assert "scope" in (outcome.error or "")


# -- settings ----------------------------------------------------------------------------------------


def test_secrets_come_from_the_environment_and_never_show(tmp_path: Path) -> None:
    path = tmp_path / "crm.yaml"
    path.write_text(
        "connections:\n"
        "  - id: hubspot\n"
        "    kind: hubspot\n"
        "    settings:\n"
        "      access_token: ${HUBSPOT_TOKEN}\n"
        "      currency: EUR\n",
        encoding="utf-8",
    )
    loaded = load_config(path, ConnectorRegistry.discover(), env={"HUBSPOT_TOKEN": SECRET})
    settings = loaded.connector_settings["hubspot"]
    assert isinstance(settings, HubSpotSettings)
    assert settings.access_token is not None
    assert settings.access_token.get_secret_value() == SECRET
    assert settings.base_url == "https://api.hubapi.com"
    assert (settings.currency, settings.lookback.total_seconds(), settings.index_lag.total_seconds()) == (
        "EUR",
        300,
        60,
    )
    assert_hidden(repr(settings), SECRET)
    assert_hidden(str(settings.model_dump()), SECRET)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "give exactly one of access_token"),
        (
            {"access_token": "x", "oauth": {"client_id": "a", "client_secret": "b", "refresh_token": "c"}},
            "exactly one",
        ),
        ({"access_token": "  "}, "access_token is empty"),
        ({"access_token": "x", "currency": "usd"}, "ISO 4217"),
        ({"access_token": "x", "base_url": "api.hubapi.com"}, "http(s) URL"),
        ({"access_token": "x", "converted_stage": "lead"}, "lead_stage must come before converted_stage"),
        ({"access_token": "x", "lead_stage": "prospect"}, "not one of lifecycle_stages"),
        ({"access_token": "x", "deal_properties": {"segment": "Segment Name"}}, "internal name"),
        ({"access_token": "x", "page_size": 500}, "less than or equal to 200"),
        ({"access_token": "x", "history_batch_size": 100}, "less than or equal to 50"),
        ({"access_token": "x", "tokne": "y"}, "Extra inputs are not permitted"),
    ],
)
def test_settings_are_checked(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        HubSpotSettings.model_validate(values)


def test_durations_are_written_as_in_the_rest_of_the_configuration() -> None:
    settings = HubSpotSettings.model_validate(
        {
            "access_token": "x",
            "lookback": "5m",
            "index_lag": "90s",
            "association_refresh": "1d",
            "rate_limits": {"interval": "10s"},
            "backoff": 2,
            "max_backoff": "1m",
            "timeout": "PT30S",
        }
    )
    assert (settings.lookback, settings.index_lag, settings.association_refresh) == (
        timedelta(minutes=5),
        timedelta(seconds=90),
        timedelta(days=1),
    )
    assert settings.rate_limits.interval == timedelta(seconds=10)
    assert (settings.backoff, settings.max_backoff, settings.timeout) == (
        timedelta(seconds=2),
        timedelta(minutes=1),
        timedelta(seconds=30),
    )
    with pytest.raises(ValidationError, match=re.escape("expected a duration like 30s, 15m, 1h or 1d")):
        HubSpotSettings.model_validate({"access_token": "x", "lookback": "5 minutes"})


def test_a_config_error_names_the_key_and_not_the_secret(tmp_path: Path) -> None:
    path = tmp_path / "crm.yaml"
    path.write_text(
        "connections:\n  - id: hs\n    kind: hubspot\n    settings:\n"
        "      access_token: ${T}\n      pagesize: 5\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigIssues) as raised:
        load_config(path, ConnectorRegistry.discover(), env={"T": SECRET})
    text = str(raised.value)
    assert "pagesize" in text
    assert_hidden(text, SECRET)
