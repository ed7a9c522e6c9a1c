"""Evaluation of a candidate against the teacher: per eval task, the task's metric and the retention,
plus size on disk, parameter and non-zero counts, latency and peak memory."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from .candidate import Candidate
from .context import RunContext
from .data import Dataset
from .measure import dir_size, latency
from .recipe import EvaluateConfig, Gates
from .tasks.base import TaskScore


def cap(dataset: Dataset, max_examples: int | None) -> Dataset:
    if max_examples is None or len(dataset) <= max_examples:
        return dataset
    return dataclasses.replace(dataset, rows=dataset.rows[:max_examples])


def retention(score: TaskScore, teacher: TaskScore) -> float | None:
    """Quality kept, as a fraction of the teacher's: value/teacher, or teacher/value when lower is better."""
    value, ref = score.value, teacher.value
    if score.higher_is_better:
        return value / ref if ref > 1e-12 else None
    return ref / value if value > 1e-12 else None


def check_gates(tasks: dict[str, dict], gates: Gates) -> dict:
    shortfalls = []
    for name, row in tasks.items():
        required = gates.required(name)
        if required is None:
            continue
        kept = row["retention"]
        if kept is None or kept < required:
            shortfalls.append({
                "task": name, "metric": row["metric"], "retention": kept, "required": required,
                "short_by": None if kept is None else round(required - kept, 6),
            })
    return {"passed": not shortfalls, "shortfalls": shortfalls}


class Evaluator:
    def __init__(self, datasets: dict[str, Dataset], cfg: EvaluateConfig, max_length: int,
                 sample_texts: list[str], ctx: RunContext) -> None:
        self.datasets = {name: cap(ds, cfg.max_examples) for name, ds in datasets.items()}
        self.cfg, self.max_length, self.ctx = cfg, max_length, ctx
        self.sample_texts = sample_texts or ["Distillery measures how fast a compressed model answers."]
        self.references: dict[str, dict[str, torch.Tensor]] = {}
        self.teacher_scores: dict[str, TaskScore] = {}

    def set_teacher(self, teacher: Candidate) -> None:
        for name, ds in self.datasets.items():
            out = teacher.task.eval_outputs(teacher.model, teacher.tokenizer, ds, self.cfg.batch_size,
                                            self.max_length, teacher.device)
            self.references[name] = out
            self.teacher_scores[name] = teacher.task.score(out, out, ds)

    def _latency_inputs(self, candidate: Candidate, cfg: EvaluateConfig):
        tok = candidate.tokenizer
        singles = [dict(tok([t], truncation=True, max_length=self.max_length, return_tensors="pt"))
                   for t in self.sample_texts[:16]]
        texts = [self.sample_texts[i % len(self.sample_texts)] for i in range(cfg.throughput_batch)]
        batch = dict(tok(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"))
        keep = ("input_ids", "attention_mask")
        return [{k: s[k] for k in keep} for s in singles], {k: batch[k] for k in keep}

    def evaluate(self, candidate: Candidate, label: str, artifact_dir: Path | None,
                 cfg: EvaluateConfig | None = None) -> dict:
        cfg = cfg or self.cfg
        start = time.perf_counter()
        task = candidate.task
        tasks: dict[str, dict] = {}
        for name, ds in self.datasets.items():
            self.ctx.check_cancel()
            self.ctx.progress(label, f"evaluating {name}")
            out = task.eval_outputs(candidate.model, candidate.tokenizer, ds, cfg.batch_size, self.max_length,
                                    candidate.device)
            score = task.score(out, self.references[name], ds)
            teacher = self.teacher_scores[name]
            tasks[name] = {
                "metric": score.primary,
                "value": score.value,
                "teacher_value": teacher.value,
                "higher_is_better": score.higher_is_better,
                "retention": retention(score, teacher),
                "metrics": score.metrics,
                "examples": len(ds),
            }
        self.ctx.progress(label, "measuring latency")
        singles, batch = self._latency_inputs(candidate, cfg)
        params, nonzero = candidate.parameter_counts()
        result = {
            "tasks": tasks,
            "parameters": params,
            "nonzero_parameters": nonzero,
            "sparsity": round(1 - nonzero / params, 6) if params else 0.0,
            "latency": latency(candidate, singles, batch, cfg.latency_runs, cfg.warmup_runs),
        }
        if artifact_dir is not None:
            result.update(dir_size(artifact_dir))
        result["seconds"] = round(time.perf_counter() - start, 3)
        return result
