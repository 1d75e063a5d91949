"""What a sync reports: per-stream statistics and the outcome of a run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass(slots=True)
class StreamStats:
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped: int = 0
    warnings: int = 0
    stage_changes: int = 0
    status: str = "pending"
    error: str | None = None
    cursor_before: Any = None
    cursor_after: Any = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class SyncOutcome:
    """How a run ended. ``status`` is one of succeeded, failed, deferred, interrupted."""

    run_id: int
    connection_id: str
    status: str
    duration_seconds: float
    streams: dict[str, StreamStats] = field(default_factory=dict)
    error: str | None = None
    error_kind: str | None = None
    retries: int = 0

    def total(self, name: str) -> int:
        return sum(int(getattr(stats, name)) for stats in self.streams.values())

    def summary(self) -> str:
        parts = [
            f"{self.connection_id}: {self.status} in {self.duration_seconds:.1f}s",
            f"read {self.total('read')}",
            f"inserted {self.total('inserted')}",
            f"updated {self.total('updated')}",
            f"unchanged {self.total('unchanged')}",
            f"deleted {self.total('deleted')}",
            f"skipped {_count(self.total('skipped'), 'bad record')}",
            _count(self.total("warnings"), "warning"),
            f"stage changes {self.total('stage_changes')}",
        ]
        text = ", ".join(parts) + f" (run {self.run_id})"
        if self.error:
            text += f": {self.error}"
        return text
