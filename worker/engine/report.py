"""The report: one typed, versioned model that the engine writes (report.json) and the worker, the API, the
client and the dashboard read. Its JSON Schema is in the OpenAPI document (GET /v1/jobs/{id}/report).

`ReportBuilder` is the one writer: every run mode (single_run.py, students.py, search_run.py) fills a builder
and saves it; nothing else composes a report. `load_report` reads any report this version of the engine
wrote. A field added later must be optional, so older files keep loading; REPORT_VERSION changes only when
an old file could no longer be read.

Free-form on purpose: a stage's `details` (each stage kind describes itself: stages/*.py) and the library
`versions`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

REPORT_VERSION = 1
RunStatus = Literal["succeeded", "failed-gate", "failed", "cancelled"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskResult(_Model):
    metric: str = Field(description="the task's primary metric")
    value: float | None
    teacher_value: float | None
    higher_is_better: bool
    retention: float | None = Field(description="value / teacher_value (inverted when lower is better)")
    metrics: dict[str, float | None] = Field(description="the primary metric and its companions")
    examples: int
    kind: str | None = Field(None, description="the eval set's kind (classification, retrieval, ...)")
    drop: float | None = Field(None, description="teacher_value - value (inverted when lower is better)")
    interval: list[float] | None = Field(None, description="bootstrap 95% interval of value over the examples")
    teacher_interval: list[float] | None = None
    drop_interval: list[float] | None = Field(None, description="paired bootstrap: same resamples as the teacher")
    retention_interval: list[float] | None = None
    intervals: dict[str, list[float]] | None = Field(None, description="every metric's bootstrap 95% interval")
    resamples: int | None = None


class BatchLatency(_Model):
    """One batch size's figures; the teacher_* and speedup fields when measured against the teacher."""

    batch: int
    p50_ms: float
    p95_ms: float
    throughput_per_s: float
    spread: float | None = Field(None, description="(max - min) / median of the per-window medians")
    jitter: float | None = Field(None, description="median over inputs of IQR / median of repeated calls")
    cpu_share: float | None = Field(None, description="CPU time / wall time of the timed calls")
    calls: int
    noisy: bool
    reasons: list[str]
    teacher_p50_ms: float | None = None
    teacher_p95_ms: float | None = None
    teacher_spread: float | None = None
    teacher_jitter: float | None = None
    speedup: float | None = None
    speedup_interval: list[float] | None = None


class Hardware(_Model):
    cpu_model: str | None
    matrix: list[str] = Field(description="matrix instructions: AVX512-VNNI, AMX-INT8, ...")
    logical_cpus: int | None
    gpu: str | None = None


class Latency(_Model):
    device: str
    batch1_p50_ms: float
    batch1_p95_ms: float
    throughput_batch: int
    throughput_per_s: float
    peak_memory_bytes: int | None = None
    peak_memory_kind: str | None = None
    weights_memory_bytes: int | None = None
    activation_peak_bytes: int | None = None
    threads: int | None = None
    runs: int
    # issue 13 (latency you can trust): optional, so older reports keep loading
    windows: int | None = Field(None, description="repeats of the interleaved teacher/candidate run")
    noise_threshold: float | None = None
    noisy: bool | None = Field(None, description="some batch size's spread or jitter exceeds the threshold")
    noisy_reasons: list[str] | None = None
    reference: str | None = Field(None, description="what the speed-ups compare against, measured interleaved")
    reference_device: str | None = None
    speedup: float | None = Field(None, description="batch 1: median over windows of teacher / candidate p50")
    speedup_interval: list[float] | None = Field(None, description="lowest and highest per-window ratio")
    batches: list[BatchLatency] | None = None
    hardware: Hardware | None = None


class Evaluation(_Model):
    tasks: dict[str, TaskResult]
    parameters: int
    nonzero_parameters: int
    sparsity: float
    latency: Latency
    size_bytes: int | None = None
    weights_bytes: int | None = None
    seconds: float


class Shortfall(_Model):
    task: str
    metric: str
    retention: float | None
    required: float
    short_by: float | None
    student: str | None = None  # in a multi-student report's top-level shortfalls
    rule: Literal["min_retention", "max_drop"] | None = None  # absent: min_retention (older reports)
    drop: float | None = None
    interval: list[float] | None = Field(None, description="bootstrap 95% interval of the gated figure")
    within_noise: bool | None = Field(None, description="the threshold lies inside the interval")


class GateCheck(_Model):
    """One rule applied to one task: what it compared, and whether the decision is within the noise."""

    task: str
    rule: Literal["min_retention", "max_drop"]
    metric: str
    threshold: float
    observed: float | None
    interval: list[float] | None = None
    passed: bool
    within_noise: bool | None = None


class GateResult(_Model):
    passed: bool
    shortfalls: list[Shortfall] = Field(default_factory=list)
    checks: list[GateCheck] | None = None
    within_noise: bool | None = Field(None, description="some decision's threshold lies inside its interval")


class StageRow(_Model):
    index: int
    kind: str
    recipe_sha256: str
    device: str
    duration_s: float
    details: dict[str, Any] = Field(description="what the stage did, as the stage kind describes it")
    evaluation: Evaluation
    gate: GateResult
    reload_max_abs_diff: float | None
    artifact: str | None
    status: Literal["passed", "failed-gate"] | None = None
    resumed: bool | None = None
    worker: dict[str, Any] | None = Field(None, description="the worker that ran it (service runs)")


class Final(_Model):
    stage_index: int | None
    artifact: str | None
    students: dict[str, str] | None = None  # student name -> artifact directory
    trial: str | None = None  # the search trial whose candidate is the artifact
    latency: Latency | None = Field(None, description="the artifact reloaded from disk, against the teacher")


class RunError(_Model):
    code: str
    message: str
    field: str | None = None
    stage_index: int | None = None


class StudentEntry(_Model):
    name: str
    kind: str
    tasks: list[str]
    status: RunStatus
    artifact: str | None
    final_stage_index: int | None
    shortfalls: list[Shortfall]
    task_weights: dict[str, float] | None
    evaluation: Evaluation | None
    stages: list[StageRow]


class StudentScore(_Model):
    kind: str
    value: float | None
    retention: float | None
    gated: bool
    passed: bool | None


class Comparison(_Model):
    metric: str
    teacher: float | None
    required: float | None
    students: dict[str, StudentScore]


class Choice(_Model):
    models: int
    size_bytes: int | None
    batch1_p50_ms: float | None
    worst_retention: float | None
    passed: bool


class SearchPoint(_Model):
    depth: int
    sparsity: float
    quantization: str
    embeddings: str


class Trial(_Model):
    id: str
    point: SearchPoint
    status: Literal["passed", "failed-gate"]
    objective: float
    size_bytes: int | None
    latency_ms: float
    worst_retention: float | None
    gate: GateResult
    evaluation: Evaluation
    reused: list[str]
    seconds: float
    reload_max_abs_diff: float | None = None
    order: int | None = Field(None, description="the order the search tried it in")
    predicted_objective: float | None = None
    worker: dict[str, Any] | None = None


class BestTrial(_Model):
    id: str
    point: SearchPoint
    objective: float
    size_bytes: int | None
    latency_ms: float
    worst_retention: float | None
    tasks: dict[str, float | None]


class BestEffort(_Model):
    id: str
    status: Literal["failed-gate"]
    point: SearchPoint
    objective: float
    shortfalls: list[Shortfall]
    worst_retention: float | None


class SearchSection(_Model):
    objective: dict[str, Any]
    prune: str
    space: dict[str, Any]
    grid_size: int
    trials_run: int
    stopped_by: str
    probe_s: float
    passed: bool
    best: BestTrial | None
    best_effort: BestEffort | None
    frontier: dict[str, list[str]]
    trials: list[Trial]


class Report(_Model):
    """report.json: what the run did, task by task, stage by stage."""

    report_version: Literal[1] = REPORT_VERSION
    task: str
    device: str
    recipe_sha256: str
    versions: dict[str, str | None]
    mode: str | None = Field(None, description="the run mode: single, students or search")
    stages: list[StageRow] = Field(default_factory=list)
    teacher: Evaluation | None = None
    strategy: str | None = None
    students: list[StudentEntry] | None = None
    comparison: dict[str, Comparison] | None = None
    choices: dict[str, Choice] | None = None
    search: SearchSection | None = None
    status: RunStatus | None = None  # None while running
    final: Final | None = None
    shortfalls: list[Shortfall] = Field(default_factory=list)
    error: RunError | None = None
    duration_s: float | None = None

    def as_json(self) -> dict:
        """As report.json holds it: the fields the run set (a null it set stays; an absent section stays out)."""
        return self.model_dump(mode="json", exclude_unset=True)


def load_report(source: Path | dict) -> Report:
    """A report file (or its parsed JSON) as the typed model."""
    data = json.loads(Path(source).read_text(encoding="utf-8")) if not isinstance(source, dict) else source
    return Report.model_validate(data)


def save_report(report: Report, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(report.as_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class ReportBuilder:
    """Builds a run's report: the header first, then rows and sections as the run goes, then `finish`. Every
    step is validated against Report, so a misspelt or mistyped field fails where it is written."""

    def __init__(self, *, task: str, device: str, recipe_sha256: str, versions: dict, mode: str) -> None:
        self.fields: dict[str, Any] = {"report_version": REPORT_VERSION, "task": task, "device": device,
                                       "recipe_sha256": recipe_sha256, "versions": versions, "mode": mode,
                                       "stages": []}
        self.started = time.time()
        self.report = Report.model_validate(self.fields)

    def _set(self, **fields: Any) -> None:
        self.report = Report.model_validate({**self.fields, **fields})
        self.fields.update(fields)

    def teacher(self, evaluation: dict) -> None:
        self._set(teacher=evaluation)

    def stage(self, row: dict) -> None:
        self._set(stages=[*self.fields["stages"], row])

    def section(self, **fields: Any) -> None:
        """A mode's own sections (students, comparison, choices, strategy, search)."""
        self._set(**fields)

    def finish(self, status: str, final: dict, shortfalls: list[dict] | None = None,
               error: dict | None = None) -> dict:
        """The finished report, as JSON data (what report.json holds)."""
        self._set(status=status, final=final, shortfalls=shortfalls or [],
                  duration_s=round(time.time() - self.started, 3), **({"error": error} if error else {}))
        return self.as_json()

    def as_json(self) -> dict:
        return self.report.as_json()

    def save(self, path: Path) -> None:
        save_report(self.report, path)
