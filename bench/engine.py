"""Each engine stage against the same operation written by hand, on all-MiniLM-L6-v2, in one run.

    python bench/engine.py [--quick] [--minutes M] [--out DIR] [--threads N]

Stages run directly (build_stage(...).run), so their times exclude the runner's evaluation and
saving. Fast stages are repeated, engine and hand interleaved, and the median kept. Quality is one
shared helper for both sides: the mean cosine between the model's and the teacher's mean-pooled
embeddings on held-out sentences. Prints a Markdown table; writes it and a JSON of all figures.
"""
# ruff: noqa: E402  (the logging set-up must come before torch and transformers are imported)

from __future__ import annotations

import argparse
import gc
import io
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `python bench/engine.py`
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
for _name in ("torchao", "torch.utils._pytree"):  # optional-kernel and deprecation chatter on import
    logging.getLogger(_name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=r"(?s).*(deprecated|quantize_per_channel|_register_pytree_node).*")

import torch
import transformers
from torch import nn

from bench import handwritten as hand
from bench.corpus import split, stdlib_sentences
from worker.engine.candidate import Candidate
from worker.engine.context import RunContext
from worker.engine.data import Dataset
from worker.engine.recipe import DistillConfig, PruneMagnitudeConfig, PruneStructuredConfig, QuantizeConfig
from worker.engine.references import bundled_model_dir
from worker.engine.stages import StageEnv, build_stage
from worker.engine.tasks.feature_extraction import FeatureExtraction

# The recipe of the 10-minute goal (row 5), for the lead to tune; time_budget_s is filled in at run time.
TEN_MINUTE_RECIPE: dict = {"kind": "distill", "student": {"num_layers": 3}, "epochs": 100, "lr": 5e-4,
                           "batch_size": 32, "hidden_states": {"weight": 1.0}}
LAYERS = [0, 2, 5]  # the 3-layer student (what num_layers 3 picks: evenly spaced, first and last kept)
SEED, MAX_LENGTH, BATCH = 0, 64, 32
FULL = {"eval": 500, "distill_train": 2000, "distill_steps": 150, "goal_train": 4000, "repeats": 5,
        "latency_runs": 50}
QUICK = {"eval": 200, "distill_train": 640, "distill_steps": 20, "goal_train": 1000, "repeats": 2,
         "latency_runs": 10}


def environment() -> dict:
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    names = [ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines() if ln.startswith("model name")] \
        if info.is_file() else []
    cpu = names[0] if names else cpu
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "threads": torch.get_num_threads(),
            "cpu": cpu, "cpu_count": os.cpu_count(), "quantized_engine": torch.backends.quantized.engine}


@torch.no_grad()
def embed(model: nn.Module, tok, texts: list[str], batch: int = 64) -> torch.Tensor:
    """Mean-pooled embeddings. The tokenizer's token_type_ids are passed (contiguous zeros), which
    the hand-quantized int8 embedding needs (see handwritten.quantize_int8); the same for all models."""
    model.eval()
    out = []
    for i in range(0, len(texts), batch):
        enc = tok(texts[i : i + batch], truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
        out.append(hand.mean_pool(model(**enc).last_hidden_state.float(), enc["attention_mask"]))
    return torch.cat(out)


def cosine(model: nn.Module, tok, texts: list[str], reference: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(embed(model, tok, texts), reference, dim=-1).mean())


def saved_mb(model: nn.Module) -> float:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell() / 1e6


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds per function over `repeats`, alternating the order each round; the last results."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    last: dict[str, object] = {}
    for r in range(repeats):
        for name in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            gc.collect()
            torch.manual_seed(SEED)
            t0 = time.perf_counter()
            last[name] = fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, last


@torch.no_grad()
def batch1_latency(models: dict[str, nn.Module], tok, texts: list[str], runs: int) -> dict[str, float]:
    """Median batch-1 milliseconds per model over the same inputs, models interleaved per request."""
    inputs = [tok([t], truncation=True, max_length=MAX_LENGTH, return_tensors="pt") for t in texts[:16]]
    times: dict[str, list[float]] = {k: [] for k in models}
    for i in range(runs + 3):
        for name in list(models) if i % 2 == 0 else list(models)[::-1]:
            t0 = time.perf_counter()
            models[name](**inputs[i % len(inputs)])
            if i >= 3:  # the first three are warm-up
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


def run_stage(config, candidate: Candidate, env: StageEnv) -> tuple[nn.Module, dict]:
    stage = build_stage(config, 0)
    return stage.run(candidate, env, RunContext()).model, stage.details


def setup(held_out_count: int):
    """The bundled MiniLM teacher and tokenizer, the training and held-out sentences, the teacher's held-out
    embeddings, and the teacher as an engine candidate."""
    model_dir = bundled_model_dir()
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    teacher = transformers.AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    train, held_out = split(stdlib_sentences(), held_out_count, SEED)
    cand = Candidate(model=teacher, tokenizer=tok, task=FeatureExtraction())
    return tok, teacher, train, held_out, embed(teacher, tok, held_out), cand


def bench(quick: bool, minutes: float) -> tuple[dict, list[list[str]]]:
    size = QUICK if quick else FULL
    tok, teacher, train, held_out, ref, cand = setup(size["eval"])
    task = cand.task

    def env_with(texts: list[str]) -> StageEnv:
        data = Dataset(path=Path("<memory>.jsonl"), kind="text", rows=[{"text": t} for t in texts], sha256="")
        return StageEnv(task=task, device=torch.device("cpu"), seed=SEED, max_length=MAX_LENGTH, train=data,
                        teacher=cand)

    res: dict = {"environment": environment(), "quick": quick, "sizes": size}
    rows: list[list[str]] = []

    def row(what: str, engine: float | str, handv: float | str, ratio: float | None, goal: str, fmt: str = ".3f"):
        cells = [v if isinstance(v, str) else format(v, fmt) for v in (engine, handv)]
        rows.append([what, *cells, "" if ratio is None else f"{ratio:.2f}", goal])

    # 1. distill, fixed work: same student, data, steps, optimiser and loss on both sides.
    texts, steps = train[: size["distill_train"]], size["distill_steps"]
    cfg = DistillConfig.model_validate({"kind": "distill", "student": {"layers": LAYERS}, "max_steps": steps,
                                        "epochs": 1000, "lr": 1e-4, "batch_size": BATCH, "embedding_loss": "cosine"})
    t0 = time.perf_counter()
    e_model, e_det = run_stage(cfg, cand, env_with(texts))
    e_s = time.perf_counter() - t0
    h_model, h_det = hand.distill(teacher, tok, texts, layers=LAYERS, max_length=MAX_LENGTH, batch_size=BATCH,
                                  lr=1e-4, loss="cosine", steps=steps, seed=SEED)
    d = {"engine_s": e_s, "hand_s": h_det["total_s"], "ratio": e_s / h_det["total_s"],
         "engine_teacher_pass_s": e_det["teacher_pass_s"], "engine_train_s": e_det["train_s"],
         "hand_teacher_pass_s": h_det["teacher_pass_s"], "hand_train_s": h_det["train_s"],
         "engine_steps": e_det["steps"], "hand_steps": h_det["steps"], "engine_final_loss": e_det["final_loss"],
         "hand_final_loss": h_det["final_loss"], "engine_cosine": cosine(e_model, tok, held_out, ref),
         "hand_cosine": cosine(h_model, tok, held_out, ref)}
    res["distill"] = d
    tag = f"distill {steps} steps, {len(texts)} sents"
    row(f"{tag}: time (s)", d["engine_s"], d["hand_s"], d["ratio"], "ratio <= 1.10", ".1f")
    row(f"{tag}: teacher pass / train (s)", f"{d['engine_teacher_pass_s']:.1f} / {d['engine_train_s']:.1f}",
        f"{d['hand_teacher_pass_s']:.1f} / {d['hand_train_s']:.1f}", None, "")
    row(f"{tag}: held-out cosine", d["engine_cosine"], d["hand_cosine"], None, "equal within noise")
    del e_model, h_model

    # 2. and 3. pruning on the full teacher.
    reps, env = size["repeats"], env_with(train[:BATCH])
    mag = PruneMagnitudeConfig(kind="prune", method="magnitude", sparsity=0.5, scope="global")
    times, out = interleaved({"engine": lambda: run_stage(mag, cand, env),
                              "hand": lambda: hand.prune_magnitude(teacher, 0.5)}, reps)
    p = {"engine_s": times["engine"], "hand_s": times["hand"], "ratio": times["engine"] / times["hand"],
         "engine_sparsity": out["engine"][1]["achieved_sparsity"], "hand_sparsity": out["hand"][1],
         "engine_cosine": cosine(out["engine"][0], tok, held_out, ref),
         "hand_cosine": cosine(out["hand"][0], tok, held_out, ref)}
    res["prune_magnitude"] = p
    row("prune magnitude 0.5 global: time (s)", p["engine_s"], p["hand_s"], p["ratio"], "ratio <= 1.10")
    row("prune magnitude: achieved sparsity", p["engine_sparsity"], p["hand_sparsity"], None, "0.500")
    row("prune magnitude: held-out cosine", p["engine_cosine"], p["hand_cosine"], None, "equal")

    st = PruneStructuredConfig(kind="prune", method="structured", neurons=0.5, heads=0.0)
    times, out = interleaved({"engine": lambda: run_stage(st, cand, env),
                              "hand": lambda: hand.prune_neurons(teacher, 0.5)}, reps)
    e_m, h_m = out["engine"][0], out["hand"]
    s = {"engine_s": times["engine"], "hand_s": times["hand"], "ratio": times["engine"] / times["hand"],
         "engine_parameters": sum(x.numel() for x in e_m.parameters()),
         "hand_parameters": sum(x.numel() for x in h_m.parameters()),
         "engine_cosine": cosine(e_m, tok, held_out, ref), "hand_cosine": cosine(h_m, tok, held_out, ref)}
    res["prune_structured"] = s
    row("prune structured neurons 0.5: time (s)", s["engine_s"], s["hand_s"], s["ratio"], "ratio <= 1.10")
    row("prune structured: parameters (M)", s["engine_parameters"] / 1e6, s["hand_parameters"] / 1e6, None,
        "equal", ".2f")
    row("prune structured: held-out cosine", s["engine_cosine"], s["hand_cosine"], None, "equal")

    # 4. int8 dynamic quantization with int8 embeddings.
    qc = QuantizeConfig(kind="quantize", method="int8-dynamic", embeddings="int8")
    times, out = interleaved({"engine": lambda: run_stage(qc, cand, env),
                              "hand": lambda: hand.quantize_int8(teacher)}, reps)
    e_m, h_m = out["engine"][0], out["hand"]
    lat = batch1_latency({"fp32": teacher, "engine": e_m, "hand": h_m}, tok, held_out, size["latency_runs"])
    q = {"engine_s": times["engine"], "hand_s": times["hand"], "ratio": times["engine"] / times["hand"],
         "fp32_mb": saved_mb(teacher), "engine_mb": saved_mb(e_m), "hand_mb": saved_mb(h_m),
         "fp32_batch1_ms": lat["fp32"], "engine_batch1_ms": lat["engine"], "hand_batch1_ms": lat["hand"],
         "engine_speedup": lat["fp32"] / lat["engine"], "hand_speedup": lat["fp32"] / lat["hand"],
         "engine_cosine": cosine(e_m, tok, held_out, ref), "hand_cosine": cosine(h_m, tok, held_out, ref)}
    res["quantize"] = q
    row("quantize int8-dynamic + int8 emb: time (s)", q["engine_s"], q["hand_s"], q["ratio"], "ratio <= 1.10")
    row(f"quantize: saved state dict (MB; fp32 {q['fp32_mb']:.1f})", q["engine_mb"], q["hand_mb"], None,
        "<= 25 MB", ".1f")
    row(f"quantize: batch-1 p50 (ms; fp32 {q['fp32_batch1_ms']:.1f})", q["engine_batch1_ms"],
        q["hand_batch1_ms"], None, "", ".1f")
    row("quantize: speed-up over fp32 (x)", q["engine_speedup"], q["hand_speedup"], None, ">= 2x", ".2f")
    row("quantize: held-out cosine", q["engine_cosine"], q["hand_cosine"], None, ">= 0.94")
    del out, e_m, h_m

    # 5. the distillation goal: the engine recipe vs the plain MSE loop, same wall-clock budget.
    budget, texts = minutes * 60, train[: size["goal_train"]]
    b_model, b_det = hand.distill(teacher, tok, texts, layers=LAYERS, max_length=MAX_LENGTH, batch_size=BATCH,
                                  lr=1e-4, loss="mse", budget_s=budget, engine_like=False, seed=SEED)
    # The engine's budget bounds training only: leave out the teacher pass just measured on the same sentences.
    recipe = {**TEN_MINUTE_RECIPE, "time_budget_s": max(1.0, budget - b_det["teacher_pass_s"])}
    t0 = time.perf_counter()
    g_model, g_det = run_stage(DistillConfig.model_validate(recipe), cand, env_with(texts))
    g = {"budget_s": budget, "recipe": recipe, "engine_s": time.perf_counter() - t0, "baseline_s": b_det["total_s"],
         "engine_steps": g_det["steps"], "baseline_steps": b_det["steps"], "engine_layers": g_det["student_layers"],
         "engine_stopped_by": g_det["stopped_by"], "engine_teacher_pass_s": g_det["teacher_pass_s"],
         "engine_cosine": cosine(g_model, tok, held_out, ref), "baseline_cosine": cosine(b_model, tok, held_out, ref)}
    res["goal"] = g
    tag = f"distill {minutes:g} min, {len(texts)} sents"
    row(f"{tag}: wall time (s)", g["engine_s"], g["baseline_s"], None, f"budget {budget:.0f}", ".0f")
    row(f"{tag}: steps", g["engine_steps"], g["baseline_steps"], None, "", "d")
    row(f"{tag}: held-out cosine", g["engine_cosine"], g["baseline_cosine"], None, "engine >= 0.85, base ~0.80")
    if g["engine_layers"] != LAYERS:
        rows.append([f"NOTE: engine student layers {g['engine_layers']} are not the baseline's {LAYERS}", *[""] * 4])
    return res, rows


def header(env: dict, quick: bool, size: dict) -> str:
    return (f"python {env['python']}, torch {env['torch']}, transformers {env['transformers']}; {env['threads']} "
            f"torch threads on {env['cpu_count']} CPUs ({env['cpu']}); quantized engine {env['quantized_engine']}; "
            f"held-out sentences {size['eval']}{'; QUICK mode' if quick else ''}\n\n")


def table(rows: list[list[str]]) -> str:
    lines = ["| check | engine | hand-written | engine/hand | goal |", "|---|---:|---:|---:|---|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few minutes: fewer sentences, steps and repeats")
    ap.add_argument("--minutes", type=float, default=None, help="distillation budget of row 5 (default 10)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's choice); 1 is steadier on a busy shared machine")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    minutes = args.minutes if args.minutes is not None else (0.5 if args.quick else 10.0)
    head = header(environment(), args.quick, QUICK if args.quick else FULL)
    print(head, end="", flush=True)
    started = time.perf_counter()
    res, rows = bench(args.quick, minutes)
    res["duration_s"] = time.perf_counter() - started
    write_results(args.out, "engine", head, rows, res)
    return 0


def write_results(out: Path, name: str, head: str, rows: list[list[str]], res: dict) -> None:
    """Print the table; write it (NAME.md) and every figure (NAME.json) under `out`."""
    print(table(rows))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(head + table(rows), encoding="utf-8")
    (out / f"{name}.json").write_text(json.dumps(res, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {out / name}.md and {name}.json ({res['duration_s']:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
