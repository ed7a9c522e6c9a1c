"""The search run: probe every point's size/latency, then try points as search.Search picks them, each trial
evaluated on every task and gated, and report the best passing candidate, the Pareto frontiers and every trial.

A finished trial is written to out/search/trials/<id>/trial.json (and checkpointed through ctx), so a
restarted run reads it instead of trying it again; the choice of the next point depends only on the results,
so the search continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from .artifacts import save_candidate, verify_reload
from .context import RunContext
from .errors import Cancelled
from .evaluate import Evaluator, check_gates
from .gates import gates_for
from .layout import ARTIFACT, PROBE_MARKER, TRIAL_MARKER, RunLayout
from .manifest import build_manifest, library_versions, recipe_hash
from .multi_plan import Point, grid
from .plan import Plan
from .recipe import Gates, Recipe
from .report import ReportBuilder
from .run_common import RunResult, load_candidate, load_teacher, sample_texts, write_json
from .run_modes import register_run_mode
from .search import Outcome, Search, pareto
from .search_nodes import NodeCache, probe

TRIAL = TRIAL_MARKER


def search_hash(plan: Plan) -> str:
    """What trials and nodes depend on: the recipe without the search's budgets, so that a search stopped by
    its budget can be resumed with a larger one and keep what it tried."""
    dump = plan.recipe.model_dump(mode="json")
    for budget in ("max_trials", "time_budget_s", "exhaustive"):
        dump["search"].pop(budget, None)
    return hashlib.sha256(json.dumps(dump, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def relative_time(latency: dict, batch: int) -> float:
    """The candidate's time per request / the teacher's at `batch`, both timed interleaved in one window
    (1 / speed-up); from the two p50s measured apart only for a report written before that."""
    row = next((r for r in latency.get("batches") or [] if r["batch"] == batch), None)
    if row is not None and row.get("speedup"):
        return 1 / row["speedup"]
    if row is not None and latency.get("reference") is None:
        return 1.0  # the teacher itself, timed alone
    raise ValueError(f"evaluate: latency was not measured against the teacher at batch {batch} "
                     "(search.objective.batch)")


def objective(recipe: Recipe, evaluation: dict, teacher: dict) -> float:
    """Lower is better: bytes on disk, the time per request at the objective's batch relative to the teacher's
    (measured in the same window), or a weighted mix of both relative to the teacher."""
    obj = recipe.search.objective
    if obj.minimize == "size":
        return float(evaluation["size_bytes"])
    ratio = relative_time(evaluation["latency"], obj.batch)
    if obj.minimize == "latency":
        return ratio
    return obj.size_weight * evaluation["size_bytes"] / teacher["size_bytes"] + (1 - obj.size_weight) * ratio


def gates_of(recipe: Recipe, tasks: list[str]) -> Gates:
    """Each task's gate, min_retention and max_drop alike (gates.py), as a student's run has them."""
    return gates_for(recipe, tasks)


def _row(point: Point, evaluation: dict, gate: dict, value: float, reused: list[str], seconds: float) -> dict:
    kept = [t["retention"] for t in evaluation["tasks"].values()]
    return {
        "id": point.id, "point": point.as_dict(), "status": "passed" if gate["passed"] else "failed-gate",
        "objective": value, "size_bytes": evaluation.get("size_bytes"),
        "latency_ms": evaluation["latency"]["batch1_p50_ms"],
        "worst_retention": None if None in kept else min(kept), "gate": gate, "evaluation": evaluation,
        "reused": reused, "seconds": round(seconds, 3),
    }


def _load_trials(root: Path, rhash: str, points: list[Point]) -> dict[Point, dict]:
    by_id = {p.id: p for p in points}
    out = {}
    for marker in sorted(root.glob(f"*/{TRIAL}")):
        row = json.loads(marker.read_text(encoding="utf-8"))
        if row.get("recipe_sha256") == rhash and row.get("id") in by_id:
            out[by_id[row["id"]]] = row
    return out


def run_search(plan: Plan, out_dir: Path, ctx: RunContext, resume: bool) -> RunResult:
    recipe, cfg = plan.recipe, plan.recipe.search
    started = time.time()
    rhash = search_hash(plan)
    layout = RunLayout(out_dir)
    if not resume:
        shutil.rmtree(layout.search_nodes.parent, ignore_errors=True)
    eval_cfg = recipe.evaluate
    if cfg.objective.minimize != "size" and cfg.objective.batch > 1:
        eval_cfg = eval_cfg.model_copy(update={"throughput_batch": cfg.objective.batch})
    points = grid(recipe)
    report = ReportBuilder(task=recipe.task, device=str(plan.env.device), recipe_sha256=recipe_hash(plan),
                           versions=library_versions(), mode="search")
    teacher = load_teacher(plan, ctx)
    plan.env.teacher = teacher
    evaluator = Evaluator(plan.env.eval, eval_cfg, recipe.max_length, sample_texts(plan), ctx, seed=recipe.seed)
    gates = gates_of(recipe, list(plan.env.eval))
    trials: dict[Point, dict] = _load_trials(layout.search_trials, rhash, points) if resume else {}
    status, stopped_by, order, probe_s = "succeeded", "done", [], 0.0
    try:
        evaluator.set_teacher(teacher)
        teacher_dir = layout.work / "teacher"
        save_candidate(teacher, teacher_dir)
        report.teacher(evaluator.evaluate(teacher, "teacher", teacher_dir))
        shutil.rmtree(teacher_dir, ignore_errors=True)
        t_probe = time.perf_counter()
        timed = cfg.objective.minimize != "size"
        predicted = _predict(plan, teacher, evaluator, eval_cfg, points, out_dir, ctx, report.fields["teacher"], rhash)
        probe_s = time.perf_counter() - t_probe
        search = Search(points, predicted, cfg.objective.latency_tolerance if timed else 0.0)
        nodes = NodeCache(plan, layout.search_nodes, rhash, ctx)
        results = {p: Outcome(r["status"] == "passed", r["objective"]) for p, r in trials.items()}
        for p in trials:
            ctx.progress(f"search/{p.id}", "trial resumed: finished before the restart")
        budget = len(points) if cfg.exhaustive else cfg.max_trials
        while True:
            ctx.check_cancel()
            cheap = {d for d in recipe.search.space.depth if f"d{d}" in nodes.memory or nodes.done(f"d{d}")}
            point = next((p for p in points if p not in results), None) if cfg.exhaustive else \
                search.next(results, cheap)
            if point is None:
                break
            if budget is not None and len(results) >= budget:
                stopped_by = "max_trials"
                break
            if cfg.time_budget_s is not None and time.time() - started > cfg.time_budget_s:
                stopped_by = "time_budget"
                break
            label = f"search/{point.id}"
            ctx.progress(label, f"trial {len(results) + 1} of at most {budget or len(points)}: starting")
            t0 = time.perf_counter()
            nodes.forget_depths(point.depth)
            candidate, path, reused = nodes.get(point, teacher)
            verified = verify_reload(candidate, path, sample_texts(plan), recipe.max_length)
            evaluation = evaluator.evaluate(candidate, label, path)
            gate = check_gates(evaluation["tasks"], gates)
            value = objective(recipe, evaluation, report.fields["teacher"])
            row = {**_row(point, evaluation, gate, value, reused, time.perf_counter() - t0),
                   "recipe_sha256": rhash, "reload_max_abs_diff": verified, "order": len(results) + 1,
                   "predicted_objective": predicted[point]}
            trial_dir = layout.trial_dir(point.id)
            trial_dir.mkdir(parents=True, exist_ok=True)
            write_json(trial_dir / TRIAL, row)
            ctx.checkpoint(trial_dir)
            trials[point], results[point] = row, Outcome(gate["passed"], value)
            worst = "n/a" if row["worst_retention"] is None else f"{row['worst_retention']:.4f}"
            ctx.progress(label, f"trial {row['order']}: {row['status']}; size {row['size_bytes']} B, "
                                f"p50 {row['latency_ms']} ms, worst retention {worst}")
        order = sorted(trials, key=lambda p: trials[p].get("order", 0))
    except Cancelled:
        status = "cancelled"
        order = sorted(trials, key=lambda p: trials[p].get("order", 0))
    best = Search(points, {}).best({p: Outcome(trials[p]["status"] == "passed", trials[p]["objective"])
                                    for p in trials})
    return _finish(plan, out_dir, ctx, report, trials, order, best, status, stopped_by, probe_s, started, points,
                   evaluator)


def _predict(plan: Plan, teacher, evaluator: Evaluator, eval_cfg, points: list[Point], out_dir: Path,
             ctx: RunContext, teacher_eval: dict, rhash: str) -> dict[Point, float]:
    """Each point's objective predicted from a probe; kept on disk so a resumed search (latency is noisy)
    takes the same decisions."""
    recipe = plan.recipe
    cache = RunLayout(out_dir).search_probe
    marker = cache / PROBE_MARKER
    if marker.is_file():
        saved = json.loads(marker.read_text(encoding="utf-8"))
        if saved.get("recipe_sha256") == rhash:
            by_id = saved["predicted"]
            return {p: by_id[p.id] for p in points}
    timed = recipe.search.objective.minimize != "size"
    probes = probe(plan, teacher, points, RunLayout(out_dir).work / "probes", ctx, evaluator.latency if timed else None)
    predicted = {p: objective(recipe, probes[p], teacher_eval) if timed else float(probes[p]["size_bytes"])
                 for p in points}
    cache.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"recipe_sha256": rhash, "predicted": {p.id: v for p, v in predicted.items()},
                         "probes": {p.id: probes[p] for p in points}})
    ctx.checkpoint(cache)
    return predicted


def _best_effort(trials: dict[Point, dict], gates: Gates) -> dict | None:
    """No trial passed: the one that came closest (smallest worst shortfall), then the cheaper."""
    def shortfall(row: dict) -> float:
        return max((s["short_by"] if s["short_by"] is not None else 9.0 for s in row["gate"]["shortfalls"]),
                   default=0.0)
    if not trials:
        return None
    row = min(trials.values(), key=lambda r: (shortfall(r), r["objective"]))
    return {"id": row["id"], "status": "failed-gate", "point": row["point"], "objective": row["objective"],
            "shortfalls": row["gate"]["shortfalls"], "worst_retention": row["worst_retention"]}


def _finish(plan: Plan, out_dir: Path, ctx: RunContext, report: ReportBuilder, trials: dict[Point, dict],
            order: list[Point], best: Point | None, status: str, stopped_by: str, probe_s: float,
            started: float, points: list[Point], evaluator: Evaluator | None = None) -> RunResult:
    recipe = plan.recipe
    rows = [trials[p] for p in order]
    passed = best is not None
    artifact, final_latency = None, None
    if status != "cancelled" and passed:
        artifact = RunLayout(out_dir).artifact
        shutil.rmtree(artifact, ignore_errors=True)
        shutil.copytree(RunLayout(out_dir).search_nodes / _leaf(best) / ARTIFACT, artifact)
        if evaluator is not None:  # the artifact as a user loads it, timed against the teacher in one window
            ctx.progress("final", "measuring the artifact's latency against the teacher")
            final_latency = evaluator.latency(load_candidate(artifact, plan))
    effort = None if passed else _best_effort(trials, gates_of(recipe, list(plan.env.eval)))
    if status == "succeeded" and not passed:
        status = "failed-gate"
    report.section(search={
        "objective": recipe.search.objective.model_dump(mode="json"), "prune": recipe.search.prune,
        "space": recipe.search.space.model_dump(mode="json"), "grid_size": len(points),
        "trials_run": len(rows), "stopped_by": stopped_by, "probe_s": round(probe_s, 3),
        "passed": passed, "best": None if best is None else {"id": best.id, **_summary(trials[best])},
        "best_effort": effort,
        "frontier": {"size": pareto(rows, "size_bytes"), "latency": pareto(rows, "latency_ms")},
        "trials": [{k: v for k, v in r.items() if k != "recipe_sha256"} for r in rows],
    })
    report.started = started
    final = report.finish(status, {"stage_index": None, "artifact": ARTIFACT if artifact else None,
                                   "trial": best.id if best else None,
                                   **({"latency": final_latency} if final_latency else {})},
                          effort["shortfalls"] if effort and status == "failed-gate" else [])
    report.save(RunLayout(out_dir).report)
    write_json(RunLayout(out_dir).manifest, build_manifest(plan, status, artifact, out_dir))
    ctx.progress("final", status)
    return RunResult(status=status, report=final, out_dir=out_dir, artifact=artifact)


def _leaf(point: Point) -> str:
    from .search_nodes import node_ids

    return node_ids(point)[-1][0]


def _summary(row: dict) -> dict:
    return {k: row[k] for k in ("point", "objective", "size_bytes", "latency_ms", "worst_retention")} | \
        {"tasks": {t: v["retention"] for t, v in row["evaluation"]["tasks"].items()}}


register_run_mode("search", lambda plan: plan.recipe.search is not None, run_search, priority=10)
