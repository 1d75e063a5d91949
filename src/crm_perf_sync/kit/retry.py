"""How long to wait before trying again: a server's ``Retry-After``, and backoff with jitter.

Both are arithmetic only. The retry loops stay with their owners (a connector's client, the sync
engine, the webhook worker), because each interleaves its own concerns with the waiting: token
refreshes, quota stops, lease renewals, an injected clock and sleep.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from crm_perf_sync.kit.timeutil import utc_now


def retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait, from the value of a ``Retry-After`` header (RFC 9110, section 10.2.3).

    Both forms: delay-seconds (``"120"``) and an HTTP date (``"Wed, 21 Oct 2026 07:28:00 GMT"``),
    counted from ``now`` (the current time unless given). ``None`` when the header is absent or
    unreadable, so the caller falls back to its own backoff. Never negative: a date gone by is
    ``0.0``. Always finite: ``inf`` or ``nan`` is unreadable, not a wait forever.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": an HTTP date is always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (utc_now() if now is None else now)).total_seconds())


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0).

    Exponential with "equal jitter": the step is ``base * 2**attempt``, at most ``cap``; half of
    it is kept and the other half drawn from ``rng``, so the wait lies in ``[step/2, step]`` (in
    ``[cap/2, cap]`` once the steps reach the cap). Several workers backing off together spread
    out, and none retries at once.
    """
    if attempt < 0:
        raise ValueError(f"attempt must not be negative, got {attempt}")
    # 2.0**1024 overflows; by then every step is the cap anyway.
    step = min(cap, base * 2.0 ** min(attempt, 1023))
    return step / 2 + rng.uniform(0, step / 2)
