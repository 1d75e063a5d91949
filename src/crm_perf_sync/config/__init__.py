"""The YAML configuration: business calendar, connections, teams, KPIs, targets, scorecards and alert
rules, each section defined by its domain and composed here."""

from crm_perf_sync.config.loader import LoadedConfig, load_config
from crm_perf_sync.config.schema import AppConfig, ConnectionConfig, Schedule
from crm_perf_sync.kit.yaml_source import ConfigIssues, Issue
from crm_perf_sync.kpi.schemas import BusinessConfig

__all__ = [
    "AppConfig",
    "BusinessConfig",
    "ConfigIssues",
    "ConnectionConfig",
    "Issue",
    "LoadedConfig",
    "Schedule",
    "load_config",
]
