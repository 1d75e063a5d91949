"""What the shared connector contract suite needs to run the hubspot connector self-contained."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.connectors.hubspot.emulator import HubSpotEmulator
from tests.connectors.hubspot.portal import small_portal
from tests.connectors.hubspot.support import UNLIMITED


@contextmanager
def example_settings() -> Iterator[dict[str, Any]]:
    """Settings of a connection to an emulator seeded with a small realistic portal.

    The emulator runs (on the real clock) until the block ends: the recorded deals and pipeline,
    owners in two teams, contacts from subscriber to customer, deals with stage history, an
    archived deal and contact. Rate limits are set high: the suite checks records, not pacing.
    """
    with HubSpotEmulator(small_portal(), record=False) as emulator:
        yield {
            "access_token": emulator.portal.token,
            "base_url": emulator.url,
            "rate_limits": dict(UNLIMITED),
        }
