"""Quantization: accuracy against the float model, file size, the reload round trip, and the stage."""

from __future__ import annotations

import copy
import io
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

from worker.engine.architecture import ModelInfo
from worker.engine.candidate import Candidate
from worker.engine.context import RunContext
from worker.engine.errors import ArtifactError, StageError
from worker.engine.recipe import QuantizeConfig
from worker.engine.stages import quant_formats as qf
from worker.engine.stages.base import StageEnv
from worker.engine.stages.quantize import QuantizeStage, cpu_state_dict, quantize_model, rebuild_quantized
from worker.engine.tasks import get_task

CPU = torch.device("cpu")
IDS = torch.tensor([[2, 7, 8, 9, 10, 11, 3, 0, 0], [2, 12, 13, 14, 3, 0, 0, 0, 0]])  # 0 is BERT's [PAD]
METHODS = [("int8-dynamic", "keep"), ("int8-dynamic", "int8"), ("int8-weight-only", "keep"),
           ("int4-weight-only", "keep"), ("fp16", "keep"), ("bf16", "keep")]


def qcfg(method: str, embeddings: str = "keep", group_size: int = 32) -> QuantizeConfig:
    return QuantizeConfig(kind="quantize", method=method, embeddings=embeddings, group_size=group_size)


@pytest.fixture(scope="module")
def bert(tiny_bert) -> nn.Module:
    return AutoModel.from_pretrained(tiny_bert).eval()


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2) -> nn.Module:
    return AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()


@torch.no_grad()
def run(model: nn.Module) -> torch.Tensor:
    """BERT: mean-pooled embeddings; GPT-2: logits, one row per token."""
    mask = (IDS != 0).long()
    out = model(input_ids=IDS, attention_mask=mask)[0].float()
    if out.shape[-1] == model.config.vocab_size:
        return out[mask.bool()]
    m = mask.unsqueeze(-1).float()
    return (out * m).sum(1) / m.sum(1)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=-1).min())


def saved(model: nn.Module | dict) -> bytes:
    buf = io.BytesIO()
    torch.save(cpu_state_dict(model) if isinstance(model, nn.Module) else model, buf)
    return buf.getvalue()


def load(data: bytes) -> dict:
    with warnings.catch_warnings():  # torch's own notice when it rebuilds torch.ao quantized storages
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        return torch.load(io.BytesIO(data), weights_only=True)


def count(model: nn.Module, cls: type) -> int:
    return sum(type(m) is cls for m in model.modules())


# ---- int8-dynamic (torch.ao, CPU) ----------------------------------------------------------------


def test_int8_dynamic_quantizes_every_linear_and_stays_close(bert):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # torch's eager-API notice is silenced
        q, spec = quantize_model(bert, qcfg("int8-dynamic"), CPU)
    assert count(q, nn.Linear) == 0 and count(q, DynamicLinear) == count(bert, nn.Linear) == 25
    assert count(q, nn.Embedding) == 3  # embeddings: keep
    assert spec == json.loads(json.dumps(spec))
    keys = ("method", "embeddings", "group_size", "backend", "serving_device", "format")
    assert {k: spec[k] for k in keys} == {
        "method": "int8-dynamic", "embeddings": "keep", "group_size": None, "backend": qf.TORCH_AO_DYNAMIC,
        "serving_device": "cpu", "format": "torch-state-dict"}
    ref, out = run(bert), run(q)
    assert not torch.equal(ref, out)  # the weights really changed
    assert cosine(out, ref) > 0.99
    assert len(saved(q)) < 0.6 * len(saved(bert))


def test_int8_embeddings_shrink_further_and_keep_padding_and_positions(bert):
    keep, _ = quantize_model(bert, qcfg("int8-dynamic"), CPU)
    q, spec = quantize_model(bert, qcfg("int8-dynamic", "int8"), CPU)
    emb = q.embeddings
    assert spec["embeddings_quantized"] == [
        "embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.token_type_embeddings"]
    assert all(type(e) is qf.QuantizedEmbedding for e in (emb.word_embeddings, emb.position_embeddings,
                                                emb.token_type_embeddings))
    pad = bert.embeddings.word_embeddings.padding_idx
    assert torch.equal(emb.word_embeddings(torch.tensor([pad])), torch.zeros(1, 32))  # padding row stays zero
    rows = torch.arange(5)
    assert torch.allclose(emb.position_embeddings(rows), bert.embeddings.position_embeddings(rows), atol=0.01)
    assert cosine(run(q), run(bert)) > 0.99  # a batch of 2: BERT's token-type ids have stride 0
    assert len(saved(q)) < len(saved(keep)) < len(saved(bert))


def test_embeddings_the_quantized_module_cannot_reproduce_stay_float():
    class Scaled(nn.Embedding):
        def forward(self, ids):
            return super().forward(ids) * 2.0

    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.plain = nn.Embedding(10, 8, padding_idx=0)
            self.normed = nn.Embedding(10, 8, max_norm=1.0)
            self.scaled = Scaled(10, 8)
            self.out = nn.Linear(8, 4)

        def forward(self, ids):
            return self.out(self.plain(ids) + self.normed(ids) + self.scaled(ids))

    q, spec = quantize_model(Toy(), qcfg("int8-dynamic", "int8"), CPU)
    assert spec["embeddings_quantized"] == ["plain"]
    assert set(spec["left_float"]) == {"normed", "scaled"} and "max_norm" in spec["left_float"]["normed"]
    assert type(q.normed) is nn.Embedding and type(q.scaled) is Scaled
    assert q(torch.tensor([[1, 2, 3]])).shape == (1, 3, 4)


# ---- torchao weight-only -------------------------------------------------------------------------


def weight_error(model: nn.Module, bert: nn.Module) -> float:
    return float((run(model) - run(bert)).abs().max())


def test_int8_weight_only_uses_torchao_int8_tensors(bert):
    q, spec = quantize_model(bert, qcfg("int8-weight-only"), CPU)
    assert spec["backend"] == qf.TORCHAO_INT8 and spec["serving_device"] == "cpu" and spec["torchao"]
    kinds = {type(m.weight).__name__ for m in q.modules() if type(m) is nn.Linear}
    assert kinds == {"Int8Tensor"}
    assert weight_error(q, bert) > 0 and cosine(run(q), run(bert)) > 0.99
    assert len(saved(q)) < 0.6 * len(saved(bert))


def test_int4_on_cpu_falls_back_to_intx_and_is_coarser_than_int8(bert):
    q, spec = quantize_model(bert, qcfg("int4-weight-only", group_size=32), CPU)
    assert spec["backend"] == qf.TORCHAO_INTX_INT4 and spec["group_size"] == 32
    assert spec["serving_device"] == "cpu"
    weight = q.encoder.layer[0].attention.self.query.weight
    assert type(weight).__name__ == "IntxUnpackedToInt8Tensor" and weight.block_size == (1, 32)
    assert cosine(run(q), run(bert)) > 0.9
    int8, _ = quantize_model(bert, qcfg("int8-weight-only"), CPU)
    assert weight_error(q, bert) > 2 * weight_error(int8, bert)


def test_int4_leaves_layers_the_group_size_does_not_divide_in_float(bert):
    # hidden 32, feed-forward 64: with groups of 64 only the feed-forward output projections qualify
    q, spec = quantize_model(bert, qcfg("int4-weight-only", group_size=64), CPU)
    assert spec["linear"] == [f"encoder.layer.{i}.output.dense" for i in range(4)]
    assert "not a multiple of group_size 64" in spec["left_float"]["encoder.layer.0.attention.self.query"]
    assert type(q.encoder.layer[0].attention.self.query.weight) is nn.Parameter


# ---- fp16 / bf16 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method,dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_casts_change_dtype_and_save_as_safetensors(bert, tmp_path, method, dtype):
    q, spec = quantize_model(bert, qcfg(method), CPU)
    assert spec["format"] == "safetensors" and spec["dtype"] == str(dtype).removeprefix("torch.")
    assert {p.dtype for p in q.parameters()} == {dtype}
    assert cosine(run(q), run(bert)) > 0.99
    q.save_pretrained(tmp_path)
    again = AutoModel.from_pretrained(tmp_path, dtype="auto").eval()
    assert next(again.parameters()).dtype == dtype and torch.equal(run(again), run(q))


# ---- GPT-2 Conv1D --------------------------------------------------------------------------------


def test_conv1d_to_linear_is_exact(gpt2):
    model = copy.deepcopy(gpt2)
    names = qf.conv1d_to_linear(model)
    assert len(names) == 16 and count(model, Conv1D) == 0  # c_attn, c_proj, c_fc, mlp.c_proj x 4 layers
    assert torch.allclose(run(model), run(gpt2), atol=1e-5)
    with pytest.raises(ValueError, match="no Conv1D"):
        qf.conv1d_to_linear(copy.deepcopy(gpt2), ["transformer.h.0.nope"])


@pytest.mark.parametrize("method", ["int8-dynamic", "int8-weight-only", "int4-weight-only"])
def test_gpt2_conv1d_layers_are_quantized(gpt2, method):
    q, spec = quantize_model(gpt2, qcfg(method), CPU)
    assert count(q, Conv1D) == 0 and len(spec["conv1d_to_linear"]) == 16
    assert "transformer.h.0.attn.c_attn" in spec["linear"] and "lm_head" in spec["linear"]
    c_attn = q.transformer.h[0].attn.c_attn
    assert type(c_attn) is not nn.Linear or type(c_attn.weight) is not nn.Parameter
    threshold = 0.8 if method.startswith("int4") else 0.95
    assert cosine(run(q), run(gpt2)) > threshold
    assert len(saved(q)) < len(saved(gpt2))


# ---- the round trip and the input ----------------------------------------------------------------


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
@pytest.mark.parametrize("method,embeddings", METHODS)
def test_reload_round_trip_is_exact(request, arch, method, embeddings):
    model = request.getfixturevalue(arch)
    q, spec = quantize_model(model, qcfg(method, embeddings), CPU)
    data = saved(q)
    fresh = type(model)(model.config).eval()  # what from_config builds: random float weights
    fresh = rebuild_quantized(fresh, json.loads(json.dumps(spec)))
    result = fresh.load_state_dict(load(data), assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.allclose(run(fresh), run(q), atol=1e-6, rtol=0)


def test_cpu_state_dict_keeps_the_metadata_torch_ao_needs(bert):
    q, spec = quantize_model(bert, qcfg("int8-dynamic"), CPU)
    naive = dict(q.state_dict())  # a plain dict (as a writer moving tensors to CPU builds) drops `_metadata`
    with pytest.raises(KeyError, match="weight"):  # torch.ao then reads it as its version-1 layout
        rebuild_quantized(type(bert)(bert.config), spec).load_state_dict(load(saved(naive)), assign=True)
    fresh = rebuild_quantized(type(bert)(bert.config).eval(), spec)
    fresh.load_state_dict(load(saved(q)), assign=True)
    assert torch.equal(run(fresh), run(q))


@pytest.mark.parametrize("method", ["int8-dynamic", "int8-weight-only", "int4-weight-only", "fp16"])
def test_input_model_is_not_mutated(gpt2, method):
    before = {k: v.clone() for k, v in gpt2.state_dict().items()}
    ref = run(gpt2)
    quantize_model(gpt2, qcfg(method, "int8" if method == "int8-dynamic" else "keep"), CPU)
    after = gpt2.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert count(gpt2, Conv1D) == 16 and torch.equal(run(gpt2), ref)


def test_rebuild_refuses_a_spec_it_cannot_replay(bert):
    _, spec = quantize_model(bert, qcfg("int8-dynamic"), CPU)
    with pytest.raises(ArtifactError, match="version"):
        rebuild_quantized(type(bert)(bert.config), {**spec, "version": 99})
    with pytest.raises(ArtifactError, match="no Conv1D"):
        rebuild_quantized(type(bert)(bert.config), {**spec, "conv1d_to_linear": ["encoder.layer.0"]})
    with pytest.raises(ArtifactError, match="LayerNorm, not a Linear"):  # torch.ao would skip it silently
        rebuild_quantized(type(bert)(bert.config), {**spec, "linear": ["encoder.layer.0.output.LayerNorm"]})
    with pytest.raises(ArtifactError, match=r"no attribute .?9|no submodule"):
        rebuild_quantized(type(bert)(bert.config), {**spec, "linear": ["encoder.layer.9.output.dense"]})


@pytest.mark.parametrize("method,embeddings", METHODS)
def test_parameter_counts_of_bert_are_unchanged(bert, method, embeddings):
    q, _ = quantize_model(bert, qcfg(method, embeddings), CPU)
    float_total = Candidate(bert, None, None).parameter_counts()[0]
    assert Candidate(q, None, None).parameter_counts()[0] == float_total


def test_parameter_counts_of_gpt2_ignore_the_untied_head(gpt2):
    q, _ = quantize_model(gpt2, qcfg("int8-dynamic"), CPU)
    assert Candidate(q, None, None).parameter_counts()[0] == Candidate(gpt2, None, None).parameter_counts()[0]


# ---- the stage -----------------------------------------------------------------------------------


def stage_and_env(config: QuantizeConfig) -> tuple[QuantizeStage, StageEnv]:
    env = StageEnv(task=get_task("feature-extraction"), device=CPU, seed=0, max_length=32)
    return QuantizeStage(config, index=2), env


def test_stage_validate_notes_and_refusals(bert):
    info = ModelInfo.from_config(bert.config)
    stage, env = stage_and_env(qcfg("int4-weight-only"))
    assert stage.validate(info, env) == info
    assert any("not faster" in n or "neither smaller nor faster" in n for n in stage.details["notes"])
    stage, env = stage_and_env(qcfg("int4-weight-only", group_size=64))
    with pytest.raises(StageError) as err:
        stage.validate(info, env)
    assert err.value.field == "stages.2.group_size" and "try 32" in err.value.message
    stage, env = stage_and_env(qcfg("int8-dynamic"))
    stage.validate(info, env)
    assert stage.details == {}  # nothing to warn about: int8-dynamic on CPU is the CPU speed path


def test_stage_run_returns_a_quantized_candidate(bert):
    stage, env = stage_and_env(qcfg("int8-dynamic", "int8"))
    candidate = Candidate(bert, None, env.task)
    out = stage.run(candidate, env, RunContext())
    assert candidate.quantization is None and candidate.model is bert
    assert out.quantization["method"] == "int8-dynamic" and out.device == CPU and out.model is not bert
    assert stage.details["quantized_modules"] == 25 + 3 and stage.details["backend"] == qf.TORCH_AO_DYNAMIC
    assert stage.details["embeddings_quantized"] == out.quantization["embeddings_quantized"]
    assert stage.describe()["kind"] == "quantize"
    with pytest.raises(StageError, match="already quantized"):
        stage.run(out, env, RunContext())
