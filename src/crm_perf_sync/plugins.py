"""Connectors discovered from the ``crm_perf_sync.connectors`` entry point group at start.

A plugin that fails to import, or that is not a :class:`Connector`, is logged and skipped: one
broken third-party package must not take the built-in connectors down with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from crm_perf_sync.connector_sdk import ENTRY_POINT_GROUP, Connector

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokenConnector:
    kind: str
    target: str
    error: str


class ConnectorRegistry:
    """The connector classes available to this process, by kind (the entry point name).

    Discovery only lists the entry points; a connector's package is imported when its kind is
    first asked for (:meth:`get`), so a command that uses one connection does not pay for
    importing every CRM's client library. Asking for all of them (:attr:`connectors`,
    :attr:`broken`, :meth:`kinds`) imports every one.
    """

    def __init__(
        self,
        connectors: dict[str, type[Connector]] | None = None,  # type: ignore[type-arg]
        entry_points: dict[str, EntryPoint] | None = None,
    ) -> None:
        self._loaded: dict[str, type[Connector]] = dict(connectors or {})  # type: ignore[type-arg]
        self._pending: dict[str, EntryPoint] = dict(entry_points or {})
        self._broken: list[BrokenConnector] = []
        self.distributions: dict[str, str] = {}

    @classmethod
    def discover(cls) -> ConnectorRegistry:
        found: dict[str, EntryPoint] = {}
        duplicates: list[EntryPoint] = []
        for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
            if entry_point.name in found:
                duplicates.append(entry_point)
            else:
                found[entry_point.name] = entry_point
        registry = cls(entry_points=found)
        for entry_point in duplicates:
            registry._skip(entry_point, f"kind {entry_point.name!r} is already provided by another package")
        return registry

    @property
    def connectors(self) -> dict[str, type[Connector]]:  # type: ignore[type-arg]
        """Every connector that loads (imports them all)."""
        self._load_all()
        return self._loaded

    @property
    def broken(self) -> list[BrokenConnector]:
        """Every plugin that failed to load (imports them all)."""
        self._load_all()
        return self._broken

    def _load_all(self) -> None:
        for name in list(self._pending):
            self._load(self._pending.pop(name))

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
        self._loaded[entry_point.name] = loaded
        dist = entry_point.dist
        self.distributions[entry_point.name] = f"{dist.name} {dist.version}" if dist is not None else "?"

    def _skip(self, entry_point: EntryPoint, reason: str) -> None:
        log.warning("connector %r (%s) skipped: %s", entry_point.name, entry_point.value, reason)
        self._broken.append(BrokenConnector(entry_point.name, entry_point.value, reason))

    def get(self, kind: str) -> type[Connector] | None:  # type: ignore[type-arg]
        """The connector of ``kind``, imported now if it was not yet; ``None`` if none loads."""
        pending = self._pending.pop(kind, None)
        if pending is not None:
            self._load(pending)
        return self._loaded.get(kind)

    def kinds(self) -> list[str]:
        """The kinds that load (imports them all)."""
        return sorted(self.connectors)
