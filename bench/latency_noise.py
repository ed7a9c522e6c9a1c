"""Latency under a neighbour: one compression of the bundled all-MiniLM-L6-v2 (int8-dynamic, no distillation)
run twice through `distillery compress`, first as the machine is, then beside N CPU-burning processes.

    python bench/latency_noise.py [--burners 2] [--out DIR]

The speed-ups are ratios from interleaved windows (teacher and candidate timed call by call), so they should
agree between the two runs within 10 %, while the milliseconds move; the loaded run should be flagged noisy.
Prints, per batch size, the stage row's and the reloaded artifact's speed-up in each run, their ratio, each
run's batch-1 p50 and noisy flag, and the machine's load average before each run (a machine that is not idle
before the first run is said to be so, not passed off as idle).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from worker.engine.hardware import describe

ROOT = Path(__file__).resolve().parents[1]


def burn() -> None:
    while True:
        pass


def compress(out: Path) -> dict:
    recipe = {"teacher": {"source": "bundled"}, "task": "feature-extraction",
              "data": {"eval": {"held_out": str(ROOT / "examples/data/heldout.jsonl")}},
              "stages": [{"kind": "quantize", "method": "int8-dynamic"}]}
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.with_suffix(".json")
    path.write_text(json.dumps(recipe))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "app.cli", "compress", str(path), "--out", str(out), "--quiet",
                    "--root", str(ROOT)], cwd=ROOT, env=env, check=True)
    return json.loads((out / "report.json").read_text())


def figures(report: dict) -> dict:
    stage = report["stages"][-1]["evaluation"]["latency"]
    final = (report.get("final") or {}).get("latency") or {}
    rows = {}
    for source, lat in (("stage", stage), ("artifact", final)):
        for b in lat.get("batches") or []:
            rows[(source, b["batch"])] = b.get("speedup")
    return {"speedups": rows, "p50": stage.get("batch1_p50_ms"), "noisy": stage.get("noisy"),
            "reasons": stage.get("noisy_reasons") or []}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--burners", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="latency-noise-"))
    cpu = describe(torch.device("cpu"))
    print(f"machine: {cpu['cpu_model']}, {cpu['logical_cpus']} CPUs, matrix {cpu['matrix'] or 'none'}; "
          f"load average before the first run {os.getloadavg()[0]:.2f}")
    quiet = figures(compress(out / "quiet"))
    procs = [multiprocessing.Process(target=burn, daemon=True) for _ in range(args.burners)]
    for p in procs:
        p.start()
    try:
        print(f"load average with {args.burners} burners started {os.getloadavg()[0]:.2f}")
        loaded = figures(compress(out / "loaded"))
    finally:
        for p in procs:
            p.terminate()
    print(f"{'row':<10}{'batch':>6}{'quiet x':>10}{'loaded x':>10}{'ratio':>8}")
    for key, q in sorted(quiet["speedups"].items()):
        loaded_x = loaded["speedups"].get(key)
        ratio = f"{loaded_x / q:.2f}" if q and loaded_x else "-"
        print(f"{key[0]:<10}{key[1]:>6}{q or 0:>10.2f}{loaded_x or 0:>10.2f}{ratio:>8}")
    for name, run in (("quiet", quiet), ("loaded", loaded)):
        print(f"{name}: batch-1 p50 {run['p50']} ms, noisy {run['noisy']} {'; '.join(run['reasons'][:2])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
