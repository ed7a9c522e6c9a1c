"""The pre-flight memory estimate: parameter counts from configs match the real models, the training
activation term matches what autograd actually saves, and the estimate follows the recipe's knobs."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModel

from worker.engine import parse_recipe
from worker.engine.architecture import ModelInfo
from worker.engine.memory import GB, estimate, parameters
from worker.engine.plan import make_plan
from worker.engine.references import bundled_model_dir


@pytest.mark.parametrize("which", ["tiny_bert", "tiny_gpt2", "minilm"])
def test_parameter_count_from_the_config_matches_the_model(which, request):
    path = bundled_model_dir() if which == "minilm" else request.getfixturevalue(which)
    config = AutoConfig.from_pretrained(path)
    actual = sum(p.numel() for p in AutoModel.from_config(config).parameters())
    positions = getattr(config, "max_position_embeddings", None) or config.n_positions
    guessed = parameters(ModelInfo.from_config(config), positions)
    assert abs(guessed - actual) / actual < 0.03, (which, guessed, actual)


def test_training_activations_match_what_autograd_saves(tiny_bert):
    """The activation term against the bytes of every tensor autograd keeps for backward, measured."""
    from worker.engine.memory import activations

    model = AutoModel.from_pretrained(tiny_bert, attn_implementation="eager").train()
    info = ModelInfo.from_config(model.config)
    batch, seq = 8, 64
    ids = torch.randint(5, info.vocab_size, (batch, seq))
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        if not isinstance(t, torch.nn.Parameter):
            saved += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids).last_hidden_state.mean().backward()
    predicted = activations(info, batch, seq, "feature-extraction")
    print(f"activations: predicted {predicted / 2**20:.1f} MiB, autograd saved {saved / 2**20:.1f} MiB")
    assert 0.5 < predicted / saved < 2.0, (predicted, saved)


def _plan(tmp_path, teacher, data, **distill):
    recipe = parse_recipe({"teacher": {"source": "local", "path": str(teacher)}, "task": "feature-extraction",
                           "data": {"train": str(data["train"]), "eval": {"sts": str(data["eval_sts"])}},
                           "stages": [{"kind": "distill", "student": {"num_layers": 2}, **distill},
                                      {"kind": "quantize", "method": "int8-dynamic"}]})
    return make_plan(recipe, base_dir=tmp_path, roots=["/"], work_dir=tmp_path / "work")


def test_the_estimate_peaks_at_training_and_grows_with_the_batch(tmp_path, data):
    teacher = bundled_model_dir()  # all-MiniLM-L6-v2: about 91 MB of fp32 weights
    small, large = _plan(tmp_path, teacher, data, batch_size=8), _plan(tmp_path, teacher, data, batch_size=4096)
    e_small, e_large = estimate(small), estimate(large)
    print(e_small.describe(), e_large.describe(), sep="\n")
    assert e_small.where == e_large.where == "stages.0"
    assert 0.2 * GB < e_small.peak_bytes < 2 * GB, e_small.describe()
    assert e_large.peak_bytes > 4 * e_small.peak_bytes, (e_small.describe(), e_large.describe())
    assert "training activations (batch 4096" in e_large.describe()
    json.dumps(e_large.parts)  # plain numbers: the API puts them in its error
