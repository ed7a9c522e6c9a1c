"""Request and response models of /v1/jobs, with OpenAPI examples.

The request is the engine's recipe with two differences: the teacher is a registered model id (or a hub
or bundled reference), and data names dataset ids, not paths. Everything else (stages, gates, evaluate,
seed, max_length, device) is the engine's own pydantic models, so the API and the engine cannot drift.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from worker.engine.fields import MAX_ITEMS, Strict
from worker.engine.recipe import BundledRef, HubRef, Recipe

# ---- the request ------------------------------------------------------------------------------


class RegisteredTeacher(Strict):
    model: str = Field(min_length=1, max_length=40, description="id of a model registered with POST /v1/models",
                       examples=["mdl_01jd8x3k2v9q7w4e5r6t7y8u9i"])


class UnregisteredRef(BaseModel):
    """Catches local and archive references (and junk) to say, at `teacher.source`, what to do instead.
    Hidden from the schema: it only exists to produce that error."""

    model_config = ConfigDict(extra="allow")
    source: str

    @field_validator("source")
    @classmethod
    def _refuse(cls, value: str) -> str:
        if value in ("local", "archive"):
            raise ValueError(f"a {value} model must be registered first (POST /v1/models), then referenced "
                             'as {"model": "mdl_..."}')
        raise ValueError("source must be hf or bundled; or reference a registered model as {\"model\": \"mdl_...\"}")


def _teacher_tag(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, dict):
        if "model" in value:
            return "registered"
        if value.get("source") in ("hf", "bundled"):
            return value["source"]
    return "unregistered"


Teacher = Annotated[
    Annotated[RegisteredTeacher, Tag("registered")]
    | Annotated[HubRef, Tag("hf")]
    | Annotated[BundledRef, Tag("bundled")]
    | SkipJsonSchema[Annotated[UnregisteredRef, Tag("unregistered")]],
    Discriminator(_teacher_tag),
]

class JobData(Strict):
    train: str | None = Field(None, max_length=40, description="dataset id: transfer or calibration text",
                              examples=["ds_01jd8x3k2v9q7w4e5r6t7y8u9i"])
    eval: dict[str, Annotated[str, Field(max_length=40)]] = Field(
        default_factory=dict, max_length=MAX_ITEMS,
        description="eval task name -> dataset id; quality is reported per task",
        examples=[{"topics": "ds_01jd8x4a0b1c2d3e4f5g6h7j8k", "sts": "ds_01jd8x4m9n8p7q6r5s4t3v2w1x"}])


JOB_EXAMPLE = {
    "teacher": {"model": "mdl_01jd8x3k2v9q7w4e5r6t7y8u9i"},
    "task": "feature-extraction",
    "data": {"train": "ds_01jd8x3k2v9q7w4e5r6t7y8u9i",
             "eval": {"topics": "ds_01jd8x4a0b1c2d3e4f5g6h7j8k", "sts": "ds_01jd8x4m9n8p7q6r5s4t3v2w1x"}},
    "stages": [
        {"kind": "distill", "student": {"layers": [0, 2, 4]}, "epochs": 3, "lr": 1.0e-4},
        {"kind": "prune", "method": "magnitude", "sparsity": 0.3, "scope": "global"},
        {"kind": "quantize", "method": "int8-dynamic"},
    ],
    "gates": {"min_retention": 0.97, "per_task": {"topics": 0.99}},
    "seed": 0,
}


class JobCreate(Recipe):
    """A compression job: the engine recipe, with registered ids in place of paths. Validated at submit
    time by the stages' dry run, so a recipe that cannot run is a 422 naming the field."""

    model_config = ConfigDict(json_schema_extra={"examples": [JOB_EXAMPLE]})
    teacher: Teacher  # type: ignore[assignment]  # ids or hub/bundled refs, not the engine's paths
    data: JobData = Field(default_factory=JobData)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _gates_name_eval_tasks(self) -> JobCreate:
        # Replaces the engine's check, whose error has no field: the service checks it naming the gate.
        return self

    def unknown_gates(self) -> list[str]:
        """Names in gates.per_task that are not eval tasks in data.eval."""
        return sorted(set(self.gates.per_task) - set(self.data.eval) - set(self.tasks))


# ---- responses --------------------------------------------------------------------------------


def as_utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every timestamp here is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class Progress(BaseModel):
    model_config = ConfigDict(extra="allow")
    stage: str | None = Field(None, examples=["0:distill"])
    step: int | None = None
    total: int | None = None
    loss: float | None = None


class StageOut(BaseModel):
    index: int
    kind: str = Field(examples=["distill"])
    status: str = Field(description="pending | running | passed | failed-gate", examples=["passed"])
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = Field(None, description="set once the stage has finished")


class Failure(BaseModel):
    code: str | None = Field(None, examples=["invalid_data"])
    message: str | None = None


class JobLinks(BaseModel):
    self: str
    events: str
    report: str
    artifacts: str
    cancel: str


JOB_OUT_EXAMPLE = {
    "id": "job_01jd8y0a1b2c3d4e5f6g7h8j9k", "status": "running", "queue": "cpu",
    "created_at": "2025-11-29T10:00:00Z", "started_at": "2025-11-29T10:00:02Z", "finished_at": None,
    "current_stage": "0:distill", "progress": {"stage": "0:distill", "step": 120, "total": 300, "loss": 0.042},
    "attempts": 1,
    "stages": [
        {"index": 0, "kind": "distill", "status": "running", "started_at": "2025-11-29T10:00:05Z",
         "finished_at": None, "duration_s": None},
        {"index": 1, "kind": "prune", "status": "pending", "started_at": None, "finished_at": None,
         "duration_s": None},
    ],
    "failure": None, "request": JOB_EXAMPLE,
    "links": {"self": "/v1/jobs/job_01jd8y0a1b2c3d4e5f6g7h8j9k",
              "events": "/v1/jobs/job_01jd8y0a1b2c3d4e5f6g7h8j9k/events",
              "report": "/v1/jobs/job_01jd8y0a1b2c3d4e5f6g7h8j9k/report",
              "artifacts": "/v1/jobs/job_01jd8y0a1b2c3d4e5f6g7h8j9k/artifacts",
              "cancel": "/v1/jobs/job_01jd8y0a1b2c3d4e5f6g7h8j9k/cancel"},
}


class JobOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [JOB_OUT_EXAMPLE]})
    id: str
    status: str = Field(description="queued | running | cancelling | succeeded | failed | cancelled")
    queue: str = Field(description="cpu or gpu: the workers that run it")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    current_stage: str | None = None
    progress: Progress | None = None
    attempts: int
    stages: list[StageOut]
    failure: Failure | None = None
    request: dict = Field(description="the body as submitted")
    links: JobLinks

    @classmethod
    def from_row(cls, job: Any) -> JobOut:
        base = f"/v1/jobs/{job.id}"
        stages = []
        for s in job.stages:
            start, end = as_utc(s.started_at), as_utc(s.finished_at)
            duration = round((end - start).total_seconds(), 3) if start and end else None
            stages.append(StageOut(index=s.index, kind=s.kind, status=s.status, started_at=start,
                                   finished_at=end, duration_s=duration))
        failure = None
        if job.failure_code or job.failure_message:
            failure = Failure(code=job.failure_code, message=job.failure_message)
        return cls(
            id=job.id, status=job.status, queue=job.queue, created_at=as_utc(job.created_at),
            started_at=as_utc(job.started_at), finished_at=as_utc(job.finished_at),
            current_stage=job.current_stage, progress=Progress(**job.progress) if job.progress else None,
            attempts=job.attempts, stages=stages, failure=failure, request=job.request,
            links=JobLinks(self=base, events=f"{base}/events", report=f"{base}/report",
                           artifacts=f"{base}/artifacts", cancel=f"{base}/cancel"),
        )


class JobPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"data": [JOB_OUT_EXAMPLE], "has_more": True, "next_cursor": "am9iXzAxamQ4eTBhMWIyYzNkNGU1ZjZnN2g4ajlr"}]})
    data: list[JobOut]
    has_more: bool
    next_cursor: str | None = Field(None, description="pass as `after` for the next (older) page")


EVENT_EXAMPLE = {"seq": 42, "time": "2025-11-29T10:01:00Z", "stage": "0:distill", "message": "training",
                 "step": 120, "total": 300, "loss": 0.042}


class EventOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EVENT_EXAMPLE]})
    seq: int = Field(description="1, 2, 3... per job; the SSE id and the page cursor")
    time: datetime
    stage: str
    message: str
    step: int | None = None
    total: int | None = None
    loss: float | None = None

    @classmethod
    def from_row(cls, event: Any) -> EventOut:
        return cls(seq=event.seq, time=as_utc(event.created_at), stage=event.stage, message=event.message,
                   step=event.step, total=event.total, loss=event.loss)


class EventPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"data": [EVENT_EXAMPLE], "has_more": False,
                                                              "next_cursor": 42}]})
    data: list[EventOut]
    has_more: bool
    next_cursor: int = Field(description="the seq to pass as `after` next: the last seq on this page, or "
                                         "`after` itself when the page is empty (poll again later)")


PROBLEM_EXAMPLE = {
    "type": "urn:distillery:problem:validation_error", "title": "The request cannot be processed", "status": 422,
    "detail": "stages.0.student.layers: layer 7 does not exist: the model has 4 layers (0..3)",
    "instance": "/v1/jobs", "request_id": "5f0c6b1e9d2a4c37a8e1f0b2c3d4e5f6",
    "errors": [{"field": "stages.0.student.layers", "message": "layer 7 does not exist: the model has 4 layers "
                "(0..3)", "code": "stage_failed"}],
}
