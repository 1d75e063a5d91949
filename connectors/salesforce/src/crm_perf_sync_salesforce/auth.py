"""Logging in: each configured ``auth.type`` turned into a session (an access token and an instance).

The token endpoint and the SOAP login are called under the configured ``login_url`` itself
(simple-salesforce's own login builds ``https://{domain}.salesforce.com`` URLs, which rules out
My Domain hosts with a port and proxies), through simple-salesforce's ``token_login`` and
``soap_login`` so that responses are read exactly as the library reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from html import escape
from urllib.parse import urlsplit

import jwt
import requests
from simple_salesforce.exceptions import SalesforceAuthenticationFailed
from simple_salesforce.login import soap_login, token_login

from crm_perf_sync.connector_sdk import ConnectorConfigError, utc_now
from crm_perf_sync_salesforce.settings import (
    ClientCredentialsAuth,
    JwtAuth,
    PasswordAuth,
    SalesforceSettings,
    SessionAuth,
)


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in session. ``token`` is a secret: never log it or put it in a message."""

    token: str
    #: ``host[:port]`` of the org's instance, as simple-salesforce takes it.
    instance: str

    def __repr__(self) -> str:
        return f"Session(instance={self.instance!r})"


def can_renew(settings: SalesforceSettings) -> bool:
    """Whether an expired session can be replaced by logging in again (not for a given session id)."""
    return not isinstance(settings.auth, SessionAuth)


def secrets_of(settings: SalesforceSettings) -> list[str]:
    """Every secret value in the settings, for scrubbing messages that quote a server."""
    auth = settings.auth
    values: list[str | None] = []
    if isinstance(auth, SessionAuth):
        values.append(auth.session_id.get_secret_value())
    elif isinstance(auth, ClientCredentialsAuth):
        values.append(auth.client_secret.get_secret_value())
    elif isinstance(auth, JwtAuth):
        values.append(auth.private_key.get_secret_value() if auth.private_key else None)
    else:
        values.append(auth.password.get_secret_value())
        if auth.security_token is not None:
            values.append(auth.security_token.get_secret_value())
            values.append(auth.password.get_secret_value() + auth.security_token.get_secret_value())
    return [value for value in values if value]


def login(settings: SalesforceSettings, http: requests.Session) -> Session:
    """Log in as configured. A refused credential raises :class:`ConnectorConfigError`; network
    errors are left to the caller, which classifies them like any other request's."""
    auth = settings.auth
    if isinstance(auth, SessionAuth):
        return Session(auth.session_id.get_secret_value(), urlsplit(auth.instance_url).netloc)
    try:
        if isinstance(auth, ClientCredentialsAuth):
            token, instance = token_login(
                f"{settings.login_url}/services/oauth2/token",
                {
                    "grant_type": "client_credentials",
                    "client_id": auth.client_id,
                    "client_secret": auth.client_secret.get_secret_value(),
                },
                "login",
                auth.client_id,
                None,
                None,
                http,
            )
        elif isinstance(auth, JwtAuth):
            token, instance = token_login(
                f"{settings.login_url}/services/oauth2/token",
                {
                    "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                    "assertion": _assertion(settings, auth),
                },
                "login",
                auth.client_id,
                None,
                None,
                http,
            )
        else:
            token, instance = _soap_login(settings, auth, http)
    except SalesforceAuthenticationFailed as exc:
        message = (
            f"Salesforce refused the {auth.type} login at {settings.login_url}: "
            f"{exc.code or 'error'}: {exc.auth_message or 'no details'}"
        )
        # The server's words are quoted; should they ever echo a credential, it is cut out.
        for secret in secrets_of(settings):
            message = message.replace(secret, "***")
        raise ConnectorConfigError(message) from None
    if not token or not instance:
        raise ConnectorConfigError(f"the {auth.type} login at {settings.login_url} returned no session")
    return Session(str(token), str(instance).rstrip("/"))


def _assertion(settings: SalesforceSettings, auth: JwtAuth) -> str:
    if auth.private_key is not None:
        key = auth.private_key.get_secret_value()
    else:
        assert auth.private_key_file is not None
        try:
            key = auth.private_key_file.expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ConnectorConfigError(
                f"auth.private_key_file {auth.private_key_file}: cannot read it ({exc.strerror})"
            ) from None
    claims = {
        "iss": auth.client_id,
        "sub": auth.username,
        "aud": settings.jwt_audience(),
        # Salesforce accepts assertions valid for at most a few minutes.
        "exp": int((utc_now() + timedelta(minutes=3)).timestamp()),
    }
    try:
        return jwt.encode(claims, key, algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError):
        # The library's message may quote the key material: say what is wrong, not what it is.
        raise ConnectorConfigError("auth.private_key is not a PEM RSA private key") from None


_SOAP_LOGIN = """<?xml version="1.0" encoding="utf-8" ?>
<env:Envelope xmlns:xsd="http://www.w3.org/2001/XMLSchema"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"
    xmlns:urn="urn:partner.soap.sforce.com">
  <env:Header>
    <urn:CallOptions><urn:client>crm-perf-sync</urn:client></urn:CallOptions>
  </env:Header>
  <env:Body>
    <n1:login xmlns:n1="urn:partner.soap.sforce.com">
      <n1:username>{username}</n1:username>
      <n1:password>{password}</n1:password>
    </n1:login>
  </env:Body>
</env:Envelope>"""


def _soap_login(settings: SalesforceSettings, auth: PasswordAuth, http: requests.Session) -> tuple[str, str]:
    secret = auth.password.get_secret_value()
    if auth.security_token is not None:
        secret += auth.security_token.get_secret_value()
    body = _SOAP_LOGIN.format(
        username=escape(auth.username, quote=False), password=escape(secret, quote=False)
    )
    headers = {"content-type": "text/xml", "charset": "UTF-8", "SOAPAction": "login"}
    return soap_login(
        f"{settings.login_url}/services/Soap/u/{settings.api_version}", body, headers, None, http
    )
