"""Helpers for the csv connector tests: the example configs, the datasets, reading whole streams."""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from crm_perf_sync.connector_sdk import Checkpoint, ConnectorContext, Message, StreamSpec
from crm_perf_sync_csv.connector import CsvConnector
from crm_perf_sync_csv.settings import CsvSettings

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA_DIR = Path(os.environ.get("CRM_DATA_DIR", REPO_ROOT.parent / "shared" / "data")).resolve()
EXAMPLES = REPO_ROOT / "config" / "examples"

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")

T = TypeVar("T")


def example_settings(name: str) -> CsvSettings:
    """The settings of the one connection in ``config/examples/<name>.yaml``, as the loader builds them."""
    text = (EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8")
    text = _VAR.sub(lambda m: os.environ.get(m["name"]) or (m["default"] or ""), text)
    config = yaml.safe_load(text)
    return CsvSettings.model_validate(config["connections"][0]["settings"])


def connector(settings: CsvSettings | Mapping[str, Any], base_dir: Path = REPO_ROOT) -> CsvConnector:
    """A connector as the service builds one, run from ``base_dir`` (the project root by default)."""
    if not isinstance(settings, CsvSettings):
        settings = CsvSettings.model_validate(settings)
    context = ConnectorContext(connection_id="test", base_dir=base_dir, logger=logging.getLogger("csv-test"))
    return CsvConnector(settings, context)


def spec(conn: CsvConnector, name: str) -> StreamSpec:
    """The connector's stream called ``name``."""
    (found,) = [s for s in conn.streams() if s.name == name]
    return found


def read(conn: CsvConnector, name: str, checkpoint: Mapping[str, Any] | None = None) -> list[Message]:
    """Every message of one read of the stream."""
    return list(conn.read(spec(conn, name), checkpoint))


def of_type(messages: list[Message], kind: type[T]) -> list[T]:
    """The messages of one type, in order."""
    return [m for m in messages if isinstance(m, kind)]


def by_id(messages: list[Message], kind: type[T]) -> dict[str, T]:
    """Records of one type by external id; fails on a repeated id (a key that is not unique)."""
    out: dict[str, T] = {}
    for record in of_type(messages, kind):
        key = record.external_id  # type: ignore[attr-defined]
        assert key not in out, f"external id {key!r} yielded twice"
        out[key] = record
    return out


def last_checkpoint(messages: list[Message]) -> Checkpoint:
    """The final checkpoint of a read, which must be its last message."""
    assert isinstance(messages[-1], Checkpoint), messages[-1]
    return messages[-1]


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The file parsed independently of the connector, with the standard library only."""
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def iter_csv(path: Path) -> Iterator[dict[str, str]]:
    """Like :func:`csv_rows`, streamed."""
    with path.open(newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)


def dataset(name: str) -> Path:
    """A dataset folder of ../shared/data (or $CRM_DATA_DIR), which the tests need to be present."""
    path = DATA_DIR / name
    assert path.is_dir(), f"dataset {name} not found at {path}; set CRM_DATA_DIR to the shared data folder"
    return path
