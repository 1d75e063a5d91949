"""The specs' templates, rendered in Jinja's immutable sandbox.

A spec is configuration a user may download, so its templates get no more power than text needs:
the sandbox refuses attribute access to internals and any mutation, undefined names are errors
(``StrictUndefined``), and nothing but the variables given and the filters below is reachable.

A string that is one expression and nothing else (``"{{ page.size }}"``) keeps the expression's
type (an integer stays an integer in a JSON body; a mapping stays a mapping); any other string
renders to text. A value rendering to ``None`` is left out of its mapping, which is how a filter
appears only when there is something to filter by.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from crm_perf_sync.connector_sdk import ConnectorConfigError

_WHOLE = re.compile(r"^\{\{(?P<expr>(?:(?!\}\}).)*)\}\}$", re.DOTALL)

Variables = Mapping[str, Any]
Compiled = Callable[[Variables], Any]


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def iso(value: datetime | date | None, timespec: str = "milliseconds") -> str | None:
    """``2024-05-01T10:00:00.000Z``: an instant in UTC as most JSON APIs write it."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        return value.isoformat()
    return _utc(value).isoformat(timespec=timespec).replace("+00:00", "Z")


def iso_offset(value: datetime | None) -> str | None:
    """``2024-05-01T10:00:00+00:00``: an instant with a numeric offset (Zoho writes these)."""
    return None if value is None else _utc(value).isoformat(timespec="seconds")


def epoch_ms(value: datetime | None) -> int | None:
    return None if value is None else int(_utc(value).timestamp() * 1000)


def epoch_s(value: datetime | None) -> int | None:
    return None if value is None else int(_utc(value).timestamp())


def http_date(value: datetime | None) -> str | None:
    """``Wed, 01 May 2024 10:00:00 GMT`` (for ``If-Modified-Since``)."""
    return None if value is None else format_datetime(_utc(value), usegmt=True)


def strftime(value: datetime | date | None, fmt: str) -> str | None:
    if value is None:
        return None
    return (_utc(value) if isinstance(value, datetime) else value).strftime(fmt)


def in_zone(value: datetime | None, zone: str) -> datetime | None:
    """The same instant in ``zone`` (for APIs that write local times: ``in_zone('Asia/Shanghai')``)."""
    return None if value is None else value.astimezone(ZoneInfo(zone))


def local(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S", zone: str = "UTC") -> str | None:
    """The instant as local time text in ``zone``, without an offset."""
    return None if value is None else value.astimezone(ZoneInfo(zone)).strftime(fmt)


def seconds_between(start: Any, end: Any) -> int | None:
    """Whole seconds from one ISO instant to another (an event's start and end), ``None`` when
    either is missing or not an instant, or the end is before the start: a record's values, so
    a bad one leaves the field empty rather than stopping the read."""
    if not isinstance(start, str) or not isinstance(end, str):
        return None
    try:
        begin, finish = datetime.fromisoformat(start), datetime.fromisoformat(end)
        seconds = int((finish - begin).total_seconds())
    except (TypeError, ValueError):  # not instants, or one naive and one aware
        return None
    return seconds if seconds >= 0 else None


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
    env.filters.update(
        iso=iso,
        iso_offset=iso_offset,
        epoch_ms=epoch_ms,
        epoch_s=epoch_s,
        http_date=http_date,
        strftime=strftime,
        in_zone=in_zone,
        local=local,
        seconds_between=seconds_between,
    )
    return env


ENV = _environment()


def compile_template(value: Any, where: str) -> Compiled:
    """``value`` (a string, or mappings and lists of them) as a function of the variables.

    ``where`` names the value in messages (``streams.deals.request.body.filter``). A syntax error
    is a :class:`ConnectorConfigError` now; an error while rendering is one when it happens.
    """
    if isinstance(value, str):
        return _compile_string(value, where)
    if isinstance(value, Mapping):
        parts = {str(key): compile_template(item, f"{where}.{key}") for key, item in value.items()}

        def render_mapping(variables: Variables) -> dict[str, Any]:
            out = {}
            for key, part in parts.items():
                rendered = part(variables)
                if rendered is not None:
                    out[key] = rendered
            return out

        return render_mapping
    if isinstance(value, list):
        items = [compile_template(item, f"{where}[{index}]") for index, item in enumerate(value)]
        return lambda variables: [item(variables) for item in items]
    return lambda _variables: value


def _compile_string(text: str, where: str) -> Compiled:
    if "{{" not in text and "{%" not in text:
        return lambda _variables: text
    try:
        whole = _WHOLE.match(text.strip())
        if whole is not None:
            expression = ENV.compile_expression(whole["expr"], undefined_to_none=False)

            def evaluate(variables: Variables) -> Any:
                return _run(lambda: expression(**variables), where)

            return evaluate
        template = ENV.from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise ConnectorConfigError(f"{where}: template {text!r}: {exc.message}") from None
    return lambda variables: _run(lambda: template.render(**variables), where)


def _run(render: Callable[[], Any], where: str) -> Any:
    try:
        value = render()
    except ConnectorConfigError as exc:
        raise ConnectorConfigError(f"{where}: {exc}") from None
    except jinja2.UndefinedError as exc:
        raise ConnectorConfigError(f"{where}: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise ConnectorConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise ConnectorConfigError(f"{where}: {type(exc).__name__}: {exc}") from None
    if isinstance(value, jinja2.Undefined):
        return None
    return value


def template_names(text: str) -> set[str]:
    """The variables a template reads (``record``, ``inputs`` ...)."""
    try:
        return set(meta.find_undeclared_variables(ENV.parse(text)))
    except jinja2.TemplateSyntaxError:
        return set()


class Table(Mapping[str, Any]):
    """A named table the templates index (``lookups.widgets['金额']``), where a missing key is a
    configuration error that lists the keys there are, not an undefined value."""

    def __init__(self, name: str, rows: Mapping[str, Any], what: str = "key") -> None:
        self.name = name
        self.rows = dict(rows)
        self.what = what

    def __getitem__(self, key: str) -> Any:
        try:
            return self.rows[key]
        except KeyError:
            shown = ", ".join(repr(k) for k in list(self.rows)[:40]) or "none"
            raise ConnectorConfigError(f"{self.name} has no {self.what} {key!r} (it has: {shown})") from None

    def __iter__(self) -> Any:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)
