"""The shipped contract suite (crm_perf_sync.testing) on the rest connector, one class per spec."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.testing import ConnectorContract
from crm_perf_sync_rest.connector import RestConnector
from tests.connectors.rest.support import TOY_SPEC
from tests.connectors.rest.toy import API_KEY, ToyCrm


class TestToySpecContract(ConnectorContract):
    """The invented CRM of the spec language's own tests: cursor pages, increments, deletions."""

    connector_class = RestConnector
    kind = "rest"
    expected_streams = ("pipeline_stages", "owners", "opportunities")

    @pytest.fixture(scope="class")
    @classmethod
    def contract_settings(cls) -> Iterator[Mapping[str, Any]]:
        with ToyCrm(utc_now) as toy:
            toy.add(23)
            yield {"spec": str(TOY_SPEC), "base_url": toy.url, "inputs": {"api_key": API_KEY}}
