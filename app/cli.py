"""The `distillery` command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_GATE, EXIT_CANCELLED = 0, 1, 2, 3, 130


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _roots(args: argparse.Namespace, recipe_path: Path) -> list[Path]:
    from worker.engine.references import default_roots

    roots = [Path(r) for r in args.root] + default_roots()
    # Run by hand, a recipe may name files beside it or below the working directory; the service
    # passes its configured roots instead.
    return roots or [recipe_path.resolve().parent, Path.cwd()]


def _summary(report: dict) -> str:
    rows = [("teacher", "-", report.get("teacher"))] + [
        (f"{s['index']}:{s['kind']}", s["status"], s["evaluation"]) for s in report["stages"]
    ]
    lines = [f"{'stage':<16}{'status':<13}{'size MB':>9}{'params':>12}{'p50 ms':>9}  retention"]
    for name, status, ev in rows:
        if ev is None:
            continue
        size = f"{ev['size_bytes'] / 1e6:.1f}" if "size_bytes" in ev else "-"
        kept = ", ".join(
            f"{t}={r['retention']:.3f}" if r["retention"] is not None else f"{t}=n/a"
            for t, r in ev["tasks"].items()
        )
        lines.append(f"{name:<16}{status:<13}{size:>9}{ev['parameters']:>12,}"
                     f"{ev['latency']['batch1_p50_ms']:>9.2f}  {kept}")
    lines.append(f"status: {report['status']}")
    for s in report.get("shortfalls", []):
        kept = "n/a" if s["retention"] is None else f"{s['retention']:.4f}"
        lines.append(f"  gate: task {s['task']} kept {kept} of the teacher's {s['metric']}, "
                     f"needs {s['required']}" + (f" (short by {s['short_by']:.4f})" if s["short_by"] else ""))
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

    signal.signal(signal.SIGINT, on_sigint)
    printer = ProgressPrinter(quiet=args.quiet or args.json)
    ctx = RunContext(on_progress=printer, should_cancel=lambda: cancel["flag"])
    try:
        result = run(recipe, out, base_dir=base_dir, roots=roots, ctx=ctx, resume=args.resume)
    finally:
        printer.close()
    if args.json:
        print(json.dumps(result.report, indent=2))
    else:
        print(_summary(result.report))
        print(f"report: {out / 'report.json'}  manifest: {out / 'manifest.json'}"
              + (f"  artifact: {result.artifact}" if result.artifact else ""))
    return {"succeeded": EXIT_OK, "failed-gate": EXIT_GATE, "cancelled": EXIT_CANCELLED}[result.status]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distillery", description="Distil, prune and quantize models.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compress", help="run a recipe locally, without the service")
    p.add_argument("recipe", help="recipe file (YAML or JSON)")
    p.add_argument("--out", required=True, help="output directory (artifact, report.json, manifest.json)")
    p.add_argument("--root", action="append", default=[],
                   help="allowed root for local model and data paths (repeatable; default: the recipe's "
                        "folder and the working directory, or DISTILLERY_MODEL_ROOTS)")
    p.add_argument("--resume", action="store_true", help="skip stages already checkpointed in --out")
    p.add_argument("--dry-run", action="store_true", help="validate the recipe against model and data only")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_compress)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    from worker.engine.errors import EngineError

    try:
        return args.func(args)
    except EngineError as exc:
        print(f"error [{exc.code}]: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # a bug of ours: say so plainly; the traceback only on request
        if os.environ.get("DISTILLERY_DEBUG"):
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (set DISTILLERY_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
