"""Settings of the ``salesforce`` connector: how to log in, what to read, and how carefully.

Secrets are :class:`~pydantic.SecretStr`: they never appear in a ``repr``, a log line or an
error message. Give them through ``${ENV}`` references in the YAML configuration.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from crm_perf_sync.connector_sdk import (
    ACTIVITY_TYPE,
    ACTIVITY_TYPES,
    ConnectorSettings,
    Duration,
    StrictModel,
)

#: The streams the connector offers, in the order they are synced.
StreamName = Literal[
    "teams",
    "owners",
    "pipeline_stages",
    "accounts",
    "leads",
    "opportunities",
    "stage_changes",
    "tasks",
    "events",
]
STREAMS: tuple[StreamName, ...] = (
    "teams",
    "owners",
    "pipeline_stages",
    "accounts",
    "leads",
    "opportunities",
    "stage_changes",
    "tasks",
    "events",
)

_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_DIMENSION = re.compile(r"^[a-z][a-z0-9_]*$")
_VERSION = re.compile(r"^\d{2,3}\.0$")
_GENERIC_LOGIN_HOSTS = frozenset({"login.salesforce.com", "test.salesforce.com"})


class SessionAuth(StrictModel):
    """An existing session: a session id (access token) and the instance it belongs to.

    It cannot be renewed: when it expires the run fails as a configuration error.
    """

    type: Literal["session"]
    session_id: SecretStr
    instance_url: str = Field(description="https://yourdomain.my.salesforce.com")

    @field_validator("instance_url")
    @classmethod
    def _instance(cls, value: str) -> str:
        return _https_origin(value)


class ClientCredentialsAuth(StrictModel):
    """OAuth 2.0 client credentials flow of a connected app (needs a My Domain ``login_url``)."""

    type: Literal["client_credentials"]
    client_id: str = Field(min_length=1, description="the connected app's consumer key")
    client_secret: SecretStr


class JwtAuth(StrictModel):
    """OAuth 2.0 JWT bearer flow: a connected app's certificate signs an assertion for a user."""

    type: Literal["jwt"]
    client_id: str = Field(min_length=1, description="the connected app's consumer key")
    username: str = Field(min_length=1, description="the user the integration runs as")
    private_key: SecretStr | None = Field(default=None, description="the PEM private key itself")
    private_key_file: Path | None = Field(default=None, description="or a file holding it")
    audience: str | None = Field(
        default=None,
        description=(
            "the assertion's aud claim; by default https://test.salesforce.com for sandboxes "
            "(a test.salesforce.com or *.sandbox.my.salesforce.com login_url), otherwise "
            "https://login.salesforce.com"
        ),
    )

    @model_validator(mode="after")
    def _one_key(self) -> JwtAuth:
        if (self.private_key is None) == (self.private_key_file is None):
            raise ValueError("give exactly one of private_key and private_key_file")
        return self


class PasswordAuth(StrictModel):
    """Username, password and security token (the SOAP ``login`` call)."""

    type: Literal["password"]
    username: str = Field(min_length=1)
    password: SecretStr
    security_token: SecretStr | None = Field(
        default=None, description="omit when the service's IP address is trusted by the org"
    )


Auth = Annotated[
    SessionAuth | ClientCredentialsAuth | JwtAuth | PasswordAuth,
    Field(discriminator="type"),
]


class CustomFields(StrictModel):
    """Extra Salesforce fields to select, kept as named custom dimensions (``name: Field__c``)."""

    accounts: dict[str, str] = Field(default_factory=dict)
    leads: dict[str, str] = Field(default_factory=dict)
    opportunities: dict[str, str] = Field(default_factory=dict)
    #: Activity custom fields: Salesforce defines them once for both Task and Event.
    activities: dict[str, str] = Field(default_factory=dict)

    @field_validator("accounts", "leads", "opportunities", "activities")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, api_name in value.items():
            if not _DIMENSION.match(name):
                raise ValueError(f"dimension name {name!r} must be lower-case letters, digits and _")
            if not _FIELD.match(api_name):
                raise ValueError(
                    f"{api_name!r} is not a field API name of the object itself (like Segment__c); "
                    "relationship paths are not supported"
                )
        return value


class SalesforceSettings(ConnectorSettings):
    """Settings of a ``salesforce`` connection (see ``README.md`` of this distribution)."""

    auth: Auth
    login_url: str = Field(
        default="https://login.salesforce.com",
        description="https://test.salesforce.com for sandboxes, or the org's My Domain URL",
    )
    record_base_url: str | None = Field(
        default=None,
        description=(
            "where the org's records open in a browser (https://yourdomain.my.salesforce.com), for "
            "links back from the KPI explanations; default: the session's instance_url, or a My "
            "Domain login_url (login.salesforce.com and test.salesforce.com do not say which org)"
        ),
    )
    api_version: str = Field(default="59.0", description="REST API version, e.g. 59.0")
    ca_bundle: Path | None = Field(
        default=None, description="PEM file of the CAs to trust (a TLS-inspecting proxy's); default: certifi"
    )
    timeout: float = Field(default=120.0, gt=0, le=3600, description="seconds to wait for one response")
    streams: tuple[StreamName, ...] = Field(
        default=STREAMS, min_length=1, description="which streams to sync"
    )
    teams_from_roles: bool = Field(default=True, description="read UserRole as teams; reps join their role")
    custom_fields: CustomFields = Field(default_factory=CustomFields)
    account_segment: str | None = Field(
        default="Type",
        description="the Account field read as the account's segment (Type, or a custom field); null: none",
    )
    activity_types: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "an activity's Type or subtype picklist value -> its kind (call, meeting, visit, email, "
            "task, proposal, note, or any lower-case name), before the built-in subtype mapping"
        ),
    )
    keep_raw: bool = Field(
        default=True,
        description=(
            "keep every record's Salesforce fields as its raw payload (explanations, mapping more "
            "fields later); off stores only the mapped columns, about twice as fast"
        ),
    )
    pipeline: str = Field(default="sales", min_length=1, description="pipeline name given to the stages")
    currency: str | None = Field(
        default=None, description="currency of single-currency orgs; default: the org's own"
    )
    lookback: Duration = Field(
        default=timedelta(minutes=10), description="re-read before the cursor on every run (late commits)"
    )
    skew: Duration = Field(
        default=timedelta(seconds=60), description="read nothing newer than now minus this (clock skew)"
    )
    page_size: int = Field(default=2000, ge=200, le=2000, description="REST query batch size")
    bulk_threshold: int | None = Field(
        default=100_000, ge=1, description="rows from which a scan uses Bulk API 2.0; null: never"
    )
    bulk_page_size: int = Field(default=50_000, ge=1000, le=1_000_000, description="rows per Bulk CSV page")
    bulk_poll_interval: float = Field(default=2.0, gt=0, le=60, description="seconds between job polls")
    bulk_timeout: Duration = Field(default=timedelta(hours=2), description="give up on a Bulk job after")
    max_api_share: float = Field(
        default=0.8,
        gt=0,
        le=1.0,
        description="stop (resume next run) once this share of the daily API budget is used",
    )
    watch: Duration | None = Field(
        default=None,
        description=(
            "how often a worker asks the org for its latest change (one request per object read: "
            "opportunities, leads, accounts, activities) and syncs at once when there is a new one; "
            "null: the schedule alone. At least 2s"
        ),
    )
    watch_share: float = Field(
        default=0.1,
        gt=0,
        le=0.5,
        description="the share of the daily API budget watching may spend (it then asks less often)",
    )
    reconcile_every: Duration | None = Field(
        default=timedelta(days=7),
        description=(
            "how often hard deletes are reconciled; null: only on a full refresh or when the "
            "deleted-records feed cannot reach back to the last sync"
        ),
    )
    min_window: Duration = Field(
        default=timedelta(seconds=1),
        description="QUERY_TIMEOUT narrows a scan's time window down to this, then the error is retried",
    )

    @field_validator("watch")
    @classmethod
    def _watch(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(seconds=2):
            raise ValueError("the org is asked at most every 2 seconds")
        return value

    @field_validator("login_url")
    @classmethod
    def _login(cls, value: str) -> str:
        return _https_origin(value)

    @field_validator("account_segment")
    @classmethod
    def _segment(cls, value: str | None) -> str | None:
        if value is not None and not _FIELD.match(value):
            raise ValueError(f"{value!r} is not a field API name of Account (like Type or Segment__c)")
        return value

    @field_validator("activity_types")
    @classmethod
    def _kinds(cls, value: dict[str, str]) -> dict[str, str]:
        for picklist, kind in value.items():
            if not picklist.strip():
                raise ValueError("a picklist value must not be empty")
            if ACTIVITY_TYPE.fullmatch(kind) is None:
                raise ValueError(
                    f"{picklist!r}: {kind!r} is not a kind of activity ({', '.join(ACTIVITY_TYPES)}, "
                    "or another lower-case name of letters, digits and _)"
                )
        # Picklist values are unique whatever their case in Salesforce, and matched the same way.
        seen: dict[str, str] = {}
        for picklist, kind in value.items():
            key = picklist.strip().casefold()
            if seen.setdefault(key, kind) != kind:
                raise ValueError(f"{picklist!r} is given twice (in another case) with two kinds")
        return value

    @field_validator("record_base_url")
    @classmethod
    def _record_base(cls, value: str | None) -> str | None:
        return _https_origin(value) if value is not None else None

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        value = value.removeprefix("v")
        if not _VERSION.match(value):
            raise ValueError(f"must look like 59.0, got {value!r}")
        return value

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError(f"must be an ISO 4217 code in capitals, got {value!r}")
        return value

    @field_validator("lookback", "skew")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value

    @field_validator("min_window")
    @classmethod
    def _whole_seconds(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least one second (SOQL date-times have whole seconds)")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _bundle(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_file():
            raise ValueError(f"no such file: {value}")
        return value

    def record_origin(self) -> str | None:
        """The site a record's Lightning page is under, known without logging in, or ``None``."""
        if self.record_base_url is not None:
            return self.record_base_url
        if isinstance(self.auth, SessionAuth):
            return self.auth.instance_url
        host = urlsplit(self.login_url).hostname or ""
        # The generic login hosts serve every org: only the login itself says which instance.
        return None if host in _GENERIC_LOGIN_HOSTS else self.login_url

    def jwt_audience(self) -> str:
        """The ``aud`` of a JWT bearer assertion for this org."""
        if isinstance(self.auth, JwtAuth) and self.auth.audience:
            return self.auth.audience
        host = urlsplit(self.login_url).hostname or ""
        sandbox = host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com")
        return "https://test.salesforce.com" if sandbox else "https://login.salesforce.com"


def _https_origin(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.username or parts.password:
        raise ValueError("must not carry credentials (they belong in auth)")
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"must be an https:// URL, got {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"must be the site only (like https://login.salesforce.com), got {value!r}")
    return f"https://{parts.netloc}"
