"""Module transformations shared by quantizing a model and rebuilding one to load a saved state dict.

Every function takes explicit module names, so the rebuild path replays exactly what quantization did
(the names are recorded in the spec) instead of re-deriving them with heuristics that could drift.
torchao is imported lazily: importing it takes seconds and logs warnings about optional CUDA kernels.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from contextlib import contextmanager

import torch
import torch.ao.nn.quantized as nnq
from torch import nn

# Backends recorded in the spec; the rebuild path dispatches on them.
TORCH_AO_DYNAMIC = "torch.ao-dynamic-int8"
TORCHAO_INT8 = "torchao-int8-weight-only"
TORCHAO_INT4_TILE = "torchao-int4-tile-packed"  # CUDA tinygemm kernel, bf16 activations
TORCHAO_INTX_INT4 = "torchao-intx-int4"  # runs anywhere, int4 values stored one per byte
CAST = "dtype-cast"
INT4_TILE_GROUPS = (32, 64, 128, 256)  # what the tinygemm kernel supports


def _split(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent, _, child = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), child


def _require(model: nn.Module, names: Iterable[str], cls: type[nn.Module]) -> list[str]:
    # Both libraries skip a name they do not find without a word; a rebuild must not.
    names = list(names)
    for name in names:
        if type(model.get_submodule(name)) is not cls:
            raise ValueError(f"{name} is a {type(model.get_submodule(name)).__name__}, not a {cls.__name__}")
    return names


def conv1d_to_linear(model: nn.Module, names: Iterable[str] | None = None) -> list[str]:
    """Replace GPT-2's Conv1D (y = x @ W + b, W of shape [in, out]) with the equivalent nn.Linear
    (weight transposed), since both quantization libraries only know nn.Linear. `names=None`
    converts every Conv1D; returns the converted names."""
    from transformers.pytorch_utils import Conv1D

    wanted = None if names is None else set(names)
    converted = []
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, Conv1D) or (wanted is not None and name not in wanted):
            continue
        w = mod.weight
        lin = nn.Linear(mod.nx, mod.nf, bias=mod.bias is not None, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w.t())
            if mod.bias is not None:
                lin.bias.copy_(mod.bias)
        lin.train(mod.training)
        parent, child = _split(model, name)
        setattr(parent, child, lin)
        converted.append(name)
    if wanted is not None and set(converted) != wanted:
        raise ValueError(f"no Conv1D module named {sorted(wanted - set(converted))[:3]} in this model")
    return converted


def linear_names(model: nn.Module, group_size: int | None = None) -> tuple[list[str], dict[str, str]]:
    """Names of the nn.Linear layers to quantize, and those left in float with the reason (an input
    size that the group size does not divide: torchao would otherwise skip them silently)."""
    names, skipped = [], {}
    for name, mod in model.named_modules():
        if type(mod) is not nn.Linear:
            continue
        if group_size is not None and mod.in_features % group_size:
            skipped[name] = f"input size {mod.in_features} is not a multiple of group_size {group_size}"
        else:
            names.append(name)
    return names, skipped


def embedding_names(model: nn.Module) -> tuple[list[str], dict[str, str]]:
    """Embeddings torch.ao's quantized Embedding reproduces exactly in inference (a padding_idx only
    affects gradients, so it is fine), and those left in float with the reason."""
    names, skipped = [], {}
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Embedding):
            continue
        if type(mod) is not nn.Embedding:
            skipped[name] = f"{type(mod).__name__} subclasses nn.Embedding; its forward may differ"
        elif mod.max_norm is not None:
            skipped[name] = "max_norm renormalises rows on lookup; the quantized Embedding does not"
        else:
            names.append(name)
    return names, skipped


class QuantizedEmbedding(nnq.Embedding):
    """torch.ao's int8 Embedding, also for non-contiguous indices: BERT expands its token-type buffer
    over the batch (stride 0), which the embedding_byte kernel refuses."""

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return super().forward(indices.contiguous())

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> QuantizedEmbedding:
        q = nnq.Embedding.from_float(mod, use_precomputed_fake_quant)
        q.__class__ = cls  # the parent builds its own class by name; the state dict is the same
        return q


@contextmanager
def _quiet_torch_ao():
    # torch.ao's eager API is deprecated in favour of torchao, but it is still the one int8 path that
    # runs fast on CPU (fbgemm/x86 kernels) and quantizes embeddings; silence only its deprecation notes.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"(?s).*quantized tensor creation functions.*deprecated")
        yield


def dynamic_int8(model: nn.Module, linears: Iterable[str], embeddings: Iterable[str]) -> None:
    """In place: int8 dynamic Linear (weights int8, activations quantized per batch) and int8
    weight-only Embedding (per-row float scale and offset)."""
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        float_qparams_weight_only_qconfig,
        get_default_dynamic_quant_module_mappings,
        quantize_dynamic,
    )

    spec: dict = {name: default_dynamic_qconfig for name in _require(model, linears, nn.Linear)}
    embeddings = _require(model, embeddings, nn.Embedding)
    spec.update({name: float_qparams_weight_only_qconfig for name in embeddings})
    mapping = {**get_default_dynamic_quant_module_mappings(), nn.Embedding: QuantizedEmbedding}
    if spec:
        with _quiet_torch_ao():
            quantize_dynamic(model, spec, mapping=mapping, inplace=True)


@contextmanager
def _quiet_import():
    # torchao logs a warning per optional CUDA kernel it cannot load, and torch's pytree one per enum.
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def torchao_version() -> str:
    with _quiet_import():
        import torchao
    return torchao.__version__


def torchao_weight_only(model: nn.Module, backend: str, names: Iterable[str], group_size: int | None) -> None:
    """In place: torchao weight-only quantization of the named nn.Linear layers. Importing torchao
    also registers its tensor classes with torch.serialization, so weights_only loading accepts them."""
    with _quiet_import():
        from torchao.quantization import (
            Int4WeightOnlyConfig,
            Int8WeightOnlyConfig,
            IntxWeightOnlyConfig,
            PerGroup,
            quantize_,
        )
    # set_inductor_config=False: torchao would otherwise change global torch._inductor settings.
    if backend == TORCHAO_INT8:
        config = Int8WeightOnlyConfig(set_inductor_config=False)
    elif backend == TORCHAO_INT4_TILE:
        config = Int4WeightOnlyConfig(group_size=group_size, int4_packing_format="tile_packed_to_4d",
                                      set_inductor_config=False)
    elif backend == TORCHAO_INTX_INT4:
        config = IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size))
    else:
        raise ValueError(f"unknown torchao backend {backend!r}")
    wanted = set(_require(model, names, nn.Linear))
    if wanted:
        quantize_(model, config, filter_fn=lambda mod, fqn: fqn in wanted and type(mod) is nn.Linear)
