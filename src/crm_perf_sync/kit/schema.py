"""The base of every configuration model: the core's sections and the connectors' settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A model of configuration: an unknown key is an error, and a validated value never changes.

    Rejecting unknown keys means a typo (``pagesize:``) is reported with its line instead of
    silently leaving the default in force; freezing means a value checked once stays checked.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
