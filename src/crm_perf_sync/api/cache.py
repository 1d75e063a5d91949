"""In-process caches of one API replica: rendered responses by version, and short-lived lookups.

**Responses**: a page of KPI values or scores is rendered once per version of the results (a
refresh that changes them is a new version) and served from memory until then, compressed once
for clients that accept gzip. Every replica keeps its own; none is ever stale, because the
version is part of the key.

**Lookups** are kept a short while: a key's scope for :data:`LOOKUP_SECONDS` (a revoked key is
refused within that time), a result's version for :data:`VERSION_SECONDS` (a refresh is seen
within that time: a change a CRM pushed is meant to show in a second or two). A dashboard
polling many times a second costs a few small database reads a second.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

#: How long a key's check is reused.
LOOKUP_SECONDS = 1.0
#: How long a result's version is reused (its lookup reads one row by its key).
VERSION_SECONDS = 0.25
#: Rendered responses kept per replica, in bytes (the least recently used go first).
RESPONSE_CACHE_BYTES = 64 * 1024 * 1024
#: Bodies smaller than this are not worth compressing.
GZIP_MIN_BYTES = 1024

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Rendered:
    body: bytes
    media_type: str
    headers: Mapping[str, str]
    compressed: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.body) + len(self.compressed or b"")


def render(body: bytes, media_type: str, headers: Mapping[str, str]) -> Rendered:
    compressed = gzip.compress(body, compresslevel=5, mtime=0) if len(body) >= GZIP_MIN_BYTES else None
    return Rendered(body, media_type, dict(headers), compressed)


@dataclass
class ResponseCache:
    """A thread-safe LRU of rendered responses, bounded in bytes."""

    max_bytes: int = RESPONSE_CACHE_BYTES
    _items: OrderedDict[Hashable, Rendered] = field(default_factory=OrderedDict)
    _bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    hits: int = 0
    misses: int = 0

    def get(self, key: Hashable) -> Rendered | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: Hashable, value: Rendered) -> None:
        if value.size > self.max_bytes // 4:
            return  # one response must not flush everything else
        with self._lock:
            previous = self._items.pop(key, None)
            if previous is not None:
                self._bytes -= previous.size
            self._items[key] = value
            self._bytes += value.size
            while self._bytes > self.max_bytes and self._items:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.size


@dataclass
class TtlCache(Generic[V]):
    """Values reused for ``seconds`` after they were loaded (thread-safe; loads outside the lock)."""

    seconds: float = LOOKUP_SECONDS
    clock: Callable[[], float] = time.monotonic
    _items: dict[Hashable, tuple[float, V]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: Hashable, load: Callable[[], V]) -> V:
        now = self.clock()
        with self._lock:
            found = self._items.get(key)
        if found is not None and now - found[0] < self.seconds:
            return found[1]
        value = load()
        with self._lock:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[key] = (now, value)
        return value

    def peek(self, key: Hashable) -> V | None:
        """The value if loaded within ``seconds``, else ``None`` (nothing is loaded)."""
        now = self.clock()
        with self._lock:
            found = self._items.get(key)
        return found[1] if found is not None and now - found[0] < self.seconds else None

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[key] = (self.clock(), value)

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._items.pop(key, None)


def accepts_gzip(headers: Mapping[str, Any]) -> bool:
    return "gzip" in str(headers.get("accept-encoding", ""))
