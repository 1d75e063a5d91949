"""Webhook endpoints, deliveries and alerts through the API."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from crm_perf_sync.api.app import create_app
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.models import WebhookEvent
from crm_perf_sync.webhooks.delivery import Deliverer, DeliveryOptions
from crm_perf_sync.webhooks.security import Guard
from tests.api.conftest import Served
from tests.api.test_read import all_pages, pipeline
from tests.webhooks.receiver import Receiver, receiving

LOCAL = Guard(allow=("127.0.0.1",))
SUBSCRIBED = ["sync.completed", "sync.failed", "alert.firing", "alert.resolved"]


@pytest.fixture(scope="module")
def client(served: Served) -> TestClient:
    return TestClient(create_app(served.engine, served.config, LOCAL))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as found:
        yield found


def deliver(served: Served) -> int:
    deliverer = Deliverer(served.session_factory, LOCAL, "api-tests", DeliveryOptions(timeout=5))
    try:
        sent = 0
        while batch := deliverer.run_once():
            sent += batch
        return sent
    finally:
        deliverer.close()


def test_endpoints_are_managed_and_their_deliveries_explained(
    served: Served, client: TestClient, receiver: Receiver
) -> None:
    admin, read = served.admin, served.read
    created = client.post(
        "/api/v1/webhooks/endpoints", json={"url": receiver.url, "event_types": ["webhook.*"]}, headers=admin
    )
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["secret"].startswith("whsec_")
    assert created.headers["location"] == f"/api/v1/webhooks/endpoints/{endpoint['id']}"
    receiver.secrets.append(endpoint["secret"])
    listed = client.get("/api/v1/webhooks/endpoints", headers=read).json()["data"]
    assert endpoint["id"] in {e["id"] for e in listed}
    assert all("secret" not in e for e in listed)  # shown once, at creation

    test = client.post(f"/api/v1/webhooks/endpoints/{endpoint['id']}/test", headers=admin)
    assert test.status_code == 202
    assert deliver(served) == 1
    assert [(r.message_id, r.payload["type"]) for r in receiver.accepted] == [
        (test.json()["message_id"], "webhook.test")
    ]

    (delivery,) = client.get(
        f"/api/v1/webhooks/deliveries?endpoint_id={endpoint['id']}", headers=read
    ).json()["data"]
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == ("succeeded", 1, 204)
    detail = client.get(f"/api/v1/webhooks/deliveries/{delivery['id']}", headers=read).json()
    assert [a["status_code"] for a in detail["attempt_log"]] == [204]
    retried = client.post(f"/api/v1/webhooks/deliveries/{delivery['id']}/retry", headers=admin)
    assert (retried.status_code, retried.json()["status"]) == (202, "pending")
    deliver(served)
    assert [r.message_id for r in receiver.accepted] == [delivery["message_id"]] * 2  # the same webhook-id

    rotated = client.post(f"/api/v1/webhooks/endpoints/{endpoint['id']}/rotate-secret", headers=admin).json()
    assert rotated["secret"] != endpoint["secret"]
    assert rotated["secret_rotated"] is True
    client.post(f"/api/v1/webhooks/endpoints/{endpoint['id']}/test", headers=admin)
    deliver(served)
    assert len(receiver.accepted[-1].headers["webhook-signature"].split(" ")) == 2

    assert client.delete(f"/api/v1/webhooks/endpoints/{endpoint['id']}", headers=admin).status_code == 204
    assert client.get(f"/api/v1/webhooks/endpoints/{endpoint['id']}", headers=read).status_code == 404


def test_replay_sends_every_subscribed_event_since_a_time(
    served: Served, client: TestClient, receiver: Receiver
) -> None:
    body = {"url": receiver.url, "event_types": ["sync.*", "alert.*"]}
    endpoint = client.post("/api/v1/webhooks/endpoints", json=body, headers=served.admin).json()
    receiver.secrets.append(endpoint["secret"])
    since = utc_now() - timedelta(days=1)
    with served.session_factory() as session:
        expected = session.scalar(
            select(func.count())
            .select_from(WebhookEvent)
            .where(
                WebhookEvent.created_at >= since,
                WebhookEvent.type.in_(["sync.completed", "sync.failed", "alert.firing", "alert.resolved"]),
            )
        )
    assert expected  # the served store's sync and its alerts
    replayed = client.post(
        f"/api/v1/webhooks/endpoints/{endpoint['id']}/replay",
        json={"since": since.isoformat()},
        headers=served.admin,
    )
    assert replayed.json() == {"queued": expected}
    deliver(served)
    assert len(receiver.accepted) == expected
    assert len({r.message_id for r in receiver.accepted}) == expected
    client.delete(f"/api/v1/webhooks/endpoints/{endpoint['id']}", headers=served.admin)


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_replay_since_a_time_outside_the_calendar_is_a_422(
    served: Served, client: TestClient, receiver: Receiver, since: str
) -> None:
    body = {"url": receiver.url, "event_types": ["sync.*"]}
    endpoint = client.post("/api/v1/webhooks/endpoints", json=body, headers=served.admin).json()
    try:
        replayed = client.post(
            f"/api/v1/webhooks/endpoints/{endpoint['id']}/replay", json={"since": since}, headers=served.admin
        )
        assert replayed.status_code == 422, replayed.text
        assert replayed.headers["content-type"] == "application/problem+json"
        assert "body.since" in {e["where"] for e in replayed.json()["errors"]}
    finally:
        client.delete(f"/api/v1/webhooks/endpoints/{endpoint['id']}", headers=served.admin)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"url": "http://hooks.example.com/in"}, "use https"),
        ({"url": "ftp://hooks.example.com/in"}, "https://host/path"),
        ({"url": "https://user:pw@hooks.example.com/in"}, "credentials"),
        ({"url": "https://hooks.example.com/in", "event_types": ["deal.won"]}, "matches none of"),
        ({"url": "https://hooks.example.com/in", "colour": "red"}, "body.colour"),
    ],
)
def test_an_invalid_endpoint_is_a_422(
    served: Served, client: TestClient, body: dict[str, Any], says: str
) -> None:
    response = client.post("/api/v1/webhooks/endpoints", json=body, headers=served.admin)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert says in problem["detail"]


def test_a_read_key_cannot_manage_endpoints(served: Served, client: TestClient) -> None:
    body = {"url": "https://hooks.example.com/in"}
    assert client.post("/api/v1/webhooks/endpoints", json=body, headers=served.read).status_code == 403


def test_alert_states_match_the_maven_reps(served: Served) -> None:
    closed: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in pipeline():
        if row["deal_stage"] in ("Won", "Lost"):
            closed[f"maven:{row['sales_agent']}"][1] += 1
            closed[f"maven:{row['sales_agent']}"][0] += row["deal_stage"] == "Won"
    expected = {agent for agent, (won, n) in closed.items() if n >= 20 and won / n < 0.62}
    assert expected  # the rule catches someone
    firing = all_pages(served, "/api/v1/alerts?rule=rep-win-rate&state=firing")
    assert {s["scope_id"] for s in firing} == expected
    for state in firing:
        won, n = closed[state["scope_id"]]
        assert state["value"] == pytest.approx(won / n)
        assert state["threshold"] == 0.62
    history = all_pages(served, "/api/v1/alerts/history?rule=rep-win-rate")
    assert {h["scope_id"] for h in history if h["to_state"] == "firing"} == expected


def test_an_endpoint_added_while_alerts_fire_can_be_sent_them(
    served: Served, client: TestClient, receiver: Receiver
) -> None:
    firing = all_pages(served, "/api/v1/alerts?state=firing")
    assert firing  # the served store has reps below the line
    body = {"url": receiver.url, "event_types": ["alert.*"], "send_firing": True}
    created = client.post("/api/v1/webhooks/endpoints", json=body, headers=served.admin)
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["firing_requested"] is True
    receiver.secrets.append(endpoint["secret"])
    url = f"/api/v1/webhooks/endpoints/{endpoint['id']}"
    assert client.get(url, headers=served.read).json()["firing_requested"] is True

    served.service().evaluate_alerts()  # the worker's next evaluation
    assert client.get(url, headers=served.read).json()["firing_requested"] is False
    deliver(served)
    with served.session_factory() as session:
        announced = {
            (e.rule_id, e.payload["data"]["scope_id"]): e.message_id
            for e in session.scalars(select(WebhookEvent).where(WebhookEvent.type == "alert.firing"))
        }
    got = {
        (r.payload["data"]["rule"]["id"], r.payload["data"]["scope_id"]): r.message_id
        for r in receiver.accepted
    }
    assert set(got) == {(s["rule_id"], s["scope_id"]) for s in firing}
    assert all(got[key] == announced[key] for key in got)  # the events themselves, by webhook-id
    assert receiver.rejected == []

    replayed = client.post(f"{url}/replay", json={"firing": True}, headers=served.admin)
    assert (replayed.status_code, replayed.json()) == (202, {"queued": 0})
    assert client.get(url, headers=served.read).json()["firing_requested"] is True
    served.service().evaluate_alerts()
    deliver(served)
    assert sorted(r.message_id for r in receiver.accepted) == sorted([*got.values(), *got.values()])

    empty = client.post(f"{url}/replay", json={}, headers=served.admin)
    assert empty.status_code == 422
    assert "since, firing" in empty.json()["detail"]
    client.delete(url, headers=served.admin)


def test_the_firing_set_is_refused_to_an_endpoint_that_does_not_take_alert_firing(
    served: Served, client: TestClient
) -> None:
    body = {"url": "https://hooks.example.com/in", "event_types": ["sync.*"], "send_firing": True}
    refused = client.post("/api/v1/webhooks/endpoints", json=body, headers=served.admin)
    assert refused.status_code == 422
    assert "does not subscribe to alert.firing" in refused.json()["detail"]
    del body["send_firing"]
    endpoint = client.post("/api/v1/webhooks/endpoints", json=body, headers=served.admin).json()
    url = f"/api/v1/webhooks/endpoints/{endpoint['id']}"
    also = client.post(f"{url}/replay", json={"firing": True}, headers=served.admin)
    assert also.status_code == 422
    assert f"webhook endpoint {endpoint['id']} does not subscribe to alert.firing" in also.json()["detail"]
    client.delete(url, headers=served.admin)
