"""Whole recipes through the CLI: distil, prune and quantize each task, then load what was written."""

from __future__ import annotations

import json

import pytest
import torch

import distillery
from tests.engine.test_cli import TASKS, compress, recipe_for
from worker.engine.tasks import get_task
from worker.engine.tasks.base import encode

DISTILL = {"kind": "distill", "student": {"num_layers": 2}, "epochs": 1, "batch_size": 16}


def _outputs(task: str, model, tokenizer, texts: list[str]) -> torch.Tensor:
    t = get_task(task)
    batch = encode(tokenizer, texts, 32).batch(list(range(len(texts))))
    with torch.no_grad():
        return t.forward(model, batch)[0].float()


@pytest.mark.parametrize("task", list(TASKS))
def test_distil_prune_quantize_every_task(task, request, data, write_recipe, tmp_path):
    stages = [
        DISTILL,
        {"kind": "prune", "method": "structured", "heads": 0.5, "neurons": 0.5},
        {"kind": "prune", "method": "magnitude", "sparsity": 0.3, "scope": "layer"},
        {"kind": "quantize", "method": "int8-dynamic", "embeddings": "int8"},
        {"kind": "evaluate", "latency_runs": 3},
    ]
    out = tmp_path / "out"
    assert compress(write_recipe(recipe_for(task, request, data, stages)), out) == 0
    report = json.loads((out / "report.json").read_text())
    magnitude, quantized = report["stages"][2:4]
    assert [s["status"] for s in report["stages"]] == ["passed"] * 5
    ev = [s["evaluation"] for s in report["stages"]]
    # structured pruning removes parameters; magnitude pruning zeroes 30 % of the targeted weights
    assert ev[1]["parameters"] < ev[0]["parameters"]
    assert magnitude["details"]["achieved_sparsity"] == pytest.approx(0.3, abs=0.01)
    assert ev[2]["nonzero_parameters"] < ev[1]["nonzero_parameters"]
    # int8 makes the file smaller; the logical parameter count is unchanged
    assert ev[3]["weights_bytes"] < 0.8 * ev[2]["weights_bytes"]
    assert ev[3]["parameters"] == ev[2]["parameters"]
    assert quantized["details"]["method"] == "int8-dynamic" and ev[3]["latency"]["device"] == "cpu"
    assert all(s["reload_max_abs_diff"] is not None for s in report["stages"][:4])
    assert report["final"]["stage_index"] == 3

    meta = json.loads((out / "artifact" / "distillery.json").read_text())
    assert meta["plain_transformers"] is False and meta["structure"]["heads"]
    model, tokenizer = distillery.load_artifact(out / "artifact")
    texts = ["the quick team wins the match", "the old chef builds a soup"]
    reloaded = _outputs(task, model, tokenizer, texts)
    again, _ = distillery.load_artifact(out / "stages" / "03-quantize" / "artifact")
    assert torch.allclose(reloaded, _outputs(task, again, tokenizer, texts))
    assert torch.isfinite(reloaded).all()


@pytest.mark.parametrize("method", ["int8-weight-only", "int4-weight-only", "fp16", "bf16"])
def test_each_quantization_method_round_trips(method, request, data, write_recipe, tmp_path):
    stages = [DISTILL, {"kind": "quantize", "method": method}]
    out = tmp_path / "out"
    assert compress(write_recipe(recipe_for("feature-extraction", request, data, stages)), out) == 0
    report = json.loads((out / "report.json").read_text())
    fp32, quant = (s["evaluation"] for s in report["stages"])
    assert quant["weights_bytes"] < fp32["weights_bytes"]
    assert quant["tasks"]["text"]["retention"] > 0.5
    meta = json.loads((out / "artifact" / "distillery.json").read_text())
    model, tokenizer = distillery.load_artifact(out / "artifact")
    assert torch.isfinite(_outputs("feature-extraction", model, tokenizer, ["the new server checks data"])).all()
    if method in ("fp16", "bf16"):
        from transformers import AutoModel

        assert meta["plain_transformers"] is True
        plain = AutoModel.from_pretrained(out / "artifact")
        assert plain.dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[method]
    else:
        assert meta["weights"] == "model.pt" and meta["quantization"]["method"] == method


def test_two_four_sparsity_through_the_runner(request, data, write_recipe, tmp_path):
    stages = [DISTILL, {"kind": "prune", "method": "n:m", "n": 2, "m": 4}]
    out = tmp_path / "out"
    assert compress(write_recipe(recipe_for("causal-lm", request, data, stages)), out) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["stages"][1]["details"]["achieved_sparsity"] == pytest.approx(0.5, abs=1e-6)
    model, _ = distillery.load_artifact(out / "artifact")
    w = model.transformer.h[0].mlp.c_fc.weight  # Conv1D: (in, out); groups run along the input
    groups = w.detach().T.reshape(w.shape[1], -1, 4)
    assert ((groups != 0).sum(-1) <= 2).all()


def test_head_pruned_artifact_needs_the_loader_and_ffn_only_does_not(request, data, write_recipe, tmp_path):
    out = tmp_path / "ffn"
    stages = [{"kind": "prune", "method": "structured", "neurons": 0.5}]
    assert compress(write_recipe(recipe_for("feature-extraction", request, data, stages)), out) == 0
    from transformers import AutoModel

    assert AutoModel.from_pretrained(out / "artifact").config.intermediate_size == 32
    out2 = tmp_path / "heads"
    stages = [{"kind": "prune", "method": "structured", "heads": 0.5}]
    assert compress(write_recipe(recipe_for("feature-extraction", request, data, stages), "h.yaml"), out2) == 0
    meta = json.loads((out2 / "artifact" / "distillery.json").read_text())
    assert meta["plain_transformers"] is False and set(meta["structure"]["heads"].values()) == {2}
    model, _ = distillery.load_artifact(out2 / "artifact")
    assert model.encoder.layer[0].attention.self.query.out_features == 16
