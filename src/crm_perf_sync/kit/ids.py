"""Identifiers people write in the configuration and the API (connection and team ids)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

#: A lower-case id, safe in URLs, scope ids (``<connection>:<owner>``) and log lines.
Slug = Annotated[
    str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="lower-case id: a-z, 0-9, - and _")
]
