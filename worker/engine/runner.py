"""The run: teacher -> stages -> candidates, each evaluated and gated, then the artifact and its report.

Every finished stage is checkpointed under out/stages/NN-kind/ with its report row, so a run that is
started again with the same recipe (resume=True) skips what is already done.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .artifacts import load_artifact, save_candidate, verify_reload
from .candidate import Candidate
from .context import RunContext
from .errors import Cancelled, VerificationError
from .evaluate import Evaluator, check_gates
from .manifest import build_manifest, library_versions, recipe_hash
from .plan import Plan, make_plan
from .recipe import EvaluateConfig, Recipe

REPORT_VERSION = 1


@dataclass
class RunResult:
    status: str  # succeeded | failed-gate | cancelled
    report: dict
    out_dir: Path
    artifact: Path | None
    # several artifacts (students: name -> artifact directory), each downloadable on its own
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _sample_texts(plan: Plan) -> list[str]:
    for ds in list(plan.env.eval.values()) + ([plan.env.train] if plan.env.train else []):
        return ds.texts()[:64]
    return []


def _load_teacher(plan: Plan, ctx: RunContext) -> Candidate:
    ctx.progress("teacher", "loading the teacher")
    model, tokenizer = plan.env.task.load(plan.teacher)
    device = plan.env.device
    return Candidate(model=model.to(device), tokenizer=tokenizer, task=plan.env.task, device=device)


def _resume_row(stage_dir: Path, rhash: str, index: int) -> dict | None:
    marker = stage_dir / "stage.json"
    if not marker.is_file():
        return None
    row = json.loads(marker.read_text(encoding="utf-8"))
    return row if row.get("recipe_sha256") == rhash and row.get("index") == index else None


def _write_failed(out_dir: Path, report: dict, started: float, stage, exc: VerificationError) -> None:
    """The run stops: report.json says which stage's artifact failed verification (no artifact is kept
    as final, and the stage gets no checkpoint marker, so a resume redoes it)."""
    report.update({"status": "failed", "error": {**exc.to_dict(), "stage_index": stage.index},
                   "final": {"stage_index": None, "artifact": None}, "shortfalls": [],
                   "duration_s": round(time.time() - started, 3)})
    _write_json(out_dir / "report.json", report)


def load_candidate(artifact_dir: Path, plan: Plan) -> Candidate:
    """A checkpointed candidate, back on the device it was measured on (int8-dynamic: CPU)."""
    model, tokenizer = load_artifact(artifact_dir, device="cpu")
    meta = json.loads((artifact_dir / "distillery.json").read_text())
    device = torch.device((meta.get("quantization") or {}).get("serving_device") or
                          plan.env.device.type) if meta.get("quantization") else plan.env.device
    return Candidate(model.to(device), tokenizer, plan.env.task, meta.get("structure") or {},
                     meta.get("quantization"), device)


def run(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    base_dir: str | Path = ".",
    roots: Sequence[str | Path] = (),
    ctx: RunContext | None = None,
    resume: bool = False,
) -> RunResult:
    """Plan (the dry run), then run: one student through the stages, one per task (tasks/strategy), or a
    search over a space of students (search)."""
    ctx = ctx or RunContext()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir = out_dir / "work"
    plan = make_plan(recipe, base_dir=Path(base_dir), roots=[Path(r) for r in roots], work_dir=work_dir)
    try:
        if recipe.search is not None:
            from .search_run import run_search

            return run_search(plan, out_dir, ctx, resume)
        if plan.students:
            from .students import run_students

            return run_students(plan, out_dir, ctx, resume)
        return run_plan(plan, out_dir, ctx, resume)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def run_plan(plan: Plan, out_dir: Path, ctx: RunContext, resume: bool) -> RunResult:
    """Teacher -> stages -> the artifact, the report and the manifest, in out_dir."""
    recipe = plan.recipe
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir = out_dir / "work"
    rhash = recipe_hash(plan)
    torch.manual_seed(recipe.seed)
    started = time.time()
    report: dict = {"report_version": REPORT_VERSION, "task": recipe.task, "device": str(plan.env.device),
                    "recipe_sha256": rhash, "versions": library_versions(), "stages": []}

    teacher = _load_teacher(plan, ctx)
    plan.env.teacher = teacher
    evaluator = Evaluator(plan.env.eval, recipe.evaluate, recipe.max_length, _sample_texts(plan), ctx)
    status, best_dir, best_index = "succeeded", None, None
    try:
        ctx.progress("teacher", "computing the teacher's reference outputs")
        evaluator.set_teacher(teacher)
        teacher_dir = work_dir / "teacher"
        save_candidate(teacher, teacher_dir)
        report["teacher"] = evaluator.evaluate(teacher, "teacher", teacher_dir)
        shutil.rmtree(teacher_dir, ignore_errors=True)

        candidate, cand_dir = teacher, None
        for stage in plan.stages:
            ctx.check_cancel()
            label = stage.label
            stage_dir = out_dir / "stages" / f"{stage.index:02d}-{stage.config.kind}"
            row = _resume_row(stage_dir, rhash, stage.index) if resume else None
            if row is not None:
                ctx.progress(label, "resumed from checkpoint")
                if stage_dir.joinpath("artifact").is_dir():
                    candidate = load_candidate(stage_dir / "artifact", plan)
                    cand_dir = stage_dir / "artifact"
                row["resumed"] = True
            else:
                ctx.progress(label, "starting")
                t0 = time.perf_counter()
                if isinstance(stage.config, EvaluateConfig):
                    evaluation = evaluator.evaluate(candidate, label, cand_dir, stage.config)
                    verified = None
                else:
                    candidate = stage.run(candidate, plan.env, ctx)
                    cand_dir = save_candidate(candidate, stage_dir / "artifact")
                    try:
                        verified = verify_reload(candidate, cand_dir, _sample_texts(plan), recipe.max_length)
                    except VerificationError as exc:
                        _write_failed(out_dir, report, started, stage, exc)
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
                _write_json(stage_dir / "stage.json", row)
                ctx.checkpoint(stage_dir)
            row["status"] = "passed" if row["gate"]["passed"] else "failed-gate"
            report["stages"].append(row)
            ctx.progress(label, row["status"])
            if not row["gate"]["passed"]:
                status = "failed-gate"
                break
            if cand_dir is not None and not isinstance(stage.config, EvaluateConfig):
                best_dir, best_index = cand_dir, stage.index  # the stage that produced the checkpoint
    except Cancelled:
        status = "cancelled"

    artifact = None
    if best_dir is not None and status != "cancelled":
        artifact = out_dir / "artifact"
        shutil.rmtree(artifact, ignore_errors=True)
        shutil.copytree(best_dir, artifact)
    report.update({
        "status": status,
        "final": {"stage_index": best_index, "artifact": "artifact" if artifact else None},
        "shortfalls": report["stages"][-1]["gate"]["shortfalls"] if status == "failed-gate" else [],
        "duration_s": round(time.time() - started, 3),
    })
    _write_json(out_dir / "report.json", report)
    _write_json(out_dir / "manifest.json", build_manifest(plan, status, artifact, out_dir))
    if work_dir != plan.env.work_dir:  # a run inside a run (a student): its own scratch space
        shutil.rmtree(work_dir, ignore_errors=True)
    ctx.progress("final", status)
    return RunResult(status=status, report=report, out_dir=out_dir, artifact=artifact)
