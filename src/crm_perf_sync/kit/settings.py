"""Process settings: read once from the environment (prefix ``CRM_PERF_SYNC_``), built late.

Nothing reads these at import time; the CLI builds a :class:`Settings` when a command starts and
passes it down.
"""

from __future__ import annotations

from datetime import timedelta
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
    host: str = Field(
        default="127.0.0.1",
        description="Address the API (and a worker's metrics) listen on; 0.0.0.0 for all.",
    )
    port: int = Field(default=8000, ge=1, le=65535, description="Port of the API (`serve`, `api`).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`json`: one JSON event per line (connection, stream, run and request ids).",
    )
    sync_batch_size: int = Field(default=5000, ge=1, le=100_000, description="Records per committed batch.")
    sync_max_retries: int = Field(default=5, ge=0, le=50, description="Retries of a retriable error per run.")
    sync_retry_base_seconds: float = Field(
        default=2.0, ge=0.0, le=600.0, description="First wait before retrying (doubles, with jitter)."
    )
    sync_retry_max_seconds: float = Field(
        default=300.0, ge=0.0, le=86_400.0, description="Longest wait between two retries."
    )
    mass_delete_share: float = Field(
        default=0.10,
        gt=0.0,
        le=1.0,
        description=(
            "Largest share of a stream's live records one sync may soft-delete; a sync that would "
            "delete more (or all of them) deletes none and fails until confirmed with "
            "`sync --allow-mass-delete`. A connection's `mass_delete_share` overrides it."
        ),
    )
    mass_delete_floor: int = Field(
        default=10,
        ge=0,
        le=1_000_000,
        description="Deletions this many records or fewer per stream pass whatever the share (never all).",
    )
    lease_ttl_seconds: float = Field(
        default=120.0,
        ge=1.0,
        le=86_400.0,
        description="How long a claim on a unit of work outlives its holder.",
    )
    shutdown_grace_seconds: float = Field(
        default=30.0,
        ge=0.0,
        le=3600.0,
        description=(
            "On SIGTERM, how long a worker may take to finish its current batch before it "
            "releases its claims and exits."
        ),
    )
    worker_metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="Port of the worker's own Prometheus /metrics (0: none); on the host setting.",
    )
    run_on_start: bool = Field(default=True, description="The worker syncs every connection once at start.")
    demo_key: bool = Field(
        default=True,
        description=(
            "A SQLite store that `serve` creates with its output on a terminal gets a read key, printed "
            "there once and never into the log; `false`: none (the image's default)."
        ),
    )
    webhook_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Hosts, addresses and networks webhooks may be sent to although internal or plain http "
            "(comma-separated, e.g. 127.0.0.1,hooks.internal,10.20.0.0/16)."
        ),
    )
    webhook_timeout_seconds: float = Field(
        default=15.0, gt=0, le=300, description="Timeout of one webhook attempt."
    )
    webhook_concurrency: int = Field(
        default=16, ge=1, le=256, description="Webhooks sent at once per worker."
    )

    @field_validator("webhook_allow_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def refresh_lease_ttl(self) -> timedelta:
        """The KPI refresh's lease: a full refresh of a large store takes minutes, so it lasts at
        least fifteen, however short the claims on other work are set."""
        return timedelta(seconds=max(self.lease_ttl_seconds, 900))

    def database_url_value(self) -> str:
        return self.database_url.get_secret_value()


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and error messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"
