"""The revision that lets removed rules resolve their alerts: states keep the severity they had."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from crm_perf_sync.kit import migrate
from crm_perf_sync.kit.db import create_db_engine

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
AT = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("empty_db_url", BACKENDS, indirect=True)
def test_each_state_takes_the_severity_of_its_latest_transition(empty_db_url: str) -> None:
    engine = create_db_engine(empty_db_url)
    try:
        migrate.upgrade(engine, "3d7e9d710ee9")
        state = text(
            "INSERT INTO alert_state (rule_id, rule_hash, scope, scope_id, currency, state, breaches,"
            " outcome, value, threshold, period_key, since, evaluated_at) VALUES (:rule, 'h', 'owner',"
            " :scope, '', :state, 1, 'breach', 0.1, 0.2, 'all', :at, :at)"
        )
        transition = text(
            "INSERT INTO alert_transition (rule_id, scope, scope_id, currency, from_state, to_state,"
            " value, threshold, period_key, severity, at) VALUES (:rule, 'owner', :scope, '', 'ok',"
            " :to, 0.1, 0.2, 'all', :severity, :at)"
        )
        with engine.begin() as conn:
            conn.execute(
                state, [{"rule": "low", "scope": s, "state": "firing", "at": AT} for s in ("a", "b")]
            )
            conn.execute(state, {"rule": "low", "scope": "c", "state": "ok", "at": AT})
            conn.execute(
                transition,
                [
                    {"rule": "low", "scope": "a", "to": "pending", "severity": "info", "at": AT},
                    {"rule": "low", "scope": "a", "to": "firing", "severity": "critical", "at": AT},
                    {"rule": "low", "scope": "b", "to": "firing", "severity": "info", "at": AT},
                    {"rule": "other", "scope": "c", "to": "firing", "severity": "critical", "at": AT},
                ],
            )
        migrate.upgrade(engine)
        with engine.connect() as conn:
            found = {
                row[0]: row[1] for row in conn.execute(text("SELECT scope_id, severity FROM alert_state"))
            }
            reasons = set(conn.execute(text("SELECT reason FROM alert_transition")).scalars())
        assert found == {"a": "critical", "b": "info", "c": "warning"}  # c never changed: the default
        assert reasons == {None}
        migrate.downgrade(engine, "3d7e9d710ee9")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alert_state")).scalar_one() == 3
    finally:
        engine.dispose()
