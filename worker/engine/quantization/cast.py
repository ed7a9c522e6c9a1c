"""fp16 / bf16: a cast of every weight; saved with save_pretrained, so plain transformers loads it."""

from __future__ import annotations

import torch
from torch import nn

from ..stages import quant_formats as qf
from .registry import SAFETENSORS_FORMAT, QuantMethod, register_method


class Cast(QuantMethod):
    dtype: torch.dtype
    artifact_format = SAFETENSORS_FORMAT
    backends = (qf.CAST,)

    def validate(self, cfg, info, device) -> list[str]:
        if device.type != "cuda":
            return [f"{self.name} halves the file, but its CPU kernels are usually slower than fp32"]
        return []

    def quantize(self, model: nn.Module, cfg, device: torch.device, spec: dict) -> nn.Module:
        spec["dtype"] = str(self.dtype).removeprefix("torch.")
        return model.to(device=self.serving_device(device), dtype=self.dtype)

    def rebuild(self, model: nn.Module, spec: dict) -> nn.Module:
        return model.to(self.dtype)


@register_method
class Fp16(Cast):
    name = "fp16"
    short_id = "fp16"
    rank = 1
    dtype = torch.float16


@register_method
class Bf16(Cast):
    name = "bf16"
    short_id = "bf16"
    rank = 2
    coarser_than = frozenset({"fp16"})
    dtype = torch.bfloat16
