"""What OpenAPI shows for every route: the problem+json error answers (one helper, an example for each status)
and the path parameters with examples. tests/app/test_openapi.py holds every operation to this."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from .schemas_assets import inline_schema

REQUEST_ID = "5f0c1b7e9a2d4c3b8e6f1a0d2c4b6e8f"
JOB_ID = "job_01jd8y0a1b2c3d4e5f6g7h8j9k"


class FieldError(BaseModel):
    field: str
    message: str
    code: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details, as every error from this API is sent (application/problem+json)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "type": "urn:distillery:problem:not_found", "title": "Not found", "status": 404,
        "detail": f"no job {JOB_ID}", "instance": f"/v1/jobs/{JOB_ID}", "request_id": REQUEST_ID}]})
    type: str = Field(description="urn:distillery:problem:<code>; the code says what went wrong")
    title: str
    status: int
    detail: str
    instance: str = Field(description="the request's path")
    request_id: str | None = Field(description="also in the X-Request-ID header; quote it when reporting")
    errors: list[FieldError] | None = Field(None, description="422: each field at fault (dotted path) and why")


# status -> (description, code, title, an example detail)
_ANSWERS: dict[int, tuple[str, str, str, str]] = {
    400: ("malformed request (for example a cursor this API did not issue)", "bad_request", "Bad request",
          "the 'after' cursor is not one this API issued"),
    401: ("missing or invalid API key", "unauthorized", "Missing or invalid API key",
          "send the API key as 'Authorization: Bearer dk_...'"),
    403: ("refused to this client: /metrics without DISTILLERY_METRICS_TOKEN answers only its own host",
          "forbidden", "Forbidden", "/metrics is served to clients on this host only; set DISTILLERY_METRICS_TOKEN "
          "to scrape it from elsewhere with that bearer token"),
    404: ("no such object for this API key's owner", "not_found", "Not found", f"no job {JOB_ID}"),
    409: ("conflict with the job's state", "job_finished", "Conflict",
          f"job {JOB_ID} has already finished (succeeded); only queued or running jobs can be cancelled"),
    413: ("the body is larger than its limit", "payload_too_large", "Payload too large",
          "the upload (25769803776 bytes) is larger than the limit of 21474836480 bytes"),
    415: ("unsupported Content-Type", "http_error", "send the body as multipart/form-data",
          "send the body as multipart/form-data"),
    416: ("the Range cannot be satisfied; Content-Range gives the size", "range_not_satisfiable",
          "Range not satisfiable", "the range starts past the end (23112704 bytes)"),
    422: ("the request or the uploaded content is invalid; `errors` names the field", "validation_error",
          "The request cannot be processed", "limit: Input should be less than or equal to 200"),
    429: ("this API key's owner has as many slow requests in progress as it may; retry after Retry-After seconds",
          "too_many_requests", "Too many requests",
          "this API key's owner already has 4 slow requests (job submissions, uploads, model registrations) in "
          "progress, the most allowed at once; retry after 5 s"),
    507: ("the server's disk would keep less free space than its reserve; retry after Retry-After seconds",
          "insufficient_storage", "Insufficient storage", "the server's disk has too little free space for this "
          "upload (it keeps 1073741824 bytes free); try again later"),
    503: ("the database cannot be reached or is saturated; retry after Retry-After seconds", "database_unavailable",
          "Service unavailable", "the database cannot be reached; retry shortly"),
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def problem_example(status: int, *, instance: str = "/v1/...", **fields: Any) -> dict[str, Any]:
    _, code, title, detail = _ANSWERS[status]
    example = {"type": f"urn:distillery:problem:{code}", "title": title, "status": status, "detail": detail,
               "instance": instance, "request_id": REQUEST_ID}
    if status == 422:
        example["errors"] = [{"field": "limit", "message": "Input should be less than or equal to 200"}]
    return {**example, **fields}


def problems(*codes: int, examples: dict[int, dict[str, Any]] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses, all application/problem+json with an example.
    503 is always added: every route that uses this reads the database, and an outage answers 503."""
    schema = inline_schema(Problem)
    out: dict[int | str, dict[str, Any]] = {}
    for code in (*codes, 503):
        example = (examples or {}).get(code) or problem_example(code)
        out[code] = {"description": _ANSWERS[code][0],
                     "content": {"application/problem+json": {"schema": schema, "example": example}}}
        if code in (429, 503, 507):
            out[code]["headers"] = _RETRY_AFTER
    return out


JobId = Annotated[str, Path(description="a job's id, as POST /v1/jobs returned it", examples=[JOB_ID])]
ModelId = Annotated[str, Path(description="a model's id", examples=["mdl_01jh8z6k2v9qf3w7t0c5x4y1ab"])]
DatasetId = Annotated[str, Path(description="a dataset's id", examples=["ds_01jh8z6k2v9qf3w7t0c5x4y1ab"])]
ArtifactId = Annotated[str, Path(description="an artifact's id", examples=["art_01jh8z6k2v9qf3w7t0c5x4y1ab"])]
