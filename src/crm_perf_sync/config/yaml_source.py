"""YAML loading that remembers where every key came from, with ``${VAR}`` interpolation.

Interpolation happens on scalar values after parsing (never on the raw text), so a secret that
contains ``:`` or ``#`` cannot change the document's structure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[str | int, ...]

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem in a configuration file, located as precisely as the source allows."""

    path: Path
    line: int | None
    loc: Loc
    message: str

    def render(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        key = format_loc(self.loc)
        return f"{where}: {key}: {self.message}" if key else f"{where}: {self.message}"


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(slots=True)
class SourceMap:
    """Line numbers (1-based) of every mapping key and sequence item, by location."""

    path: Path
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """The line of ``loc`` or of its nearest ancestor that the file spells out."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None

    def issue(self, loc: Loc, message: str) -> Issue:
        return Issue(self.path, self.line_of(loc), loc, message)


class ConfigIssues(Exception):
    """The configuration has problems; every one is listed, each with file, line and key."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("\n".join(issue.render() for issue in issues))
        self.issues = issues


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; an unset variable without default is an error."""

    def replace(match: re.Match[str]) -> str:
        name, default = match.group("name"), match.group("default")
        if name in env and (env[name] != "" or default is None):
            return env[name]
        if default is not None:
            return default
        raise KeyError(name)

    return _VAR.sub(replace, value)


def load_yaml(path: Path, env: Mapping[str, str] | None = None) -> tuple[Any, SourceMap]:
    """Parse ``path`` into plain Python values and a :class:`SourceMap`.

    Raises :class:`ConfigIssues` for an unreadable file, a YAML syntax error or an unset variable.
    """
    env = os.environ if env is None else env
    source = SourceMap(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigIssues(
            [Issue(path, None, (), f"cannot read the configuration: {exc.strerror}")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigIssues([Issue(path, None, (), f"not UTF-8 text: {exc.reason}")]) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        raise ConfigIssues([Issue(path, line, (), f"invalid YAML: {exc.problem}")]) from None
    finally:
        loader.dispose()
    if node is None:
        return {}, source
    issues: list[Issue] = []
    value = _construct(node, (), source, env, issues, loader)
    if issues:
        raise ConfigIssues(issues)
    return value, source


def _construct(
    node: yaml.Node,
    loc: Loc,
    source: SourceMap,
    env: Mapping[str, str],
    issues: list[Issue],
    loader: yaml.SafeLoader,
) -> Any:
    source.lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int):
                issues.append(Issue(source.path, key_node.start_mark.line + 1, loc, "keys must be strings"))
                continue
            child = (*loc, key)
            if key in result:
                issues.append(Issue(source.path, key_node.start_mark.line + 1, child, "duplicate key"))
            source.lines[child] = key_node.start_mark.line + 1
            result[key] = _construct(value_node, child, source, env, issues, loader)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            source.lines[(*loc, index)] = item.start_mark.line + 1
            items.append(_construct(item, (*loc, index), source, env, issues, loader))
        return items
    assert isinstance(node, yaml.ScalarNode)
    if "${" not in node.value:
        return loader.construct_object(node, deep=True)
    try:
        text = interpolate(node.value, env)
    except KeyError as exc:
        issues.append(
            Issue(
                source.path, node.start_mark.line + 1, loc, f"environment variable {exc.args[0]} is not set"
            )
        )
        return None
    if node.style is None:
        # A plain scalar is typed after interpolation, as if the value had been written literally.
        tag = loader.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        return loader.construct_object(yaml.ScalarNode(tag, text), deep=True)
    return text
