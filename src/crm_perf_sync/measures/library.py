"""The shipped measure library (``config/measures/default.yaml``) merged with a deployment's own
definitions, and the checks of the values the configuration declares."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from crm_perf_sync.kit.resources import shipped
from crm_perf_sync.kit.yaml_source import ConfigIssues, Issue, Loc, load_yaml
from crm_perf_sync.measures.schemas import MeasureDefinition, MeasureSection, period_of

_DEFINITIONS: TypeAdapter[list[MeasureDefinition]] = TypeAdapter(list[MeasureDefinition])


def default_library_path() -> Path:
    return shipped("_measures", "config/measures", "default.yaml") / "default.yaml"


def load_library(path: Path) -> list[MeasureDefinition]:
    """Parse a library file (``measures: [...]``); raises :class:`ConfigIssues` with file and line."""
    raw, source = load_yaml(path, {})
    if not isinstance(raw, dict) or "measures" not in raw:
        raise ConfigIssues([source.issue((), "a measure library is a mapping with a `measures:` list")])
    try:
        return _DEFINITIONS.validate_python(raw["measures"])
    except ValidationError as exc:
        issues: list[Issue] = []
        for item in exc.errors(include_url=False):
            loc = source.untagged(("measures", *item["loc"]))
            issues.append(source.issue(loc, item["msg"].removeprefix("Value error, ")))
        raise ConfigIssues(issues) from None


def resolve(section: MeasureSection) -> dict[str, MeasureDefinition]:
    """The measures in force: the library (unless switched off), then the deployment's own by id."""
    catalog: dict[str, MeasureDefinition] = {}
    if section.library == "default":
        for definition in load_library(default_library_path()):
            catalog[definition.id] = definition
    for definition in section.definitions:
        catalog[definition.id] = definition
    return catalog


def section_issues(
    section: MeasureSection, catalog: Mapping[str, MeasureDefinition], fiscal_start_month: int
) -> list[tuple[Loc, str]]:
    """Duplicate definitions and declared values that do not fit their definition, by key path.

    Whether a declared team or rep exists is known only once the store has them: the values are
    checked against it when they are applied.
    """
    issues: list[tuple[Loc, str]] = []
    seen: set[str] = set()
    for i, definition in enumerate(section.definitions):
        if definition.id in seen:
            issues.append((("measures", "definitions", i, "id"), f"duplicate measure id {definition.id!r}"))
        seen.add(definition.id)
    keys: dict[tuple[str, str, str, str, str], int] = {}
    known = ", ".join(sorted(catalog)) or "none"
    for i, declared in enumerate(section.values):
        here: Loc = ("measures", "values", i)
        found = catalog.get(declared.measure)
        if found is None:
            issues.append(((*here, "measure"), f"unknown measure {declared.measure!r} (known: {known})"))
            continue
        for field, says in found.issues(declared.scope, declared.grain, declared.value):
            issues.append(((*here, field), says))
        try:
            period_key = period_of(declared.period, declared.grain, fiscal_start_month)[0]
        except ValueError as exc:
            issues.append(((*here, "period"), str(exc)))
            continue
        key = (declared.measure, declared.scope, declared.scope_id, declared.grain, period_key)
        if key in keys:
            issues.append(
                (
                    (*here, "period"),
                    f"the same entry ({declared.grain} {period_key}) as measures.values[{keys[key]}]",
                )
            )
        keys.setdefault(key, i)
    return issues
