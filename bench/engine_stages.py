"""The engine's other stages against the same operation written by hand, on all-MiniLM-L6-v2, in one run.

    python bench/engine_stages.py [--quick] [--out DIR] [--threads N]

bench/engine.py covers distillation, magnitude and neuron pruning and int8-dynamic quantization (the
goals of the engine issue); this covers the rest: 2:4 pruning, attention-head pruning, fp16 casting,
torchao int8 and int4 weight-only quantization, and the evaluate stage (quality metrics, batch-1
latency and throughput). Same method: stages run directly, engine and hand interleaved over repeats,
median kept; quality is the mean cosine to the teacher's embeddings on held-out sentences.
"""
# ruff: noqa: I001  (bench.engine sets HF_HUB_OFFLINE and logging up before transformers is imported)

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from bench.engine import (
    BATCH, MAX_LENGTH, SEED, cosine, embed, environment, header, interleaved, run_stage, saved_mb, setup,
    write_results,
)

import torch
import torch.nn.functional as F
from torch import nn

from bench import handwritten as hand
from worker.engine.candidate import Candidate
from worker.engine.context import RunContext
from worker.engine.data import Dataset
from worker.engine.evaluate import Evaluator
from worker.engine.recipe import EvaluateConfig, PruneNMConfig, PruneStructuredConfig, QuantizeConfig
from worker.engine.stages import StageEnv

# Stage operations take 0.1 to 0.5 s, where one slow repeat moves a median of five: nine repeats; the
# evaluate comparison takes seconds per call and is repeated fewer times.
FULL = {"eval": 500, "repeats": 9, "eval_repeats": 3, "latency_runs": 50}
QUICK = {"eval": 100, "repeats": 2, "eval_repeats": 1, "latency_runs": 10}


@torch.no_grad()
def prune_2_4(teacher: nn.Module) -> tuple[nn.Module, float]:
    """Keep the 2 largest |w| of every 4 consecutive inputs of each encoder Linear's output row; return the
    model and the sparsity achieved (the engine's stage reports it too, as hand.prune_magnitude does)."""
    model = copy.deepcopy(teacher)
    linears = hand.encoder_linears(model)
    for lin in linears:
        w = lin.weight
        groups = w.abs().reshape(w.shape[0], -1, 4)
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, groups.topk(2, dim=-1).indices, True)
        w.mul_(mask.reshape(w.shape).to(w.dtype))
    zeros = sum(int((lin.weight == 0).sum()) for lin in linears)
    return model, zeros / sum(lin.weight.numel() for lin in linears)


@torch.no_grad()
def prune_heads(teacher: nn.Module, fraction: float) -> nn.Module:
    """Remove each layer's attention heads with the smallest L2 norm over their q, k, v rows and output
    columns, slicing the matrices (what transformers' old prune_heads did, with that score)."""
    model = copy.deepcopy(teacher)
    for layer in model.encoder.layer:
        att, out = layer.attention.self, layer.attention.output.dense
        h, d = att.num_attention_heads, att.attention_head_size
        score = out.weight.pow(2).reshape(-1, h, d).sum(dim=(0, 2))
        for lin in (att.query, att.key, att.value):
            score += lin.weight.pow(2).reshape(h, d, -1).sum(dim=(1, 2))
        keep_n = max(1, h - int(h * fraction + 0.5))
        heads = score.sqrt().topk(keep_n).indices.sort().values
        rows = (heads[:, None] * d + torch.arange(d)).reshape(-1)
        for name in ("query", "key", "value"):
            lin = getattr(att, name)
            setattr(att, name, hand._linear(lin.weight[rows], lin.bias[rows]))
        layer.attention.output.dense = hand._linear(out.weight[:, rows], out.bias)
        att.num_attention_heads, att.all_head_size = keep_n, keep_n * d
    return model


def torchao_weight_only(teacher: nn.Module, bits: int) -> nn.Module:
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup, quantize_

    config = Int8WeightOnlyConfig(set_inductor_config=False) if bits == 8 else \
        IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))
    model = copy.deepcopy(teacher)
    quantize_(model, config)
    return model


def neighbours(emb: torch.Tensor) -> torch.Tensor:
    """Each row's most similar other row by cosine."""
    sim = F.normalize(emb, dim=-1) @ F.normalize(emb, dim=-1).T
    return sim.fill_diagonal_(-float("inf")).argmax(dim=1)


@torch.no_grad()
def evaluate_by_hand(model: nn.Module, tok, texts: list[str], reference: torch.Tensor, runs: int, warmup: int):
    """Cosine and top-1 agreement (same nearest neighbour) with the teacher on `texts`, batch-1 p50 over
    the first 16 texts, throughput at batch 32 (the evaluate stage's defaults), counts and peak memory."""
    emb = embed(model, tok, texts, batch=32)
    cos = float(F.cosine_similarity(emb, reference, dim=-1).mean())
    top1 = float((neighbours(emb) == neighbours(reference)).float().mean())
    singles = [tok([t], truncation=True, max_length=MAX_LENGTH, return_tensors="pt") for t in texts[:16]]
    singles = [{k: s[k] for k in ("input_ids", "attention_mask")} for s in singles]
    for i in range(warmup):
        model(**singles[i % 16])
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        model(**singles[i % 16])
        times.append(time.perf_counter() - t0)
    batch = tok([texts[i % 16] for i in range(32)], truncation=True, max_length=MAX_LENGTH, padding=True,
                return_tensors="pt")
    batch = {k: batch[k] for k in ("input_ids", "attention_mask")}
    model(**batch)
    reps = max(2, min(10, runs // 4))
    t0 = time.perf_counter()
    for _ in range(reps):
        model(**batch)
    throughput = 32 * reps / (time.perf_counter() - t0)
    # The stage also reports parameter and non-zero counts and peak memory; by hand: count, and one more
    # pass at batch 32 read off the process's RSS high-water mark.
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(p.count_nonzero()) for p in model.parameters())
    model(**batch)
    peak_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"cosine": cos, "top1": top1, "p50_ms": statistics.median(times) * 1000, "throughput_per_s": throughput,
            "parameters": params, "nonzero": nonzero, "peak_rss_kb": peak_rss_kb}


def bench(quick: bool) -> tuple[dict, list[list[str]]]:
    size = QUICK if quick else FULL
    tok, teacher, train, held_out, ref, cand = setup(size["eval"])
    task = cand.task
    data = Dataset(path=Path("<memory>.jsonl"), kind="text", rows=[{"text": t} for t in train[:BATCH]], sha256="")
    env = StageEnv(task=task, device=torch.device("cpu"), seed=SEED, max_length=MAX_LENGTH, train=data,
                   teacher=cand)
    reps = size["repeats"]
    res: dict = {"environment": environment(), "quick": quick, "sizes": size}
    rows: list[list[str]] = []

    def compare(what: str, config, by_hand, extra) -> None:
        """Time the engine's stage and the hand-written function interleaved; then `extra` rows of quality."""
        times, out = interleaved({"engine": lambda: run_stage(config, cand, env)[0], "hand": by_hand}, reps)
        ratio = times["engine"] / times["hand"]
        res[what] = {"engine_s": times["engine"], "hand_s": times["hand"], "ratio": ratio}
        rows.append([f"{what}: time (s)", f"{times['engine']:.3f}", f"{times['hand']:.3f}", f"{ratio:.2f}",
                     "ratio <= 1.10"])
        for label, fn, fmt, goal in extra:
            e, h = fn(out["engine"]), fn(out["hand"])
            res[what][label] = {"engine": e, "hand": h}
            rows.append([f"{what}: {label}", format(e, fmt), format(h, fmt), "", goal])

    def zeros(m: nn.Module) -> float:
        ws = [lin.weight for lin in hand.encoder_linears(m)]
        return sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)

    quality = ("held-out cosine", lambda m: cosine(m, tok, held_out, ref), ".3f", "equal")
    params = ("parameters (M)", lambda m: sum(p.numel() for p in m.parameters()) / 1e6, ".2f", "equal")
    mb = ("saved state dict (MB)", saved_mb, ".1f", "equal")
    compare("prune 2:4", PruneNMConfig(kind="prune", method="n:m", n=2, m=4), lambda: prune_2_4(teacher)[0],
            [("sparsity of the block weights", zeros, ".3f", "0.500"), quality])
    compare("prune heads 0.25", PruneStructuredConfig(kind="prune", method="structured", heads=0.25),
            lambda: prune_heads(teacher, 0.25), [params, quality])
    compare("quantize fp16", QuantizeConfig(kind="quantize", method="fp16"), lambda: copy.deepcopy(teacher).half(),
            [mb, quality])
    compare("quantize int8 weight-only (torchao)", QuantizeConfig(kind="quantize", method="int8-weight-only"),
            lambda: torchao_weight_only(teacher, 8), [mb, quality])
    compare("quantize int4 weight-only (torchao, CPU)", QuantizeConfig(kind="quantize", method="int4-weight-only"),
            lambda: torchao_weight_only(teacher, 4), [mb, quality])

    # The evaluate stage on the teacher itself, against the same measurements written by hand.
    cfg = EvaluateConfig(latency_runs=size["latency_runs"])
    eval_data = Dataset(path=Path("<memory>.jsonl"), kind="text", rows=[{"text": t} for t in held_out], sha256="")
    evaluator = Evaluator({"held_out": eval_data}, cfg, MAX_LENGTH, held_out, RunContext())
    evaluator.set_teacher(cand)
    student = run_stage(PruneStructuredConfig(kind="prune", method="structured", neurons=0.5), cand, env)[0]
    scored = Candidate(model=student, tokenizer=tok, task=task)
    times, out = interleaved({
        "engine": lambda: evaluator.evaluate(scored, "bench", None),
        "hand": lambda: evaluate_by_hand(student, tok, held_out, ref, cfg.latency_runs, cfg.warmup_runs)},
        size["eval_repeats"])
    e, h = out["engine"], out["hand"]
    e_task = e["tasks"]["held_out"]
    res["evaluate"] = {"engine_s": times["engine"], "hand_s": times["hand"], "engine": e, "hand": h}
    what = "evaluate (neurons pruned 0.5)"
    rows.append([f"{what}: time (s)", f"{times['engine']:.3f}", f"{times['hand']:.3f}",
                 f"{times['engine'] / times['hand']:.2f}", "ratio <= 1.10"])
    rows.append([f"{what}: cosine to teacher", f"{e_task['metrics']['cosine_to_teacher']:.3f}",
                 f"{h['cosine']:.3f}", "", "equal"])
    rows.append([f"{what}: top-1 agreement", f"{e_task['metrics']['top1_agreement']:.3f}", f"{h['top1']:.3f}", "",
                 "equal"])
    rows.append([f"{what}: batch-1 p50 (ms)", f"{e['latency']['batch1_p50_ms']:.1f}", f"{h['p50_ms']:.1f}", "",
                 "within noise"])
    rows.append([f"{what}: throughput at 32 (/s)", f"{e['latency']['throughput_per_s']:.0f}",
                 f"{h['throughput_per_s']:.0f}", "", "within noise"])
    return res, rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer held-out sentences and repeats")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is steadier on a shared machine)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = QUICK if args.quick else FULL
    head = header(environment(), args.quick, size)
    print(head, end="", flush=True)
    started = time.perf_counter()
    res, rows = bench(args.quick)
    res["duration_s"] = time.perf_counter() - started
    write_results(args.out, "engine_stages", head, rows, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
