"""Evaluation of a candidate against the teacher: per eval task, the task's metric and the retention,
plus size on disk, parameter and non-zero counts, latency and peak memory."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from .candidate import Candidate
from .context import RunContext
from .data import Dataset
from .gates import check_gates
from .latency import Settings, workload
from .measure import dir_size, latency
from .recipe import EvaluateConfig
from .task_figures import TaskFigures, retention_of
from .tasks.base import TaskScore

__all__ = ["Evaluator", "cap", "check_gates", "retention"]


def cap(dataset: Dataset, max_examples: int | None) -> Dataset:
    if max_examples is None or len(dataset) <= max_examples:
        return dataset
    return dataclasses.replace(dataset, rows=dataset.rows[:max_examples])


def retention(score: TaskScore, teacher: TaskScore) -> float | None:
    """Quality kept, as a fraction of the teacher's: value/teacher, or teacher/value when lower is better."""
    return retention_of(score.value, teacher.value, score.higher_is_better)


class Evaluator:
    def __init__(self, datasets: dict[str, Dataset], cfg: EvaluateConfig, max_length: int,
                 sample_texts: list[str], ctx: RunContext, seed: int = 0) -> None:
        self.datasets = {name: cap(ds, cfg.max_examples) for name, ds in datasets.items()}
        self.cfg, self.max_length, self.ctx, self.seed = cfg, max_length, ctx, seed
        self.sample_texts = sample_texts or ["Distillery measures how fast a compressed model answers."]
        self.references: dict[str, dict] = {}
        self.teacher_scores: dict[str, TaskScore] = {}
        self.figures: dict[str, TaskFigures] = {}
        self.teacher: Candidate | None = None

    def set_teacher(self, teacher: Candidate) -> None:
        self.teacher = teacher  # every candidate's latency is measured interleaved with it
        for name, ds in self.datasets.items():
            out = teacher.task.eval_outputs(teacher.model, teacher.tokenizer, ds, self.cfg.batch_size,
                                            self.max_length, teacher.device)
            # what every candidate's scoring shares: a seeded split, the probe trained on the teacher
            ref = teacher.task.prepare_reference(out, ds, self.seed)
            self.references[name] = ref
            self.teacher_scores[name] = teacher.task.score(ref, ref, ds)
            self.figures[name] = TaskFigures(self.teacher_scores[name], ds.kind, len(ds), self.seed)

    def workload(self, candidate: Candidate, cfg: EvaluateConfig) -> dict:
        """The inputs latency is timed on, per batch size: batch 1, the recipe's sizes, the throughput batch."""
        sizes = [1, *cfg.batch_sizes, cfg.throughput_batch]
        return workload(candidate.tokenizer, self.sample_texts, self.max_length, sizes)

    def latency(self, candidate: Candidate, cfg: EvaluateConfig | None = None) -> dict:
        """The candidate's latency, interleaved with the teacher's on the same texts (alone for the teacher)."""
        cfg = cfg or self.cfg
        ref = None if self.teacher is None or candidate is self.teacher else \
            (self.teacher, self.workload(self.teacher, cfg))
        return latency(candidate, self.workload(candidate, cfg), Settings.from_config(cfg), cfg.throughput_batch, ref)

    def quality(self, candidate: Candidate, label: str, cfg: EvaluateConfig | None = None) -> dict[str, dict]:
        """Each eval task's row: the metric, the teacher's, drop, retention and their intervals."""
        cfg = cfg or self.cfg
        tasks: dict[str, dict] = {}
        for name, ds in self.datasets.items():
            self.ctx.check_cancel()
            self.ctx.progress(label, f"evaluating {name}")
            out = candidate.task.eval_outputs(candidate.model, candidate.tokenizer, ds, cfg.batch_size,
                                              self.max_length, candidate.device)
            tasks[name] = self.figures[name].row(candidate.task.score(out, self.references[name], ds))
        return tasks

    def evaluate(self, candidate: Candidate, label: str, artifact_dir: Path | None,
                 cfg: EvaluateConfig | None = None) -> dict:
        cfg = cfg or self.cfg
        start = time.perf_counter()
        tasks = self.quality(candidate, label, cfg)
        self.ctx.progress(label, "measuring latency")
        params, nonzero = candidate.parameter_counts()
        result = {
            "tasks": tasks,
            "parameters": params,
            "nonzero_parameters": nonzero,
            "sparsity": round(1 - nonzero / params, 6) if params else 0.0,
            "latency": self.latency(candidate, cfg),
        }
        if artifact_dir is not None:
            result.update(dir_size(artifact_dir))
        result["seconds"] = round(time.perf_counter() - start, 3)
        return result
