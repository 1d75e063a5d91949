"""Fixtures of the hubspot connector tests: a simulated clock, a portal, its emulator, a harness."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.connectors.hubspot.emulator import HubSpotEmulator, Portal, SimClock
from tests.connectors.hubspot.portal import small_portal
from tests.connectors.hubspot.support import Harness


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def portal(clock: SimClock) -> Portal:
    return small_portal(clock.now)


@pytest.fixture
def emulator(portal: Portal) -> Iterator[HubSpotEmulator]:
    with HubSpotEmulator(portal) as running:
        yield running


@pytest.fixture
def hs(session_factory: sessionmaker[Session], emulator: HubSpotEmulator, clock: SimClock) -> Harness:
    return Harness(session_factory, emulator, clock)
