"""Accuracy-aware search over a grid of students: which point to try next, and what the trials add up to.

Pure logic (no torch), so it can be checked exhaustively on small grids. Two facts drive it:

- Quality falls monotonically with aggressiveness along every axis (fewer layers, more sparsity, coarser
  quantization, int8 embeddings). So a failing point implies that every point at least as aggressive fails,
  and a passing point implies that every point at most as aggressive passes. Quantization is a partial
  order, not a line: int8-dynamic and int4 weight-only are not assumed comparable.
- Size and latency depend on a candidate's shapes and formats, not on its trained values, so the runner
  predicts each point's objective from an untrained copy (a probe: seconds, no training) before any trial.

Each step tries the undecided point that halves what is left to decide (the worse of its two outcomes leaves
the fewest candidates that could still beat the best known pass), cheap ones first among equals: a point
whose student depth is already distilled costs no training. It stops when no undecided point could beat
the best pass; under the monotonicity assumption that is the point exhaustive evaluation would choose.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .multi_plan import Point
from .quantization import at_least_as_coarse, search_rank


def at_most_as_aggressive(a: Point, b: Point) -> bool:
    """a <= b: b is at least as aggressive as a on every axis (so b passing implies a passes)."""
    return (b.depth <= a.depth and b.sparsity >= a.sparsity and at_least_as_coarse(a.quantization, b.quantization)
            and (a.embeddings == b.embeddings or b.embeddings == "int8"))


def gentleness(p: Point) -> tuple:
    """Tie-break among equal objectives: the less aggressive point (it keeps more quality)."""
    return (-p.depth, p.sparsity, search_rank(p.quantization), p.embeddings == "int8")


@dataclass(frozen=True)
class Outcome:
    passed: bool
    objective: float  # measured


class Search:
    def __init__(self, points: Iterable[Point], predicted: dict[Point, float], tolerance: float = 0.0) -> None:
        self.points = list(points)
        self.predicted = predicted
        self.tolerance = tolerance

    def key(self, p: Point) -> tuple:
        return (self.predicted[p], gentleness(p))

    def status(self, p: Point, results: dict[Point, Outcome]) -> bool | None:
        """True/False when tried or implied by a trial, None when still undecided."""
        if p in results:
            return results[p].passed
        if any(not o.passed and at_most_as_aggressive(q, p) for q, o in results.items()):
            return False  # checked first: when trials contradict monotonicity, do not count on a pass
        if any(o.passed and at_most_as_aggressive(p, q) for q, o in results.items()):
            return True
        return None

    def incumbent(self, results: dict[Point, Outcome]) -> Point | None:
        """The best point known to pass, tried or implied (by predicted objective)."""
        passing = [p for p in self.points if self.status(p, results)]
        return min(passing, key=self.key, default=None)

    def _beats(self, p: Point, best: Point | None) -> bool:
        if best is None:
            return True
        if self.tolerance and self.predicted[p] < self.predicted[best] * (1 + self.tolerance):
            return p != best
        return self.key(p) < self.key(best)

    def open_points(self, results: dict[Point, Outcome]) -> list[Point]:
        """Undecided points that could still beat the best known pass."""
        best = self.incumbent(results)
        return [p for p in self.points if self.status(p, results) is None and self._beats(p, best)]

    def next(self, results: dict[Point, Outcome], cheap: set[int] = frozenset()) -> Point | None:
        """The next point to try, or None when the search is done. `cheap`: depths already distilled."""
        open_ = self.open_points(results)
        if not open_:
            best = self.incumbent(results)
            return best if best is not None and best not in results else None  # measure the chosen one
        def cost(p: Point) -> tuple:
            left_if_pass = sum(1 for q in open_ if q != p and self.key(q) < self.key(p)
                               and not at_most_as_aggressive(q, p))
            left_if_fail = sum(1 for q in open_ if q != p and not at_most_as_aggressive(p, q))
            return (max(left_if_pass, left_if_fail), p.depth not in cheap, self.key(p))
        return min(open_, key=cost)

    def best(self, results: dict[Point, Outcome]) -> Point | None:
        """The chosen candidate: the passing trial with the best measured objective."""
        passed = [p for p, o in results.items() if o.passed]
        return min(passed, key=lambda p: (results[p].objective, gentleness(p)), default=None)


def exhaustive_best(results: dict[Point, Outcome]) -> Point | None:
    """What trying every point chooses (the same rule as Search.best, over the whole grid)."""
    return Search(results, {p: o.objective for p, o in results.items()}).best(results)


def pareto(rows: list[dict], cost: str) -> list[str]:
    """Ids of the trials no other trial beats on both `cost` (lower) and worst-task retention (higher),
    cheapest first."""
    ok = [r for r in rows if r.get(cost) is not None and r.get("worst_retention") is not None]
    ok.sort(key=lambda r: (r[cost], -r["worst_retention"]))
    front, best_ret = [], float("-inf")
    for r in ok:
        if r["worst_retention"] > best_ret:
            front.append(r["id"])
            best_ret = r["worst_retention"]
    return front
