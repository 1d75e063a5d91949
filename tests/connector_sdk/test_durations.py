"""``Duration``: the one way every duration is written, in the configuration and in connector settings."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from crm_perf_sync.connector_sdk import Duration, StrictModel

DURATION: TypeAdapter[timedelta] = TypeAdapter(Duration)
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
EXPECTED = "expected a duration like 30s, 15m, 1h or 1d"


class Every(StrictModel):
    every: Duration | None = None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (90, timedelta(seconds=90)),
        (1.5, timedelta(seconds=1, microseconds=500_000)),
        (0, timedelta(0)),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("1d", timedelta(days=1)),
        ("1.5h", timedelta(minutes=90)),
        (" 5 m ", timedelta(minutes=5)),
        # ISO 8601 and pydantic's own forms, which connector settings have always accepted.
        ("PT5M", timedelta(minutes=5)),
        ("P1D", timedelta(days=1)),
        ("01:30:00", timedelta(minutes=90)),
        (timedelta(minutes=3), timedelta(minutes=3)),
        # A sign is the field's business: settings refuse negative waits with their own words.
        (-5, timedelta(seconds=-5)),
    ],
)
def test_every_accepted_form(value: object, expected: timedelta) -> None:
    assert DURATION.validate_python(value) == expected


@given(n=st.integers(min_value=0, max_value=10**6), unit=st.sampled_from(sorted(UNITS)))
def test_a_number_with_a_unit_is_that_many_units(n: int, unit: str) -> None:
    assert DURATION.validate_python(f"{n}{unit}") == timedelta(**{UNITS[unit]: n})


@given(seconds=st.integers(min_value=0, max_value=10**9))
def test_a_bare_number_is_seconds_as_is_the_same_number_with_s(seconds: int) -> None:
    assert DURATION.validate_python(seconds) == timedelta(seconds=seconds)
    assert DURATION.validate_python(f"{seconds}s") == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2 weeks", f"{EXPECTED}, got '2 weeks'"),
        ("5 minutes", f"{EXPECTED}, got '5 minutes'"),
        ("-5m", f"{EXPECTED}, got '-5m'"),
        ("5x", f"{EXPECTED}, got '5x'"),
        ("", f"{EXPECTED}, got ''"),
        (True, f"{EXPECTED}, got True"),
        ([5], f"{EXPECTED}, got [5]"),
        (None, f"{EXPECTED}, got None"),
        (float("nan"), f"{EXPECTED}, got nan"),
        (float("inf"), "inf is longer than any duration can be"),
        (10**20, "100000000000000000000 is longer than any duration can be"),
        ("99999999999999d", "'99999999999999d' is longer than any duration can be"),
    ],
)
def test_anything_else_is_refused_with_what_was_given(value: object, message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        DURATION.validate_python(value)
    (error,) = raised.value.errors()
    assert error["msg"] == f"Value error, {message}"


def test_an_optional_duration_is_one_error_at_its_own_key() -> None:
    assert Every().every is None
    assert Every.model_validate({"every": None}).every is None
    assert Every.model_validate({"every": "5m"}).every == timedelta(minutes=5)
    with pytest.raises(ValidationError) as raised:
        Every.model_validate({"every": "2 weeks"})
    assert [(e["loc"], e["msg"]) for e in raised.value.errors()] == [
        (("every",), f"Value error, {EXPECTED}, got '2 weeks'")
    ]
