"""The shipped KPI library (``config/kpis/default.yaml``) merged with a deployment's definitions."""

from __future__ import annotations

from pathlib import Path

from pydantic import TypeAdapter, ValidationError

import crm_perf_sync
from crm_perf_sync.config.yaml_source import ConfigIssues, Issue, load_yaml
from crm_perf_sync.kpi.schemas import Kpi, KpiSection

_KPI_LIST: TypeAdapter[list[Kpi]] = TypeAdapter(list[Kpi])


def default_library_path() -> Path:
    package = Path(crm_perf_sync.__file__).resolve().parent
    for candidate in (
        package / "_kpis" / "default.yaml",
        package.parent.parent / "config" / "kpis" / "default.yaml",
    ):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("the default KPI library is missing from this installation")


def load_library(path: Path) -> list[Kpi]:
    """Parse a library file (``kpis: [...]``); raises :class:`ConfigIssues` with file and line."""
    raw, source = load_yaml(path, {})
    if not isinstance(raw, dict) or "kpis" not in raw:
        raise ConfigIssues([source.issue((), "a KPI library is a mapping with a `kpis:` list")])
    try:
        return _KPI_LIST.validate_python(raw["kpis"])
    except ValidationError as exc:
        issues: list[Issue] = []
        for item in exc.errors(include_url=False):
            loc = ("kpis", *item["loc"])
            issues.append(source.issue(loc, item["msg"].removeprefix("Value error, ")))
        raise ConfigIssues(issues) from None


def resolve(section: KpiSection) -> dict[str, Kpi]:
    """The KPIs in force: the library (unless switched off), then the deployment's own by id."""
    catalog: dict[str, Kpi] = {}
    if section.library == "default":
        for kpi in load_library(default_library_path()):
            catalog[kpi.id] = kpi
    for kpi in section.definitions:
        catalog[kpi.id] = kpi
    return catalog
