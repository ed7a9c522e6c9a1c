"""The CUDA path of every task: distillation under bf16 autocast, 2:4 pruning, and torchao's int4 (tile-packed
bf16 kernel) and int8 weight-only quantization, measured on the GPU and reloaded there.

Skipped where torch sees no CUDA device (the CI machine has none); run on a GPU machine with
`python -m pytest tests/engine/test_cuda.py`."""

from __future__ import annotations

import json

import pytest
import torch

import distillery
from tests.engine.test_cli import TASKS, compress, recipe_for

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU path needs one")

DISTILL = {"kind": "distill", "student": {"num_layers": 2}, "epochs": 2, "batch_size": 16,
           "hidden_states": {"weight": 1.0}}
QUANT = {"int4": {"kind": "quantize", "method": "int4-weight-only", "group_size": 32},
         "int8": {"kind": "quantize", "method": "int8-weight-only"}}


@pytest.mark.parametrize("quant", list(QUANT))
@pytest.mark.parametrize("task", list(TASKS))
def test_the_gpu_path_of_every_task(task, quant, request, data, write_recipe, tmp_path):
    stages = [DISTILL, {"kind": "prune", "method": "n:m", "n": 2, "m": 4}, QUANT[quant]]
    out = tmp_path / "out"
    recipe = recipe_for(task, request, data, stages, device="cuda")
    assert compress(write_recipe(recipe), out) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "succeeded" and report["device"].startswith("cuda")
    distilled, pruned, quantized = report["stages"]
    assert distilled["details"]["precision"] == "bf16-autocast"
    assert distilled["details"]["final_loss"] < distilled["details"]["first_loss"]
    assert pruned["details"]["achieved_sparsity"] == pytest.approx(0.5, abs=1e-6)
    assert quantized["details"]["method"] == QUANT[quant]["method"]
    for row in report["stages"]:
        assert row["device"].startswith("cuda") and row["status"] == "passed"
        lat = row["evaluation"]["latency"]
        assert lat["device"].startswith("cuda") and lat["peak_memory_kind"] == "weights+cuda_allocator"
        assert lat["activation_peak_bytes"] > 0 and lat["batch1_p50_ms"] > 0
        assert row["reload_max_abs_diff"] is not None and row["reload_max_abs_diff"] < 1e-2  # bf16 kernels
    # the final artifact loads back onto the GPU with the documented loader
    model, _ = distillery.load_artifact(out / "artifact", device="cuda")
    assert next(model.parameters()).device.type == "cuda"
