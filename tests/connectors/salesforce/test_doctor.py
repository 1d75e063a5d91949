"""``doctor`` on Salesforce connections: an unreachable org, refused credentials, a working one."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.cli_inprocess import invoke
from tests.connectors.salesforce.emulator import SalesforceEmulator
from tests.connectors.salesforce.seed import minimal_org


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens there once the socket is closed


def test_doctor_reports_each_salesforce_connection_as_it_is(
    tmp_path: Path, emulator: SalesforceEmulator
) -> None:
    minimal_org(emulator.org)
    closed = _closed_port()
    auth = "{type: password, username: admin@example.com, password: '${SF_PASSWORD}', security_token: TOKEN}"
    wrong = (
        "{type: password, username: admin@example.com, password: Wrong-Passw0rd-1234, security_token: TOKEN}"
    )
    trusted = f"ca_bundle: '{emulator.tls.ca_path}'"
    config = tmp_path / "crm-perf-sync.yaml"
    config.write_text(
        "connections:\n"
        "  - id: sf-down\n"
        "    kind: salesforce\n"
        f"    settings: {{auth: {auth}, login_url: 'https://127.0.0.1:{closed}'}}\n"
        "  - id: sf-up\n"
        "    kind: salesforce\n"
        f"    settings: {{auth: {auth}, login_url: '{emulator.url}', {trusted}}}\n"
        "  - id: sf-refused\n"
        "    kind: salesforce\n"
        f"    settings: {{auth: {wrong}, login_url: '{emulator.url}', {trusted}}}\n",
        encoding="utf-8",
    )
    env = {
        "COLUMNS": "200",
        "CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "CRM_PERF_SYNC_CONFIG": str(config),
        "SF_PASSWORD": "admin-password",
    }
    assert invoke("migrate", env=env).exit_code == 0

    result = invoke("doctor", env=env)

    assert result.exit_code == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = {line.split(":", 1)[0]: line for line in result.stdout.splitlines() if "connection sf-" in line}
    down, up, refused = (
        lines["FAIL connection sf-down"],
        lines["ok   connection sf-up"],
        lines["FAIL connection sf-refused"],
    )
    assert f"127.0.0.1:{closed}" in down
    assert "Connection refused" in down
    assert up == "ok   connection sf-up: salesforce: reachable, credentials accepted"
    assert "INVALID_LOGIN" in refused
    assert "Wrong-Passw0rd-1234" not in result.stdout
    assert "2 problems found" in result.stderr
    # One login and one /limits/ call for the working connection; nothing retried.
    assert [entry.route for entry in emulator.org.log if entry.status == 200] == ["soap_login", "limits"]
