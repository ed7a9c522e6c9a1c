"""The candidates a search builds, as a tree of shared prefixes: distil to a depth, then prune, then quantize.

Each node is built once and checkpointed under out/search/nodes/<id>/ (artifact/ and node.json, the marker,
written last), so trials that share a prefix reuse it (one distillation per depth), and a restarted worker
loads it instead of training again. Probes build the same shapes from the untrained teacher to predict size
and latency, which depend on shapes and formats, not on trained values.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .architecture import evenly_spaced, keep_layers, num_layers
from .artifacts import save_candidate
from .candidate import Candidate
from .context import RunContext
from .layout import ARTIFACT, NODE_MARKER
from .measure import dir_size
from .multi_plan import Point, distill_config, prune_config, quantize_config
from .plan import Plan
from .quantization import NO_QUANTIZATION
from .run_common import load_candidate, write_json
from .stages import build_stage

MARKER = NODE_MARKER


def node_ids(point: Point) -> list[tuple[str, object]]:
    """(node id, what the step is) from the root down; absent steps (sparsity 0, no quantization) are skipped."""
    ids = [(f"d{point.depth}", "distill")]
    if point.sparsity:
        ids.append((f"d{point.depth}-s{round(point.sparsity * 100):02d}", "prune"))
    if point.quantization != NO_QUANTIZATION:
        ids.append((point.id, "quantize"))
    return ids


class NodeCache:
    def __init__(self, plan: Plan, root: Path, rhash: str, ctx: RunContext) -> None:
        self.plan, self.root, self.rhash, self.ctx = plan, root, rhash, ctx
        self.memory: dict[str, Candidate] = {}
        self.built: list[str] = []  # nodes built (not loaded) in this process, for the report

    def _config(self, point: Point, step: str):
        recipe = self.plan.recipe
        if step == "distill":
            return distill_config(recipe, point.depth)
        return prune_config(recipe, point.sparsity) if step == "prune" else quantize_config(point)

    def done(self, node: str) -> bool:
        marker = self.root / node / MARKER
        return marker.is_file() and json.loads(marker.read_text()).get("recipe_sha256") == self.rhash

    def get(self, point: Point, teacher: Candidate) -> tuple[Candidate, Path, list[str]]:
        """The point's candidate and its artifact directory; also the ids of the nodes it reused."""
        candidate, reused = teacher, []
        path = None
        for index, (node, step) in enumerate(node_ids(point)):
            path = self.root / node / ARTIFACT
            if node in self.memory:
                candidate = self.memory[node]
                reused.append(node)
                continue
            if self.done(node):
                candidate = load_candidate(path, self.plan)
                reused.append(node)
            else:
                candidate = self._build(node, index, step, point, candidate)
            self.memory[node] = candidate
        return candidate, path, reused

    def _build(self, node: str, index: int, step: str, point: Point, parent: Candidate) -> Candidate:
        ctx = self.ctx.scoped(f"search/{node}")
        stage = build_stage(self._config(point, step), index)
        ctx.progress(stage.label, "starting")
        t0 = time.perf_counter()
        candidate = stage.run(parent, self.plan.env, ctx)
        node_dir = self.root / node
        save_candidate(candidate, node_dir / ARTIFACT)
        write_json(node_dir / MARKER, {"node": node, "recipe_sha256": self.rhash, "details": stage.describe(),
                                        "duration_s": round(time.perf_counter() - t0, 3)})
        self.ctx.checkpoint(node_dir)
        ctx.progress(stage.label, "built")
        self.built.append(node)
        return candidate

    def forget_depths(self, keep: int) -> None:
        """Drop in-memory students of other depths (they stay on disk): memory stays at one depth's tree."""
        for node in [n for n in self.memory if not n.startswith(f"d{keep}-") and n != f"d{keep}"]:
            del self.memory[node]


@torch.no_grad()
def probe(plan: Plan, teacher: Candidate, points: list[Point], work: Path, ctx: RunContext,
          timer: Callable[[Candidate], dict] | None = None) -> dict[Point, dict]:
    """Size (and, given a timer, latency) of every point, built from the untrained teacher's layers:
    shapes and formats decide both, so no training is needed. Shared prefixes are built once. The timer is
    the trials' own measurement (Evaluator.latency: interleaved with the teacher), so a prediction and a
    trial's objective are the same ratio."""
    out: dict[Point, dict] = {}
    quiet = RunContext(should_cancel=ctx.should_cancel)
    trees: dict[tuple, Candidate] = {}
    depth = num_layers(teacher.model)
    for i, point in enumerate(points):
        ctx.check_cancel()
        ctx.progress("search", "probing sizes" + (" and latencies" if timer else ""), step=i, total=len(points))
        key = (point.depth, point.sparsity)
        if key not in trees:
            model = copy.deepcopy(teacher.model)
            keep_layers(model, evenly_spaced(depth, point.depth))
            base = dataclasses.replace(teacher, model=model,
                                       structure={} if not teacher.structure else dict(teacher.structure))
            cfg = prune_config(plan.recipe, point.sparsity)
            trees[key] = base if cfg is None else build_stage(cfg, 1).run(base, plan.env, quiet)
        candidate = trees[key]
        qcfg = quantize_config(point)
        if qcfg is not None:
            candidate = build_stage(qcfg, 2).run(candidate, plan.env, quiet)
        target = save_candidate(candidate, work / point.id)
        row = dir_size(target)
        shutil.rmtree(target, ignore_errors=True)
        if timer is not None:
            row["latency"] = timer(candidate)
        out[point] = row
    ctx.progress("search", "probing sizes" + (" and latencies" if timer else ""), step=len(points),
                 total=len(points))
    return out
