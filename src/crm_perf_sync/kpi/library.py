"""The shipped KPI library (``config/kpis/default.yaml``) merged with a deployment's definitions."""

from __future__ import annotations

from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from crm_perf_sync.kit.resources import shipped
from crm_perf_sync.kit.yaml_source import ConfigIssues, Issue, Loc, load_yaml
from crm_perf_sync.kpi.schemas import DerivedKpi, Kpi, KpiSection, RatioKpi, TargetConfig

_KPI_LIST: TypeAdapter[list[Kpi]] = TypeAdapter(list[Kpi])


def default_library_path() -> Path:
    return shipped("_kpis", "config/kpis", "default.yaml") / "default.yaml"


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
            loc = source.untagged(("kpis", *item["loc"]))
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


#: Units whose values are never below zero, nor can a target for them be (a `number` may be).
NON_NEGATIVE_UNITS = frozenset({"count", "currency", "percent", "ratio", "days"})


def target_issues(target: TargetConfig, kpi: Kpi) -> list[tuple[str, str]]:
    """What is wrong with a target for this KPI, as (the target's key, message) pairs: the one
    check of the configuration's targets and of those set through the API."""
    issues: list[tuple[str, str]] = []
    if kpi.unit == "currency" and not target.currency:
        issues.append(("currency", f"{target.kpi} is an amount: give the target's currency"))
    if isinstance(kpi, RatioKpi | DerivedKpi) and target.seasonality is not None:
        issues.append(("seasonality", "a rate cannot be split by seasonal weights"))
    if kpi.unit in NON_NEGATIVE_UNITS and target.value < 0:
        issues.append(("value", f"{target.kpi} is never negative ({kpi.unit}): its target cannot be either"))
    return issues


def reference_issues(section: KpiSection, catalog: dict[str, Kpi]) -> list[tuple[Loc, str]]:
    """Broken references between KPIs, targets and scorecards, each with its key path."""
    issues: list[tuple[Loc, str]] = []
    where = {kpi.id: ("kpis", "definitions", i) for i, kpi in enumerate(section.definitions)}
    known = ", ".join(sorted(catalog)) or "none"
    for kpi in catalog.values():
        if isinstance(kpi, DerivedKpi):
            loc: Loc = (*where.get(kpi.id, ("kpis", "library")), "formula")
            for name in sorted(kpi.inputs() - set(catalog)):
                issues.append((loc, f"{kpi.id}: formula names unknown KPI {name!r} (known: {known})"))
    for kpi_id in sorted(_cycle_members(catalog)):
        loc = (*where.get(kpi_id, ("kpis", "library")), "formula")
        issues.append((loc, f"{kpi_id}: derived KPIs depend on each other in a cycle"))
    for i, target in enumerate(section.targets):
        target_kpi = catalog.get(target.kpi)
        if target_kpi is None:
            issues.append((("kpis", "targets", i, "kpi"), f"unknown KPI {target.kpi!r} (known: {known})"))
            continue
        issues += [(("kpis", "targets", i, key), says) for key, says in target_issues(target, target_kpi)]
    seen: set[str] = set()
    for i, card in enumerate(section.scorecards):
        if card.id in seen:
            issues.append((("kpis", "scorecards", i, "id"), f"duplicate scorecard id {card.id!r}"))
        seen.add(card.id)
        for c, component in enumerate(card.components):
            component_kpi = catalog.get(component.kpi)
            loc = ("kpis", "scorecards", i, "components", c)
            if component_kpi is None:
                issues.append(((*loc, "kpi"), f"unknown KPI {component.kpi!r} (known: {known})"))
                continue
            norm = component.normalise
            if norm.method == "linear" and norm.floor is not None and norm.goal is not None:
                if component_kpi.direction == "higher" and norm.goal < norm.floor:
                    issues.append(
                        ((*loc, "normalise"), f"{component.kpi} is better higher: goal must be above floor")
                    )
                if component_kpi.direction == "lower" and norm.goal > norm.floor:
                    issues.append(
                        ((*loc, "normalise"), f"{component.kpi} is better lower: goal must be below floor")
                    )
    return issues


def _cycle_members(catalog: dict[str, Kpi]) -> set[str]:
    """Derived KPIs that (transitively) depend on themselves."""
    graph = {k.id: k.inputs() & set(catalog) for k in catalog.values() if isinstance(k, DerivedKpi)}
    in_cycle: set[str] = set()
    for start in graph:
        stack, seen = list(graph[start]), set()
        while stack:
            node = stack.pop()
            if node == start:
                in_cycle.add(start)
                break
            if node in seen:
                continue
            seen.add(node)
            stack.extend(graph.get(node, ()))
    return in_cycle


def evaluation_order(catalog: dict[str, Kpi]) -> list[Kpi]:
    """Every KPI after the KPIs its formula reads (the catalog is free of cycles)."""
    ordered: list[Kpi] = []
    done: set[str] = set()

    def visit(kpi: Kpi) -> None:
        if kpi.id in done:
            return
        done.add(kpi.id)
        if isinstance(kpi, DerivedKpi):
            for name in sorted(kpi.inputs()):
                if name in catalog:
                    visit(catalog[name])
        ordered.append(kpi)

    for kpi in catalog.values():
        visit(kpi)
    return ordered
