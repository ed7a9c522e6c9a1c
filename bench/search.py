"""Accuracy-aware search on all-MiniLM-L6-v2 with two tasks, against trying every point of the grid.

    HF_HUB_OFFLINE=1 python bench/search.py [--depths 2,3,4] [--sparsity 0,0.5] [--steps 60] [--out DIR]

Both tasks come from text every machine has offline (bench/corpus.py, the standard library's docstrings):
- `docs`: held-out sentences; quality is the cosine between the student's and the teacher's embeddings.
- `modules`: pairs of sentences, scored 1 when both document the same module and 0 otherwise; quality is the
  Spearman correlation of the embeddings' cosine with that score (student / teacher).
The same recipe runs twice in fresh directories: `exhaustive: true` (every point tried, the naive baseline)
and the search. Prints trials, wall time, the chosen candidate's size, latency and per-task retention, and
whether both chose the same point; the goal is the same choice at a third of the trials or less.
"""
# ruff: noqa: E402  (the logging set-up must come before torch and transformers are imported)

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `python bench/search.py`
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=r"(?s).*(deprecated|quantize_per_channel|_register_pytree_node).*")

import torch

from bench.corpus import stdlib_sentences_by_module, write_jsonl
from worker.engine import RunContext, parse_recipe, run


def build_tasks(root: Path, n_train: int, n_eval: int, seed: int = 0) -> dict[str, dict[str, str]]:
    """Two tasks from the docstrings; train and eval never share a sentence."""
    rng = random.Random(seed)
    modules = stdlib_sentences_by_module(min_sentences=6)
    names = sorted(modules)
    rng.shuffle(names)
    held, rest = names[: len(names) // 3], names[len(names) // 3:]  # eval modules apart from train modules

    def sentences(mods: list[str]) -> list[str]:
        out = [s for m in mods for s in modules[m]]
        rng.shuffle(out)
        return out

    def pairs(mods: list[str], n: int) -> list[dict]:
        rows = []
        for i in range(n):
            a = rng.choice(mods)
            b = a if i % 2 == 0 else rng.choice([m for m in mods if m != a])
            s1, s2 = rng.sample(modules[a], 2) if a == b else (rng.choice(modules[a]), rng.choice(modules[b]))
            rows.append({"text_a": s1, "text_b": s2, "score": 1.0 if a == b else 0.0})
        return rows

    train_text, eval_text = sentences(rest), sentences(held)
    out = {"docs": {"train": write_jsonl(root / "docs_train.jsonl", train_text[:n_train]),
                    "eval": write_jsonl(root / "docs_eval.jsonl", eval_text[:n_eval])}}
    modules_train, modules_eval = root / "modules_train.jsonl", root / "modules_eval.jsonl"
    for path, rows in ((modules_train, pairs(rest, n_train // 2)), (modules_eval, pairs(held, n_eval))):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out["modules"] = {"train": modules_train, "eval": modules_eval}
    return {task: {k: str(v) for k, v in paths.items()} for task, paths in out.items()}


def recipe(args, tasks: dict, exhaustive: bool) -> dict:
    gates = {"docs": args.gate_docs, "modules": args.gate_modules}
    return {
        "teacher": {"source": "bundled"}, "task": "feature-extraction",
        "tasks": {name: {**paths, "gate": gates[name]} for name, paths in tasks.items()},
        "stages": [{"kind": "distill", "epochs": 100, "max_steps": args.steps, "lr": 5e-4, "batch_size": 32,
                    "hidden_states": {"weight": 1.0}}],
        "search": {"space": {"depth": args.depths, "sparsity": args.sparsity,
                             "quantization": args.quantization, "embeddings": args.embeddings},
                   "objective": {"minimize": args.objective}, "exhaustive": exhaustive},
        "evaluate": {"latency_runs": args.latency_runs, "warmup_runs": 2, "throughput_batch": 8},
        "max_length": 64, "seed": 0,
    }


def timed_run(args, tasks: dict, exhaustive: bool, out: Path) -> tuple[dict, float, int]:
    distilled = []

    def on_progress(event) -> None:
        if event.stage.endswith(":distill") and event.message == "starting":
            distilled.append(event.stage)

    t0 = time.perf_counter()
    result = run(parse_recipe(recipe(args, tasks, exhaustive)), out, roots=[out.parent],
                 ctx=RunContext(on_progress=on_progress))
    return result.report, time.perf_counter() - t0, len(distilled)


def describe(report: dict) -> str:
    best = report["search"]["best"]
    if best is None:
        effort = report["search"]["best_effort"] or {}
        short = [s["task"] for s in effort.get("shortfalls", [])]
        return f"none passed; best effort {effort.get('id')} short on {short}"
    tasks = ", ".join(f"{t} {r:.3f}" for t, r in best["tasks"].items())
    return f"{best['id']}: {best['size_bytes'] / 1e6:.1f} MB, p50 {best['latency_ms']:.2f} ms, retention {tasks}"


def naive_estimate(out: Path, report: dict) -> float:
    """What trying every point as a separate job would cost: for each point, the measured time of every node
    on its path (distil, prune, quantize) plus its trial's evaluation, with nothing shared between points."""
    nodes = out / "search" / "nodes"
    duration = {p.parent.name: json.loads(p.read_text())["duration_s"] for p in nodes.glob("*/node.json")}
    total = 0.0
    for t in report["search"]["trials"]:
        point = t["point"]
        path = [f"d{point['depth']}"]
        if point["sparsity"]:
            path.append(f"d{point['depth']}-s{round(point['sparsity'] * 100):02d}")
        if point["quantization"] != "none":
            path.append(t["id"])
        total += sum(duration.get(n, 0.0) for n in path) + t["evaluation"]["seconds"]
    return total


def main() -> None:
    floats = lambda s: [float(x) for x in s.split(",")]  # noqa: E731
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depths", type=lambda s: [int(x) for x in s.split(",")], default=[2, 3, 4])
    p.add_argument("--sparsity", type=floats, default=[0.0, 0.5])
    p.add_argument("--quantization", type=lambda s: s.split(","), default=["none", "int8-dynamic"])
    p.add_argument("--embeddings", type=lambda s: s.split(","), default=["keep", "int8"])
    p.add_argument("--objective", default="size", choices=["size", "latency", "mix"])
    p.add_argument("--steps", type=int, default=60, help="distillation steps per student depth")
    p.add_argument("--train", type=int, default=1000, help="training sentences per task")
    p.add_argument("--eval", type=int, default=200, help="eval examples per task")
    p.add_argument("--latency-runs", type=int, default=10)
    p.add_argument("--gate-docs", type=float, default=0.8)
    p.add_argument("--gate-modules", type=float, default=0.8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("runs/bench-search"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    tasks = build_tasks(args.out / "data", args.train, args.eval)
    started = time.perf_counter()
    full, full_s, full_distills = timed_run(args, tasks, True, args.out / "exhaustive")
    found, found_s, found_distills = timed_run(args, tasks, False, args.out / "search")
    grid, tried = full["search"]["grid_size"], found["search"]["trials_run"]
    same = (full["search"]["best"] or {}).get("id") == (found["search"]["best"] or {}).get("id")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; all-MiniLM-L6-v2; grid of {grid} points "
          f"(depth {args.depths}, sparsity {args.sparsity}, {args.quantization}, embeddings {args.embeddings}); "
          f"objective {args.objective}; gates docs {args.gate_docs}, modules {args.gate_modules}")
    print("| run | trials | distillations | wall s | probe s | chosen |")
    print("|---|---:|---:|---:|---:|---|")
    for name, rep, secs, distills in (("exhaustive", full, full_s, full_distills),
                                      ("search", found, found_s, found_distills)):
        print(f"| {name} | {rep['search']['trials_run']} | {distills} | {secs:.1f} | {rep['search']['probe_s']:.1f} "
              f"| {describe(rep)} |")
    print(f"same choice: {same}; trials ratio {tried / grid:.2f} (goal <= 0.33); wall ratio {found_s / full_s:.2f}; "
          f"teacher {full['teacher']['size_bytes'] / 1e6:.1f} MB, p50 {full['teacher']['latency']['batch1_p50_ms']:.2f}"
          f" ms; total {time.perf_counter() - started:.0f} s")
    print("search order: " + ", ".join(f"{t['id']} {t['status']}" for t in found["search"]["trials"]))
    naive = naive_estimate(args.out / "exhaustive", full)
    print(f"naive grid (each point its own job, distilling its own student), estimated from this run's measured "
          f"node and trial times: {naive:.0f} s; search / naive {found_s / naive:.2f}")
    passing = [t["id"] for t in full["search"]["trials"] if t["status"] == "passed"]
    print(f"exhaustive: {len(passing)} of {grid} pass; size frontier {full['search']['frontier']['size']}")
    (args.out / "bench.json").write_text(json.dumps({"exhaustive": full["search"], "search": found["search"],
                                                     "wall_s": {"exhaustive": full_s, "search": found_s}}, indent=1))


if __name__ == "__main__":
    main()
