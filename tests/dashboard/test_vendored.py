"""The vendored browser assets are the files `make vendor` recorded, at the pinned versions.

A file edited by hand, a pin changed without `make vendor`, or a record written for other bytes
fails here; so does a wheel that leaves the dashboard's assets behind or ships the test-only ones.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "vendor.py"
# Licence texts: the first words of the file each package ships.
LICENCE_TEXT = {"Apache-2.0": "Apache License", "MPL-2.0": "Mozilla Public License"}
# Where each package's bundle says its own version.
VERSION_MARK = {"echarts": 'version="{version}"', "axe-core": "axe v{version}"}


def vendor_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vendor_script", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


ASSETS: tuple[Any, ...] = vendor_script().ASSETS


def record_of(asset: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((REPO_ROOT / asset.destination / "vendor.json").read_text())
    return loaded


def test_echarts_ships_in_the_package_and_axe_core_stays_in_the_tests() -> None:
    destinations = {asset.name: asset.destination for asset in ASSETS}
    assert destinations == {
        "echarts": "src/crm_perf_sync/api/dashboard/static/vendor/echarts",
        "axe-core": "tests/dashboard/vendor/axe-core",
    }


@pytest.mark.parametrize("asset", ASSETS, ids=lambda asset: asset.name)
def test_every_vendored_file_has_the_recorded_sha256(asset: Any) -> None:
    folder = REPO_ROOT / asset.destination
    record = record_of(asset)
    assert set(record["files"]) == set(asset.files.values())
    for name, entry in record["files"].items():
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert digest == entry["sha256"], f"{folder / name} is not the file `make vendor` recorded"
    # Nothing else lies in the folder unrecorded.
    assert {path.name for path in folder.iterdir()} == {*record["files"], "vendor.json", "README.md"}


@pytest.mark.parametrize("asset", ASSETS, ids=lambda asset: asset.name)
def test_the_record_is_the_pinned_package_with_its_licence(asset: Any) -> None:
    folder = REPO_ROOT / asset.destination
    record = record_of(asset)
    pinned = (asset.name, asset.version, asset.licence)
    assert (record["name"], record["version"], record["licence"]) == pinned
    assert record["tarball"].endswith(f"/{asset.name}-{asset.version}.tgz")
    assert record["integrity"].startswith("sha512-")
    assert len(record["integrity"]) == len("sha512-") + 88  # 64 bytes, base64
    assert LICENCE_TEXT[asset.licence] in (folder / "LICENSE").read_text()
    (bundle,) = (name for name in asset.files.values() if name.endswith(".min.js"))
    assert VERSION_MARK[asset.name].format(version=asset.version) in (folder / bundle).read_text()
    readme = (folder / "README.md").read_text()
    assert f"`{asset.name}` {asset.version}" in readme
    assert record["integrity"] in readme


def test_the_wheel_carries_the_dashboards_assets_and_not_the_test_ones(tmp_path: Path) -> None:
    """The image installs the project as a wheel: the dashboard's scripts must be inside it."""
    from hatchling.builders.wheel import WheelBuilder

    shipped, test_only = ASSETS
    (wheel,) = WheelBuilder(str(REPO_ROOT)).build(directory=str(tmp_path), versions=["standard"])
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name in [*shipped.files.values(), "vendor.json", "README.md"]:
            inside = f"crm_perf_sync/api/dashboard/static/vendor/echarts/{name}"
            assert inside in names, inside
            assert archive.read(inside) == (REPO_ROOT / shipped.destination / name).read_bytes()
    assert test_only.name == "axe-core"
    assert not [name for name in names if "axe" in name]
