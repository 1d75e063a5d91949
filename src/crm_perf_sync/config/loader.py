"""Load, interpolate and validate the configuration, reporting every issue at once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from crm_perf_sync.config.schema import AppConfig
from crm_perf_sync.connector_sdk import ConnectorSettings
from crm_perf_sync.incentives import checks as incentive_checks
from crm_perf_sync.kit.yaml_source import ConfigIssues, Issue, Loc, SourceMap, load_yaml, pydantic_issues
from crm_perf_sync.kpi import library as kpi_library
from crm_perf_sync.kpi.schemas import Kpi, KpiConfig, MeasureKpi
from crm_perf_sync.measures import library as measure_library
from crm_perf_sync.measures.schemas import MeasureDefinition
from crm_perf_sync.plugins import ConnectorRegistry


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated configuration, with each connection's settings parsed by its connector."""

    path: Path
    app: AppConfig
    connector_settings: Mapping[str, ConnectorSettings]
    source: SourceMap
    kpis: Mapping[str, Kpi]
    #: The measures in force (the library and the configuration's own, merged), by id.
    measures: Mapping[str, MeasureDefinition]

    def kpi_config(self) -> KpiConfig:
        """What the KPI engine and the alert rules read from this configuration."""
        return KpiConfig(
            self.kpis, self.app.kpis, self.app.business, tuple(c.id for c in self.app.connections)
        )


def validate_config(raw: Any, source: SourceMap, registry: ConnectorRegistry) -> LoadedConfig:
    if not isinstance(raw, dict):
        raise ConfigIssues([source.issue((), "the configuration must be a mapping of sections")])
    issues: list[Issue] = []
    try:
        app = AppConfig.model_validate(raw)
    except ValidationError as exc:
        issues.extend(pydantic_issues(source, (), exc))
        app = None

    settings: dict[str, ConnectorSettings] = {}
    seen: dict[str, int] = {}
    for index, conn in enumerate(raw.get("connections") or []):
        if not isinstance(conn, dict):
            continue
        conn_id, kind = conn.get("id"), conn.get("kind")
        if isinstance(conn_id, str):
            if conn_id in seen:
                issues.append(
                    source.issue(("connections", index, "id"), f"duplicate connection id {conn_id!r}")
                )
            seen[conn_id] = index
        if not isinstance(kind, str):
            continue
        connector = registry.get(kind)
        if connector is None:
            available = ", ".join(registry.kinds()) or "none installed"
            issues.append(
                source.issue(
                    ("connections", index, "kind"),
                    f"unknown connector kind {kind!r} (available: {available})",
                )
            )
            continue
        try:
            parsed = connector.settings_model.model_validate(conn.get("settings") or {})
        except ValidationError as exc:
            issues.extend(pydantic_issues(source, ("connections", index, "settings"), exc))
            continue
        if isinstance(conn_id, str):
            settings[conn_id] = parsed

    kpis: dict[str, Kpi] = {}
    measures: dict[str, MeasureDefinition] = {}
    if app is not None:
        issues.extend(_team_issues(app, source))
        try:
            kpis = kpi_library.resolve(app.kpis)
        except ConfigIssues as exc:
            issues.extend(exc.issues)
        else:
            issues.extend(
                source.issue(loc, message) for loc, message in kpi_library.reference_issues(app.kpis, kpis)
            )
            issues.extend(source.issue(loc, message) for loc, message in alert_issues(app, kpis))
            issues.extend(
                source.issue(loc, message)
                for loc, message in incentive_checks.section_issues(app.incentives, kpis, app.kpis)
            )
        try:
            measures = measure_library.resolve(app.measures)
        except ConfigIssues as exc:
            issues.extend(exc.issues)
        else:
            fiscal = app.business.fiscal_year_start_month
            issues.extend(
                source.issue(loc, message)
                for loc, message in measure_library.section_issues(app.measures, measures, fiscal)
            )
            issues.extend(source.issue(loc, message) for loc, message in _measure_kpi_issues(app, measures))
    if issues:
        raise ConfigIssues(issues)
    assert app is not None
    return LoadedConfig(source.path, app, settings, source, kpis, measures)


def alert_issues(app: AppConfig, kpis: Mapping[str, Kpi]) -> list[tuple[Loc, str]]:
    """Alert rules that name an unknown KPI, scorecard or incentive plan, or measure what a KPI or
    a plan's component cannot give."""
    issues: list[tuple[Loc, str]] = []
    cards = {card.id for card in app.kpis.scorecards}
    seen: set[str] = set()
    for index, rule in enumerate(app.alerts.rules):
        here: Loc = ("alerts", "rules", index)
        if rule.id in seen:
            issues.append(((*here, "id"), f"duplicate alert rule id {rule.id!r}"))
        seen.add(rule.id)
        if rule.scorecard is not None and rule.scorecard not in cards:
            known = ", ".join(sorted(cards)) or "none"
            issues.append(((*here, "scorecard"), f"unknown scorecard {rule.scorecard!r} (defined: {known})"))
        if rule.incentive is not None:
            issues.extend(
                incentive_checks.alert_rule_issues(
                    app.incentives, rule.incentive.plan, rule.incentive.component, rule.measure, here
                )
            )
        if rule.kpi is None:
            continue
        kpi = kpis.get(rule.kpi)
        if kpi is None:
            issues.append(((*here, "kpi"), f"unknown KPI {rule.kpi!r} (defined: {', '.join(sorted(kpis))})"))
        elif kpi.type == "funnel":
            issues.append(
                ((*here, "kpi"), f"{rule.kpi} is a funnel: alert on one of its stages' KPIs instead")
            )
        elif kpi.unit == "currency" and not rule.currency:
            issues.append(((*here, "currency"), f"{rule.kpi} is an amount: give the currency to watch"))
    return issues


def _measure_kpi_issues(app: AppConfig, measures: Mapping[str, MeasureDefinition]) -> list[tuple[Loc, str]]:
    """A KPI of the configuration on a measure that is not defined. (The library's KPIs on measures
    are left alone: with the measures' library switched off they simply have no values.)"""
    issues: list[tuple[Loc, str]] = []
    known = ", ".join(sorted(measures)) or "none"
    for index, kpi in enumerate(app.kpis.definitions):
        if isinstance(kpi, MeasureKpi) and kpi.measure_id not in measures:
            issues.append(
                (
                    ("kpis", "definitions", index, "measure_id"),
                    f"unknown measure {kpi.measure_id!r} (defined: {known})",
                )
            )
    return issues


def _team_issues(app: AppConfig, source: SourceMap) -> list[Issue]:
    issues: list[Issue] = []
    connection_ids = {c.id for c in app.connections}
    seen: set[str] = set()

    def walk(teams: list[Any], loc: Loc) -> None:
        for index, team in enumerate(teams):
            here = (*loc, index)
            if team.id in seen:
                issues.append(source.issue((*here, "id"), f"duplicate team id {team.id!r}"))
            seen.add(team.id)
            for m, member in enumerate(team.members):
                if member.connection is not None and member.connection not in connection_ids:
                    issues.append(
                        source.issue(
                            (*here, "members", m, "connection"), f"unknown connection {member.connection!r}"
                        )
                    )
            walk(team.teams, (*here, "teams"))

    walk(app.teams, ("teams",))
    return issues


def load_config(
    path: Path, registry: ConnectorRegistry, env: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Read and validate ``path``; raises :class:`ConfigIssues` listing every problem found."""
    raw, source = load_yaml(path, os.environ if env is None else env)
    return validate_config(raw, source, registry)
