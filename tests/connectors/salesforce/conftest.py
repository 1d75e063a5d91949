"""Fixtures of the Salesforce connector tests: one trusted test CA per session, one org per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.connectors.salesforce.emulator import Org, SalesforceEmulator, Tls, make_tls


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("salesforce-tls"))


@pytest.fixture
def emulator(tls: Tls) -> Iterator[SalesforceEmulator]:
    with SalesforceEmulator(tls) as running:
        yield running


@pytest.fixture
def org(emulator: SalesforceEmulator) -> Org:
    return emulator.org
