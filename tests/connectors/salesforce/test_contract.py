"""The shipped contract suite (crm_perf_sync.testing) on the salesforce connector, over an emulated org."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from crm_perf_sync.testing import ConnectorContract
from crm_perf_sync_salesforce.connector import SalesforceConnector
from tests.connectors.salesforce.emulator import SalesforceEmulator, Tls
from tests.connectors.salesforce.seed import seed_org
from tests.connectors.salesforce.support import settings_for


class TestSalesforceContract(ConnectorContract):
    connector_class = SalesforceConnector
    kind = "salesforce"
    # The reconciliation passes list what was deleted since the last one: nothing, in a fresh org.
    empty_streams = frozenset(
        {"accounts_reconcile", "leads_reconcile", "opportunities_reconcile", "activities_reconcile"}
    )

    @pytest.fixture(scope="class")
    @classmethod
    def contract_settings(cls, tls: Tls) -> Iterator[Mapping[str, Any]]:
        """Settings of a connection to an emulated org (TLS from the session's test CA, trusted
        through ``ca_bundle``) seeded with a small sales company: 4 reps in 3 roles, 12 accounts,
        60 leads, 40 deals, 90 tasks and events."""
        with SalesforceEmulator(tls) as emulator:
            seed_org(emulator.org, opportunities=40, leads=60, reps=4)
            yield settings_for(emulator)
