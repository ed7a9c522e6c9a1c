"""How candidates are judged and measured: the gates (min_retention, max_drop, per task) and the evaluate
settings (quality batches, latency windows, batch sizes, threads). Part of the recipe (recipe.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .fields import MAX_EXAMPLES, MAX_ITEMS, Strict


class TaskGate(Strict):
    """One task's own gate; a rule it leaves out falls back to the global one."""

    min_retention: float | None = Field(None, gt=0, le=2)
    max_drop: float | None = Field(None, ge=0, description="most of the metric's own points it may lose")


class Gates(Strict):
    min_retention: float | None = Field(None, gt=0, le=2, description="value / teacher's value, at least")
    max_drop: float | None = Field(None, ge=0, description="teacher's value minus the candidate's (inverted when "
                                   "lower is better), in the metric's own points: 0.01 = one accuracy point")
    # a number is that task's min_retention (the older form)
    per_task: dict[str, Annotated[float, Field(gt=0, le=2)] | TaskGate] = Field(default_factory=dict,
                                                                               max_length=MAX_ITEMS)

    def required(self, task: str) -> float | None:
        """The task's min_retention."""
        own = self.per_task.get(task)
        if isinstance(own, TaskGate):
            return own.min_retention if own.min_retention is not None else self.min_retention
        return own if own is not None else self.min_retention

    def allowed_drop(self, task: str) -> float | None:
        """The task's max_drop."""
        own = self.per_task.get(task)
        if isinstance(own, TaskGate) and own.max_drop is not None:
            return own.max_drop
        return self.max_drop


class EvaluateConfig(Strict):
    """How candidates are measured. As a stage, it re-measures the current candidate with these settings."""

    kind: Literal["evaluate"] = "evaluate"
    latency_runs: int = Field(20, ge=1, le=10_000)
    warmup_runs: int = Field(3, ge=0, le=1000)
    throughput_batch: int = Field(32, ge=1, le=4096)
    batch_sizes: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [1, 32], min_length=1, max_length=16,  # each is timed: a few, not thousands
        description="batch sizes latency is measured at (batch 1 and throughput_batch always are)")
    windows: int = Field(5, ge=1, le=100, description="latency: repeats of the interleaved teacher/candidate run")
    # One thread by default: the figure is comparable across machines with different core counts, a neighbour
    # that takes a core cannot stall a multi-threaded op, and the int8/fp32 ratio is what compression changes.
    threads: int | None = Field(1, ge=1, le=1024, description="torch threads while timing; null: leave as is")
    noise_threshold: float = Field(0.10, gt=0, le=10, description="latency: spread above this flags it noisy")
    batch_size: int = Field(32, ge=1, le=4096, description="batch size for quality metrics")
    max_examples: int | None = Field(None, ge=1, le=MAX_EXAMPLES, description="cap on examples per eval task")
