"""The figures a report is made of: each task's result, latency, an evaluation, and the gate's verdict.
(The report itself, its sections and its builder: report.py.)"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ReportModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskResult(ReportModel):
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


class BatchLatency(ReportModel):
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


class Hardware(ReportModel):
    cpu_model: str | None
    matrix: list[str] = Field(description="matrix instructions: AVX512-VNNI, AMX-INT8, ...")
    logical_cpus: int | None
    gpu: str | None = None


class Latency(ReportModel):
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


class Evaluation(ReportModel):
    tasks: dict[str, TaskResult]
    parameters: int
    nonzero_parameters: int
    sparsity: float
    latency: Latency
    size_bytes: int | None = None
    weights_bytes: int | None = None
    seconds: float


class Shortfall(ReportModel):
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


class GateCheck(ReportModel):
    """One rule applied to one task: what it compared, and whether the decision is within the noise."""

    task: str
    rule: Literal["min_retention", "max_drop"]
    metric: str
    threshold: float
    observed: float | None
    interval: list[float] | None = None
    passed: bool
    within_noise: bool | None = None


class GateResult(ReportModel):
    passed: bool
    shortfalls: list[Shortfall] = Field(default_factory=list)
    checks: list[GateCheck] | None = None
    within_noise: bool | None = Field(None, description="some decision's threshold lies inside its interval")
