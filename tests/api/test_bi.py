"""A BI tool's view: an analyst reads the API over real HTTP with pandas, as they would.

The app runs in uvicorn on 127.0.0.1 (a real socket, a real HTTP client inside pandas); the
numbers are checked against the Maven export itself.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pandas as pd
import pytest
import uvicorn

from tests.api.conftest import Served
from tests.api.test_read import win_rates_by_agent_and_year


@pytest.fixture(scope="module")
def base_url(served: Served) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(served.client.app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_an_analyst_reads_win_rates_with_pandas(served: Served, base_url: str) -> None:
    frame = pd.read_csv(
        f"{base_url}/api/v1/kpis/win_rate/values?format=csv&grain=year&scope=owner",
        storage_options={"Authorization": f"Bearer {served.read_key}"},
        parse_dates=["computed_at"],
    )
    assert len(frame) == len(win_rates_by_agent_and_year())
    assert frame["value"].dtype == "float64"  # dot decimals parse as numbers
    assert frame["period_start"].str.match(r"^\d{4}-01-01$").all()  # ISO dates
    records = frame.to_dict("records")
    by_agent = {(str(r["scope_id"]), str(r["period_key"])): r for r in records}
    for key, (won, closed) in win_rates_by_agent_and_year().items():
        row = by_agent[key]
        assert row["value"] == pytest.approx(won / closed)
        assert int(row["numerator"]) == won
        assert int(row["denominator"]) == closed
    # The analyst's own aggregate: a ratio of sums over reps, the company's stored win rate.
    company = pd.read_csv(
        f"{base_url}/api/v1/kpis/win_rate/values?format=csv&grain=year&scope=company",
        storage_options={"Authorization": f"Bearer {served.read_key}"},
    )
    stored = {str(r["period_key"]): float(r["value"]) for r in company.to_dict("records")}
    sums = frame.groupby("period_key")[["numerator", "denominator"]].sum().reset_index()
    for row in sums.to_dict("records"):
        assert stored[str(row["period_key"])] == pytest.approx(row["numerator"] / row["denominator"])


def test_json_pages_over_http(served: Served, base_url: str) -> None:
    import httpx

    with httpx.Client(base_url=base_url, headers=served.read) as client:
        url: str | None = "/api/v1/opportunities?limit=1000"
        seen = 0
        while url is not None:
            response = client.get(url)
            assert response.status_code == 200
            seen += len(response.json()["data"])
            url = response.json()["next"]
        assert seen == 8800
