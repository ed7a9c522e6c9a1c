"""A task's figures in the report: the candidate's metric beside the teacher's, the drop and the retention,
each with a bootstrap 95% interval over the set's examples (bootstrap.py). The drop and the retention are
paired: candidate and teacher are recomputed on the same resamples."""

from __future__ import annotations

import numpy as np

from .bootstrap import RESAMPLES, indices, interval, replicates
from .tasks.base import TaskScore


def drop_of(value: float | None, teacher: float | None, higher_is_better: bool) -> float | None:
    """Quality lost in the metric's own points: positive when the candidate is worse."""
    if value is None or teacher is None:
        return None
    return teacher - value if higher_is_better else value - teacher


def retention_of(value: float | None, teacher: float | None, higher_is_better: bool) -> float | None:
    """Quality kept, as a fraction of the teacher's: value/teacher, or teacher/value when lower is better."""
    if value is None or teacher is None:
        return None
    if higher_is_better:
        return value / teacher if teacher > 1e-12 else None
    return teacher / value if value > 1e-12 else None


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.full(len(num), np.nan), where=np.abs(den) > 1e-12)


class TaskFigures:
    """One eval set: the teacher's score, its replicates (computed once), and each candidate's row."""

    def __init__(self, teacher: TaskScore, kind: str, examples: int, seed: int,
                 resamples: int = RESAMPLES) -> None:
        self.teacher, self.kind, self.examples = teacher, kind, examples
        self.seed, self.resamples = seed, resamples
        self.idx: dict[int, np.ndarray] = {}
        self.teacher_reps: dict[str, np.ndarray] = {}

    def replicates(self, score: TaskScore, metric: str) -> np.ndarray | None:
        sampler = score.resamplers.get(metric)
        if sampler is None or len(sampler) < 2:
            return None
        n = len(sampler)
        if n not in self.idx:
            self.idx[n] = indices(n, self.seed, self.resamples)
        return replicates(sampler, self.idx[n])

    def teacher_replicates(self, metric: str) -> np.ndarray | None:
        if metric not in self.teacher_reps:
            self.teacher_reps[metric] = self.replicates(self.teacher, metric)
        return self.teacher_reps[metric]

    def row(self, score: TaskScore) -> dict:
        metric, higher = score.primary, score.higher_is_better
        value = score.value
        teacher = self.teacher.metrics.get(metric)
        reps: dict[str, np.ndarray] = {}
        for name in score.metrics:
            r = self.replicates(score, name)
            if r is not None:
                reps[name] = r
        row = {
            "metric": metric, "value": value, "teacher_value": teacher, "higher_is_better": higher,
            "retention": retention_of(value, teacher, higher), "metrics": score.metrics,
            "examples": self.examples, "kind": self.kind, "drop": drop_of(value, teacher, higher),
        }
        intervals = {name: bounds for name, r in reps.items()
                     if (bounds := interval(r, score.metrics[name])) is not None}
        if metric not in reps:
            return row
        mine, theirs = reps[metric], self.teacher_replicates(metric)
        row.update(interval=intervals.get(metric), intervals=intervals, resamples=self.resamples)
        if theirs is not None and len(theirs) == len(mine):
            row["teacher_interval"] = interval(theirs, teacher)
            row["drop_interval"] = interval(theirs - mine if higher else mine - theirs, row["drop"])
            row["retention_interval"] = interval(_ratio(mine, theirs) if higher else _ratio(theirs, mine),
                                                 row["retention"])
        return row
