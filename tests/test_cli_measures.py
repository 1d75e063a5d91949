"""Measures from the command line: entered, listed as CSV, uploaded back, refused row by row, and
audited; an editor key created for the API."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tests.cli_inprocess import invoke

REPO = Path(__file__).resolve().parent.parent
CONFIG = str(REPO / "config" / "crm-perf-sync.yaml")


def test_values_are_entered_listed_uploaded_back_and_audited(tmp_path: Path) -> None:
    env = {"CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}

    def run(*args: str) -> tuple[int, str, str]:
        result = invoke("measures", *args, "--config", CONFIG, env=env)
        return result.exit_code, result.stdout, result.stderr

    code, stdout, stderr = run("set", "training_hours", "12.5", "--grain", "month", "--period", "2026-03-17")
    assert code == 0, stderr
    assert stdout.strip() == "created: training_hours company company month 2026-03-01 = 12.5"
    code, stdout, _ = run(
        "set", "customer_satisfaction", "4.2", "--grain", "quarter", "--period", "2026-05", "--by", "survey"
    )
    assert stdout.strip() == "created: customer_satisfaction company company quarter 2026-04-01 = 4.2"

    code, _, stderr = run(
        "set",
        "bars_rating",
        "4.5",
        "--grain",
        "week",
        "--period",
        "2026-05",
        "--scope",
        "team",
        "--scope-id",
        "x:y",
    )
    assert code == 1
    assert stderr.startswith("error: scope_id: no team 'x:y'")
    assert "; scope: bars_rating is entered for owner, not team" in stderr
    assert "grain: bars_rating is entered by month, quarter, year, not week" in stderr
    assert "value: 4.5 is not on the scale's steps of 1" in stderr

    code, listed, stderr = run("list", "--format", "csv")
    assert code == 0, stderr
    rows = list(csv.DictReader(io.StringIO(listed)))
    assert [(r["measure_id"], r["period_key"], r["value"], r["source"]) for r in rows] == [
        ("training_hours", "2026-03-01", "12.5", "cli"),
        ("customer_satisfaction", "2026-04-01", "4.2", "cli"),
    ]
    assert rows[1]["entered_by"] == "survey"
    exported = tmp_path / "measures.csv"
    exported.write_text(listed.replace("4.2", "4.4"), encoding="utf-8")
    code, stdout, stderr = run("upload", str(exported), "--by", "survey")
    assert code == 0, stderr
    assert stdout.strip() == f"{exported}: 2 rows: 0 created, 1 updated, 1 unchanged"

    bad = tmp_path / "bad.csv"
    bad.write_text(
        "measure_id,scope,scope_id,grain,period_key,value\n"
        "training_hours,company,company,month,2026-04,8\n"
        "training_hours,company,company,month,2026-05,-2\n"
        "customer_satisfaction,company,company,quarter,Q2,4\n",
        encoding="utf-8",
    )
    code, _, stderr = run("upload", str(bad))
    assert code == 1
    assert f"{bad}: row 3, value: -2 is below the scale's minimum 0" in stderr
    assert f"{bad}: row 4, period_key: 'Q2' is not a period" in stderr
    assert f"error: 2 problems in {bad}: nothing was saved" in stderr

    code, history, stderr = run("history", "--measure", "customer_satisfaction", "--format", "json")
    assert code == 0, stderr
    assert [
        (h["action"], h["old_value"], h["new_value"], h["changed_by"], h["source"])
        for h in json.loads(history)
    ] == [
        ("update", "4.2", "4.4", "survey", "csv"),
        ("create", None, "4.2", "survey", "cli"),
    ]
    code, _, _ = run("delete", "training_hours", "--grain", "month", "--period", "2026-03")
    assert code == 0
    code, _, stderr = run("delete", "training_hours", "--grain", "month", "--period", "2026-03")
    assert (code, stderr.strip()) == (
        1,
        "error: no training_hours entry for company 'company', month 2026-03-01",
    )
    code, listed, _ = run("list", "--format", "json", "--grain", "month")
    assert json.loads(listed) == []


def test_an_editor_key_is_created_and_listed_with_its_scope(tmp_path: Path) -> None:
    env = {"CRM_PERF_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    created = invoke("apikey", "create", "--scope", "editor", "--name", "HR surveys", env=env)
    assert created.exit_code == 0, created.stderr
    assert "(editor, 'HR surveys'" in created.stderr
    (row,) = json.loads(invoke("apikey", "list", "--format", "json", env=env).stdout)
    assert (row["name"], row["scope"]) == ("HR surveys", "editor")
