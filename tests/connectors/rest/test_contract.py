"""The shipped contract suite (crm_perf_sync.testing) on the rest connector, one class per spec."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.testing import ConnectorContract
from crm_perf_sync_rest.connector import RestConnector
from tests.connectors.rest.emulators import huoban_data, jiandaoyun_data, pipedrive_data, zoho_data
from tests.connectors.rest.emulators.huoban import HuobanEmulator
from tests.connectors.rest.emulators.jiandaoyun import JiandaoyunEmulator
from tests.connectors.rest.emulators.pipedrive import PipedriveEmulator
from tests.connectors.rest.emulators.zoho import ZohoEmulator
from tests.connectors.rest.support import (
    TOY_SPEC,
    huoban_settings,
    jiandaoyun_settings,
    pipedrive_settings,
    zoho_settings,
)
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


class TestJiandaoyunContract(ConnectorContract):
    """简道云: a synthetic 商机 form, its departments and members, the 客户 and 跟进记录 forms."""

    connector_class = RestConnector
    kind = "rest"
    expected_streams = ("pipeline_stages", "teams", "owners", "opportunities", "accounts", "activities")
    fetched_streams = ("opportunities", "activities")
    unknown_id = "0" * 24

    @pytest.fixture(scope="class")
    @classmethod
    def contract_settings(cls) -> Iterator[Mapping[str, Any]]:
        with JiandaoyunEmulator(jiandaoyun_data.synthetic(250), record=False) as emulator:
            emulator.add_form(jiandaoyun_data.customers_form(emulator.members))
            emulator.add_form(jiandaoyun_data.followups_form(emulator.records(), emulator.members))
            settings = jiandaoyun_settings(emulator, requests_per_second=0)
            settings["inputs"]["customers_entry_id"] = jiandaoyun_data.CUSTOMERS_ENTRY_ID
            settings["inputs"]["activities_entry_id"] = jiandaoyun_data.FOLLOWUPS_ENTRY_ID
            yield settings


class TestHuobanContract(ConnectorContract):
    """伙伴云: a synthetic 商机 table, owners from its user field, the 客户 and 跟进记录 tables."""

    connector_class = RestConnector
    kind = "rest"
    expected_streams = ("pipeline_stages", "owners", "opportunities", "accounts", "activities")

    @pytest.fixture(scope="class")
    @classmethod
    def contract_settings(cls) -> Iterator[Mapping[str, Any]]:
        deals = huoban_data.synthetic(250)
        with HuobanEmulator(deals, record=False) as emulator:
            customers = emulator.add_table(huoban_data.customers_table(deals))
            emulator.add_table(huoban_data.followups_table(emulator, customers))
            settings = huoban_settings(emulator, requests_per_second=0)
            settings["inputs"]["customers_table_id"] = huoban_data.CUSTOMERS_TABLE_ID
            settings["inputs"]["activities_table_id"] = huoban_data.FOLLOWUPS_TABLE_ID
            yield settings


class TestPipedriveContract(ConnectorContract):
    """Pipedrive: the Zoho sample as a company (deals, leads, users, stages), with organizations and
    activities; limits as documented."""

    connector_class = RestConnector
    kind = "rest"
    expected_streams = (
        "owners",
        "pipeline_stages",
        "leads",
        "archived_leads",
        "opportunities",
        "archived_opportunities",
        "accounts",
        "activities",
    )
    # No deal of the sample is archived.
    empty_streams = frozenset({"archived_opportunities"})
    fetched_streams = ("opportunities", "accounts", "activities")
    unknown_id = "99999999"

    @pytest.fixture(scope="class")
    @classmethod
    def contract_settings(cls) -> Iterator[Mapping[str, Any]]:
        company = pipedrive_data.with_activities(pipedrive_data.zoho_company())
        with PipedriveEmulator(company, record=False) as emulator:
            emulator.rate_limit = None  # the suite checks records, not pacing (the framework tests do)
            emulator.daily_quota = None
            yield pipedrive_settings(emulator)


class TestZohoCrmContract(ConnectorContract):
    """Zoho CRM: a synthetic org of deals, leads, users, accounts and activities, through OAuth."""

    connector_class = RestConnector
    kind = "rest"
    expected_streams = (
        "pipeline_stages",
        "owners",
        "leads",
        "opportunities",
        "accounts",
        "calls",
        "events",
        "tasks",
    )
    fetched_streams = ("leads", "opportunities", "accounts", "calls", "events", "tasks")
    unknown_id = "4150868000999999999"

    @pytest.fixture(scope="class")
    @classmethod
    def contract_settings(cls) -> Iterator[Mapping[str, Any]]:
        with ZohoEmulator(zoho_data.with_activities(zoho_data.synthetic(450)), record=False) as emulator:
            settings = zoho_settings(emulator)
            settings["inputs"]["org_id"] = "20095123"  # so that records link to their pages
            yield settings
