"""Quality gates on each task's own metric.

Two rules, each global or per task (recipe.Gates): `min_retention` (value / teacher's value, at least) and
`max_drop` (the teacher's value minus the candidate's, in the metric's own points, at most; inverted when
lower is better). Every rule applied is listed with the metric it read; a decision whose threshold lies inside
the figure's bootstrap interval is flagged `within_noise`: the examples cannot tell pass from fail.
"""

from __future__ import annotations

from .bootstrap import straddles
from .recipe import Recipe
from .recipe_judge import Gates, TaskGate

# a figure equal to its threshold passes; float noise in the last digits must not fail it
TOLERANCE = 1e-9


def gates_for(recipe: Recipe, tasks: list[str]) -> Gates:
    """The gates of a run over some of the recipe's tasks (a student's, a search's): each task's own
    min_retention (a task spec's gate first) and max_drop."""
    return Gates(per_task={t: TaskGate(min_retention=recipe.gate_for(t), max_drop=recipe.gates.allowed_drop(t))
                           for t in tasks})


def _rules(gates: Gates, task: str) -> list[tuple[str, float]]:
    rules = [("min_retention", gates.required(task)), ("max_drop", gates.allowed_drop(task))]
    return [(rule, threshold) for rule, threshold in rules if threshold is not None]


def _check(task: str, row: dict, rule: str, threshold: float) -> dict:
    if rule == "min_retention":
        observed, bounds = row.get("retention"), row.get("retention_interval")
        passed = observed is not None and observed >= threshold - TOLERANCE
    else:
        observed, bounds = row.get("drop"), row.get("drop_interval")
        passed = observed is not None and observed <= threshold + TOLERANCE
    return {"task": task, "rule": rule, "metric": row["metric"], "threshold": threshold, "observed": observed,
            "interval": bounds, "passed": passed, "within_noise": straddles(bounds, threshold)}


def check_gates(tasks: dict[str, dict], gates: Gates) -> dict:
    checks = [_check(name, row, rule, threshold)
              for name, row in tasks.items() for rule, threshold in _rules(gates, name)]
    shortfalls = []
    for c in checks:
        if c["passed"]:
            continue
        row, observed = tasks[c["task"]], c["observed"]
        short_by = None
        if observed is not None:
            short_by = c["threshold"] - observed if c["rule"] == "min_retention" else observed - c["threshold"]
        shortfalls.append({
            "task": c["task"], "metric": c["metric"], "retention": row.get("retention"), "required": c["threshold"],
            "short_by": None if short_by is None else round(short_by, 6), "rule": c["rule"],
            "drop": row.get("drop"), "interval": c["interval"], "within_noise": c["within_noise"],
        })
    result: dict = {"passed": not shortfalls, "shortfalls": shortfalls}
    if checks:
        result["checks"] = checks
        result["within_noise"] = any(c["within_noise"] for c in checks)
    return result
