"""What the command line prints: text from the CRM and the configuration exactly as it is (never
read as terminal markup), no value taken from the environment echoed back, and JSON log lines
when the logs are JSON."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.cli_inprocess import invoke

LINK = "[link=http://evil.example]"
#: Rich markup, an emoji code and an IPv6 literal: each loses characters when read as markup.
EVIL_NAME = f"{LINK}Won[/link] [bold]deals[/bold] :smile: [a-z]+"


def test_text_from_the_crm_and_the_configuration_is_printed_verbatim(tmp_path: Path) -> None:
    exports = f"{tmp_path}/{LINK}x[/link]/https:/[fd00:ec2::254]"
    config = tmp_path / "crm-perf-sync.yaml"
    config.write_text(
        f"""
connections:
  - id: exports
    kind: csv
    settings:
      data_dir: "{exports}"
      streams:
        opportunities:
          file: deals.csv
          fields: {{external_id: id, amount: amount, currency: {{value: USD}}}}
kpis:
  definitions:
    - id: evil_count
      name: "{EVIL_NAME}"
      type: count
      unit: count
      measure: {{entity: opportunities, period: created_at}}
"""
    )
    env = {
        "CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "CRM_PERF_SYNC_CONFIG": str(config),
        "CRM_PERF_SYNC_WEBHOOK_ALLOW_HOSTS": "fd00::/8",
    }
    missing = f"deals.csv does not exist (looked at {Path(exports, 'deals.csv')})"  # a path: // is /

    synced = invoke("sync", env=env)  # the connector's error, in the run's summary
    assert synced.exit_code == 1
    assert missing in synced.stdout

    doctor = invoke("doctor", env=env)  # the same error as a failed check
    assert doctor.exit_code == 1
    assert f"FAIL connection exports: streams.opportunities: {missing}" in doctor.stdout

    explained = invoke("explain", "evil_count", env=env)  # a name from the configuration
    assert explained.exit_code == 0, explained.stderr
    assert explained.stdout.startswith(f"{EVIL_NAME} (evil_count, count, count, higher is better)\n")

    url = "https://[fd00:ec2::254]/hooks"
    added = invoke("webhooks", "add", url, "--description", EVIL_NAME, env=env)
    assert added.exit_code == 0, added.stderr
    assert url in invoke("webhooks", "list", env=env).stdout

    key_name = f"{LINK}BI[/link]"
    assert invoke("apikey", "create", "--name", key_name, env=env).exit_code == 0
    assert key_name in invoke("apikey", "list", env=env).stdout


def test_control_characters_from_the_crm_never_reach_the_terminal(tmp_path: Path) -> None:
    # An OSC 8 hyperlink and a colour, as raw escape sequences: shown as text, never sent as such.
    link, red = "\x1b]8;;http://evil.example\x1b\\", "\x1b[31m"
    shown_link, shown_red = "\\x1b]8;;http://evil.example\\x1b\\", "\\x1b[31m"
    config = tmp_path / "crm-perf-sync.yaml"
    config.write_text(
        "kpis:\n  definitions:\n    - id: evil_count\n"
        f"      name: {orjson.dumps(f'{link}Won{red} deals').decode()}\n"
        "      type: count\n      unit: count\n      measure: {entity: opportunities, period: created_at}\n"
    )
    env = {
        "CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "CRM_PERF_SYNC_CONFIG": str(config),
    }
    explained = invoke("explain", "evil_count", env=env)  # a name from the configuration
    assert explained.exit_code == 0, explained.stderr
    assert explained.stdout.startswith(f"{shown_link}Won{shown_red} deals (evil_count, ")

    assert invoke("apikey", "create", "--name", f"{red}BI", env=env).exit_code == 0
    listed = invoke("apikey", "list", env=env)  # a table cell
    assert f"{shown_red}BI" in listed.stdout

    failed = invoke("sync", f"{link}crm", env=env)  # an error message quoting what it was given
    assert failed.exit_code == 1
    assert "no connection" in failed.stderr
    assert shown_link in failed.stderr
    for result in (explained, listed, failed):
        assert "\x1b" not in result.stdout + result.stderr


def test_an_error_message_keeps_its_brackets(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("connections:\n  - id: Bad Id\n    kind: demo\n")
    checked = invoke("config", "check", str(config))
    assert checked.exit_code == 2
    assert f"error: 1 problem in the configuration:\n{config}:2: connections[0].id: " in checked.stderr
    assert "String should match pattern '^[a-z0-9][a-z0-9_-]{0,62}$'" in checked.stderr


SALESFORCE = """
connections:
  - id: sfdc
    kind: salesforce
    settings:
      auth: {type: session, session_id: "${SF_SESSION}", instance_url: https://acme.my.salesforce.com}
      login_url: ${SF_LOGIN_URL}
"""
SECRET_URL = "https://127.0.0.1:1/Hunter2-s3cr3t"


def test_a_configuration_error_never_echoes_a_value_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "crm-perf-sync.yaml"
    config.write_text(SALESFORCE)
    env = {"SF_SESSION": "00Dxx-session-Hunter2", "SF_LOGIN_URL": SECRET_URL}
    checked = invoke("config", "check", str(config), env=env)
    assert checked.exit_code == 2
    assert (
        f"{config}:7: connections[0].settings.login_url: must be the site only "
        "(like https://login.salesforce.com), got '${SF_LOGIN_URL}'"
    ) in checked.stderr
    assert "Hunter2" not in checked.stdout + checked.stderr


def test_serve_reports_a_configuration_error_as_a_json_log_line_when_logs_are_json(tmp_path: Path) -> None:
    config = tmp_path / "crm-perf-sync.yaml"
    config.write_text(SALESFORCE)
    env = {
        "SF_SESSION": "00Dxx-session-Hunter2",
        "SF_LOGIN_URL": SECRET_URL,
        "CRM_PERF_SYNC_CONFIG": str(config),
        "CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "CRM_PERF_SYNC_LOG_FORMAT": "json",
    }
    served = invoke("serve", env=env)
    assert served.exit_code == 2
    assert served.stdout == ""
    events = [orjson.loads(line) for line in served.stderr.splitlines()]  # every line is JSON
    (failure,) = [event for event in events if event["level"] == "error"]
    assert failure["message"].startswith("1 problem in the configuration:\n")
    assert "connections[0].settings.login_url: must be the site only" in failure["message"]
    assert "${SF_LOGIN_URL}" in failure["message"]
    assert "Hunter2" not in served.stderr

    # An invalid setting is reported the same way, before anything else could be set up.
    bad = invoke("serve", env={**env, "CRM_PERF_SYNC_PORT": "eighty"})
    assert bad.exit_code == 2
    (event,) = [orjson.loads(line) for line in bad.stderr.splitlines()]
    assert event["level"] == "error"
    assert event["message"].startswith("invalid environment: CRM_PERF_SYNC_PORT: ")


def test_doctor_reports_an_unsupported_database_url_as_a_failed_check(tmp_path: Path) -> None:
    config = tmp_path / "crm-perf-sync.yaml"
    config.write_text("connections:\n  - id: demo\n    kind: demo\n")
    env = {"CRM_PERF_SYNC_DATABASE_URL": "mysql://u@127.0.0.1/crm", "CRM_PERF_SYNC_CONFIG": str(config)}
    result = invoke("doctor", env=env)
    assert result.exit_code == 1
    assert "ok   configuration" in result.stdout
    assert "FAIL database: unsupported database mysql://u@127.0.0.1/crm" in result.stdout
    assert "ok   connection demo" in result.stdout  # the checks that need no store still run
    assert "migrations" not in result.stdout  # and the one that does is not attempted


def test_migrate_to_an_unknown_revision_is_refused_in_one_line(tmp_path: Path) -> None:
    env = {"CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    for args in (("migrate", "--to", "f00dfeedbeef"), ("migrate", "--downgrade", "--to", "f00dfeedbeef")):
        result = invoke(*args, env=env)
        assert result.exit_code == 2, result.stderr
        assert "no revision 'f00dfeedbeef' in this version's migrations" in " ".join(result.stderr.split())
