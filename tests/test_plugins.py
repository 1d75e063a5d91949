"""A third-party connector, installed as its own distribution, is discovered and syncs; a broken
one is skipped without taking the others down."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

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


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    good = build_wheel(
        wheels,
        "pipedrive_lite",
        "1.0.0",
        {"pipedrive_lite/__init__.py": PLUGIN},
        "[crm_perf_sync.connectors]\npipedrive-lite = pipedrive_lite:PipedriveLiteConnector\n",
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
        ],
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    return site


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
