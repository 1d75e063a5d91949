"""Refresh the vendored browser assets from the npm registry: ``make vendor``.

The dashboard loads its JavaScript from the package, never from a CDN (it must work on a network
with no way out), and the browser tests inject axe-core from the test tree. Both come from npm
tarballs fetched with ``npm pack`` into a temporary directory: no ``node_modules`` in the
repository, nothing run from the packages. The versions are pinned here and only here; to upgrade,
change a version and run ``make vendor``.

Each destination folder gets the files listed below, unmodified, plus ``vendor.json`` (what was
copied: package, version, licence, the tarball's integrity, the sha256 of every file) and a
``README.md`` saying the same for a reader. ``tests/dashboard/test_vendored.py`` recomputes the
hashes against ``vendor.json`` and checks the record against the pins below. The output depends
only on the tarballs, so ``make vendor && git diff --exit-code`` proves the tree is what npm serves.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RECORD = "vendor.json"
README = "README.md"


@dataclass(frozen=True)
class Asset:
    """One npm package and the files of it that are kept."""

    name: str
    version: str
    licence: str  # the SPDX identifier the package must declare; a change of licence stops the refresh
    destination: str  # relative to the repository root
    files: dict[str, str]  # path inside the package -> name in the destination
    purpose: str


ASSETS = (
    Asset(
        name="echarts",
        version="6.1.0",
        licence="Apache-2.0",
        destination="src/crm_perf_sync/api/dashboard/static/vendor/echarts",
        files={
            "dist/echarts.min.js": "echarts.min.js",
            "LICENSE": "LICENSE",
            # Apache-2.0 section 4(d): the NOTICE travels with the work; LICENSE refers to LICENSE-d3.
            "NOTICE": "NOTICE",
            "licenses/LICENSE-d3": "LICENSE-d3",
        },
        purpose="The dashboard's charts (Apache ECharts), served from the package.",
    ),
    Asset(
        name="axe-core",
        version="4.14.1",
        licence="MPL-2.0",
        destination="tests/dashboard/vendor/axe-core",
        files={
            "axe.min.js": "axe.min.js",
            "LICENSE": "LICENSE",
            "LICENSE-3RD-PARTY.txt": "LICENSE-3RD-PARTY.txt",
        },
        purpose="Accessibility checks injected into pages by the browser tests; never shipped.",
    ),
)


class VendorError(Exception):
    pass


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def npm_json(*args: str, cwd: Path) -> object:
    done = subprocess.run(["npm", *args, "--json"], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise VendorError(f"npm {' '.join(args)} failed ({done.returncode}):\n{done.stderr.strip()}")
    return json.loads(done.stdout)


def fetch(asset: Asset, workdir: Path) -> tuple[dict[str, object], dict[str, bytes]]:
    """The package's tarball from the registry: (its provenance, the kept files' bytes)."""
    spec = f"{asset.name}@{asset.version}"
    dist = npm_json("view", spec, "dist", cwd=workdir)
    packs = npm_json("pack", spec, "--pack-destination", str(workdir), cwd=workdir)
    if not isinstance(dist, dict) or not isinstance(packs, list) or len(packs) != 1:
        raise VendorError(f"{spec}: unexpected answer from npm: {dist!r}, {packs!r}")
    packed = packs[0]
    tarball = (workdir / packed["filename"]).read_bytes()
    # npm checks the tarball against the registry's integrity; checking again here costs nothing
    # and does not depend on npm's cache being sound.
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if not (integrity == packed["integrity"] == dist["integrity"]):
        raise VendorError(f"{spec}: the tarball's {integrity} is not the registry's {dist['integrity']}")
    kept: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        manifest = json.loads(_member(archive, "package.json", spec))
        if manifest.get("license") != asset.licence:
            declared = manifest.get("license")
            raise VendorError(f"{spec} declares licence {declared!r}, expected {asset.licence!r}")
        if manifest.get("version") != asset.version:
            raise VendorError(f"{spec}: package.json says version {manifest.get('version')!r}")
        for inside, name in asset.files.items():
            kept[name] = _member(archive, inside, spec)
    provenance: dict[str, object] = {
        "name": asset.name,
        "version": asset.version,
        "licence": asset.licence,
        "tarball": dist["tarball"],
        "integrity": integrity,
        "shasum": packed["shasum"],
    }
    return provenance, kept


def _member(archive: tarfile.TarFile, inside: str, spec: str) -> bytes:
    try:
        member = archive.extractfile(f"package/{inside}")
    except KeyError:
        member = None
    if member is None:
        raise VendorError(f"{spec} has no file {inside}")
    return member.read()


def readme(asset: Asset, record: dict[str, object]) -> str:
    files = record["files"]
    assert isinstance(files, dict)
    rows = "\n".join(
        f"| `{name}` | `{entry['from']}` | `{entry['sha256']}` |" for name, entry in sorted(files.items())
    )
    return f"""# {asset.name} {asset.version}, vendored

{asset.purpose}

- Package: `{asset.name}` {asset.version} from the npm registry (`npm pack {asset.name}@{asset.version}`).
- Tarball: <{record["tarball"]}>
  (integrity `{record["integrity"]}`, sha1 `{record["shasum"]}`).
- Licence: {asset.licence} (the licence files below, as the package ships them).

| file | in the package | sha256 |
|---|---|---|
{rows}

The files are unmodified. This folder is written by `make vendor` (`scripts/vendor.py`, where the
version is pinned); `{RECORD}` is the same record for the tests. Do not edit by hand.
"""


def install(asset: Asset, provenance: dict[str, object], kept: dict[str, bytes]) -> None:
    destination = REPO_ROOT / asset.destination
    destination.mkdir(parents=True, exist_ok=True)
    for stale in destination.iterdir():
        if stale.is_file() and stale.name not in kept:
            stale.unlink()
    for name, data in kept.items():
        (destination / name).write_bytes(data)
    record = {
        **provenance,
        "files": {
            name: {"from": inside, "sha256": sha256_hex(kept[name])} for inside, name in asset.files.items()
        },
    }
    (destination / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    (destination / README).write_text(readme(asset, record))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="crm-perf-sync-vendor-") as tmp:
        for asset in ASSETS:
            workdir = Path(tmp) / asset.name
            workdir.mkdir()
            try:
                provenance, kept = fetch(asset, workdir)
            except VendorError as error:
                print(f"vendor: {error}", file=sys.stderr)
                return 1
            install(asset, provenance, kept)
            print(f"vendor: {asset.name} {asset.version} ({provenance['integrity']}) -> {asset.destination}")
            for name, data in sorted(kept.items()):
                print(f"vendor:   {name}  {len(data)} bytes  sha256 {sha256_hex(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
