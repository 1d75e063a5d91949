"""YAML loading that remembers where every key came from, with ``${VAR}`` interpolation.

Interpolation happens on scalar values after parsing (never on the raw text), so a secret that
contains ``:`` or ``#`` cannot change the document's structure. Every value that came from the
environment is remembered by location, so that no issue ever echoes it: a validator's message
shows ``${VAR}`` where the value would have been.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

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


@dataclass(frozen=True, slots=True)
class FromEnvironment:
    """A scalar that ``${VAR}`` interpolation filled in: as the file writes it, as it became, and
    the values each variable gave (defaults written in the file are not among them)."""

    written: str
    value: str
    variables: Mapping[str, str]


#: Shorter values are redacted only from issues at their own location (or around it): elsewhere,
#: replacing "5" or "on" would mangle unrelated words and numbers of a message.
_ANYWHERE = 6


@dataclass(slots=True)
class SourceMap:
    """Line numbers (1-based) of every mapping key and sequence item, by location, and the values
    that came from the environment."""

    path: Path
    lines: dict[Loc, int] = field(default_factory=dict)
    from_env: dict[Loc, FromEnvironment] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """The line of ``loc`` or of its nearest ancestor that the file spells out."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None

    def untagged(self, loc: Loc) -> Loc:
        """``loc`` without the tags pydantic inserts for discriminated unions
        (``definitions[0].count.measure``): the keys as the file writes them."""
        kept: list[str | int] = []
        for index, part in enumerate(loc):
            following = loc[index + 1] if index + 1 < len(loc) else None
            is_tag = (
                isinstance(part, str)
                and following is not None
                and (*kept, part) not in self.lines
                and (*kept, following) in self.lines
            )
            if not is_tag:
                kept.append(part)
        return tuple(kept)

    def issue(self, loc: Loc, message: str) -> Issue:
        return Issue(self.path, self.line_of(loc), loc, self.redact(loc, message))

    def redact(self, loc: Loc, message: str) -> str:
        """``message`` without any value the environment gave (an issue's text often quotes the
        value it refuses, and an environment value may be a credential).

        A value at ``loc``, inside it or around it is shown as the file writes it
        (``'https://${HOST}/x'``); each variable's own value, wherever it still appears, as
        ``${NAME}``.
        """
        nearby, variables = [], {}
        for where, entry in self.from_env.items():
            related = where[: len(loc)] == loc or loc[: len(where)] == where
            if related:
                nearby.append(entry)
            for name, value in entry.variables.items():
                if value and (related or len(value) >= _ANYWHERE):
                    variables[value] = name
        for entry in sorted(nearby, key=lambda e: len(e.value), reverse=True):
            if entry.value:
                message = message.replace(repr(entry.value), repr(entry.written))
                message = message.replace(entry.value, entry.written)
        for value in sorted(variables, key=len, reverse=True):
            message = _replace_outside_placeholders(message, value, f"${{{variables[value]}}}")
        return message


def _replace_outside_placeholders(text: str, old: str, new: str) -> str:
    """Replace ``old`` in ``text`` except inside the ``${...}`` already put there."""
    parts = re.split(r"(\$\{[^}]*\})", text)
    return "".join(part if part.startswith("${") else part.replace(old, new) for part in parts)


class ConfigIssues(Exception):
    """The configuration has problems; every one is listed, each with file, line and key."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("\n".join(issue.render() for issue in issues))
        self.issues = issues


def interpolate(value: str, env: Mapping[str, str], used: dict[str, str] | None = None) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; an unset variable without default is an error.

    ``used`` receives the name and value of every variable taken from ``env``.
    """

    def replace(match: re.Match[str]) -> str:
        name, default = match.group("name"), match.group("default")
        if name in env and (env[name] != "" or default is None):
            if used is not None:
                used[name] = env[name]
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
    used: dict[str, str] = {}
    try:
        text = interpolate(node.value, env, used)
    except KeyError as exc:
        issues.append(
            Issue(
                source.path, node.start_mark.line + 1, loc, f"environment variable {exc.args[0]} is not set"
            )
        )
        return None
    if used:
        source.from_env[loc] = FromEnvironment(node.value, text, used)
    if node.style is None:
        # A plain scalar is typed after interpolation, as if the value had been written literally.
        tag = loader.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        return loader.construct_object(yaml.ScalarNode(tag, text), deep=True)
    return text


def pydantic_issues(source: SourceMap, prefix: Loc, error: ValidationError) -> list[Issue]:
    """A model's validation errors as issues located in the file ``source`` maps (``prefix``: where
    the model's data sits in it)."""
    issues = []
    for item in error.errors(include_url=False):
        loc: Loc = source.untagged((*prefix, *item["loc"]))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "missing":
            message = "required key is missing"
        elif item["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        issues.append(source.issue(loc, message))
    return issues
