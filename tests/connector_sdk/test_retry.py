"""``retry_after`` and ``backoff_delay``: how long a client waits before it tries again."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_perf_sync.connector_sdk import backoff_delay, retry_after
from crm_perf_sync.kit.timeutil import utc_now

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# -- Retry-After --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),  # never a wait into the past
        ("Sun, 01 Mar 2026 12:01:30 GMT", 90.0),  # the HTTP-date form (IMF-fixdate)
        ("Sun, 01 Mar 2026 11:59:00 GMT", 0.0),  # a date gone by: now
        ("Sun, 01 Mar 2026 12:01:30 -0000", 90.0),  # no zone given: the HTTP-date's own, GMT
        ("Sun, 01 Mar 2026 13:01:30 +0100", 90.0),
        ("Sunday, 01-Mar-26 12:01:30 GMT", 90.0),  # the obsolete forms RFC 9110 still asks to read
        ("Sun Mar  1 12:01:30 2026", 90.0),
    ],
)
def test_retry_after_in_both_forms(value: str, seconds: float) -> None:
    assert retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize("value", [None, "", "  ", "soon", "inf", "-inf", "nan", "1e999", "Sun, 99 Foo"])
def test_an_absent_or_unreadable_retry_after_is_none(value: str | None) -> None:
    assert retry_after(value, now=NOW) is None


@given(seconds=st.integers(min_value=0, max_value=10**12))
def test_delta_seconds_are_taken_as_they_are(seconds: int) -> None:
    assert retry_after(str(seconds), now=NOW) == seconds


@given(
    when=st.integers(min_value=631_152_000, max_value=221_845_392_000).map(  # 1990 to 9000
        lambda seconds: datetime.fromtimestamp(seconds, UTC)
    )
)
def test_an_http_date_is_the_time_left_until_it(when: datetime) -> None:
    assert retry_after(format_datetime(when, usegmt=True), now=NOW) == max(0.0, (when - NOW).total_seconds())


@given(value=st.text())
def test_any_header_is_a_finite_wait_or_none(value: str) -> None:
    seconds = retry_after(value, now=NOW)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


@given(
    day=st.integers(min_value=-5, max_value=40),
    month=st.sampled_from(["Jan", "Feb", "Mar", "Dec", "Foo"]),
    year=st.integers(min_value=-1, max_value=100_000),
    clock=st.tuples(*[st.integers(min_value=-1, max_value=99)] * 3),
    zone=st.sampled_from(["GMT", "UTC", "-0000", "+0100", "-2359", "+9999", "EST", "XYZ", ""]),
)
def test_any_date_like_header_is_a_finite_wait_or_none(
    day: int, month: str, year: int, clock: tuple[int, int, int], zone: str
) -> None:
    hour, minute, second = clock
    seconds = retry_after(
        f"Sun, {day:02d} {month} {year} {hour:02d}:{minute:02d}:{second:02d} {zone}", now=NOW
    )
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


def test_without_a_clock_a_date_counts_from_the_current_time() -> None:
    assert retry_after("30") == 30.0
    tomorrow = format_datetime(utc_now() + timedelta(days=1), usegmt=True)
    seconds = retry_after(tomorrow)
    assert seconds is not None
    assert timedelta(hours=23) < timedelta(seconds=seconds) <= timedelta(days=1)


# -- backoff ------------------------------------------------------------------------------------

attempts = st.integers(min_value=0, max_value=5000)
positive = st.floats(min_value=0.001, max_value=100_000, allow_nan=False, allow_infinity=False)


@given(attempt=attempts, base=positive, cap=positive, seed=st.integers())
def test_each_wait_keeps_half_its_step_and_draws_the_other_half(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    step = min(cap, base * 2.0 ** min(attempt, 1023))
    delay = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert step / 2 <= delay <= step <= cap
    # Exactly the documented draw: one uniform number per wait (seeded runs stay reproducible).
    assert delay == step / 2 + random.Random(seed).uniform(0, step / 2)


@given(attempt=attempts, base=positive, cap=positive, seed=st.integers())
def test_once_the_steps_reach_the_cap_a_wait_is_between_half_the_cap_and_the_cap(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    if base * 2.0 ** min(attempt, 1023) < cap:
        attempt += math.ceil(math.log2(cap / base)) + 1
    delay = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert cap / 2 <= delay <= cap


def test_the_steps_double_from_the_base() -> None:
    rng = random.Random(7)
    waits = [backoff_delay(attempt, base=1.0, cap=60.0, rng=rng) for attempt in range(8)]
    for wait, step in zip(waits, (1, 2, 4, 8, 16, 32, 60, 60), strict=True):
        assert step / 2 <= wait <= step
    assert len(set(waits)) == len(waits)  # jittered: no two workers retry in step


def test_an_attempt_is_counted_from_zero() -> None:
    with pytest.raises(ValueError, match="attempt must not be negative, got -1"):
        backoff_delay(-1, base=1.0, cap=60.0, rng=random.Random(1))
