"""A connector whose source is a script in memory: the fake source at the edge of the engine."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crm_perf_sync.connector_sdk import (
    Checkpoint,
    Connector,
    ConnectorContext,
    ConnectorSettings,
    Message,
    StreamSpec,
)


class ScriptedSettings(ConnectorSettings):
    label: str = "scripted"


@dataclass
class Script:
    """Per stream: a list of pages (messages); a checkpoint ``{"page": n}`` follows page n.

    ``fail`` maps (stream, page) to an exception raised when that page is about to be read, once
    per entry in the list (so a retry can succeed).
    """

    streams: Sequence[StreamSpec]
    pages: dict[str, list[Sequence[Message]]]
    fail: dict[tuple[str, int], list[BaseException]] = field(default_factory=dict)
    reads: list[tuple[str, Mapping[str, Any] | None]] = field(default_factory=list)
    after_page: Callable[[str, int], None] | None = None


class ScriptedConnector(Connector[ScriptedSettings]):
    settings_model = ScriptedSettings
    script: Script

    def streams(self) -> Sequence[StreamSpec]:
        return self.script.streams

    def read(self, stream: StreamSpec, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:
        self.script.reads.append((stream.name, checkpoint))
        start = int(checkpoint["page"]) + 1 if checkpoint else 0
        pages = self.script.pages.get(stream.name, [])
        for number in range(start, len(pages)):
            failures = self.script.fail.get((stream.name, number))
            if failures:
                raise failures.pop(0)
            yield from pages[number]
            yield Checkpoint({"page": number})
            if self.script.after_page is not None:
                self.script.after_page(stream.name, number)


def scripted(script: Script, connection_id: str = "crm") -> ScriptedConnector:
    connector = ScriptedConnector(
        ScriptedSettings(),
        ConnectorContext(connection_id=connection_id, base_dir=Path.cwd(), logger=logging.getLogger("test")),
    )
    connector.script = script
    return connector
