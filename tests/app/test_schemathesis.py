"""Property-based API testing: schemathesis generates requests from our own OpenAPI schema (valid and
malformed bodies, odd unicode, huge numbers, unknown fields) and requires no server error and responses
that match the schema. A fixed number of examples, derandomised, so CI runs the same cases every time."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi import checks as openapi

# Every check that does not need a stateful scenario: server errors, response bodies, headers and status codes
# as documented, malformed input refused (not accepted), auth enforced. (Generated cases use documented
# methods only; test_method_not_allowed.py checks the 405s and their Allow.)
CHECKS = [not_a_server_error, openapi.response_schema_conformance, openapi.content_type_conformance,
          openapi.status_code_conformance, openapi.response_headers_conformance, openapi.negative_data_rejection,
          openapi.unsupported_method, openapi.allow_header_conformance, openapi.missing_required_header,
          openapi.ignored_auth]


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
