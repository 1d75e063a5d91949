"""Links from stored records to their Lightning pages, built from the settings alone."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from crm_perf_sync.connector_sdk import ConnectorContext
from crm_perf_sync_salesforce.connector import SalesforceConnector
from crm_perf_sync_salesforce.settings import SalesforceSettings

OPPORTUNITY = "0065g00000AbCdEAAV"
LEAD = "00Q5g00000XyZ12EAF"
USER = "0055g00000Q1w2eAAB"
ACCOUNT = "0015g00000MnOpQAAR"
TASK = "00T5g00000TaSk1EAB"
EVENT = "00U5g00000EvEnTEAB"
PASSWORD = {"type": "password", "username": "sync@acme.example", "password": "pw"}


def connector(**settings: Any) -> SalesforceConnector:
    context = ConnectorContext(
        connection_id="sfdc", base_dir=Path.cwd(), logger=logging.getLogger("tests.salesforce.links")
    )
    return SalesforceConnector(SalesforceSettings.model_validate(settings), context)


def test_a_session_links_to_its_instance() -> None:
    sf = connector(
        auth={"type": "session", "session_id": "00D!x", "instance_url": "https://acme.my.salesforce.com/"}
    )
    assert sf.record_url("opportunities", OPPORTUNITY) == (
        f"https://acme.my.salesforce.com/lightning/r/Opportunity/{OPPORTUNITY}/view"
    )
    assert sf.record_url("leads", LEAD) == f"https://acme.my.salesforce.com/lightning/r/Lead/{LEAD}/view"
    assert sf.record_url("owners", USER) == f"https://acme.my.salesforce.com/lightning/r/User/{USER}/view"


def test_a_my_domain_login_url_is_where_records_open() -> None:
    sf = connector(auth=PASSWORD, login_url="https://acme--uat.sandbox.my.salesforce.com")
    assert sf.record_url("opportunities", OPPORTUNITY) == (
        f"https://acme--uat.sandbox.my.salesforce.com/lightning/r/Opportunity/{OPPORTUNITY}/view"
    )
    assert sf.record_url("leads", LEAD) == (
        f"https://acme--uat.sandbox.my.salesforce.com/lightning/r/Lead/{LEAD}/view"
    )


@pytest.mark.parametrize("login_url", ["https://login.salesforce.com", "https://test.salesforce.com"])
def test_a_generic_login_host_gives_no_links_unless_record_base_url_says_where(login_url: str) -> None:
    assert connector(auth=PASSWORD, login_url=login_url).record_url("opportunities", OPPORTUNITY) is None
    sf = connector(auth=PASSWORD, login_url=login_url, record_base_url="https://globex.my.salesforce.com")
    assert sf.record_url("opportunities", OPPORTUNITY) == (
        f"https://globex.my.salesforce.com/lightning/r/Opportunity/{OPPORTUNITY}/view"
    )
    assert sf.record_url("leads", LEAD) == f"https://globex.my.salesforce.com/lightning/r/Lead/{LEAD}/view"


def test_record_base_url_wins_over_the_sessions_instance() -> None:
    sf = connector(
        auth={"type": "session", "session_id": "00D!x", "instance_url": "https://na139.salesforce.com"},
        record_base_url="https://acme.lightning.force.com",
    )
    assert sf.record_url("leads", LEAD) == f"https://acme.lightning.force.com/lightning/r/Lead/{LEAD}/view"


def test_records_without_a_record_page_and_ids_that_are_not_salesforce_ids_get_none() -> None:
    sf = connector(auth=PASSWORD, record_base_url="https://acme.my.salesforce.com")
    assert sf.record_url("stage_changes", "0085g00000HiStAAAZ") is None
    assert sf.record_url("teams", "00E5g000000RoLeEAK") is None
    assert sf.record_url("pipeline_stages", "01J5g000000StGeEAA") is None
    assert sf.record_url("opportunities", "../../secur/logout.jsp") is None
    # 15-character ids (older exports) open too.
    assert sf.record_url("opportunities", OPPORTUNITY[:15]) == (
        f"https://acme.my.salesforce.com/lightning/r/Opportunity/{OPPORTUNITY[:15]}/view"
    )


@pytest.mark.parametrize(
    "value", ["http://acme.my.salesforce.com", "https://acme.my.salesforce.com/lightning", "acme"]
)
def test_record_base_url_is_an_https_site(value: str) -> None:
    with pytest.raises(ValidationError, match="record_base_url"):
        SalesforceSettings.model_validate({"auth": PASSWORD, "record_base_url": value})


def test_accounts_tasks_and_events_open_their_own_pages() -> None:
    sf = connector(auth=PASSWORD, login_url="https://acme.my.salesforce.com")
    site = "https://acme.my.salesforce.com/lightning/r"
    assert sf.record_url("accounts", ACCOUNT) == f"{site}/Account/{ACCOUNT}/view"
    # One entity, two objects: the id's key prefix says which page.
    assert sf.record_url("activities", TASK) == f"{site}/Task/{TASK}/view"
    assert sf.record_url("activities", EVENT) == f"{site}/Event/{EVENT}/view"
    assert sf.record_url("activities", ACCOUNT) is None
