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

from pydantic import Field

from .report_figures import Evaluation, GateResult, Latency, ReportModel, Shortfall

REPORT_VERSION = 1
RunStatus = Literal["succeeded", "failed-gate", "failed", "cancelled"]


class StageRow(ReportModel):
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


class Final(ReportModel):
    stage_index: int | None
    artifact: str | None
    students: dict[str, str] | None = None  # student name -> artifact directory
    trial: str | None = None  # the search trial whose candidate is the artifact
    latency: Latency | None = Field(None, description="the artifact reloaded from disk, against the teacher")


class RunError(ReportModel):
    code: str
    message: str
    field: str | None = None
    stage_index: int | None = None


class StudentEntry(ReportModel):
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


class StudentScore(ReportModel):
    kind: str
    value: float | None
    retention: float | None
    gated: bool
    passed: bool | None


class Comparison(ReportModel):
    metric: str
    teacher: float | None
    required: float | None
    students: dict[str, StudentScore]


class Choice(ReportModel):
    models: int
    size_bytes: int | None
    batch1_p50_ms: float | None
    worst_retention: float | None
    passed: bool


class SearchPoint(ReportModel):
    depth: int
    sparsity: float
    quantization: str
    embeddings: str


class Trial(ReportModel):
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


class BestTrial(ReportModel):
    id: str
    point: SearchPoint
    objective: float
    size_bytes: int | None
    latency_ms: float
    worst_retention: float | None
    tasks: dict[str, float | None]


class BestEffort(ReportModel):
    id: str
    status: Literal["failed-gate"]
    point: SearchPoint
    objective: float
    shortfalls: list[Shortfall]
    worst_retention: float | None


class SearchSection(ReportModel):
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


class Report(ReportModel):
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
