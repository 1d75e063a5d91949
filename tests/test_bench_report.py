"""The benchmark report: rendered from the committed full-size results, newest row per measurement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bench import harness, report


def _result(scenario: str, database: str, rate: float, **notes: Any) -> harness.Result:
    return harness.Result(
        scenario=scenario,
        size="1000k",
        database=database,
        records=1_000_000,
        seconds=1_000_000 / rate,
        rate=rate,
        peak_rss_mb=100.0,
        ratio=0.5,
        target="ratio >= 0.4",
        passed=True,
        notes=notes,
    )


def test_a_run_of_one_scenario_replaces_only_its_own_rows(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(harness, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(harness, "RESULTS", tmp_path / "full.jsonl")
    assert harness.append(_result("upsert", "sqlite", 40_000.0), "full") == tmp_path / "full.jsonl"
    harness.append(_result("webhooks", "sqlite", 800.0), "full")
    harness.append(_result("upsert", "sqlite", 52_000.0, store_rate=61_000), "full")
    # A small run proves the harness works; it never reaches the report's source.
    assert harness.append(_result("upsert", "sqlite", 1.0), "small") == tmp_path / "small.jsonl"

    rows = report.latest(tmp_path / "full.jsonl")

    assert [(r["scenario"], r["rate"]) for r in rows] == [("upsert", 52_000.0), ("webhooks", 800.0)]
    stamps = [json.loads(line)["measured_at"] for line in (tmp_path / "full.jsonl").read_text().splitlines()]
    assert len(stamps) == 3
    assert all(stamp.endswith("+00:00") for stamp in stamps)
    text = report.render(rows, "- a lever")
    assert "| upsert | 1000k | sqlite | 1,000,000 | 19.23 | 52,000 |" in text
    assert "store rate (/s) 61,000" in text
    assert f"| {report._when(rows[0])} |" in text
    assert "40,000" not in text
    assert text.rstrip().endswith("- a lever")
    # The machine the results were measured on, as recorded with them.
    machine = harness.describe_machine()
    assert f"- {machine['cores']} cores ({machine['processor']}), {machine['memory']} of memory" in text


def _nothing() -> dict[str, Any]:
    return {}


def test_a_child_measures_its_own_peak_memory_not_its_parents() -> None:
    ballast = bytearray(400 * 1024 * 1024)  # the parent grows well past what a child needs
    ballast[::4096] = b"x" * len(ballast[::4096])  # touched, so resident
    assert harness.peak_rss_mb() > 400
    child = harness.in_child(_nothing)
    assert child["peak_rss_mb"] < 200
    del ballast


def test_the_committed_report_is_what_the_committed_results_render() -> None:
    # `make bench-report` in any checkout reproduces docs/benchmarks.md: it is never edited by hand.
    notes = (Path(report.__file__).parent / "optimisations.md").read_text()
    assert report.REPORT.read_text() == report.render(report.latest(), notes)


def test_an_unknown_database_is_refused_by_name(capsys: Any) -> None:
    from bench.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["--size", "small", "--scenario", "upsert", "--db", "sqlite,oracle"])

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--db: unknown database 'oracle' (choose from postgresql, sqlite)" in err
