"""/v1/jobs routes: submit, list, read, cancel, report. Events are in events.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Header, Query, Response

from worker.engine.report import Report, load_report

from ..errors import Unprocessable
from ..repositories import jobs as repo
from ..services import jobs as service
from .deps import AppSettings, Db, Owner
from .docs import JOB_ID, JobId, problem_example, problems
from .limits import SLOW
from .pagination import After, Limit, decode_cursor, encode_cursor
from .routing import api_router
from .schemas_jobs import PROBLEM_EXAMPLE, JobCreate, JobOut, JobPage

# A recipe is a few kilobytes (a search grid, a dozen tasks): far below this. The body is counted as it streams
# in, and refused with 413 as soon as it passes the limit (at once when Content-Length says so).
MAX_JOB_BYTES = 256 * 1024
router = api_router(tags=["jobs"], max_body=MAX_JOB_BYTES)
NOT_FINISHED = problem_example(409, type="urn:distillery:problem:job_not_finished",
                               instance=f"/v1/jobs/{JOB_ID}/report",
                               detail=f"job {JOB_ID} has not finished (running); the report is written at the end")


@router.post(
    "/jobs", status_code=201, response_model=JobOut, summary="Submit a compression job",
    description="Validates the recipe with the stages' dry run (datasets and the model's config are read, no "
    "weights), then queues the job. With `Idempotency-Key`, the same key and body return the same job (200); "
    "the same key with another body is a 422. A key lives 24 hours; after that it makes a new job. A body over "
    f"{MAX_JOB_BYTES // 1024} KiB is refused with 413. A hub teacher not in the service's cache has its config.json "
    "fetched within DISTILLERY_HUB_TIMEOUT_SECONDS; a hub that cannot be reached is a 503 (`hub_unavailable`, "
    "naming `teacher.id`) with Retry-After. A submission is a slow request: past an owner's limit of them at once, "
    "429 with Retry-After.",
    dependencies=[SLOW],
    responses={
        200: {"description": "an idempotent replay: the job the same key and body created before",
              "model": JobOut},
        201: {"description": "queued; `Location` is the job's URL",
              "headers": {"Location": {"schema": {"type": "string"}, "description": "/v1/jobs/{id}"}}},
        **problems(401, 413, 422, 429, examples={422: PROBLEM_EXAMPLE, 413: problem_example(
            413, instance="/v1/jobs", detail=f"a job's body is limited to {MAX_JOB_BYTES} bytes")}),
    },
)
def submit_job(body: JobCreate, response: Response, owner: Owner, db: Db, settings: AppSettings,
               idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200,
                                                             description="retry-safe key, live 24 hours",
                                                             examples=["minilm-nightly-2025-11-29"])] = None,
               ) -> JobOut:
    job, created = service.submit(db, settings, owner, body, idempotency_key)
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.from_row(job)


def _statuses(raw: list[str] | None) -> list[str]:
    wanted = [s.strip() for item in raw or [] for s in item.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(repo.STATES))
    if unknown:
        raise Unprocessable(f"status: unknown state(s) {', '.join(unknown)}",
                            errors=[{"field": "status", "message": f"must be among {', '.join(repo.STATES)}"}])
    return wanted


def _utc(value: datetime | None) -> datetime | None:
    # A time without an offset is taken as UTC, the zone every stored timestamp is in.
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get("/jobs", response_model=JobPage, summary="List jobs, newest first",
            description="Cursor pagination, newest first: pass `next_cursor` as `after` for older jobs. "
            "`status` may repeat or be a comma list. `created_after` is inclusive, `created_before` exclusive "
            "(ISO 8601; without an offset, UTC).",
            responses=problems(400, 401, 422))
def list_jobs(owner: Owner, db: Db, after: After = None, limit: Limit = 50,
              status: Annotated[list[str] | None, Query(description="e.g. status=queued,running",
                                                        examples=["running,queued"])] = None,
              created_after: Annotated[datetime | None, Query(examples=["2025-11-29T00:00:00Z"])] = None,
              created_before: Annotated[datetime | None, Query(examples=["2025-11-30T00:00:00Z"])] = None,
              ) -> JobPage:
    rows = repo.list_jobs(db, owner, before_id=decode_cursor(after), limit=limit + 1, statuses=_statuses(status),
                          created_after=_utc(created_after), created_before=_utc(created_before))
    has_more = len(rows) > limit
    rows = rows[:limit]
    return JobPage(data=[JobOut.from_row(j) for j in rows], has_more=has_more,
                   next_cursor=encode_cursor(rows[-1].id) if has_more else None)


@router.get("/jobs/{job_id}", response_model=JobOut, summary="A job: status, stages, progress, failure",
            responses=problems(401, 404, 422))
def get_job(job_id: JobId, owner: Owner, db: Db) -> JobOut:
    return JobOut.from_row(service.get_job(db, owner, job_id))


@router.post("/jobs/{job_id}/cancel", status_code=202, response_model=JobOut, summary="Cancel a job",
             description="A queued job is cancelled at once and never starts. A running job becomes "
             "`cancelling` and stops at its next step, ending `cancelled`. Cancelling again is accepted. A job "
             "that has finished (succeeded, failed, cancelled) is a 409.",
             responses=problems(401, 404, 409, 422))
def cancel_job(job_id: JobId, owner: Owner, db: Db) -> JobOut:
    return JobOut.from_row(service.cancel(db, owner, job_id))


@router.get("/jobs/{job_id}/report", summary="The engine's report: per stage, per task metrics",
            description="Available once the job has finished. Before that: 409 (`job_not_finished`). A job that "
            "ended without one (cancelled or failed before evaluating): 404. Its schema is the engine's typed "
            "report (worker/engine/report.py), versioned by `report_version`.",
            response_model=Report, response_model_exclude_unset=True,
            responses={200: {"description": "the engine's report.json", "content": {"application/json": {
                "example": {"report_version": 1, "task": "feature-extraction", "status": "succeeded",
                            "teacher": {"tasks": {"sts": {"metrics": {"spearman": 0.82}}}},
                            "stages": [{"index": 0, "kind": "distill", "status": "passed",
                                        "gate": {"passed": True, "shortfalls": []}}],
                            "final": {"stage_index": 0, "artifact": "artifact"}}}}},
                       **problems(401, 404, 409, 422, examples={409: NOT_FINISHED})})
def get_report(job_id: JobId, owner: Owner, db: Db) -> Report:
    return load_report(service.report(db, owner, job_id))
