"""A third-party connector, installed as its own distribution, is discovered and syncs; a broken
one is skipped without taking the others down; the contract suite shipped with crm-perf-sync runs
in a connector's own tests, and fails for a connector that breaks the contract."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest
from sqlalchemy import create_engine, text

from crm_perf_sync.testing import ConnectorContract
from crm_perf_sync.testing.plugin import backends
from tests.conftest import built_once

PLUGIN = textwrap.dedent(
    '''
    """A connector written outside crm-perf-sync, against its public SDK only."""
    from collections.abc import Iterator, Mapping, Sequence
    from datetime import UTC, datetime
    from decimal import Decimal
    from typing import Any

    from crm_perf_sync.connector_sdk import (
        Checkpoint, Connector, ConnectorSettings, Message, OpportunityRecord, StreamSpec,
    )


    class PipedriveLiteSettings(ConnectorSettings):
        deals: int = 3


    class PipedriveLiteConnector(Connector[PipedriveLiteSettings]):
        settings_model = PipedriveLiteSettings
        description = "third-party test connector"

        def streams(self) -> Sequence[StreamSpec]:
            return [StreamSpec("deals", "opportunities", cursor_field="update_time")]

        def read(self, stream: StreamSpec, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:
            for n in range(self.settings.deals):
                yield OpportunityRecord(
                    external_id=f"pd-{n}", amount=Decimal(100 * (n + 1)), currency="EUR", stage="won",
                    is_closed=True, is_won=True, created_at=datetime(2025, 1, 1, tzinfo=UTC),
                )
            yield Checkpoint({"done": True})
    '''
)

PLUGIN_TESTS = textwrap.dedent(
    '''
    """pipedrive-lite's own tests: it keeps the crm-perf-sync connector contract."""
    from collections.abc import Iterator, Mapping
    from typing import Any

    import pytest

    from crm_perf_sync.testing import ConnectorContract
    from pipedrive_lite import PipedriveLiteConnector


    class TestPipedriveLiteContract(ConnectorContract):
        connector_class = PipedriveLiteConnector
        kind = "pipedrive-lite"
        expected_streams = ["deals"]

        @pytest.fixture(scope="class")
        @classmethod
        def contract_settings(cls) -> Iterator[Mapping[str, Any]]:
            yield {"deals": 5}
    '''
)

NONCONFORMING = textwrap.dedent(
    '''
    """A connector that breaks the contract twice: its settings ignore unknown keys, and a read
    resumed from a checkpoint returns every deal with another amount."""
    from collections.abc import Iterator, Mapping, Sequence
    from decimal import Decimal
    from typing import Any

    from pydantic import ConfigDict

    from crm_perf_sync.connector_sdk import (
        Checkpoint, Connector, ConnectorSettings, Message, OpportunityRecord, StreamSpec,
    )


    class SloppySettings(ConnectorSettings):
        model_config = ConfigDict(extra="ignore", frozen=True)

        deals: int = 2


    class SloppyConnector(Connector[SloppySettings]):
        settings_model = SloppySettings
        description = "third-party connector that breaks the contract"
        example_settings = {"deals": 2}

        def streams(self) -> Sequence[StreamSpec]:
            return [StreamSpec("deals", "opportunities", cursor_field="update_time")]

        def read(self, stream: StreamSpec, checkpoint: Mapping[str, Any] | None) -> Iterator[Message]:
            drift = 1 if checkpoint else 0
            for n in range(self.settings.deals):
                yield OpportunityRecord(
                    external_id=f"sl-{n}", amount=Decimal(100 + n + drift), currency="EUR", stage="open",
                )
            yield Checkpoint({"read": True})
    '''
)

NONCONFORMING_TESTS = textwrap.dedent(
    """
    from crm_perf_sync.testing import ConnectorContract
    from sloppy_crm import SloppyConnector


    class TestSloppyContract(ConnectorContract):
        connector_class = SloppyConnector
        kind = "sloppy"
    """
)


def build_wheel(directory: Path, name: str, version: str, files: dict[str, str], entry_points: str) -> Path:
    """A minimal, valid wheel (PEP 427) written by hand, so the test needs no build backend."""
    dist_info = f"{name}-{version}.dist-info"
    contents = dict(files)
    contents[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    contents[f"{dist_info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    contents[f"{dist_info}/entry_points.txt"] = entry_points
    record_lines = []
    for path, body in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(body.encode()).digest()).rstrip(b"=").decode()
        record_lines.append(f"{path},sha256={digest},{len(body.encode())}")
    record_lines.append(f"{dist_info}/RECORD,,")
    contents[f"{dist_info}/RECORD"] = "\n".join(record_lines) + "\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, body in contents.items():
            archive.writestr(path, body)
    return wheel


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three wheels installed into one directory, once per session (the xdist workers share
    it): the tests only put it on their processes' path."""
    return Path(built_once(tmp_path_factory, "plugin-site", install_plugins)["site"])


def install_plugins(tmp_path: Path) -> dict[str, str]:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    good = build_wheel(
        wheels,
        "pipedrive_lite",
        "1.0.0",
        {
            "pipedrive_lite/__init__.py": PLUGIN,
            "pipedrive_lite/tests/__init__.py": "",
            "pipedrive_lite/tests/test_contract.py": PLUGIN_TESTS,
        },
        "[crm_perf_sync.connectors]\npipedrive-lite = pipedrive_lite:PipedriveLiteConnector\n",
    )
    sloppy = build_wheel(
        wheels,
        "sloppy_crm",
        "0.2.0",
        {
            "sloppy_crm/__init__.py": NONCONFORMING,
            "sloppy_crm/tests/__init__.py": "",
            "sloppy_crm/tests/test_contract.py": NONCONFORMING_TESTS,
        },
        "[crm_perf_sync.connectors]\nsloppy = sloppy_crm:SloppyConnector\n",
    )
    broken = build_wheel(
        wheels,
        "broken_plugin",
        "0.1.0",
        {"broken_plugin/__init__.py": "raise ImportError('needs a library that is not installed')\n"},
        "[crm_perf_sync.connectors]\nbroken = broken_plugin:Connector\n",
    )
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            good,
            broken,
            sloppy,
        ],
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    return {"site": str(site)}


def cli(site: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from crm_perf_sync.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200", **env},
        timeout=120,
    )


def test_an_installed_plugin_is_discovered_and_syncs(plugin_site: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("connections:\n  - id: pd\n    kind: pipedrive-lite\n    settings: {deals: 4}\n")
    db = tmp_path / "store.db"
    env = {"CRM_PERF_SYNC_CONFIG": str(config), "CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{db}"}

    listing = cli(plugin_site, "connectors", "list", env=env)
    assert listing.returncode == 0, listing.stderr
    assert "pipedrive-lite" in listing.stdout
    assert "pipedrive_lite 1.0.0" in listing.stdout
    assert "demo" in listing.stdout  # the built-in ones are still there
    assert (
        "skipped broken (broken_plugin:Connector): import failed: ImportError: needs a library"
        in listing.stderr
    )

    synced = cli(plugin_site, "sync", "pd", env=env)
    assert synced.returncode == 0, synced.stderr
    assert "pd: succeeded" in synced.stdout
    assert "inserted 4" in synced.stdout
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT external_id, amount, currency FROM opportunity ORDER BY external_id")
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("pd-0", 100.0, "EUR"),
        ("pd-1", 200.0, "EUR"),
        ("pd-2", 300.0, "EUR"),
        ("pd-3", 400.0, "EUR"),
    ]


#: The tests every subclass of the shipped contract suite inherits.
CONTRACT_TESTS = {name for name in dir(ConnectorContract) if name.startswith("test_")}
SYNC_TEST = "test_a_second_sync_and_a_full_reread_change_nothing"


def run_contract(site: Path, package: str, tmp_path: Path) -> tuple[int, str, dict[str, tuple[str, str]]]:
    """Run the tests ``package`` ships, as its author's CI would: pytest in a fresh process with
    only the wheel's site dir added to the environment, warnings as errors and strict markers.

    Returns pytest's exit code, its output, and each test's outcome (``passed``, ``failure``,
    ``error`` or ``skipped``) and message from the JUnit report, by test name.
    """
    junit = tmp_path / f"{package}-junit.xml"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTEST_ADDOPTS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_PLUGINS"}
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(site / package / "tests"),
            "-W",
            "error",
            "--strict-markers",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / f'{package}-pytest'}",
            f"--junitxml={junit}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(site)},
        timeout=300,
    )
    outcomes: dict[str, tuple[str, str]] = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in {"failure", "error", "skipped"}:
                outcome, message = child.tag, child.get("message", "")
        outcomes[case.get("name", "")] = (outcome, message)
    return result.returncode, result.stdout + result.stderr, outcomes


def test_a_plugin_runs_the_shipped_contract_suite_in_its_own_tests(plugin_site: Path, tmp_path: Path) -> None:
    code, output, outcomes = run_contract(plugin_site, "pipedrive_lite", tmp_path)

    assert code == 0, output
    expected = (CONTRACT_TESTS - {SYNC_TEST}) | {f"{SYNC_TEST}[{backend}]" for backend in backends()}
    assert set(outcomes) == expected, output
    assert {name: outcome for name, (outcome, _) in outcomes.items()} == dict.fromkeys(expected, "passed")
    assert f"{len(expected)} passed" in output


def test_the_shipped_contract_suite_fails_a_connector_that_breaks_the_contract(
    plugin_site: Path, tmp_path: Path
) -> None:
    code, output, outcomes = run_contract(plugin_site, "sloppy_crm", tmp_path)

    assert code == 1, output  # pytest's "tests failed"
    sync_tests = {f"{SYNC_TEST}[{backend}]" for backend in backends()}
    assert set(outcomes) == (CONTRACT_TESTS - {SYNC_TEST}) | sync_tests, output
    failed = {name: message for name, (outcome, message) in outcomes.items() if outcome != "passed"}
    assert set(failed) == {
        "test_settings_model_forbids_unknown_keys",
        "test_settings_validate_and_a_misspelt_key_is_an_error",
        *sync_tests,
    }, output
    assert all(outcomes[name][0] == "failure" for name in failed)
    assert "unknown settings keys must be errors" in failed["test_settings_model_forbids_unknown_keys"]
    assert "DID NOT RAISE" in failed["test_settings_validate_and_a_misspelt_key_is_an_error"]
    for name in sync_tests:
        assert "a second sync of sloppy changed the store" in failed[name]
        assert "updated 2" in failed[name]
