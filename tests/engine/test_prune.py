"""Prune stages on tiny BERT and GPT-2: sparsity hits its target, N:M holds in every group, structured
pruning shrinks the model by the expected amount and reloads exactly, the teacher is never touched."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers.pytorch_utils import Conv1D

from worker.engine.architecture import ModelInfo, find_layers
from worker.engine.candidate import Candidate
from worker.engine.context import RunContext
from worker.engine.errors import StageError
from worker.engine.recipe import PruneMagnitudeConfig, PruneNMConfig, PruneStructuredConfig
from worker.engine.references import ResolvedModel
from worker.engine.stages.base import StageEnv
from worker.engine.stages.prune import MagnitudePrune, NMPrune
from worker.engine.stages.structured import StructuredPrune, apply_structure
from worker.engine.tasks import get_task
from worker.engine.tasks.base import encode

TEXTS = ["the quick team wins the match", "a chef makes soup", "the server runs code again today", "bread"]
MODELS = {
    "bert": ("tiny_bert", "feature-extraction"),
    "bert_cls": ("tiny_bert_cls", "sequence-classification"),
    "gpt2": ("tiny_gpt2", "causal-lm"),
}


def mag(sparsity: float, scope: str = "global") -> PruneMagnitudeConfig:
    return PruneMagnitudeConfig(kind="prune", method="magnitude", sparsity=sparsity, scope=scope)


def nm(n: int, m: int) -> PruneNMConfig:
    return PruneNMConfig(kind="prune", method="n:m", n=n, m=m)


def structured(heads: float = 0.0, neurons: float = 0.0) -> PruneStructuredConfig:
    return PruneStructuredConfig(kind="prune", method="structured", heads=heads, neurons=neurons)


@pytest.fixture
def load(request):
    def _load(which: str) -> tuple[Candidate, StageEnv]:
        fixture, task_name = MODELS[which]
        task = get_task(task_name)
        model, tok = task.load(ResolvedModel(str(request.getfixturevalue(fixture))))
        env = StageEnv(task=task, device=torch.device("cpu"), seed=0, max_length=32)
        return Candidate(model=model, tokenizer=tok, task=task), env

    return _load


def targets(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Targeted weights as (out, in), found independently of the code under test."""
    _, layers = find_layers(model)
    return [(f"{i}.{n}", m.weight.detach().t() if isinstance(m, Conv1D) else m.weight.detach())
            for i, block in enumerate(layers) for n, m in block.named_modules()
            if isinstance(m, nn.Linear | Conv1D)]


def zero_fraction(ws) -> float:
    return sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)


def outputs(cand: Candidate) -> torch.Tensor:
    batch = encode(cand.tokenizer, TEXTS, 32).batch(range(len(TEXTS)))
    with torch.no_grad():
        return cand.task.forward(cand.model, batch)[0]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert after[k].shape == v.shape and torch.equal(after[k], v), k


def assert_plain(model: nn.Module) -> None:
    keys = list(model.state_dict())
    assert not any(k.endswith(("_orig", "_mask")) for k in keys)
    assert all(not m._forward_pre_hooks for m in model.modules())


# ---- magnitude ------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["bert", "gpt2"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_hits_target_sparsity(load, which, scope):
    cand, env = load(which)
    before = snapshot(cand.model)
    stage = MagnitudePrune(mag(0.6, scope), 0)
    out = stage.run(cand, env, RunContext())

    ws = [w for _, w in targets(out.model)]
    assert abs(zero_fraction(ws) - 0.6) < 0.01
    assert stage.details["achieved_sparsity"] == pytest.approx(zero_fraction(ws), abs=1e-6)
    assert stage.details["targeted_parameters"] == sum(w.numel() for w in ws)
    assert stage.details["pruned_parameters"] == sum(int((w == 0).sum()) for w in ws)
    if scope == "layer":
        assert all(abs(zero_fraction([w]) - 0.6) < 0.01 for w in ws)
    else:  # one threshold: every dropped weight was no larger than every kept one
        orig = dict(targets(cand.model))
        dropped = torch.cat([orig[n][w == 0].abs() for n, w in targets(out.model)])
        kept = torch.cat([orig[n][w != 0].abs() for n, w in targets(out.model)])
        assert dropped.max() <= kept.min()
    assert_plain(out.model)
    assert_unchanged(cand.model, before)  # the teacher keeps its weights
    # only block weights were pruned: embeddings, norms, biases and heads are as they were
    sd = out.model.state_dict()
    untouched = [k for k in before if "embed" in k or "wte" in k or "LayerNorm" in k or ".ln_" in k
                 or k.endswith("bias")]
    assert untouched and all(torch.equal(sd[k], before[k]) for k in untouched)
    assert outputs(out).shape == outputs(cand).shape


def test_magnitude_prunes_only_block_weights_of_classifier(load):
    cand, env = load("bert_cls")
    stage = MagnitudePrune(mag(0.5), 0)
    out = stage.run(cand, env, RunContext())
    assert torch.equal(out.model.classifier.weight, cand.model.classifier.weight)
    assert abs(stage.details["achieved_sparsity"] - 0.5) < 0.01


def test_prune_refuses_quantized_candidate(load):
    cand, env = load("bert")
    cand.quantization = {"method": "int8-dynamic"}
    stage = MagnitudePrune(mag(0.5), 2)
    with pytest.raises(StageError) as err:
        stage.run(cand, env, RunContext())
    assert err.value.field == "stages.2"


# ---- N:M ------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["bert", "gpt2"])
@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (3, 8)])
def test_nm_pattern_holds_in_every_group(load, which, n, m):
    cand, env = load(which)
    before = snapshot(cand.model)
    stage = NMPrune(nm(n, m), 0)
    info = ModelInfo.from_config(cand.model.config)
    assert stage.validate(info, env) == info
    out = stage.run(cand, env, RunContext())

    orig = dict(targets(cand.model))
    for name, w in targets(out.model):
        groups = w.reshape(w.shape[0], -1, m)
        assert ((groups != 0).sum(-1) == n).all(), name  # exactly n survivors in every group
        o = orig[name].abs().reshape(groups.shape)
        kept_min = o.masked_fill(groups == 0, float("inf")).min(-1).values
        dropped_max = o.masked_fill(groups != 0, -1.0).max(-1).values
        assert (kept_min >= dropped_max).all(), name  # and they are the largest ones
        assert torch.equal(w[w != 0], orig[name][w != 0])  # survivors keep their values
    assert stage.details["achieved_sparsity"] == pytest.approx(1 - n / m)
    assert stage.details["target_sparsity"] == pytest.approx(1 - n / m)
    assert_plain(out.model)
    assert_unchanged(cand.model, before)


def test_nm_dry_run_rejects_m_not_dividing_input(load):
    cand, env = load("bert")
    info = ModelInfo.from_config(cand.model.config)  # hidden 32, intermediate 64
    with pytest.raises(StageError) as err:
        NMPrune(nm(1, 3), 1).validate(info, env)
    assert err.value.field == "stages.1.m"
    with pytest.raises(StageError) as err:
        NMPrune(nm(2, 64), 0).validate(info, env)
    assert err.value.field == "stages.0.m" and "32" in err.value.message


def test_nm_run_checks_real_shapes_after_structured_prune(load):
    cand, env = load("bert")
    # 1 head of 8 dims is left, so attention.output.dense reads 8 inputs: m=16 no longer divides it
    small = StructuredPrune(structured(heads=0.75), 0)
    pruned = small.run(cand, env, RunContext())
    stage = NMPrune(nm(2, 16), 1)
    stage.validate(ModelInfo.from_config(cand.model.config), env)  # the config alone cannot tell
    with pytest.raises(StageError) as err:
        stage.run(pruned, env, RunContext())
    assert err.value.field == "stages.1.m" and "attention.output.dense" in err.value.message


# ---- structured -----------------------------------------------------------------------------


def removed_parameters(layers: int, hidden: int, attn_removed: int, ffn_removed: int) -> int:
    # q, k, v lose rows (+ bias), the attention output loses columns; the FFN's first matrix loses
    # rows (+ bias) and its second loses columns. The same count for BERT and GPT-2's fused c_attn.
    per_layer = 3 * attn_removed * (hidden + 1) + attn_removed * hidden + ffn_removed * (2 * hidden + 1)
    return layers * per_layer


@pytest.mark.parametrize("which", ["bert", "bert_cls", "gpt2"])
def test_structured_shrinks_by_expected_amount(load, which):
    cand, env = load(which)
    before = snapshot(cand.model)
    cfg = cand.model.config
    ffn = ModelInfo.from_config(cfg).intermediate_size
    n_before = sum(p.numel() for p in cand.model.parameters())
    stage = StructuredPrune(structured(heads=0.5, neurons=0.5), 0)
    info = stage.validate(ModelInfo.from_config(cfg), env)
    out = stage.run(cand, env, RunContext())

    n_after = sum(p.numel() for p in out.model.parameters())
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    expected = removed_parameters(cfg.num_hidden_layers, cfg.hidden_size, 2 * head_dim, ffn // 2)
    assert n_before - n_after == expected
    d = stage.details
    assert (d["parameters_before"], d["parameters_after"]) == (n_before, n_after)
    assert d["heads_before"] == [4] * 4 and d["heads_after"] == [2] * 4
    assert d["neurons_before"] == [ffn] * 4 and d["neurons_after"] == [ffn // 2] * 4
    assert out.structure == {"heads": {str(i): 2 for i in range(4)},
                             "intermediate": {str(i): ffn // 2 for i in range(4)}}
    json.dumps(out.structure)
    # the dry run predicts the shape the run produces; heads stay the config value
    assert info.intermediate_size == ffn // 2 == ModelInfo.from_config(out.model.config).intermediate_size
    assert info.num_heads == cfg.num_attention_heads == out.model.config.num_attention_heads
    # it still runs, with the output shape of the unpruned model, and the teacher is untouched
    assert outputs(out).shape == outputs(cand).shape
    assert torch.isfinite(outputs(out)).all()
    assert_unchanged(cand.model, before)
    assert ModelInfo.from_config(cand.model.config).intermediate_size == ffn


@pytest.mark.parametrize("which", ["bert", "gpt2"])
def test_structured_removes_the_least_important_units(load, which):
    """Heads and neurons whose weights are zero contribute nothing; pruning exactly those (and no
    others) must leave the outputs unchanged, which also checks the surgery slices the right rows."""
    cand, env = load(which)
    _, layers = find_layers(cand.model)
    with torch.no_grad():
        for block in layers:
            if which == "bert":
                att, d = block.attention.self, block.attention.self.attention_head_size
                for lin in (att.query, att.key, att.value):
                    lin.weight[2 * d : 3 * d] = 0
                    lin.bias[2 * d : 3 * d] = 0
                block.attention.output.dense.weight[:, 2 * d : 3 * d] = 0
                fc_in, fc_out = block.intermediate.dense.weight, block.output.dense.weight
                fc_in[5:21] = 0
                block.intermediate.dense.bias[5:21] = 0
                fc_out[:, 5:21] = 0
            else:
                d, width = block.attn.head_dim, block.attn.split_size
                for part in range(3):
                    block.attn.c_attn.weight[:, part * width + 2 * d : part * width + 3 * d] = 0
                    block.attn.c_attn.bias[part * width + 2 * d : part * width + 3 * d] = 0
                block.attn.c_proj.weight[2 * d : 3 * d] = 0
                block.mlp.c_fc.weight[:, 5:37] = 0
                block.mlp.c_fc.bias[5:37] = 0
                block.mlp.c_proj.weight[5:37] = 0
    neurons = 0.25  # BERT: 16 of 64; GPT-2: 32 of 128, exactly the zeroed ones
    stage = StructuredPrune(structured(heads=0.25, neurons=neurons), 0)
    out = stage.run(cand, env, RunContext())
    assert stage.details["heads_after"] == [3] * 4
    assert torch.allclose(outputs(out), outputs(cand), atol=1e-5)


@pytest.mark.parametrize("which", ["bert", "gpt2"])
def test_apply_structure_round_trip(load, which, tmp_path):
    cand, env = load(which)
    stage = StructuredPrune(structured(heads=0.5, neurons=0.5), 0)
    out = stage.run(cand, env, RunContext())
    out.model.save_pretrained(tmp_path)
    structure = json.loads(json.dumps(out.structure))  # as the artifact stores it

    from transformers import AutoConfig

    rebuilt = cand.task.auto_class().from_config(AutoConfig.from_pretrained(tmp_path))
    with pytest.raises(RuntimeError):  # without the structure, the head shapes do not fit
        rebuilt.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=False)
    apply_structure(rebuilt, structure)
    missing, unexpected = rebuilt.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # GPT-2 ties lm_head to wte
    rebuilt.eval()
    reloaded = Candidate(model=rebuilt, tokenizer=cand.tokenizer, task=cand.task)
    assert torch.allclose(outputs(reloaded), outputs(out), atol=1e-6)
    assert not torch.allclose(outputs(out), outputs(cand), atol=1e-3)  # pruning did change the model


@pytest.mark.parametrize("which", ["bert", "gpt2"])
def test_ffn_only_prune_reloads_with_plain_from_pretrained(load, which, tmp_path):
    cand, env = load(which)
    stage = StructuredPrune(structured(neurons=0.5), 0)
    out = stage.run(cand, env, RunContext())
    assert stage.details["heads_after"] == stage.details["heads_before"]
    out.model.save_pretrained(tmp_path)
    reloaded, info = cand.task.auto_class().from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    reloaded.eval()
    again = Candidate(model=reloaded, tokenizer=cand.tokenizer, task=cand.task)
    assert torch.allclose(outputs(again), outputs(out), atol=1e-6)


@pytest.mark.parametrize("which", ["bert", "gpt2"])
def test_artifact_says_plain_transformers_unless_heads_were_pruned(load, which, tmp_path):
    """Neurons-only pruning is stated by the config (intermediate_size / n_inner): the artifact is flagged
    as plain-loadable, and it is. Pruned heads are not expressible there: then the loader is needed."""
    from worker.engine.artifacts import load_artifact, save_candidate

    cand, env = load(which)
    ffn = StructuredPrune(structured(neurons=0.5), 0).run(cand, env, RunContext())
    assert "heads" not in ffn.structure
    meta = json.loads((save_candidate(ffn, tmp_path / "ffn") / "distillery.json").read_text())
    assert meta["plain_transformers"] is True
    plain = cand.task.auto_class().from_pretrained(tmp_path / "ffn").eval()
    assert torch.allclose(outputs(Candidate(plain, cand.tokenizer, cand.task)), outputs(ffn), atol=1e-6)

    heads = StructuredPrune(structured(heads=0.5), 0).run(ffn, env, RunContext())
    assert heads.structure["heads"] == {str(i): 2 for i in range(4)}
    meta = json.loads((save_candidate(heads, tmp_path / "heads") / "distillery.json").read_text())
    assert meta["plain_transformers"] is False
    # a later neurons-only stage keeps the earlier stage's head counts, so the flag stays false
    again = StructuredPrune(structured(neurons=0.25), 0).run(heads, env, RunContext())
    assert again.structure["heads"] == heads.structure["heads"]
    meta = json.loads((save_candidate(again, tmp_path / "again") / "distillery.json").read_text())
    assert meta["plain_transformers"] is False
    model, _ = load_artifact(tmp_path / "again")
    assert torch.allclose(outputs(Candidate(model, cand.tokenizer, cand.task)), outputs(again), atol=1e-5)


def test_structured_dry_run_rejects_unsupported_model_type(load):
    _, env = load("bert")
    info = ModelInfo(model_type="llama", num_layers=2, num_heads=4, hidden_size=32, intermediate_size=64,
                     vocab_size=100)
    stage = StructuredPrune(structured(heads=0.5), 3)
    with pytest.raises(StageError) as err:
        stage.validate(info, env)
    assert "llama" in err.value.message and err.value.field == "stages.3"


def test_structured_keeps_at_least_one_unit(load):
    cand, env = load("bert")
    stage = StructuredPrune(structured(heads=0.99, neurons=0.999), 0)
    assert stage.validate(ModelInfo.from_config(cand.model.config), env).intermediate_size == 1
    out = stage.run(cand, env, RunContext())
    assert stage.details["heads_after"] == [1] * 4 and stage.details["neurons_after"] == [1] * 4
    assert outputs(out).shape == outputs(cand).shape
