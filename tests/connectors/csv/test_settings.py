"""Settings validation: every mistake is a pydantic error located at the key that is wrong."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from crm_perf_sync_csv.connector import CsvConnector
from crm_perf_sync_csv.settings import CsvSettings, TextField
from tests.connectors.csv.support import example_settings


def base(**opportunities: Any) -> dict[str, Any]:
    stream: dict[str, Any] = {"file": "deals.csv", "fields": {"external_id": "id"}}
    stream.update(opportunities)
    return {"data_dir": "data", "streams": {"opportunities": stream}}


def errors(settings: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as raised:
        CsvSettings.model_validate(settings)
    return [(tuple(e["loc"]), e["msg"]) for e in raised.value.errors(include_url=False)]


def test_the_example_configs_and_the_built_in_example_are_valid() -> None:
    for name in ("maven", "zoho", "x_education"):
        assert example_settings(name).batch_size == 5000
    assert CsvConnector.example_settings is not None
    CsvSettings.model_validate(CsvConnector.example_settings)


def test_a_bare_string_is_a_column() -> None:
    settings = CsvSettings.model_validate(base(fields={"external_id": "Deal Id"}))
    assert settings.streams.opportunities is not None
    assert settings.streams.opportunities.fields.external_id == TextField(column="Deal Id")


def test_unknown_canonical_field_is_reported_at_its_key() -> None:
    assert errors(base(fields={"external_id": "id", "amout": "Amount"})) == [
        (("streams", "opportunities", "fields", "amout"), "Extra inputs are not permitted")
    ]


def test_option_of_another_type_is_reported_at_its_key() -> None:
    assert errors(base(fields={"external_id": "id", "created_at": {"column": "c", "scale": "percent"}})) == [
        (("streams", "opportunities", "fields", "created_at", "scale"), "Extra inputs are not permitted")
    ]


def test_unknown_stream_and_unknown_setting() -> None:
    assert errors({"data_dir": "d", "streams": {"deals": {"file": "x.csv"}}, "batchsize": 10}) == [
        (("streams", "deals"), "Extra inputs are not permitted"),
        (("batchsize",), "Extra inputs are not permitted"),
    ]


def test_a_field_needs_exactly_one_source() -> None:
    assert errors(base(fields={"external_id": {"column": "id", "value": "x"}})) == [
        (
            ("streams", "opportunities", "fields", "external_id"),
            "Value error, give exactly one of column, template or value (got column, value)",
        )
    ]


def test_an_id_is_required_once() -> None:
    assert errors(base(fields={"name": "n"})) == [
        (
            ("streams", "opportunities"),
            "Value error, the records need an id: give fields.external_id, or key: [columns forming it]",
        )
    ]
    assert errors(base(key=["a"])) == [
        (
            ("streams", "opportunities"),
            "Value error, give either key (columns forming the id) or fields.external_id, not both",
        )
    ]


def test_a_field_naming_an_undefined_join() -> None:
    assert errors(
        base(fields={"external_id": "id", "owner_external_id": {"join": "users", "column": "ID"}})
    ) == [
        (
            ("streams", "opportunities"),
            "Value error, fields.owner_external_id.join: no join named 'users' (joins: none)",
        )
    ]


def test_unquoted_yaml_booleans_are_refused_with_the_fix() -> None:
    assert errors(base(fields={"external_id": "id", "is_won": {"column": "w", "map": {True: "true"}}})) == [
        (
            ("streams", "opportunities", "fields", "is_won", "map"),
            "Value error, map key True is a YAML boolean; quote it ('Yes', 'No', 'true', ...)",
        )
    ]


def test_values_checked_where_they_are_written() -> None:
    found = errors(
        {
            "data_dir": "d",
            "timezone": "Mars/Olympus",
            "encoding": "klingon",
            "delimiter": ";;",
            "streams": {
                "leads": {
                    "file": "l.csv",
                    "fields": {
                        "external_id": {"template": "lead-{id"},
                        "created_at": {"column": "c", "format": "YYYY-MM-DD"},
                    },
                    "custom": {"origin": {"column": "o", "format": "%Y"}},
                }
            },
        }
    )
    assert found == [
        (("timezone",), "Value error, unknown IANA timezone 'Mars/Olympus' (e.g. UTC, Europe/Berlin)"),
        (("encoding",), "Value error, unknown encoding 'klingon' (e.g. utf-8, utf-8-sig, cp1252, latin-1)"),
        (("delimiter",), "Value error, a delimiter is one character, got ';;'"),
        (
            ("streams", "leads", "fields", "external_id"),
            "Value error, unmatched '{' in template 'lead-{id' (write {{ for a brace)",
        ),
        (
            ("streams", "leads", "fields", "created_at", "format"),
            "Value error, 'YYYY-MM-DD' is not a strptime format (e.g. '%d %b, %Y %H:%M:%S')",
        ),
        (
            ("streams", "leads", "custom", "origin"),
            "Value error, format applies to type date or datetime, not string",
        ),
    ]


def test_stage_table_mistakes() -> None:
    table = [{"stage": "Won", "is_won": True, "is_closed": False}, {"stage": "Open", "probability": 1.5}]
    found = errors(base(fields={"external_id": "id", "stage": "s"}, stages={"table": table}))
    assert found == [
        (
            ("streams", "opportunities", "stages", "table", 0),
            "Value error, a won stage is closed: drop is_closed: false",
        ),
        (
            ("streams", "opportunities", "stages", "table", 1, "probability"),
            "Input should be less than or equal to 1",
        ),
    ]
    assert errors(
        base(fields={"external_id": "id", "stage": "s"}, stages={"table": [{"stage": "A"}, {"stage": "A"}]})
    ) == [(("streams", "opportunities", "stages"), "Value error, stage 'A' is listed twice (also under 'A')")]
    assert errors(base(stages={"table": [{"stage": "A"}]})) == [
        (
            ("streams", "opportunities"),
            "Value error, stages classifies deals by fields.stage, which is not mapped",
        )
    ]


def test_probability_constant_respects_its_scale() -> None:
    assert errors(base(fields={"external_id": "id", "probability": {"value": 50}})) == [
        (
            ("streams", "opportunities", "fields", "probability"),
            "Value error, value must be within 0-1 (fraction)",
        )
    ]
    settings = CsvSettings.model_validate(
        base(fields={"external_id": "id", "probability": {"value": 50, "scale": "percent"}})
    )
    assert settings.streams.opportunities is not None


def test_teams_need_fields_or_levels() -> None:
    assert errors({"data_dir": "d", "streams": {"teams": {"file": "t.csv"}}}) == [
        (
            ("streams", "teams"),
            "Value error, give either fields (one team per row) or levels (a hierarchy per row)",
        )
    ]


def test_the_id_rule_is_checked_at_its_keys() -> None:
    assert errors(base(id_rule={"pattern": "[A-Z", "max_length": 300})) == [
        (
            ("streams", "opportunities", "id_rule", "pattern"),
            "Value error, '[A-Z' is not a regular expression: unterminated character set at position 0",
        ),
        (
            ("streams", "opportunities", "id_rule", "max_length"),
            "Input should be less than or equal to 255",
        ),
    ]
    settings = CsvSettings.model_validate(base())
    assert settings.streams.opportunities is not None
    rule = settings.streams.opportunities.id_rule
    assert (rule.pattern, rule.max_length) == (None, 255)
    assert [rule.problem(value) for value in ("006A0000001", "a\nb", "x" * 256)] == [
        None,
        "it holds a control character",
        "256 characters, more than the 255 the mapping allows",
    ]
