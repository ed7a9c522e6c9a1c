"""Every prune and quantize method through `distillery compress`, on each of the three tasks, with the numbers
checked: sparsity on target, the 2:4 pattern, heads and neurons removed, smaller files, exact reloads and the
peak memory of each candidate. A prune stage is followed by a quantize stage, so that each run covers two
methods (and their composition) and the matrix stays about 15 short runs."""

from __future__ import annotations

import json

import pytest
import torch

import distillery
from tests.engine.test_cli import TASKS, compress, recipe_for
from worker.engine.stages.prune import as_out_in, target_modules

EVAL = {"latency_runs": 1, "warmup_runs": 0, "throughput_batch": 4, "max_examples": 16}
PRUNE = {
    "magnitude-global": {"kind": "prune", "method": "magnitude", "sparsity": 0.4, "scope": "global"},
    "magnitude-layer": {"kind": "prune", "method": "magnitude", "sparsity": 0.3, "scope": "layer"},
    "2:4": {"kind": "prune", "method": "n:m", "n": 2, "m": 4},
    "structured": {"kind": "prune", "method": "structured", "heads": 0.3, "neurons": 0.5},
}
QUANT = {
    "int8-dynamic": {"kind": "quantize", "method": "int8-dynamic", "embeddings": "int8"},
    "int8-weight-only": {"kind": "quantize", "method": "int8-weight-only"},
    "int4-weight-only": {"kind": "quantize", "method": "int4-weight-only"},
    "fp16": {"kind": "quantize", "method": "fp16"},
    "bf16": {"kind": "quantize", "method": "bf16"},
}
# (prune or None, quantize): each method once per task
RUNS = [("magnitude-global", "int8-dynamic"), ("magnitude-layer", "int8-weight-only"), ("2:4", "int4-weight-only"),
        ("structured", "fp16"), (None, "bf16")]
# The quantized candidate's weights in memory over its float input's: int8 (and int4 on CPU, stored one value
# per byte) are a quarter of fp32, plus scales and what stays float (biases, norms, embeddings except with
# int8-dynamic's int8 tables); fp16/bf16 half, plus the int64 position buffers. The file is compared less
# tightly: torch.save spends about 100 bytes per tensor, much of a 40k-parameter model.
MAX_MEMORY_RATIO = {"int8-dynamic": 0.35, "int8-weight-only": 0.55, "int4-weight-only": 0.55, "fp16": 0.51,
                    "bf16": 0.51}
MAX_FILE_RATIO = 0.65


def _block_weights(stage_artifact) -> list[torch.Tensor]:
    model, _ = distillery.load_artifact(stage_artifact)
    return [as_out_in(m, m.weight.detach()) for _, m in target_modules(model)]


def _check_prune(name: str, row: dict, teacher: dict, artifact) -> None:
    d, ev = row["details"], row["evaluation"]
    weights = _block_weights(artifact)  # what was saved, not what the stage says
    zeros = [float((w == 0).double().mean()) for w in weights]
    overall = sum(float((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    if name.startswith("magnitude"):
        target = PRUNE[name]["sparsity"]
        assert d["achieved_sparsity"] == pytest.approx(target, abs=0.01) == overall
        assert ev["nonzero_parameters"] < teacher["nonzero_parameters"] and ev["parameters"] == teacher["parameters"]
        if name == "magnitude-layer":
            assert all(z == pytest.approx(target, abs=0.01) for z in zeros)  # each layer on target
        else:
            assert len({round(z, 4) for z in zeros}) > 1  # one threshold: layers lose different shares
    elif name == "2:4":
        assert d["achieved_sparsity"] == pytest.approx(0.5, abs=1e-6) and overall == pytest.approx(0.5, abs=1e-6)
        for w in weights:  # (out, in): at most 2 non-zeros in every run of 4 inputs
            assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all()
    else:
        assert d["heads_removed"] == {"per_layer": [0.25] * 4, "overall": 0.25}  # 30 % of 4 heads rounds to 1
        assert d["neurons_removed"] == {"per_layer": [0.5] * 4, "overall": 0.5}
        assert d["parameters_before"] == teacher["parameters"] and d["parameters_after"] == ev["parameters"]
        assert d["parameter_reduction"] == pytest.approx(1 - ev["parameters"] / teacher["parameters"], abs=1e-6)
        assert d["parameter_reduction"] > 0.2 and ev["size_bytes"] < teacher["size_bytes"]


def _check_memory(ev: dict, teacher: dict) -> None:
    lat = ev["latency"]
    assert lat["peak_memory_bytes"] == lat["weights_memory_bytes"] + lat["activation_peak_bytes"]
    assert lat["activation_peak_bytes"] > 0 and lat["weights_memory_bytes"] > 0
    # fp32 teacher: at least 4 bytes per parameter in memory
    assert teacher["latency"]["weights_memory_bytes"] >= 4 * teacher["parameters"]


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize(("prune", "quant"), RUNS, ids=[f"{p}+{q}" if p else q for p, q in RUNS])
def test_stage_through_the_cli(task, prune, quant, request, data, write_recipe, tmp_path):
    stages = ([PRUNE[prune]] if prune else []) + [QUANT[quant]]
    out = tmp_path / "out"
    assert compress(write_recipe(recipe_for(task, request, data, stages, evaluate=EVAL)), out) == 0
    report = json.loads((out / "report.json").read_text())
    teacher, rows = report["teacher"], report["stages"]
    assert [r["status"] for r in rows] == ["passed"] * len(stages)
    for row in rows:
        # the saved candidate, loaded back, gives the outputs of the one in memory
        assert row["reload_max_abs_diff"] is not None and row["reload_max_abs_diff"] <= 1e-6
        _check_memory(row["evaluation"], teacher)
        (kept,) = (t["retention"] for t in row["evaluation"]["tasks"].values())
        assert kept is not None and kept > 0.3
    if prune:
        _check_prune(prune, rows[0], teacher, out / "stages" / "00-prune" / "artifact")
    before = rows[0]["evaluation"] if prune else teacher
    quantized = rows[-1]
    assert quantized["details"]["method"] == quant
    ev = quantized["evaluation"]
    assert ev["weights_bytes"] < MAX_FILE_RATIO * before["weights_bytes"]
    assert ev["latency"]["weights_memory_bytes"] < MAX_MEMORY_RATIO[quant] * before["latency"]["weights_memory_bytes"]
    assert ev["parameters"] == before["parameters"]  # quantization keeps the logical count
    assert report["final"]["stage_index"] == len(stages) - 1
