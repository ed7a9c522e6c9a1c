"""The OpenAPI document is complete: every operation shows an example of each request body, each response with
content and each parameter; every error answer is documented as problem+json (never FastAPI's default
HTTPValidationError); every operation that reads the database documents the 503 an outage gives. A new endpoint
without its examples fails here (the last test proves the walk would notice)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Query

from app.api.main import create_app
from app.api.routing import api_router
from app.settings import Settings

PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "request_id"}


def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _has_example(spec: dict, holder: dict) -> bool:
    """An example on the media type or parameter itself, or on its (resolved) schema."""
    if holder.get("example") is not None or holder.get("examples"):
        return True
    schema = _resolve(spec, holder.get("schema", {}))
    return schema.get("example") is not None or bool(schema.get("examples"))


def gaps(spec: dict[str, Any]) -> list[str]:
    """Everything the document leaves out, one line each."""
    out = []
    if "HTTPValidationError" in json.dumps(spec):
        out.append("HTTPValidationError (FastAPI's default 422) appears in the document")
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            for kind, media in op.get("requestBody", {}).get("content", {}).items():
                if not _has_example(spec, media):
                    out.append(f"{where}: request body {kind} has no example")
            for param in op.get("parameters", []):
                if not _has_example(spec, param):
                    out.append(f"{where}: {param['in']} parameter {param['name']} has no example")
            responses = op["responses"]
            for status, response in responses.items():
                content = response.get("content", {})
                for kind, media in content.items():
                    if not _has_example(spec, media):
                        out.append(f"{where}: {status} {kind} has no example")
                if int(status) >= 400:
                    if set(content) != {"application/problem+json"}:
                        out.append(f"{where}: {status} is {sorted(content)}, not application/problem+json")
                        continue
                    schema = _resolve(spec, content["application/problem+json"]["schema"])
                    if not set(schema.get("properties", {})) >= PROBLEM_FIELDS:
                        out.append(f"{where}: {status} does not have the problem+json schema")
            if where != "GET /healthz" and "503" not in responses:
                out.append(f"{where}: the 503 of a database outage is not documented")
            if (op.get("parameters") or op.get("requestBody")) and "422" not in responses:
                out.append(f"{where}: takes input but documents no 422")
    return out


def test_every_operation_is_documented_with_examples_and_problem_json(tmp_path):
    spec = create_app(Settings(data_dir=tmp_path)).openapi()
    assert len(spec["paths"]) >= 15
    assert gaps(spec) == []
    jobs = spec["paths"]["/v1/jobs"]["post"]
    assert {"401", "413", "422", "503"} <= set(jobs["responses"])
    assert jobs["responses"]["503"]["headers"]["Retry-After"]
    # one helper: each status's example is that status's problem
    for ops in spec["paths"].values():
        for op in ops.values():
            for status, response in op["responses"].items():
                example = response.get("content", {}).get("application/problem+json", {}).get("example")
                if example is not None:
                    assert example["status"] == int(status) and example["type"].startswith("urn:distillery:problem:")


def test_the_walk_finds_an_endpoint_without_examples(tmp_path):
    app = create_app(Settings(data_dir=tmp_path))
    router = api_router(tags=["jobs"])

    @router.get("/undocumented/{thing_id}")
    def undocumented(thing_id: str, size: Annotated[int, Query()] = 1) -> dict:
        return {"thing": thing_id}

    app.include_router(router, prefix="/v1")
    found = gaps(app.openapi())
    where = "GET /v1/undocumented/{thing_id}"
    assert "HTTPValidationError (FastAPI's default 422) appears in the document" in found
    for gap in ("path parameter thing_id has no example", "query parameter size has no example",
                "200 application/json has no example", "422 is ['application/json'], not application/problem+json",
                "the 503 of a database outage is not documented"):
        assert f"{where}: {gap}" in found, found
