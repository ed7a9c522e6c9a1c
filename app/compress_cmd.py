"""`distillery compress`: run a recipe with the engine alone, no service, and print what each stage cost."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from .exit_codes import EXIT_CANCELLED, EXIT_GATE, EXIT_OK


def _roots(args: argparse.Namespace, recipe_path: Path) -> list[Path]:
    from worker.engine.references import default_roots

    roots = [Path(r) for r in args.root] + default_roots()
    # Run by hand, a recipe may name files beside it or below the working directory; the service
    # passes its configured roots instead.
    return roots or [recipe_path.resolve().parent, Path.cwd()]


def _task_cell(name: str, row: dict) -> str:
    """`topics probe_accuracy=0.875 [0.812, 0.931] 0.986`: the metric, its bootstrap interval, the retention."""
    value = "n/a" if row.get("value") is None else f"{row['value']:.3f}"
    bounds = f" [{row['interval'][0]:.3f}, {row['interval'][1]:.3f}]" if row.get("interval") else ""
    kept = "n/a" if row["retention"] is None else f"{row['retention']:.3f}"
    return f"{name} {row.get('metric', '?')}={value}{bounds} {kept}"


def latency_cells(lat: dict) -> tuple[str, str]:
    """Batch-1 p50 and the speed-up over the teacher (timed in the same window); `~` marks a noisy figure."""
    mark = "~" if lat.get("noisy") else ""
    speed = f"{lat['speedup']:.2f}x{mark}" if lat.get("speedup") is not None else "-"
    return f"{lat['batch1_p50_ms']:.2f}{mark}", speed


def why(lat: dict) -> str:
    """The first two reasons a latency figure is noisy (the report lists them all)."""
    reasons = lat.get("noisy_reasons") or []
    return "; ".join(reasons[:2]) + (f" (+{len(reasons) - 2} more in report.json)" if len(reasons) > 2 else "")


def _summary(report: dict) -> str:
    rows = [("teacher", "-", report.get("teacher"))] + [
        (f"{s['index']}:{s['kind']}", s["status"], s["evaluation"]) for s in report["stages"]
    ]
    # several students (tasks/strategy) or a search: one row per student's final candidate, or per trial
    rows += [(s["name"], s["status"], s["evaluation"] or None) for s in report.get("students") or []]
    rows += [(t["id"], t["status"], t["evaluation"]) for t in (report.get("search") or {}).get("trials", [])]
    lines = [f"{'stage':<16}{'status':<13}{'size MB':>9}{'params':>12}{'p50 ms':>9}{'speed-up':>10}  "
             "task metric value [95% interval] retention"]
    noisy: list[str] = []
    for name, status, ev in rows:
        if ev is None:
            continue
        size = f"{ev['size_bytes'] / 1e6:.1f}" if "size_bytes" in ev else "-"
        kept = ", ".join(_task_cell(t, r) for t, r in ev["tasks"].items())
        p50, speed = latency_cells(ev["latency"])
        if ev["latency"].get("noisy"):
            noisy.append(f"{name}: {why(ev['latency'])}")
        lines.append(f"{name:<16}{status:<13}{size:>9}{ev['parameters']:>12,}{p50:>9}{speed:>10}  {kept}")
    final_lat = (report.get("final") or {}).get("latency")
    if final_lat:  # the artifact reloaded from disk at the end, timed against the teacher again
        p50, speed = latency_cells(final_lat)
        lines.append(f"{'artifact':<16}{'reloaded':<13}{'':>9}{'':>12}{p50:>9}{speed:>10}")
        if final_lat.get("noisy"):
            noisy.append(f"artifact: {why(final_lat)}")
    if noisy:
        lines.append("~ noisy latency (a busy machine: trust the speed-up, measured in the same window, over ms):")
        lines += [f"  {n}" for n in noisy]
    lines.append(f"status: {report['status']}")
    if report.get("search") is not None:
        search = report["search"]
        best = (search["best"] or {}).get("id", "none")
        lines.append(f"search: {search['trials_run']} of {search['grid_size']} points tried; best {best}; "
                     f"frontier (size) {', '.join(search['frontier']['size'])}")
    for s in report.get("shortfalls", []):
        kept = "n/a" if s["retention"] is None else f"{s['retention']:.4f}"
        who = f"student {s['student']}: " if s.get("student") else ""
        noise = " (within the noise: the threshold lies inside the interval)" if s.get("within_noise") else ""
        if s.get("rule") == "max_drop":
            lost = "n/a" if s.get("drop") is None else f"{s['drop']:.4f}"
            lines.append(f"  gate: {who}task {s['task']} lost {lost} of the teacher's {s['metric']}, "
                         f"max_drop {s['required']}{noise}")
            continue
        lines.append(f"  gate: {who}task {s['task']} kept {kept} of the teacher's {s['metric']}, "
                     f"needs {s['required']}" + (f" (short by {s['short_by']:.4f})" if s["short_by"] else "")
                     + noise)
    return "\n".join(lines)


def cmd_compress(args: argparse.Namespace) -> int:
    from worker.engine import RunContext, load_recipe, make_plan, run

    from .progress import ProgressPrinter

    recipe_path = Path(args.recipe)
    recipe = load_recipe(recipe_path)
    roots = _roots(args, recipe_path)
    base_dir = recipe_path.resolve().parent
    out = Path(args.out)
    if args.dry_run:
        plan = make_plan(recipe, base_dir=base_dir, roots=roots, work_dir=out / "work")
        shapes = [{"stage": s.label, "layers": i.num_layers, "intermediate_size": i.intermediate_size}
                  for s, i in zip(plan.stages, plan.infos, strict=True)]
        print(json.dumps({"valid": True, "device": str(plan.env.device), "teacher": plan.teacher.provenance,
                          "stages": shapes}, indent=2))
        return EXIT_OK
    cancel = {"flag": False}

    def on_sigint(signum, frame):  # first Ctrl-C: stop cleanly at the next step; second: stop now
        if cancel["flag"]:
            raise KeyboardInterrupt
        cancel["flag"] = True
        print("\ncancelling at the next step (Ctrl-C again to abort)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    printer = ProgressPrinter(quiet=args.quiet or args.json)
    ctx = RunContext(on_progress=printer, should_cancel=lambda: cancel["flag"])
    try:
        result = run(recipe, out, base_dir=base_dir, roots=roots, ctx=ctx, resume=args.resume)
    finally:
        printer.close()
        signal.signal(signal.SIGINT, previous)  # called in process (tests, notebooks): Ctrl-C works again after
    if args.json:
        print(json.dumps(result.report, indent=2))
    else:
        print(_summary(result.report))
        print(f"report: {out / 'report.json'}  manifest: {out / 'manifest.json'}"
              + (f"  artifact: {result.artifact}" if result.artifact else ""))
    return {"succeeded": EXIT_OK, "failed-gate": EXIT_GATE, "cancelled": EXIT_CANCELLED}[result.status]


# ---- the service ---------------------------------------------------------------------------------
# These commands never import torch: the API and the worker supervisor stay small, and a parent process
# never initialises CUDA before starting GPU workers.
