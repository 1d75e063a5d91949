"""Configuration: interpolation, validation, and errors that name the file, the line and the key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

import pytest
from pydantic import field_validator, model_validator

from crm_perf_sync.config import ConfigIssues, load_config
from crm_perf_sync.connector_sdk import ConnectorSettings
from crm_perf_sync.kit.yaml_source import interpolate
from crm_perf_sync.plugins import ConnectorRegistry
from tests.sync.scripted import ScriptedConnector


class StrictSettings(ConnectorSettings):
    api_token: str
    page_size: int = 100


class StrictConnector(ScriptedConnector):
    settings_model = StrictSettings  # type: ignore[assignment]


class SiteSettings(ConnectorSettings):
    """Validators that echo the value they refuse, as connectors' often do."""

    login_url: str
    page_size: int = 100

    @field_validator("login_url")
    @classmethod
    def _site_only(cls, value: str) -> str:
        if urlsplit(value).path not in ("", "/"):
            raise ValueError(f"must be the site only, got {value!r}")
        return value

    @model_validator(mode="after")
    def _pages_fit(self) -> Self:
        if self.page_size > 1000:
            raise ValueError(f"page_size {self.page_size} is too large for {self.login_url!r}")
        return self


class SiteConnector(ScriptedConnector):
    settings_model = SiteSettings  # type: ignore[assignment]


@pytest.fixture
def registry() -> ConnectorRegistry:
    return ConnectorRegistry(connectors={"scripted": ScriptedConnector, "strict": StrictConnector})


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "crm-perf-sync.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def issues_of(path: Path, registry: ConnectorRegistry, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigIssues) as caught:
        load_config(path, registry, env or {})
    return [issue.render() for issue in caught.value.issues]


def test_interpolation_uses_the_environment_and_defaults() -> None:
    env = {"TOKEN": "s3cr:t#1", "EMPTY": ""}
    assert interpolate("${TOKEN}", env) == "s3cr:t#1"
    assert interpolate("a-${MISSING:-fallback}-b", env) == "a-fallback-b"
    assert interpolate("${EMPTY:-used when empty}", env) == "used when empty"
    assert interpolate("${EMPTY}", env) == ""
    with pytest.raises(KeyError):
        interpolate("${MISSING}", env)


def test_a_valid_file_loads_with_typed_values(tmp_path: Path, registry: ConnectorRegistry) -> None:
    path = write(
        tmp_path,
        """
business:
  timezone: Europe/Berlin
  fiscal_year_start_month: 4
connections:
  - id: sfdc
    kind: strict
    schedule: {interval: 15m, jitter: 30s}
    settings:
      api_token: ${SF_TOKEN}
      page_size: ${PAGE_SIZE:-250}
  - id: nightly
    kind: scripted
    enabled: false
    schedule: {cron: "0 2 * * *"}
teams:
  - id: emea
    name: EMEA
    level: region
    teams:
      - id: dach
        name: DACH
        members: [ana@example.com, {connection: sfdc, external_id: "0051"}, Bo Li]
""",
    )
    loaded = load_config(path, registry, {"SF_TOKEN": "tok: with # chars"})
    sfdc = loaded.app.connection("sfdc")
    assert sfdc is not None
    assert sfdc.schedule is not None
    assert sfdc.schedule.interval == timedelta(minutes=15)
    assert sfdc.schedule.jitter == timedelta(seconds=30)
    settings = loaded.connector_settings["sfdc"]
    assert isinstance(settings, StrictSettings)
    assert settings.api_token == "tok: with # chars"
    assert settings.page_size == 250  # a plain scalar is typed after interpolation
    assert loaded.app.business.fiscal_year_start_month == 4
    teams = [(team.id, parent.id if parent else None) for team, parent in loaded.app.all_teams()]
    assert teams == [("emea", None), ("dach", "emea")]
    members = loaded.app.teams[0].teams[0].members
    assert (members[0].email, members[1].external_id, members[2].name) == ("ana@example.com", "0051", "Bo Li")


def test_every_problem_is_reported_at_once_with_line_and_key(
    tmp_path: Path, registry: ConnectorRegistry
) -> None:
    path = write(
        tmp_path,
        """business:
  timezone: Mars/Olympus
connections:
  - id: sfdc
    kind: strict
    schedule: {interval: 2 weeks}
    settings:
      page_size: many
      colour: blue
  - id: sfdc
    kind: zoho
  - id: Bad Id
    kind: scripted
    schedule: {cron: "61 * * * *"}
teams:
  - id: emea
    name: EMEA
    members: [{connection: nowhere, external_id: "1"}]
  - id: emea
    name: Again
unknown_section: 1
""",
    )
    issues = issues_of(path, registry)
    text = "\n".join(issues)
    expected = [
        f"{path}:2: business.timezone: unknown IANA timezone 'Mars/Olympus'",
        f"{path}:6: connections[0].schedule.interval: expected a duration like 30s, 15m, 1h or 1d, "
        "got '2 weeks'",
        f"{path}:7: connections[0].settings.api_token: required key is missing",
        f"{path}:8: connections[0].settings.page_size: Input should be a valid integer",
        f"{path}:9: connections[0].settings.colour: unknown key",
        f"{path}:10: connections[1].id: duplicate connection id 'sfdc'",
        f"{path}:11: connections[1].kind: unknown connector kind 'zoho' (available: scripted, strict)",
        f"{path}:12: connections[2].id: String should match pattern",
        f"{path}:14: connections[2].schedule.cron: invalid cron expression '61 * * * *'",
        f"{path}:21: unknown_section: unknown key",
    ]
    for line in expected:
        assert line in text, f"missing {line!r} in:\n{text}"


def test_a_duration_too_long_for_any_clock_is_an_issue_not_a_crash(
    tmp_path: Path, registry: ConnectorRegistry
) -> None:
    path = write(
        tmp_path,
        """connections:
  - id: crm
    kind: scripted
    schedule: {interval: .inf, jitter: 99999999999999d}
""",
    )
    assert issues_of(path, registry) == [
        f"{path}:4: connections[0].schedule.interval: inf is longer than any duration can be",
        f"{path}:4: connections[0].schedule.jitter: '99999999999999d' is longer than any duration can be",
    ]


def test_team_issues_are_reported_when_the_rest_is_valid(tmp_path: Path, registry: ConnectorRegistry) -> None:
    path = write(
        tmp_path,
        """connections:
  - {id: crm, kind: scripted}
teams:
  - id: emea
    name: EMEA
    members:
      - {connection: nowhere, external_id: "1"}
  - id: emea
    name: Again
""",
    )
    issues = issues_of(path, registry)
    assert f"{path}:7: teams[0].members[0].connection: unknown connection 'nowhere'" in issues
    assert f"{path}:8: teams[1].id: duplicate team id 'emea'" in issues


def test_an_unset_variable_and_a_syntax_error_name_their_line(
    tmp_path: Path, registry: ConnectorRegistry
) -> None:
    path = write(
        tmp_path, "connections:\n  - id: crm\n    kind: strict\n    settings:\n      api_token: ${SF_TOKEN}\n"
    )
    assert issues_of(path, registry) == [
        f"{path}:5: connections[0].settings.api_token: environment variable SF_TOKEN is not set"
    ]
    broken = write(tmp_path, "connections:\n  - id: crm\n   kind: [unclosed\n")
    (issue,) = issues_of(broken, registry)
    assert issue.startswith(f"{broken}:3: invalid YAML")


def test_a_value_from_the_environment_is_never_echoed_in_an_issue(tmp_path: Path) -> None:
    registry = ConnectorRegistry(connectors={"site": SiteConnector})
    path = write(
        tmp_path,
        """
connections:
  - id: whole
    kind: site
    settings: {login_url: "${LOGIN_URL}"}
  - id: part
    kind: site
    settings: {login_url: "https://${LOGIN_HOST}/Hunter2-path"}
  - id: literal
    kind: site
    settings: {login_url: "https://literal.example/written-here"}
  - id: model
    kind: site
    settings: {login_url: "${SITE}", page_size: "${PAGES}"}
""",
    )
    env = {
        "LOGIN_URL": "https://127.0.0.1:1/Hunter2-s3cr3t",
        "LOGIN_HOST": "hunter2-host.example",
        "SITE": "https://hunter2-site.example",
        "PAGES": "5000",
    }
    issues = issues_of(path, registry, env)
    assert issues == [
        f"{path}:5: connections[0].settings.login_url: must be the site only, got '${{LOGIN_URL}}'",
        f"{path}:8: connections[1].settings.login_url: must be the site only, "
        "got 'https://${LOGIN_HOST}/Hunter2-path'",
        f"{path}:11: connections[2].settings.login_url: must be the site only, "
        "got 'https://literal.example/written-here'",  # written in the file: echoed as it is
        f"{path}:14: connections[3].settings: page_size ${{PAGES}} is too large for '${{SITE}}'",
    ]
    for value in env.values():
        assert value not in "\n".join(issues)


def test_a_missing_file_is_one_clear_issue(tmp_path: Path, registry: ConnectorRegistry) -> None:
    path = tmp_path / "nope.yaml"
    assert issues_of(path, registry) == [f"{path}: cannot read the configuration: No such file or directory"]


def test_kpi_definitions_are_validated_with_their_lines(tmp_path: Path, registry: ConnectorRegistry) -> None:
    path = write(
        tmp_path,
        """connections: []
kpis:
  definitions:
    - id: big_deals
      name: Big deals
      type: count
      unit: count
      measure:
        period: created_at
        filter: [{field: amout, op: gt, value: 10000}]
    - id: velocity
      name: Velocity
      type: magic
      unit: count
""",
    )
    issues = issues_of(path, registry)
    assert any(
        i.startswith(f"{path}:8: kpis.definitions[0].measure: unknown opportunities field(s) 'amout'")
        for i in issues
    ), issues
    assert any(i.startswith(f"{path}:11: kpis.definitions[1]: Input tag 'magic'") for i in issues), issues


def test_translated_names_are_validated_with_their_lines(tmp_path: Path, registry: ConnectorRegistry) -> None:
    path = write(
        tmp_path,
        """connections: []
kpis:
  definitions:
    - id: big_deals
      name: Big deals
      i18n:
        zh: {name: 大单数}
        fr: {name: Grosses affaires}
      type: count
      unit: count
      measure: {period: created_at}
    - id: small_deals
      name: Small deals
      i18n: {zh: {name: "", description: 小单的数量}}
      type: count
      unit: count
      measure: {period: created_at}
  scorecards:
    - id: reps
      name: Rep scorecard
      i18n:
        zh: {description: 没有名字}
      components: [{kpi: big_deals, weight: 1}]
""",
    )
    assert issues_of(path, registry) == [
        f"{path}:6: kpis.definitions[0].i18n: unknown locale(s) 'fr'; known: zh (Simplified Chinese)",
        f"{path}:14: kpis.definitions[1].i18n.zh.name: a translated name cannot be empty",
        f"{path}:22: kpis.scorecards[0].i18n.zh.name: required key is missing",
    ]


def test_the_default_library_loads_and_a_definition_replaces_a_library_kpi(
    tmp_path: Path, registry: ConnectorRegistry
) -> None:
    path = write(
        tmp_path,
        """kpis:
  definitions:
    - id: won_deals
      name: Won deals (over 1,000)
      type: count
      unit: count
      measure:
        period: closed_at
        filter: [{field: is_won, op: eq, value: true}, {field: amount, op: gte, value: 1000}]
""",
    )
    kpis = load_config(path, registry, {}).kpis
    assert {"lead_conversion_rate", "win_rate", "sales_cycle_days_mean", "sales_cycle_days_median"} <= set(
        kpis
    )
    assert {"won_revenue", "won_deals", "average_deal_size", "weighted_pipeline"} <= set(kpis)
    assert kpis["won_deals"].name == "Won deals (over 1,000)"
    assert kpis["won_deals"].i18n == {}, "a replaced KPI keeps none of the library's wording"
    assert kpis["win_rate"].i18n["zh"].name == "赢单率"


def test_alert_rules_are_validated_with_their_lines(tmp_path: Path, registry: ConnectorRegistry) -> None:
    shape = write(
        tmp_path,
        """
alerts:
  rules:
    - id: fine
      kpi: win_rate
      when: {op: "<", value: 0.2}
      recover: {op: ">=", value: 0.25}
    - id: backwards
      kpi: win_rate
      when: {op: "<", value: 0.2}
      recover: {op: "<", value: 0.1}
    - id: never
      kpi: win_rate
      when: {op: ">", value: 0.9}
      for: 0
""",
    )
    found = issues_of(shape, registry)
    assert len(found) == 2, found
    assert found[0].endswith(
        ":8: alerts.rules[1]: recover must point the other way from when (e.g. when < 0.2, recover >= 0.25)"
    )
    assert found[1].endswith(":15: alerts.rules[2].for: Input should be greater than or equal to 1")

    references = write(
        tmp_path,
        """
alerts:
  rules:
    - id: unknown-kpi
      kpi: win_ratio
      when: {op: "<", value: 0.2}
    - id: no-currency
      kpi: won_revenue
      when: {op: "<", value: 1000}
    - id: unknown-kpi
      scorecard: nobody
      scope: owner
      when: {op: ">", value: 0.9}
""",
    )
    found = issues_of(references, registry)
    tails = sorted((issue.split(".yaml:", 1)[1] for issue in found), key=lambda tail: int(tail.split(":")[0]))
    assert tails[0].startswith("5: alerts.rules[0].kpi: unknown KPI 'win_ratio' (defined: ")
    assert tails[1:] == [
        "7: alerts.rules[1].currency: won_revenue is an amount: give the currency to watch",
        "10: alerts.rules[2].id: duplicate alert rule id 'unknown-kpi'",
        "11: alerts.rules[2].scorecard: unknown scorecard 'nobody' (defined: none)",
    ]
