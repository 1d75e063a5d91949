"""The API fuzzed from its own OpenAPI document: no input gives a 5xx or a response off its schema.

Schemathesis generates requests for every operation (valid and invalid parameters and bodies)
and checks each response: not a server error, a documented status code and content type, a body
that matches the documented model, and invalid input rejected with a 4xx. Examples are bounded
per operation so the test suite stays fast. (The operations are driven here with Hypothesis
directly rather than through schemathesis' pytest plugin.)
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.core.result import Ok

from tests.api.conftest import Served

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


def test_no_input_breaks_the_api(served: Served) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", served.client.app)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the API's own schema is invalid: {result}"
        operations.append(result.ok())
    assert len(operations) >= 20
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: Any) -> None:
            case.call_and_validate(headers=served.admin, checks=CHECKS)

        try:
            fuzz()
        except Exception as exc:  # every operation is tried; all failures are reported together
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
