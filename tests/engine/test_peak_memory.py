"""Peak memory of inference: the weights in memory (float, torch.ao int8, torchao) plus the activation peak."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM

from worker.engine.candidate import Candidate
from worker.engine.latency import Settings
from worker.engine.measure import TensorPeak, latency, resident_bytes
from worker.engine.recipe import QuantizeConfig
from worker.engine.stages.quantize import quantize_model
from worker.engine.tasks import get_task

CPU = torch.device("cpu")
MB = 1 << 20


def _param_and_buffer_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


@pytest.fixture(scope="module")
def bert(tiny_bert):
    return AutoModel.from_pretrained(tiny_bert).eval()


def test_tensor_peak_is_the_high_water_mark_not_the_sum_of_allocations():
    with TensorPeak() as tracker:
        a = torch.ones(MB // 4)  # 1 MB of float32
        del a
        b = torch.ones(MB // 2)  # 2 MB, allocated after the first is gone
        c = b * 2  # 2 MB more, while b lives
        total = c.sum()
    assert 4 * MB <= tracker.peak < 4 * MB + 1024  # b and c together; a had been freed
    assert float(total) == MB


def test_resident_bytes_counts_float_weights_once(bert, tiny_gpt2):
    assert resident_bytes(bert) == _param_and_buffer_bytes(bert)
    gpt2 = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    # GPT-2 ties its output head to the token embedding: the shared storage counts once
    assert gpt2.lm_head.weight.data_ptr() == gpt2.transformer.wte.weight.data_ptr()
    assert resident_bytes(gpt2) == _param_and_buffer_bytes(gpt2)  # parameters() yields a tied weight once
    assert resident_bytes(gpt2) < _param_and_buffer_bytes(gpt2) + gpt2.lm_head.weight.numel() * 4


@pytest.mark.parametrize("method,embeddings,most", [
    ("int8-dynamic", "keep", 0.60), ("int8-dynamic", "int8", 0.40), ("int8-weight-only", "keep", 0.60),
    ("fp16", "keep", 0.51),
])
def test_resident_bytes_of_quantized_models_shrink(bert, method, embeddings, most):
    cfg = QuantizeConfig(kind="quantize", method=method, embeddings=embeddings)
    q, _ = quantize_model(bert, cfg, CPU)
    fp32 = resident_bytes(bert)
    # int8 weights are a quarter of fp32; biases, LayerNorms, scales (and kept embeddings) stay float
    assert 0.1 * fp32 < resident_bytes(q) < most * fp32


def _latency(model, batch_size: int) -> dict:
    ids = torch.randint(5, 40, (batch_size, 24))
    single = [{"input_ids": ids[:1], "attention_mask": torch.ones_like(ids[:1])}]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return latency(Candidate(model, None, get_task("feature-extraction")), {1: single, batch_size: [batch]},
                   Settings(runs=3, warmup=1, windows=1), batch_size)


def test_peak_memory_includes_the_weights_and_grows_with_the_batch(bert):
    small, large = _latency(bert, 2), _latency(bert, 16)
    weights = _param_and_buffer_bytes(bert)
    for lat in (small, large):
        assert lat["peak_memory_kind"] == "weights+cpu_tensors"
        assert lat["weights_memory_bytes"] == weights
        assert lat["activation_peak_bytes"] > 0
        assert lat["peak_memory_bytes"] == weights + lat["activation_peak_bytes"] > weights
    # a hidden state of the larger batch alone is 16 * 24 * 32 floats; activations grow with the batch
    assert large["activation_peak_bytes"] > 4 * small["activation_peak_bytes"]
    assert large["activation_peak_bytes"] >= 16 * 24 * 32 * 4 * 2
