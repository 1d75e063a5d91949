"""Writing through the API with an admin key: targets, sync requests; and revoked keys."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from crm_perf_sync.api.cache import LOOKUP_SECONDS
from crm_perf_sync.apikeys import service as keys
from crm_perf_sync.kit.db import WRITE_LOCK, session_scope
from crm_perf_sync.kit.settings import Settings
from crm_perf_sync.plugins import ConnectorRegistry
from crm_perf_sync.runtime import Runtime
from crm_perf_sync.worker.scheduler import run_queued_syncs
from tests.api.conftest import KPIS, Served, serving
from tests.api.test_read import all_pages

TEAM = "maven:team:Dustin Brinkmann"
TEAM_YEAR = f"/api/v1/kpis/won_deals/values?grain=year&period=2017&scope=team&scope_id={TEAM}"


#: The served KPIs without their product breakdown, which no test here reads: the refreshes here
#: recompute every KPI (an API target is part of what every value is computed with), and the
#: breakdown would have each of them write 104,801 values instead of 38,426.
WRITE_KPIS = KPIS.replace("dimensions: [product]", "dimensions: []")


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str | None
) -> Iterator[Served]:
    """This module's copy of the built Maven store, served with :data:`WRITE_KPIS`."""
    with serving(request, tmp_path_factory, pg_admin_url, WRITE_KPIS) as found:
        yield found


def post(served: Served, url: str, body: Any) -> Any:
    return served.client.post(url, json=body, headers=served.admin)


def test_a_target_set_through_the_api_applies_at_the_next_refresh(served: Served) -> None:
    body = {
        "kpi": "won_deals",
        "scope": "team",
        "scope_id": TEAM,
        "period": "2017",
        "value": 1200,
        "split_to_reps": True,
    }
    created = post(served, "/api/v1/targets", body)
    assert created.status_code == 201, created.text
    definition = created.json()
    assert created.headers["location"] == f"/api/v1/targets/definitions/{definition['id']}"
    assert definition["definition"]["period"] == "2017-01-01"
    assert served.get(created.headers["location"]).json() == definition
    assert all_pages(served, "/api/v1/targets?kpi=won_deals") == []  # not before the next refresh
    with served.session_factory() as session:
        assert served.service().service.refresh_reason(session) is not None

    served.service().refresh()
    targets = all_pages(served, "/api/v1/targets?kpi=won_deals")
    team = {(t["grain"], t["period_key"]): t["value"] for t in targets if t["scope"] == "team"}
    assert team[("year", "2017-01-01")] == 1200
    assert team[("quarter", "2017-04-01")] == 300
    assert team[("month", "2017-06-01")] == 100
    assert {t["source"] for t in targets} == {"api"}
    reps = {t["scope_id"] for t in targets if t["scope"] == "owner"}
    members = {o["id"] for o in all_pages(served, "/api/v1/owners") if TEAM in o["teams"]}
    assert reps == members
    rep_year = [t["value"] for t in targets if t["scope"] == "owner" and t["grain"] == "year"]
    assert rep_year == [pytest.approx(1200 / len(members))] * len(members)
    (value,) = served.get(
        f"/api/v1/kpis/won_deals/values?grain=year&period=2017&scope=team&scope_id={TEAM}"
    ).json()["data"]
    assert value["target"] == 1200
    assert value["attainment"] == pytest.approx(value["value"] / 1200)

    changed = served.client.put(
        definition_url(definition), json={**body, "value": 2400}, headers=served.admin
    )
    assert changed.status_code == 200
    assert changed.json()["updated_at"] >= definition["updated_at"]
    served.service().refresh()
    (value,) = served.get(
        f"/api/v1/kpis/won_deals/values?grain=year&period=2017&scope=team&scope_id={TEAM}"
    ).json()["data"]
    assert value["target"] == 2400

    assert served.client.delete(definition_url(definition), headers=served.admin).status_code == 204
    assert served.get(definition_url(definition)).status_code == 404
    served.service().refresh()
    assert all_pages(served, "/api/v1/targets?kpi=won_deals") == []


def definition_url(definition: dict[str, Any]) -> str:
    return f"/api/v1/targets/definitions/{definition['id']}"


def test_on_a_tie_the_apis_target_wins_over_the_configurations(served: Served) -> None:
    body = {"kpi": "won_revenue", "period": "2017-06-30", "value": 6_000_000, "currency": "USD"}
    created = post(served, "/api/v1/targets", body)
    assert created.status_code == 201
    served.service().refresh()
    (year,) = all_pages(served, "/api/v1/targets?kpi=won_revenue&grain=year&scope=company")
    assert (year["value"], year["source"]) == (6_000_000, "api")
    assert served.client.delete(definition_url(created.json()), headers=served.admin).status_code == 204
    served.service().refresh()
    (year,) = all_pages(served, "/api/v1/targets?kpi=won_revenue&grain=year&scope=company")
    assert (year["value"], year["source"]) == (12_000_000, "config")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"kpi": "no_such_kpi", "period": "2017", "value": 1}, "unknown KPI"),
        ({"kpi": "won_revenue", "period": "2017", "value": 1}, "give the target's currency"),
        (
            {
                "kpi": "won_deals",
                "scope": "team",
                "scope_id": "maven:team:Nobody",
                "period": "2017",
                "value": 1,
            },
            "no team",
        ),
        ({"kpi": "win_rate", "period": "2017", "value": 0.5, "seasonality": [1] * 12}, "rate"),
        (
            {
                "kpi": "won_deals",
                "grain": "quarter",
                "period": "2017-04",
                "value": 1,
                "seasonality": [1] * 12,
            },
            "the grain must be year",
        ),
        ({"kpi": "won_deals", "period": "2017", "value": 1, "seasonality": [0] * 12}, "positive sum"),
        ({"kpi": "won_deals", "period": "2017", "value": 1, "split_to_reps": True}, "scope must be team"),
        ({"kpi": "won_deals", "period": "2017", "value": 1, "colour": "red"}, "body.colour"),
        ({"kpi": "won_deals", "period": "someday", "value": 1}, "body.period"),
        ({"kpi": "won_deals", "period": "2017", "value": "NaN"}, "body.value"),
        ({"kpi": "won_revenue", "period": "2017", "value": -5, "currency": "USD"}, "negative"),
        ({"kpi": "won_deals", "period": "2017", "value": "5"}, "body.value"),  # a number, not text
        ({"kpi": "won_deals", "period": "1700000000", "value": 5}, "body.period"),  # not a Unix time
        ({"kpi": "won_deals", "period": 2017, "value": 5}, "body.period"),  # text, as documented
        ({"kpi": "won_deals", "period": "2017", "value": 5, "split_to_reps": 0}, "body.split_to_reps"),
        ({"kpi": "won_deals", "period": "2017", "value": -1}, "negative"),
        ({"kpi": "win_rate", "period": "2017", "value": -0.1}, "negative"),
    ],
)
def test_an_invalid_target_is_a_422_naming_the_problem(
    served: Served, body: dict[str, Any], says: str
) -> None:
    response = post(served, "/api/v1/targets", body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert says in problem["detail"] or says in {e["where"] for e in problem.get("errors") or []}


def test_a_body_that_is_not_json_is_a_422(served: Served) -> None:
    response = served.client.post(
        "/api/v1/targets",
        content=b"kpi=won_deals",
        headers={**served.admin, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["type"].endswith("/invalid-input")


def test_a_sync_request_is_queued_and_carried_out_by_a_worker(served: Served) -> None:
    assert served.client.post("/api/v1/connections/nope/sync", headers=served.admin).status_code == 404
    not_a_flag = post(served, "/api/v1/connections/maven/sync", {"full_refresh": 0})
    assert not_a_flag.status_code == 422
    assert "body.full_refresh" in {e["where"] for e in not_a_flag.json()["errors"]}
    queued = served.client.post("/api/v1/connections/maven/sync", headers=served.admin)
    assert queued.status_code == 202
    run = queued.json()
    assert (run["status"], run["trigger"], run["connection_id"]) == ("queued", "api", "maven")
    assert queued.headers["location"] == run["url"] == f"/api/v1/sync-runs/{run['id']}"
    again = served.client.post("/api/v1/connections/maven/sync", headers=served.admin)
    assert again.json()["id"] == run["id"]  # one queued run per connection, not a pile

    runtime = Runtime(
        Settings(), served.engine, served.session_factory, ConnectorRegistry.discover(), served.config
    )
    run_queued_syncs(runtime, threading.Event())
    done = served.get(run["url"]).json()
    assert done["status"] == "succeeded"
    assert (done["inserted"], done["updated"], done["deleted"]) == (0, 0, 0)  # the same export again
    assert done["finished_at"] is not None
    assert served.get("/api/v1/sync-runs?status=queued").json()["data"] == []


def test_a_revoked_key_is_refused(served: Served) -> None:
    with session_scope(served.session_factory) as session:
        row, key = keys.create(session, "short-lived", "read")
        key_id = row.id
    headers = {"Authorization": f"Bearer {key}"}
    assert served.client.get("/api/v1/kpis", headers=headers).status_code == 200
    with session_scope(served.session_factory) as session:
        # Read, then write: the write lock first (as the product's writes take it), since the
        # request above records the key's use in the background meanwhile.
        session.connection(execution_options={WRITE_LOCK: True})
        keys.revoke(session, key_id)
    time.sleep(LOOKUP_SECONDS + 0.1)  # an API replica checks a key against the store once a second
    refused = served.client.get("/api/v1/kpis", headers=headers)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]
