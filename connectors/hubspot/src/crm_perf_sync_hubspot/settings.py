"""Settings of the ``hubspot`` connector: which portal, how to authenticate, how to map and pace.

In YAML (every key is checked; secrets come from the environment through ``${VAR}``)::

    settings:
      access_token: ${HUBSPOT_TOKEN}          # a private app's token, or:
      oauth:                                  # a public app's OAuth grant
        client_id: ${HUBSPOT_CLIENT_ID}
        client_secret: ${HUBSPOT_CLIENT_SECRET}
        refresh_token: ${HUBSPOT_REFRESH_TOKEN}
      currency: EUR                           # deals without deal_currency_code are in this one
      portal_id: 1234567                      # links back to deals and contacts in HubSpot
      webhook_secret: ${HUBSPOT_CLIENT_SECRET} # verifies the webhooks HubSpot pushes (optional)
      deal_properties: {segment: customer_segment}   # custom dimension -> deal property
      activity_types: {Site visit: visit}     # a call or meeting type -> an activity type

See ``connectors/hubspot/README.md`` for every key.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from crm_perf_sync.connector_sdk import ConnectorSettings, Duration, StrictModel
from crm_perf_sync.connector_sdk.records import ACTIVITY_TYPE

DEFAULT_BASE_URL: Final = "https://api.hubapi.com"
DEFAULT_APP_HOST: Final = "app.hubspot.com"

#: HubSpot's default lifecycle stages, in the order a contact moves through them ("other" is
#: outside the funnel and therefore not listed).
DEFAULT_LIFECYCLE: Final = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
)

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")
# Internal names of HubSpot properties: lower-case letters, digits and underscores.
_PROPERTY = re.compile(r"^[a-z0-9_]+$")


class OAuthSettings(StrictModel):
    """An OAuth grant of a public app: the access token is obtained (and renewed) from these."""

    client_id: str = Field(min_length=1, description="The app's client id.")
    client_secret: SecretStr = Field(description="The app's client secret.")
    refresh_token: SecretStr = Field(description="The portal's refresh token for the app.")

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        for name in ("client_secret", "refresh_token"):
            if not getattr(self, name).get_secret_value().strip():
                raise ValueError(f"{name} is empty (is its environment variable set?)")
        return self


class RateLimits(StrictModel):
    """The portal's API limits, paced client-side with token buckets shared per account.

    HubSpot's defaults: 100 requests per 10 seconds per app (more on higher tiers; the
    ``X-HubSpot-RateLimit-Max`` header says which), and about 5 search requests per second per
    account, counted separately.
    """

    requests_per_interval: int = Field(default=100, ge=1, description="General requests per interval.")
    interval: Duration = Field(default=timedelta(seconds=10), description="The general limit's window.")
    search_per_second: float = Field(default=5.0, gt=0, description="Search requests per second.")

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        return value

    @property
    def general_rate(self) -> float:
        """General requests per second."""
        return self.requests_per_interval / self.interval.total_seconds()


class HubSpotSettings(ConnectorSettings):
    """A HubSpot portal: credentials, mapping choices and how hard to push the API."""

    base_url: str = Field(
        default=DEFAULT_BASE_URL, description="The API's root URL (another host for a proxy or a test)."
    )
    portal_id: int | None = Field(
        default=None,
        gt=0,
        description=(
            "The portal's (hub's) id, for links from the KPI explanations to its deal and contact "
            "pages; without it there are no links."
        ),
    )
    app_host: str = Field(
        default=DEFAULT_APP_HOST,
        description="Where the portal's pages are: app-eu1.hubspot.com for an account in the EU data centre.",
    )
    access_token: SecretStr | None = Field(default=None, description="A private app's access token.")
    oauth: OAuthSettings | None = Field(default=None, description="An OAuth grant instead of a token.")
    webhook_secret: SecretStr | None = Field(
        default=None,
        description=(
            "The app's client secret, which signs the webhooks HubSpot pushes to "
            "/api/v1/ingest/<connection> (default: the OAuth grant's client_secret); without one, "
            "pushes are refused."
        ),
    )
    previous_webhook_secret: SecretStr | None = Field(
        default=None,
        description=(
            "The secret before a rotation, still accepted until every push is signed with the new one."
        ),
    )
    webhook_url: str | None = Field(
        default=None,
        description=(
            "The target URL set in the app's webhook settings, when it is not the address the "
            "service sees (behind a proxy): HubSpot's signature covers it."
        ),
    )

    currency: str = Field(
        default="USD",
        description="The portal's company currency: deals without deal_currency_code are in it.",
    )
    deal_properties: dict[str, str] = Field(
        default_factory=dict, description="Custom dimensions of opportunities: name -> deal property."
    )
    contact_properties: dict[str, str] = Field(
        default_factory=dict, description="Custom dimensions of leads: name -> contact property."
    )
    company_properties: dict[str, str] = Field(
        default_factory=dict, description="Custom dimensions of accounts: name -> company property."
    )
    company_segment: str = Field(
        default="type",
        description="The company property that is an account's segment (HubSpot's 'type': CUSTOMER...).",
    )
    activity_types: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "The portal's own kinds of activity -> an activity type (call, meeting, visit, email, task, "
            "proposal, note, or any lower-case name): a call or meeting type (hs_activity_type), a "
            "task type or an email direction. 'Site visit' -> visit."
        ),
    )
    call_outcomes: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "The portal's own call outcomes: disposition id (hs_call_disposition) -> label, besides "
            "HubSpot's six default ones."
        ),
    )
    lifecycle_stages: tuple[str, ...] = Field(
        default=DEFAULT_LIFECYCLE, description="The portal's lifecycle stages (internal names), in order."
    )
    lead_stage: str = Field(default="lead", description="A contact is a lead once it reached this stage.")
    converted_stage: str = Field(
        default="opportunity",
        description="A lead is converted once it reached this stage (or has an associated deal).",
    )

    lookback: Duration = Field(
        default=timedelta(minutes=5),
        description="How far before the stored cursor an incremental read starts again (late commits).",
    )
    index_lag: Duration = Field(
        default=timedelta(seconds=60),
        description="How far behind the database HubSpot's search index may be: reads stop at now - lag.",
    )
    association_refresh: Duration = Field(
        default=timedelta(hours=24),
        description=(
            "How often open deals and unconverted leads are re-read for their associations, which "
            "change without touching the modified date (0: every run)."
        ),
    )

    page_size: int = Field(default=200, ge=1, le=200, description="Results per search request.")
    history_batch_size: int = Field(
        default=50, ge=1, le=50, description="Deals per batch read of their stage history."
    )
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    max_attempts: int = Field(
        default=6, ge=1, le=20, description="Tries of one request (429, 5xx, network) before giving up."
    )
    backoff: Duration = Field(
        default=timedelta(seconds=1), description="First wait of the exponential backoff (doubles)."
    )
    max_backoff: Duration = Field(default=timedelta(seconds=60), description="Longest single wait.")
    timeout: Duration = Field(default=timedelta(seconds=60), description="Connect and read timeout.")

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value

    @field_validator("app_host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        value = value.strip().lower()
        if not _HOST.match(value):
            raise ValueError(
                f"must be a host name like app-eu1.hubspot.com (no scheme or path), got {value!r}"
            )
        return value

    @field_validator("currency")
    @classmethod
    def _check_currency(cls, value: str) -> str:
        if not _CURRENCY.match(value):
            raise ValueError(f"must be an ISO 4217 code in capitals, got {value!r}")
        return value

    @field_validator("deal_properties", "contact_properties", "company_properties")
    @classmethod
    def _check_properties(cls, value: dict[str, str]) -> dict[str, str]:
        for name, prop in value.items():
            if not name:
                raise ValueError("a custom dimension needs a name")
            if not _PROPERTY.match(prop):
                raise ValueError(f"{prop!r} is not a HubSpot property's internal name (lower_case_only)")
        return value

    @field_validator("company_segment")
    @classmethod
    def _check_property(cls, value: str) -> str:
        if not _PROPERTY.match(value):
            raise ValueError(f"{value!r} is not a HubSpot property's internal name (lower_case_only)")
        return value

    @field_validator("activity_types")
    @classmethod
    def _check_activity_types(cls, value: dict[str, str]) -> dict[str, str]:
        for kind, activity_type in value.items():
            if not kind:
                raise ValueError("an activity kind needs a name")
            if ACTIVITY_TYPE.fullmatch(activity_type) is None:
                raise ValueError(
                    f"{kind!r}: {activity_type!r} is not an activity type (call, meeting, visit, email, "
                    "task, proposal, note, or a lower-case name of letters, digits and _)"
                )
        return value

    @field_validator("lookback", "index_lag", "association_refresh")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value

    @field_validator("backoff", "max_backoff", "timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.access_token is None) == (self.oauth is None):
            raise ValueError(
                "give exactly one of access_token (a private app) or oauth "
                "(client_id, client_secret, refresh_token)"
            )
        if self.access_token is not None and not self.access_token.get_secret_value().strip():
            raise ValueError("access_token is empty (is its environment variable set?)")
        stages = self.lifecycle_stages
        if len(set(stages)) != len(stages):
            raise ValueError("lifecycle_stages lists a stage twice")
        for name in ("lead_stage", "converted_stage"):
            if getattr(self, name) not in stages:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of lifecycle_stages")
        if stages.index(self.lead_stage) >= stages.index(self.converted_stage):
            raise ValueError("lead_stage must come before converted_stage in lifecycle_stages")
        return self

    # -- derived --------------------------------------------------------------------------------

    @property
    def lead_stages(self) -> tuple[str, ...]:
        """Lifecycle stages at which a contact counts as a lead (converted or not)."""
        return self.lifecycle_stages[self.lifecycle_stages.index(self.lead_stage) :]

    @property
    def converted_stages(self) -> tuple[str, ...]:
        """Lifecycle stages at which a lead counts as converted."""
        return self.lifecycle_stages[self.lifecycle_stages.index(self.converted_stage) :]
