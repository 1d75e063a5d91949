"""The shipped contract suite (crm_perf_sync.testing) over every discovered connector.

A connector that declares ``example_settings`` runs here, in a test class made for it. One that
talks to a CRM runs in its own test directory, where a ``contract_settings`` fixture starts an
emulator of the CRM (``CONTRACT_MODULES``); any other connector installed in this environment is
checked structurally, its reads and syncs skipped.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.testing import ConnectorContract

REGISTRY = ConnectorRegistry.discover()
KINDS = REGISTRY.kinds()
#: The connectors that run the contract against an emulator, and the test module where they do.
CONTRACT_MODULES = {
    "hubspot": "tests.connectors.hubspot.test_contract",
    "salesforce": "tests.connectors.salesforce.test_contract",
    "rest": "tests.connectors.rest.test_contract",  # one class per shipped spec, and an invented CRM
}


def test_discovery_found_the_built_in_connectors_and_nothing_broken() -> None:
    assert {"demo", "csv", "salesforce", "hubspot", "rest"} <= set(KINDS)
    assert REGISTRY.broken == []


@pytest.mark.parametrize("kind", sorted(CONTRACT_MODULES))
def test_the_emulated_connectors_run_the_contract_in_their_own_module(kind: str) -> None:
    module = importlib.import_module(CONTRACT_MODULES[kind])
    classes = [
        value
        for name, value in vars(module).items()
        if name.startswith("Test") and isinstance(value, type) and issubclass(value, ConnectorContract)
    ]
    assert classes, f"{CONTRACT_MODULES[kind]} runs no contract class"
    assert {(cls.kind, cls.connector_class) for cls in classes} == {(kind, REGISTRY.connectors[kind])}
    # Without example_settings, the contract runs on the module's own settings fixture.
    assert REGISTRY.connectors[kind].example_settings is None
    assert all("contract_settings" in vars(cls) for cls in classes)


class _StructureOnly(ConnectorContract):
    """A connector with neither example settings nor an emulator here: only its structure is checked."""

    @pytest.fixture(scope="class")
    @classmethod
    def contract_settings(cls) -> Iterator[Mapping[str, Any]]:
        pytest.skip(f"{cls.kind} declares no example_settings and has no emulator: only checked structurally")


def _class_name(kind: str) -> str:
    return "Test" + "".join(part.capitalize() for part in re.split(r"[^0-9A-Za-z]+", kind)) + "Contract"


for _kind in KINDS:
    if _kind in CONTRACT_MODULES:
        continue
    _connector = REGISTRY.connectors[_kind]
    _base = ConnectorContract if _connector.example_settings is not None else _StructureOnly
    globals()[_class_name(_kind)] = type(
        _class_name(_kind), (_base,), {"connector_class": _connector, "kind": _kind, "__module__": __name__}
    )
