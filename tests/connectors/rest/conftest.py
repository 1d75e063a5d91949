"""Fixtures of the rest connector tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.connectors.rest.support import OPEN


@pytest.fixture(autouse=True)
def _close_connectors() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()
