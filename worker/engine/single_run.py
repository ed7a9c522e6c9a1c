"""The single run: teacher -> stages -> candidates, each evaluated and gated, then the artifact and its report.

Every finished stage is checkpointed under out/stages/NN-kind/ with its report row, so a run that is
started again with the same recipe (resume=True) skips what is already done.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from .artifacts import save_candidate, verify_reload
from .context import RunContext, StageBoundary
from .errors import Cancelled, VerificationError
from .evaluate import Evaluator, check_gates
from .layout import ARTIFACT, STAGE_MARKER, RunLayout
from .manifest import build_manifest, library_versions, recipe_hash
from .plan import Plan
from .report import ReportBuilder
from .run_common import RunResult, load_candidate, load_teacher, sample_texts, write_json
from .run_modes import register_run_mode


def _resume_row(stage_dir: Path, rhash: str, index: int) -> dict | None:
    marker = stage_dir / STAGE_MARKER
    if not marker.is_file():
        return None
    row = json.loads(marker.read_text(encoding="utf-8"))
    return row if row.get("recipe_sha256") == rhash and row.get("index") == index else None


def _write_failed(out_dir: Path, report: ReportBuilder, stage, exc: VerificationError) -> None:
    """The run stops: report.json says which stage's artifact failed verification (no artifact is kept
    as final, and the stage gets no checkpoint marker, so a resume redoes it)."""
    report.finish("failed", {"stage_index": None, "artifact": None},
                  error={**exc.to_dict(), "stage_index": stage.index})
    report.save(RunLayout(out_dir).report)


def run_plan(plan: Plan, out_dir: Path, ctx: RunContext, resume: bool) -> RunResult:
    """Teacher -> stages -> the artifact, the report and the manifest, in out_dir."""
    recipe = plan.recipe
    out_dir.mkdir(parents=True, exist_ok=True)
    layout = RunLayout(out_dir)
    work_dir = layout.work
    rhash = recipe_hash(plan)
    torch.manual_seed(recipe.seed)
    report = ReportBuilder(task=recipe.task, device=str(plan.env.device), recipe_sha256=rhash,
                           versions=library_versions(), mode="single")

    teacher = load_teacher(plan, ctx)
    plan.env.teacher = teacher
    evaluator = Evaluator(plan.env.eval, recipe.evaluate, recipe.max_length, sample_texts(plan), ctx,
                          seed=recipe.seed)
    status, best_dir, best_index = "succeeded", None, None
    try:
        ctx.progress("teacher", "computing the teacher's reference outputs")
        evaluator.set_teacher(teacher)
        teacher_dir = work_dir / "teacher"
        save_candidate(teacher, teacher_dir)
        report.teacher(evaluator.evaluate(teacher, "teacher", teacher_dir))
        shutil.rmtree(teacher_dir, ignore_errors=True)

        candidate, cand_dir = teacher, None
        for stage in plan.stages:
            ctx.check_cancel()
            label = stage.label
            stage_dir = layout.stage_dir(stage.index, stage.config.kind)
            row = _resume_row(stage_dir, rhash, stage.index) if resume else None
            if row is not None:
                ctx.progress(label, "resumed from checkpoint",
                             boundary=StageBoundary(stage.index, stage.config.kind, "resumed", row, stage_dir))
                if stage_dir.joinpath(ARTIFACT).is_dir():
                    candidate = load_candidate(stage_dir / ARTIFACT, plan)
                    cand_dir = stage_dir / ARTIFACT
                row["resumed"] = True
            else:
                ctx.progress(label, "starting", boundary=StageBoundary(stage.index, stage.config.kind, "started"))
                t0 = time.perf_counter()
                if not stage.transforms_model:  # a measuring stage (evaluate) re-evaluates with its settings
                    evaluation = evaluator.evaluate(candidate, label, cand_dir, stage.config)
                    verified = None
                else:
                    candidate = stage.run(candidate, plan.env, ctx)
                    cand_dir = save_candidate(candidate, stage_dir / ARTIFACT)
                    try:
                        verified = verify_reload(candidate, cand_dir, sample_texts(plan), recipe.max_length)
                    except VerificationError as exc:
                        _write_failed(out_dir, report, stage, exc)
                        raise
                    evaluation = evaluator.evaluate(candidate, label, cand_dir)
                row = {
                    "index": stage.index, "kind": stage.config.kind, "recipe_sha256": rhash,
                    "device": str(candidate.device),  # where the stage's candidate ran (int8-dynamic: cpu)
                    "duration_s": round(time.perf_counter() - t0, 3), "details": stage.describe(),
                    "evaluation": evaluation, "gate": check_gates(evaluation["tasks"], recipe.gates),
                    "reload_max_abs_diff": verified,
                    "artifact": None if cand_dir is None else str(cand_dir.relative_to(out_dir)),
                }
                stage_dir.mkdir(parents=True, exist_ok=True)
                write_json(stage_dir / STAGE_MARKER, row)
                ctx.checkpoint(stage_dir)
            row["status"] = "passed" if row["gate"]["passed"] else "failed-gate"
            report.stage(row)
            ctx.progress(label, row["status"],
                         boundary=StageBoundary(stage.index, stage.config.kind, "finished", row, stage_dir))
            if not row["gate"]["passed"]:
                status = "failed-gate"
                break
            if cand_dir is not None and stage.transforms_model:
                best_dir, best_index = cand_dir, stage.index  # the stage that produced the checkpoint
    except Cancelled:
        status = "cancelled"

    artifact = None
    if best_dir is not None and status != "cancelled":
        artifact = layout.artifact
        shutil.rmtree(artifact, ignore_errors=True)
        shutil.copytree(best_dir, artifact)
    shortfalls = report.fields["stages"][-1]["gate"]["shortfalls"] if status == "failed-gate" else []
    final_row = {"stage_index": best_index, "artifact": ARTIFACT if artifact else None}
    if artifact is not None:  # the artifact as a user loads it, timed against the teacher in one window
        ctx.progress("final", "measuring the artifact's latency against the teacher")
        final_row["latency"] = evaluator.latency(load_candidate(artifact, plan))
    final = report.finish(status, final_row, shortfalls)
    report.save(layout.report)
    write_json(layout.manifest, build_manifest(plan, status, artifact, out_dir))
    if work_dir != plan.env.work_dir:  # a run inside a run (a student): its own scratch space
        shutil.rmtree(work_dir, ignore_errors=True)
    ctx.progress("final", status)
    return RunResult(status=status, report=final, out_dir=out_dir, artifact=artifact)


register_run_mode("single", lambda plan: True, run_plan, priority=100)  # the fallback: one student, the stages
