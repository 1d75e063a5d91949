"""Process logging: readable text on a terminal, one JSON object per line in production.

Every line carries the context it was logged in (``connection``, ``stream``, ``run_id``,
``request_id``: set with :func:`log_context`), and passes through a redactor before it is written:
credentials the configuration holds, bearer tokens, webhook secrets, API keys and passwords in
URLs never reach the log, whichever code path (or exception message) tried to write them.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

import orjson

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_CONTEXT: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("log_context", default=_EMPTY)

#: Shapes of secrets that arrive at run time (tokens a CRM hands out, keys a user sends).
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic|oauth)(\s+)[A-Za-z0-9._~+/=!:-]{8,}"), r"\1\2***"),
    (re.compile(r"whsec_[A-Za-z0-9+/=]{8,}"), "whsec_***"),
    (re.compile(r"\bcps_[A-Za-z0-9_-]{16,}"), "cps_***"),
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@\"']+:)[^@\s/\"']+@"), r"\1***@"),
    (
        re.compile(
            r"(?i)((?:access_token|refresh_token|client_secret|password|session_?id|api_?key|"
            r"private_key|secret|authorization)[\"']?\s*[:=]\s*[\"']?)(?!\*\*\*|(?:bearer|basic|oauth)\s)[^\s\"'&,;}]{4,}"
        ),
        r"\1***",
    ),
)
#: Exact values known to be secret (from the settings and the configuration), longest first.
_KNOWN: list[str] = []


def register_secrets(values: Iterable[str]) -> None:
    """Never log these values (short strings are left alone: they would blank ordinary words)."""
    known = set(_KNOWN) | {v for v in values if isinstance(v, str) and len(v) >= 6}
    _KNOWN[:] = sorted(known, key=len, reverse=True)


def redact(text: str) -> str:
    for value in _KNOWN:
        if value in text:
            text = text.replace(value, "***")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every log line written inside the block (this thread or task)."""
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind_log_context(**fields: Any) -> None:
    """Add ``fields`` to the context until the enclosing :func:`log_context` block ends."""
    _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    converter = time.gmtime  # type: ignore[assignment]  # the stdlib's own idiom for UTC

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                event[key] = value
        if record.exc_info:
            event["exc_info"] = self.formatException(record.exc_info)
        event = {k: redact(v) if isinstance(v, str) else v for k, v in event.items()}
        return orjson.dumps(event, default=lambda v: redact(str(v))).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Each request and SQL statement at INFO would drown the events that matter.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # One line per HTTP request (connectors, webhook sends) is noise; they log their own outcomes.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
