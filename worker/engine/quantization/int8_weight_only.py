"""int8-weight-only: torchao Int8WeightOnlyConfig. A GPU serving format; runs on CPU too."""

from __future__ import annotations

import torch
from torch import nn

from ..stages import quant_formats as qf
from .linear_layers import prepare_linears, rebuild_linears, require_torchao
from .registry import QuantMethod, register_method


@register_method
class Int8WeightOnly(QuantMethod):
    name = "int8-weight-only"
    short_id = "i8w"
    rank = 3
    coarser_than = frozenset({"fp16", "bf16"})
    backends = (qf.TORCHAO_INT8,)

    def validate(self, cfg, info, device) -> list[str]:
        require_torchao(self.name)
        if device.type != "cuda":
            return ["int8-weight-only is a GPU serving format: on CPU it shrinks the file, no faster"]
        return []

    def quantize(self, model: nn.Module, cfg, device: torch.device, spec: dict) -> nn.Module:
        spec["backend"] = qf.TORCHAO_INT8
        model = model.to(self.serving_device(device))
        linears = prepare_linears(model, spec)
        spec["torchao"] = qf.torchao_version()
        qf.torchao_weight_only(model, qf.TORCHAO_INT8, linears, None)
        return model

    def rebuild(self, model: nn.Module, spec: dict) -> nn.Module:
        model = rebuild_linears(model, spec, None)
        qf.torchao_weight_only(model, qf.TORCHAO_INT8, spec["linear"], spec["group_size"])
        return model
