"""Property-based API testing: schemathesis generates requests from our own OpenAPI schema (valid and
malformed bodies, odd unicode, huge numbers, unknown fields) and requires no server error and responses
that match the schema. A fixed number of examples, derandomised, so CI runs the same cases every time."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def test_no_server_errors_and_responses_match_the_schema(server, api_key):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    headers = {"Authorization": f"Bearer {api_key}"}
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=15, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case) -> None:
            case.call_and_validate(base_url=server.url, headers=headers, checks=CHECKS)

        run()
        tested.append(f"{operation.method.upper()} {operation.path}")
    assert "POST /v1/jobs" in tested and len(tested) >= 15
