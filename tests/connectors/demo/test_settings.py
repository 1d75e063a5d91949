"""Settings of the demo connector: defaults, and every invalid value refused with a reason."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from crm_perf_sync.connector_sdk import ConnectorSettings
from crm_perf_sync_demo import DemoConnector, DemoSettings


def test_defaults() -> None:
    settings = DemoSettings()
    assert isinstance(settings, ConnectorSettings)
    assert (settings.seed, settings.reps, settings.opportunities) == (42, 24, 5000)
    assert settings.lead_count == 15000
    assert settings.history_start == datetime(2024, 1, 1, tzinfo=UTC)
    assert settings.history_end == datetime(2026, 1, 1, tzinfo=UTC)
    assert settings.currency == "USD"
    assert settings.currencies == {"EUR": 0.1}
    assert settings.batch_size == 1000
    assert settings.increment == timedelta(minutes=5)
    assert settings.as_of is None


def test_values_from_config_are_parsed() -> None:
    settings = DemoSettings.model_validate(
        {
            "leads": 7,
            "start": "2025-02-01",
            "increment": "PT1H",
            "lookback": 0,
            "as_of": "2025-06-01T12:00:00+02:00",
        }
    )
    assert settings.lead_count == 7
    assert settings.start == date(2025, 2, 1)
    assert settings.increment == timedelta(hours=1)
    assert settings.lookback == timedelta(0)
    assert settings.as_of == datetime(2025, 6, 1, 10, tzinfo=UTC)
    assert settings.as_of.tzinfo is UTC


def test_durations_are_written_as_in_the_rest_of_the_configuration() -> None:
    settings = DemoSettings.model_validate({"increment": "5m", "lookback": "2h"})
    assert (settings.increment, settings.lookback) == (timedelta(minutes=5), timedelta(hours=2))
    with pytest.raises(ValidationError, match="expected a duration like 30s, 15m, 1h or 1d, got '5 minutes'"):
        DemoSettings.model_validate({"increment": "5 minutes"})


def test_example_settings_are_valid() -> None:
    assert DemoConnector.example_settings is not None
    settings = DemoSettings.model_validate(DemoConnector.example_settings)
    assert settings.as_of == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"sede": 1}, "Extra inputs are not permitted"),
        ({"reps": 1}, "greater than or equal to 2"),
        ({"opportunities": -1}, "greater than or equal to 0"),
        ({"currency": "usd"}, "ISO 4217"),
        ({"currencies": {"eur": 0.1}}, "ISO 4217"),
        ({"currencies": {"EUR": 1.5}}, "between 0 and 1"),
        ({"currencies": {"EUR": 0.6, "GBP": 0.4}}, "leave some deals"),
        ({"currencies": {"USD": 0.1}}, "already the main currency"),
        ({"increment": 0.5}, "whole number of seconds"),
        ({"lookback": -5}, "must not be negative"),
        ({"as_of": "2025-06-01T12:00:00"}, "must carry a timezone"),
        ({"batch_size": 0}, "greater than or equal to 1"),
    ],
)
def test_invalid_settings_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DemoSettings.model_validate(values)


def test_settings_are_frozen() -> None:
    settings = DemoSettings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.seed = 7  # type: ignore[misc]
