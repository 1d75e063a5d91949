"""The YAML configuration: connections, teams and (later) KPIs, targets, scorecards and alerts."""

from crm_perf_sync.config.loader import LoadedConfig, load_config
from crm_perf_sync.config.schema import AppConfig, BusinessConfig, ConnectionConfig, Schedule, TeamConfig
from crm_perf_sync.kit.yaml_source import ConfigIssues, Issue

__all__ = [
    "AppConfig",
    "BusinessConfig",
    "ConfigIssues",
    "ConnectionConfig",
    "Issue",
    "LoadedConfig",
    "Schedule",
    "TeamConfig",
    "load_config",
]
