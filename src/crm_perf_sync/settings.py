"""Process settings: read once from the environment (prefix ``CRM_PERF_SYNC_``), built late.

Nothing reads these at import time; the CLI builds a :class:`Settings` when a command starts and
passes it down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a process needs that is not part of the YAML configuration."""

    model_config = SettingsConfigDict(env_prefix="CRM_PERF_SYNC_", extra="ignore", frozen=True)

    database_url: SecretStr = Field(
        default=SecretStr("sqlite:///./crm-perf-sync.db"),
        description="SQLAlchemy URL of the store: sqlite:///path or postgresql+psycopg://...",
    )
    config: Path = Field(default=Path("config/crm-perf-sync.yaml"), description="The YAML configuration.")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    sync_batch_size: int = Field(default=5000, ge=1, le=100_000, description="Records per committed batch.")
    sync_max_retries: int = Field(default=5, ge=0, le=50, description="Retries of a retriable error per run.")
    sync_retry_base_seconds: float = Field(default=2.0, ge=0.0, le=600.0)
    sync_retry_max_seconds: float = Field(default=300.0, ge=0.0, le=86_400.0)
    lease_ttl_seconds: float = Field(
        default=120.0,
        ge=1.0,
        le=86_400.0,
        description="How long a claim on a unit of work outlives its holder.",
    )
    run_on_start: bool = Field(default=True, description="The worker syncs every connection once at start.")
    webhook_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Hosts, addresses and networks webhooks may be sent to although internal or plain http "
            "(comma-separated, e.g. 127.0.0.1,hooks.internal,10.20.0.0/16)."
        ),
    )
    webhook_timeout_seconds: float = Field(default=15.0, gt=0, le=300, description="Per webhook attempt.")
    webhook_concurrency: int = Field(
        default=16, ge=1, le=256, description="Webhooks sent at once per worker."
    )

    @field_validator("webhook_allow_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def database_url_value(self) -> str:
        return self.database_url.get_secret_value()


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and error messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"
