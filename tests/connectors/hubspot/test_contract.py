"""The shipped contract suite (crm_perf_sync.testing) on the hubspot connector, against its emulator."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from crm_perf_sync.testing import ConnectorContract
from crm_perf_sync_hubspot import HubSpotConnector
from tests.connectors.hubspot.emulator import HubSpotEmulator
from tests.connectors.hubspot.portal import small_portal
from tests.connectors.hubspot.support import UNLIMITED


class TestHubSpotContract(ConnectorContract):
    connector_class = HubSpotConnector
    kind = "hubspot"
    expected_streams = (
        "teams",
        "owners",
        "pipelines",
        "accounts",
        "leads",
        "opportunities",
        "stage_changes",
        "activities",
    )
    fetched_streams = ("accounts", "leads", "opportunities")
    unknown_id = "987654321"

    @pytest.fixture(scope="class")
    @classmethod
    def contract_settings(cls) -> Iterator[Mapping[str, Any]]:
        """Settings of a connection to an emulator seeded with a small realistic portal.

        The emulator runs (on the real clock) until the class's tests end: the recorded deals and
        pipeline, owners in two teams, contacts from subscriber to customer, deals with stage
        history, an archived deal and contact. Rate limits are set high: the suite checks records,
        not pacing; a portal id, so that the records' links are checked too.
        """
        with HubSpotEmulator(small_portal(), record=False) as emulator:
            yield {
                "access_token": emulator.portal.token,
                "base_url": emulator.url,
                "rate_limits": dict(UNLIMITED),
                "portal_id": 4412345,  # so that every deal and contact read links to its page
            }
