"""The API fuzzed from its own OpenAPI document: no input gives a 5xx or a response off its schema.

Schemathesis generates requests for every operation, with the admin key: data that fits the
schema and data that does not (each parameter and body field broken in turn), for operations on
a path with ids both with generated ids (mostly unknown: a 404) and with ids that exist in the
served store (so the operation itself runs). Each response is checked: not a server error, a
documented status code, content type and headers, a body that matches the documented model, and
input off the schema rejected with a 4xx.

The budget is ``CRM_PERF_SYNC_FUZZ_EXAMPLES`` examples per operation, mode and set of ids (10 by
default, which keeps ``make test`` short); a longer run sets more, e.g.
``CRM_PERF_SYNC_FUZZ_EXAMPLES=300 .venv/bin/pytest tests/api/test_fuzz.py``. (The operations are
driven here with Hypothesis directly rather than through schemathesis' pytest plugin.)
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok

from crm_perf_sync.api.app import create_app
from crm_perf_sync.webhooks.security import Guard
from tests.api.conftest import Served

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]
EXAMPLES = int(os.environ.get("CRM_PERF_SYNC_FUZZ_EXAMPLES", "10"))
# Off-schema input may also be refused for its size: 413 is a rejection like 422.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
            }
        }
    }
)


def known_ids(served: Served, client: TestClient) -> dict[str, Any]:
    """Path parameters that name things in the served store, creating the few that need writing."""
    admin = served.admin
    endpoint = client.post(
        "/api/v1/webhooks/endpoints", json={"url": "https://127.0.0.1:9/hook"}, headers=admin
    ).json()
    message = client.post(f"/api/v1/webhooks/endpoints/{endpoint['id']}/test", headers=admin).json()
    deliveries = client.get("/api/v1/webhooks/deliveries", headers=admin).json()["data"]
    delivery = next(d for d in deliveries if d["message_id"] == message["message_id"])
    target = client.post(
        "/api/v1/targets", json={"kpi": "won_deals", "period": "2017", "value": 100}, headers=admin
    ).json()
    run = client.get("/api/v1/sync-runs?connection=maven", headers=admin).json()["data"][0]
    return {
        "kpi_id": "win_rate",
        "scorecard_id": "reps",
        "owner_id": "maven:Darcel Schlecht",
        "connection_id": "maven",
        "run_id": run["id"],
        "endpoint_id": endpoint["id"],
        "delivery_id": delivery["id"],
        "target_id": target["id"],
        # The served configuration has no incentive plans: the plan's operations answer 404.
        "plan_id": "agents-2017",
        "period_key": "2017-01-01",
    }


def test_no_input_breaks_the_api(served: Served) -> None:
    # Webhook endpoints on loopback may be registered, so that their operations have one to act on.
    app = create_app(served.engine, served.config, Guard(allow=("127.0.0.1",)))
    client = TestClient(app)
    ids = known_ids(served, client)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the API's own schema is invalid: {result}"
        operations.append(result.ok())
    assert len(operations) >= 38
    failures: list[str] = []
    runs = 0
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        assert names <= set(ids), f"no known id for {operation.path}: {names - set(ids)}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for fixed in ({}, {name: ids[name] for name in names}) if names else ({},):
                strategy = operation.as_strategy(mode, path_parameters=fixed or None, headers=served.admin)

                @given(case=strategy)
                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                    database=None,
                )
                def fuzz(case: Any) -> None:
                    case.call_and_validate(checks=CHECKS)

                runs += 1
                try:
                    fuzz()
                except Unsatisfiable:
                    continue  # nothing left to break: every parameter is fixed, or there is none
                except Exception as exc:  # every operation is tried; all failures are reported together
                    given_ids = fixed or "generated"
                    where = f"{operation.method.upper()} {operation.path} ({mode.value}, ids {given_ids})"
                    failures.append(f"{where}: {exc}")
    assert runs >= 2 * len(operations)
    assert not failures, "\n\n".join(failures)
