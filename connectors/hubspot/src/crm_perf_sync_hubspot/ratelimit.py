"""Client-side pacing: token buckets shared by every connector instance of one HubSpot account.

HubSpot counts requests per account (and per app), not per connection: two connections to the
same portal, or a sync and a check running side by side, draw on the same allowance. The
buckets therefore live in a process-wide registry keyed by the account.

A bucket does not own a clock: callers pass their own "now" and sleep themselves. That keeps the
time source where the connector's context puts it, and it makes a bucket robust to a clock that
jumps backwards (the elapsed time is then taken as zero, never negative).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final


class TokenBucket:
    """``rate`` tokens a second, at most ``capacity`` saved up; one token per request.

    The default capacity of one token paces requests evenly (``1 / rate`` apart) instead of
    letting a burst through: with sequential requests that is exactly the configured rate, and
    HubSpot's rolling windows never see more than they allow.
    """

    def __init__(self, rate: float, capacity: float = 1.0) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("a bucket needs a positive rate and room for at least one token")
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._stamp: float | None = None
        self._lock = threading.Lock()

    def reserve(self, now: float) -> float:
        """Take one token; return how many seconds the caller must wait before sending.

        The token is taken even when the caller has to wait (the bucket goes into debt), so that
        concurrent callers queue up one behind the other rather than all waking at once.
        """
        with self._lock:
            self._refill(now)
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def limit_to(self, remaining: int, now: float) -> None:
        """The server says only ``remaining`` requests are left in its window: never plan for more."""
        with self._lock:
            self._refill(now)
            self._tokens = min(self._tokens, float(remaining))

    def slow_to(self, rate: float) -> None:
        """Never faster than ``rate`` from now on (the server announced a lower limit)."""
        with self._lock:
            self.rate = min(self.rate, rate)

    def _refill(self, now: float) -> None:
        if self._stamp is not None:
            elapsed = max(0.0, now - self._stamp)
            self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._stamp = now


@dataclass(slots=True)
class AccountBuckets:
    """The two allowances of one account: search requests, and everything else."""

    general: TokenBucket
    search: TokenBucket


_REGISTRY: Final[dict[tuple[str, float, float], AccountBuckets]] = {}
_REGISTRY_LOCK: Final = threading.Lock()


def account_buckets(account: str, general_rate: float, search_rate: float) -> AccountBuckets:
    """The buckets of ``account`` (a fingerprint, never a secret), created on first use.

    The configured rates are part of the key: a connection configured with other limits (a
    higher API tier) gets buckets of its own rather than silently inheriting the first one's.
    """
    key = (account, general_rate, search_rate)
    with _REGISTRY_LOCK:
        buckets = _REGISTRY.get(key)
        if buckets is None:
            buckets = AccountBuckets(general=TokenBucket(general_rate), search=TokenBucket(search_rate))
            _REGISTRY[key] = buckets
        return buckets
