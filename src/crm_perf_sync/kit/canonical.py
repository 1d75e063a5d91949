"""Rows as canonical JSON: the content hash that tells a changed row from an unchanged one
(CRM records and configured teams alike), and a payload reduced to plain JSON types."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson


def json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


HASH_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def content_hash(row: Mapping[str, Any]) -> str:
    payload = orjson.dumps(row, default=json_default, option=HASH_OPTIONS)
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def digest(value: object) -> str:
    """A short fingerprint of a JSON-like value that is the same whatever the order of its keys:
    the definition and context hashes that tell when stored results are out of date."""
    return hashlib.blake2b(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()


def json_safe(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A raw payload as plain JSON types (Decimals and datetimes rendered as strings)."""
    if value is None:
        return None
    return orjson.loads(orjson.dumps(value, default=json_default, option=orjson.OPT_NON_STR_KEYS))  # type: ignore[no-any-return]
