"""Logging in: every ``auth.type``, a refused credential as a config error, secrets never shown."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.config import load_config
from crm_perf_sync.jobs.sync import SyncService
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.sync.service import SyncOptions
from crm_perf_sync_salesforce.settings import SalesforceSettings
from tests.connectors.salesforce.emulator import SalesforceEmulator
from tests.connectors.salesforce.seed import seed_org
from tests.connectors.salesforce.support import (
    Syncer,
    auth_for,
    last_run,
    rsa_key_pair,
    settings_for,
    stored,
)

OWNERS = ["owners"]


@pytest.mark.parametrize(
    ("kind", "login_route"),
    [("password", "soap_login"), ("client_credentials", "token"), ("jwt", "token"), ("session", None)],
)
def test_every_auth_type_logs_in(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session], kind: str, login_route: str | None
) -> None:
    made = seed_org(emulator.org, opportunities=3, leads=0)
    syncer = Syncer(session_factory, settings_for(emulator, streams=OWNERS, auth=auth_for(emulator, kind)))

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    assert set(made.users) <= set(stored(session_factory, "owners"))
    logins = [route for route in emulator.org.routes() if route in ("soap_login", "token")]
    assert logins == ([login_route] if login_route else [])


def _wrong(emulator: SalesforceEmulator, kind: str) -> tuple[dict[str, Any], str, str]:
    """Settings with a wrong credential, the secret in them, and what the error must say."""
    auth = auth_for(emulator, kind)
    if kind == "password":
        auth["password"] = "Wrong-Passw0rd-1234"
        return auth, "Wrong-Passw0rd-1234", "INVALID_LOGIN: Invalid username, password, security token"
    if kind == "client_credentials":
        auth["client_secret"] = "wrong-consumer-secret-5678"
        return auth, "wrong-consumer-secret-5678", "invalid_client: invalid client credentials"
    if kind == "jwt":
        other, _public = rsa_key_pair.__wrapped__()  # a key the connected app does not know
        auth["private_key"] = other
        return auth, other.splitlines()[1], "invalid_grant: invalid assertion"
    auth["session_id"] = "00D000000000001!AQwrongsessionid9876"
    return auth, "00D000000000001!AQwrongsessionid9876", "INVALID_SESSION_ID"


@pytest.mark.parametrize("kind", ["password", "client_credentials", "jwt", "session"])
def test_a_refused_credential_fails_the_run_as_a_config_error_and_is_never_shown(
    emulator: SalesforceEmulator,
    session_factory: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    seed_org(emulator.org, opportunities=3, leads=0)
    auth, secret, reason = _wrong(emulator, kind)
    syncer = Syncer(session_factory, settings_for(emulator, streams=OWNERS, auth=auth))

    with caplog.at_level(logging.DEBUG):
        outcome = syncer.run()

    assert (outcome.status, outcome.error_kind) == ("failed", "config")
    assert outcome.error is not None
    assert reason in outcome.error
    if kind != "session":
        assert f"Salesforce refused the {kind} login at {emulator.url}" in outcome.error
    run = last_run(session_factory)
    assert run.error == outcome.error
    for text in (outcome.error, caplog.text, repr(SalesforceSettings.model_validate(syncer.settings))):
        assert secret not in text


def test_secrets_come_from_the_environment_through_the_configuration(
    emulator: SalesforceEmulator,
    session_factory: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """The way an operator configures it: ``${ENV}`` in the YAML, the service running the sync."""
    seed_org(emulator.org, opportunities=5, leads=5)
    config = {
        "connections": [
            {
                "id": "sfdc",
                "kind": "salesforce",
                "settings": {
                    "auth": {
                        "type": "password",
                        "username": "admin@example.com",
                        "password": "${SF_PASSWORD}",
                        "security_token": "${SF_TOKEN}",
                    },
                    "login_url": "${SF_LOGIN_URL}",
                    "ca_bundle": str(emulator.tls.ca_path),
                    "streams": ["owners", "opportunities"],
                },
            }
        ]
    }
    path = tmp_path / "crm-perf-sync.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"SF_PASSWORD": "admin-password", "SF_TOKEN": "TOKEN", "SF_LOGIN_URL": emulator.url}
    loaded = load_config(path, ConnectorRegistry.discover(), env=env)
    service = SyncService(
        session_factory=session_factory,
        registry=ConnectorRegistry.discover(),
        config=loaded,
        options=SyncOptions(),
        base_dir=tmp_path,
    )

    with caplog.at_level(logging.DEBUG):
        service.apply_config()
        outcome = service.sync("sfdc", sleep=lambda _seconds: None)

    assert outcome.status == "succeeded", outcome.error
    assert len(stored(session_factory, "opportunities")) == 5
    assert "admin-password" not in caplog.text
    assert "admin-passwordTOKEN" not in caplog.text


def test_an_untrusted_certificate_says_to_set_ca_bundle(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    seed_org(emulator.org, opportunities=1, leads=0)
    settings = settings_for(emulator, streams=OWNERS)
    del settings["ca_bundle"]
    syncer = Syncer(session_factory, settings)

    outcome = syncer.run()

    assert (outcome.status, outcome.error_kind) == ("failed", "config")
    assert outcome.error is not None
    assert "not trusted" in outcome.error
    assert "ca_bundle" in outcome.error


def test_the_configured_api_version_is_used_for_every_call(
    emulator: SalesforceEmulator, session_factory: sessionmaker[Session]
) -> None:
    seed_org(emulator.org, opportunities=3, leads=3)
    syncer = Syncer(session_factory, settings_for(emulator, api_version="58.0"))

    outcome = syncer.run()

    assert outcome.status == "succeeded", outcome.error
    paths = [entry.path for entry in emulator.org.log]
    assert paths[0] == "/services/Soap/u/58.0"
    assert all(path.startswith("/services/data/v58.0/") for path in paths[1:])


def _settings(**overrides: Any) -> SalesforceSettings:
    base: dict[str, Any] = {"auth": {"type": "password", "username": "u", "password": "p"}}
    return SalesforceSettings.model_validate({**base, **overrides})


def test_the_settings_are_validated() -> None:
    assert _settings().login_url == "https://login.salesforce.com"
    assert (
        _settings(login_url="https://acme.my.salesforce.com/").login_url == "https://acme.my.salesforce.com"
    )
    assert _settings(api_version="v60.0").api_version == "60.0"
    with pytest.raises(ValidationError, match="https"):
        _settings(login_url="http://login.salesforce.com")
    with pytest.raises(ValidationError, match="must not carry credentials") as leaked:
        _settings(login_url="https://user:hunter2@login.salesforce.com")
    assert "hunter2" not in leaked.value.errors()[0]["msg"]  # what `config check` prints
    with pytest.raises(ValidationError, match="exactly one of private_key and private_key_file"):
        _settings(auth={"type": "jwt", "client_id": "c", "username": "u"})
    with pytest.raises(ValidationError, match="relationship paths are not supported"):
        _settings(custom_fields={"opportunities": {"industry": "Account.Industry"}})
    with pytest.raises(ValidationError, match="lower-case"):
        _settings(custom_fields={"leads": {"Segment": "Segment__c"}})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        _settings(pasword="typo")
    secret = _settings(auth={"type": "password", "username": "u", "password": "s3cr3t-value"})
    assert "s3cr3t-value" not in repr(secret)
    assert "s3cr3t-value" not in secret.model_dump_json()


@pytest.mark.parametrize(
    ("login_url", "audience"),
    [
        ("https://login.salesforce.com", "https://login.salesforce.com"),
        ("https://test.salesforce.com", "https://test.salesforce.com"),
        ("https://acme--uat.sandbox.my.salesforce.com", "https://test.salesforce.com"),
        ("https://acme.my.salesforce.com", "https://login.salesforce.com"),
    ],
)
def test_the_jwt_audience_follows_the_login_url(login_url: str, audience: str) -> None:
    private, _public = rsa_key_pair()
    auth = {"type": "jwt", "client_id": "c", "username": "u", "private_key": private}
    assert _settings(auth=auth, login_url=login_url).jwt_audience() == audience
    explicit = _settings(auth={**auth, "audience": "https://community.example.com"}, login_url=login_url)
    assert explicit.jwt_audience() == "https://community.example.com"


def test_durations_read_like_the_rest_of_the_configuration() -> None:
    settings = _settings(lookback="15m", skew="30s", reconcile_every="1d", bulk_timeout="PT3H", min_window=5)
    assert (settings.lookback, settings.skew, settings.reconcile_every) == (
        timedelta(minutes=15),
        timedelta(seconds=30),
        timedelta(days=1),
    )
    assert (settings.bulk_timeout, settings.min_window) == (timedelta(hours=3), timedelta(seconds=5))
    assert _settings(reconcile_every=None).reconcile_every is None
