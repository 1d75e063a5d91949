"""``Duration``: how every duration is written, in the configuration and in connector settings.

``90`` (seconds), ``"30s"``, ``"15m"``, ``"1.5h"``, ``"1d"``, and the forms pydantic reads
itself (ISO 8601 such as ``"PT15M"``, ``"01:30:00"``), so that a key written one way in the
schedule of a connection is read the same way in its settings.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, TypeAdapter, ValidationError

_UNIT = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[smhd])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EXPECTED = "expected a duration like 30s, 15m, 1h or 1d"
_PYDANTIC: TypeAdapter[timedelta] = TypeAdapter(timedelta)


def parse_duration(value: object) -> timedelta:
    """``value`` as a timedelta; a :class:`ValueError` naming ``value`` when it is none.

    A sign is left to the field (a lookback refuses a negative one in its own words); a value
    no timedelta can hold (``.inf`` in YAML, ``99999999999999d``) is refused here rather than
    overflowing later.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):  # YAML's `yes` is not one second
        raise ValueError(f"{_EXPECTED}, got {value!r}")
    seconds: float | None = None
    if isinstance(value, int | float):
        seconds = value
    elif isinstance(value, str) and (match := _UNIT.match(value)):
        seconds = float(match["n"]) * _SECONDS[match["unit"]]
    if seconds is not None:
        if isinstance(seconds, float) and math.isnan(seconds):
            raise ValueError(f"{_EXPECTED}, got {value!r}")
        try:
            return timedelta(seconds=seconds)
        except OverflowError:
            raise ValueError(f"{value!r} is longer than any duration can be") from None
    if isinstance(value, str):
        try:
            return _PYDANTIC.validate_python(value)
        except ValidationError:
            pass
    raise ValueError(f"{_EXPECTED}, got {value!r}")


#: A :class:`~datetime.timedelta` field that reads every form above (``Duration | None`` for an
#: optional one).
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
