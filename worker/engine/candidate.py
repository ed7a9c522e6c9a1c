"""A candidate: a model in memory plus what is needed to save it and load it back."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .tasks.base import Task


@dataclass
class Candidate:
    model: nn.Module
    tokenizer: object
    task: Task
    # Shape changes the config cannot express (pruned heads), so the loader can rebuild them:
    # {"heads": {layer: kept}, "intermediate": {layer: kept}}
    structure: dict = field(default_factory=dict)
    # How weights were quantized, so the loader can rebuild the same modules: {"method": ..., ...}
    quantization: dict | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def parameter_counts(self) -> tuple[int, int]:
        """(parameters, non-zero parameters), counting quantized weights by their logical size."""
        total = nonzero = 0
        # A tied output head shares the input embedding; quantizing unties it into a copy of the same
        # weights, which must not be counted twice.
        config = getattr(self.model, "config", None)
        tied = getattr(config, "tie_word_embeddings", False) and hasattr(self.model, "get_output_embeddings")
        skip = self.model.get_output_embeddings() if tied else None
        for tensor in _weights(self.model, skip):
            total += tensor.numel()
            nonzero += int(torch.count_nonzero(tensor))
        return total, nonzero


def _weights(model: nn.Module, skip: nn.Module | None = None):
    seen: set[int] = set()
    for module in model.modules():
        for name, value in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if id(value) in seen or (not value.is_floating_point() and "weight" not in name):
                continue
            if module is skip and name == "weight":
                continue
            seen.add(id(value))
            yield _dense(value)
        # torch.ao dynamic quantized modules keep weights in packed params, not parameters
        packed = getattr(module, "_packed_params", None)
        if packed is not None and hasattr(module, "weight") and callable(module.weight):
            if module is not skip:
                w = module.weight()
                yield w.dequantize() if w.is_quantized else w
            bias = module.bias() if callable(getattr(module, "bias", None)) else None
            if bias is not None:
                yield bias


def _dense(t: torch.Tensor) -> torch.Tensor:
    if t.is_quantized:
        return t.dequantize()
    if type(t) is not torch.Tensor and type(t) is not nn.Parameter and hasattr(t, "dequantize"):
        return t.dequantize()  # torchao tensor subclasses
    return t.detach()
