"""``StrictModel``: the base of every configuration model, the core's and the connectors'."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from crm_perf_sync.connector_sdk import ConnectorSettings, StrictModel


class Page(StrictModel):
    size: int = 100


def test_an_unknown_key_is_refused_by_name() -> None:
    with pytest.raises(ValidationError) as raised:
        Page.model_validate({"sise": 5})
    assert [(e["loc"], e["type"]) for e in raised.value.errors()] == [(("sise",), "extra_forbidden")]


def test_a_validated_model_cannot_be_changed() -> None:
    page = Page(size=5)
    with pytest.raises(ValidationError, match="frozen"):
        page.size = 7  # type: ignore[misc]
    assert page.size == 5


def test_connector_settings_are_strict_models() -> None:
    assert issubclass(ConnectorSettings, StrictModel)
