"""One teacher, several tasks: a student per task (strategy per-task), one shared student trained with a
weighted multi-task loss (shared), or both, each run through the recipe's stages as its own run under
out/students/<name>/ (own checkpoints, own artifact), then one report that compares them task by task.

Every student is measured on every task, so the report shows what specialising costs on the other tasks;
a per-task student is gated on its own task only, the shared student on all of them.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from .context import RunContext
from .gates import gates_for
from .layout import RunLayout
from .manifest import build_manifest, library_versions, recipe_hash
from .multi_plan import StudentPlan
from .plan import Plan
from .references import hash_dir
from .report import ReportBuilder
from .run_common import RunResult, write_json
from .run_modes import register_run_mode
from .single_run import run_plan
from .stages import build_stage


def student_plan(plan: Plan, student: StudentPlan) -> Plan:
    """The plan of one student's run: its tasks, its gates, its training set (and loss weights)."""
    recipe = plan.recipe
    gates = gates_for(recipe, list(student.tasks))
    sub = recipe.model_copy(update={"tasks": {t: recipe.tasks[t] for t in student.tasks}, "strategy": student.kind,
                                    "gates": gates})
    env = dataclasses.replace(plan.env, train=student.train, train_groups=student.groups, teacher=None)
    stages = [build_stage(config, i) for i, config in enumerate(recipe.stages)]  # fresh: stages keep details
    return Plan(recipe=sub, teacher=plan.teacher, info=plan.info, env=env, stages=stages, infos=list(plan.infos),
                task_trains={t: plan.task_trains[t] for t in student.tasks})


def _final_row(report: dict) -> dict | None:
    """The row whose candidate the student stands for: the last that passed, else the last (failing) one."""
    rows = report.get("stages") or []
    passed = [r for r in rows if r.get("status") == "passed"]
    return (passed or rows or [None])[-1]


def _student_entry(student: StudentPlan, result: RunResult, out_dir: Path) -> dict:
    report = result.report
    row = _final_row(report)
    evaluation = (row or {}).get("evaluation") or {}
    return {
        "name": student.name, "kind": student.kind, "tasks": list(student.tasks), "status": report["status"],
        "artifact": str(result.artifact.relative_to(out_dir)) if result.artifact else None,
        "final_stage_index": report["final"]["stage_index"], "shortfalls": report.get("shortfalls", []),
        "task_weights": {g.task: round(g.weight, 6) for g in student.groups} or None,
        "evaluation": evaluation, "stages": report["stages"],
    }


def _comparison(teacher: dict, students: list[dict], gate_for) -> dict:
    """Task by task: the teacher's value and each student's value, retention and whether it is gated on it."""
    out: dict = {}
    for task, trow in teacher.get("tasks", {}).items():
        row: dict = {"metric": trow["metric"], "teacher": trow["value"], "required": gate_for(task), "students": {}}
        for s in students:
            cell = (s["evaluation"].get("tasks") or {}).get(task)
            if cell is None:
                continue
            gated = task in s["tasks"]
            row["students"][s["name"]] = {
                "kind": s["kind"], "value": cell["value"], "retention": cell["retention"], "gated": gated,
                "passed": None if not gated or gate_for(task) is None
                else cell["retention"] is not None and cell["retention"] >= gate_for(task),
            }
        out[task] = row
    return out


def _choices(students: list[dict]) -> dict:
    """What each strategy costs in all: per-task serves one model per task, shared one model for all."""
    out = {}
    for kind in ("per-task", "shared"):
        group = [s for s in students if s["kind"] == kind]
        if not group:
            continue
        own = [(s["evaluation"].get("tasks") or {}).get(t, {}).get("retention") for s in group for t in s["tasks"]]
        out[kind] = {
            "models": len(group),
            "size_bytes": sum(s["evaluation"].get("size_bytes") or 0 for s in group),
            "batch1_p50_ms": max((s["evaluation"].get("latency") or {}).get("batch1_p50_ms") or 0 for s in group),
            "worst_retention": min((r for r in own if r is not None), default=None),
            "passed": all(s["status"] == "succeeded" for s in group),
        }
    return out


def run_students(plan: Plan, out_dir: Path, ctx: RunContext, resume: bool) -> RunResult:
    started = time.time()
    results: list[tuple[StudentPlan, RunResult]] = []
    for student in plan.students:
        ctx.check_cancel()
        scope = f"students/{student.name}"
        ctx.progress(scope, f"student {student.name} ({student.kind}: {', '.join(student.tasks)})")
        result = run_plan(student_plan(plan, student), RunLayout(out_dir).student(student.name).root,
                          ctx.scoped(scope), resume)
        results.append((student, result))
        if result.status == "cancelled":
            break
    entries = [_student_entry(s, r, out_dir) for s, r in results]
    statuses = {r.status for _, r in results}
    status = "cancelled" if "cancelled" in statuses else "failed-gate" if "failed-gate" in statuses else "succeeded"
    teacher = results[0][1].report.get("teacher", {}) if results else {}
    builder = ReportBuilder(task=plan.recipe.task, device=str(plan.env.device), recipe_sha256=recipe_hash(plan),
                            versions=library_versions(), mode="students")
    builder.started = started
    builder.section(strategy=plan.recipe.strategy_used(), teacher=teacher, students=entries,
                    comparison=_comparison(teacher, entries, plan.recipe.gate_for), choices=_choices(entries))
    report = builder.finish(status, {"stage_index": None, "artifact": None,
                                     "students": {e["name"]: e["artifact"] for e in entries if e["artifact"]}},
                            [{"student": e["name"], **s} for e in entries for s in e["shortfalls"]])
    builder.save(RunLayout(out_dir).report)
    manifest = build_manifest(plan, status, None, out_dir)
    manifest["students"] = {e["name"]: {"path": e["artifact"], "files": hash_dir(out_dir / e["artifact"])}
                            for e in entries if e["artifact"]}
    write_json(RunLayout(out_dir).manifest, manifest)
    ctx.progress("final", status)
    return RunResult(status=status, report=report, out_dir=out_dir, artifact=None,
                     artifacts={s.name: r.artifact for s, r in results if r.artifact is not None})


register_run_mode("students", lambda plan: bool(plan.students), run_students, priority=20)
