"""Connectors discovered from the ``crm_perf_sync.connectors`` entry point group at start.

A plugin that fails to import, or that is not a :class:`Connector`, is logged and skipped: one
broken third-party package must not take the built-in connectors down with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

from crm_perf_sync.connector_sdk import ENTRY_POINT_GROUP, Connector

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokenConnector:
    kind: str
    target: str
    error: str


@dataclass(slots=True)
class ConnectorRegistry:
    """The connector classes available to this process, by kind (the entry point name)."""

    connectors: dict[str, type[Connector]] = field(default_factory=dict)  # type: ignore[type-arg]
    broken: list[BrokenConnector] = field(default_factory=list)
    distributions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def discover(cls) -> ConnectorRegistry:
        registry = cls()
        for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
            registry._load(entry_point)
        return registry

    def _load(self, entry_point: EntryPoint) -> None:
        try:
            loaded = entry_point.load()
        except Exception as exc:  # a plugin can fail in any way; none may stop the others
            self._skip(entry_point, f"import failed: {type(exc).__name__}: {exc}")
            return
        if not (isinstance(loaded, type) and issubclass(loaded, Connector)):
            self._skip(entry_point, "does not name a crm_perf_sync.connector_sdk.Connector subclass")
            return
        if getattr(loaded, "settings_model", None) is None:
            self._skip(entry_point, "has no settings_model")
            return
        if entry_point.name in self.connectors:
            self._skip(entry_point, f"kind {entry_point.name!r} is already provided by another package")
            return
        self.connectors[entry_point.name] = loaded
        dist = entry_point.dist
        self.distributions[entry_point.name] = f"{dist.name} {dist.version}" if dist is not None else "?"

    def _skip(self, entry_point: EntryPoint, reason: str) -> None:
        log.warning("connector %r (%s) skipped: %s", entry_point.name, entry_point.value, reason)
        self.broken.append(BrokenConnector(entry_point.name, entry_point.value, reason))

    def get(self, kind: str) -> type[Connector] | None:  # type: ignore[type-arg]
        return self.connectors.get(kind)

    def kinds(self) -> list[str]:
        return sorted(self.connectors)
