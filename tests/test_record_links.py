"""Links from stored records back to their CRM, for every connection of a configuration."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from crm_perf_sync.config import LoadedConfig, load_config
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.runtime import record_links
from crm_perf_sync_csv.connector import CsvConnector
from crm_perf_sync_hubspot import HubSpotConnector

CONFIG = """
connections:
  - id: sfdc
    kind: salesforce
    settings:
      auth: {type: password, username: sync@acme.example, password: "${SF_PASSWORD}"}
      login_url: https://acme.my.salesforce.com
  - id: hubspot
    kind: hubspot
    settings:
      access_token: "${HUBSPOT_TOKEN}"
      portal_id: 4412345
      # Nothing answers here: building a link must not connect.
      base_url: http://127.0.0.1:1
  - id: exports
    kind: csv
    settings:
      data_dir: "{exports}"
      streams:
        opportunities:
          file: deals.csv
          fields: {external_id: id, amount: amount, currency: {value: USD}}
"""


def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: ConnectorRegistry) -> LoadedConfig:
    monkeypatch.setenv("SF_PASSWORD", "pw")
    monkeypatch.setenv("HUBSPOT_TOKEN", "pat-na1-links")
    path = tmp_path / "crm-perf-sync.yaml"
    path.write_text(CONFIG.replace("{exports}", str(tmp_path)), encoding="utf-8")
    return load_config(path, registry)


def test_each_connection_links_through_its_own_connector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ConnectorRegistry.discover()
    links = record_links(configured(tmp_path, monkeypatch, registry), registry)

    assert links("sfdc", "opportunities", "0065g00000AbCdEAAV") == (
        "https://acme.my.salesforce.com/lightning/r/Opportunity/0065g00000AbCdEAAV/view"
    )
    assert links("sfdc", "leads", "00Q5g00000XyZ12EAF") == (
        "https://acme.my.salesforce.com/lightning/r/Lead/00Q5g00000XyZ12EAF/view"
    )
    assert links("hubspot", "opportunities", "9876543210") == (
        "https://app.hubspot.com/contacts/4412345/record/0-3/9876543210"
    )
    assert links("hubspot", "leads", "151") == "https://app.hubspot.com/contacts/4412345/record/0-1/151"
    assert links("hubspot", "owners", "31337") is None
    assert links("exports", "opportunities", "D-1") is None
    assert links("gone", "opportunities", "0065g00000AbCdEAAV") is None


def test_a_connection_is_constructed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []

    class CountedHubSpot(HubSpotConnector):
        def __init__(self, *args: object, **kwargs: object) -> None:
            built.append(self.__class__.__name__)
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    discovered = ConnectorRegistry.discover()
    registry = ConnectorRegistry({**discovered.connectors, "hubspot": CountedHubSpot})
    links = record_links(configured(tmp_path, monkeypatch, registry), registry)

    urls = [links("hubspot", "opportunities", str(deal)) for deal in range(1, 4)]

    assert urls == [f"https://app.hubspot.com/contacts/4412345/record/0-3/{deal}" for deal in range(1, 4)]
    assert built == ["CountedHubSpot"]


def test_a_connector_that_raises_gives_no_link_and_leaves_the_others_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenLinks(CsvConnector):
        def record_url(self, entity: str, external_id: str) -> str | None:
            raise KeyError(f"{entity}/{external_id}")

    class BrokenConstructor(HubSpotConnector):
        def __init__(self, *_args: object, **_kwargs: object) -> None:
            raise RuntimeError("cannot start")

    discovered = ConnectorRegistry.discover()
    registry = ConnectorRegistry({**discovered.connectors, "csv": BrokenLinks, "hubspot": BrokenConstructor})
    links = record_links(configured(tmp_path, monkeypatch, registry), registry)
    caplog.set_level(logging.WARNING)

    assert links("exports", "opportunities", "D-1") is None
    assert links("exports", "opportunities", "D-2") is None
    assert links("hubspot", "opportunities", "9876543210") is None
    assert links("hubspot", "leads", "151") is None
    assert links("sfdc", "leads", "00Q5g00000XyZ12EAF") == (
        "https://acme.my.salesforce.com/lightning/r/Lead/00Q5g00000XyZ12EAF/view"
    )
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "connection exports",
        "connection hubspot",
    ]
    assert "no link for opportunities D-1 (nor for any other record it fails on): KeyError" in caplog.text
    assert "connection hubspot: no links to its CRM: RuntimeError: cannot start" in caplog.text


def test_a_connection_whose_kind_is_not_installed_gives_no_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ConnectorRegistry.discover()
    config = configured(tmp_path, monkeypatch, registry)
    installed = registry.connectors
    without_salesforce = ConnectorRegistry({k: v for k, v in installed.items() if k != "salesforce"})

    links = record_links(config, without_salesforce)

    assert links("sfdc", "opportunities", "0065g00000AbCdEAAV") is None
    assert links("hubspot", "leads", "151") == "https://app.hubspot.com/contacts/4412345/record/0-1/151"
