"""int8-dynamic: torch.ao dynamic int8 Linear (+ optionally int8 Embedding). CPU only, and the one method
that makes CPU inference faster."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import StageError
from ..stages import quant_formats as qf
from .linear_layers import prepare_linears, rebuild_linears
from .registry import QuantMethod, register_method


@register_method
class Int8Dynamic(QuantMethod):
    name = "int8-dynamic"
    short_id = "i8d"
    rank = 4
    coarser_than = frozenset({"fp16", "bf16", "int8-weight-only"})
    int8_embeddings = True
    backends = (qf.TORCH_AO_DYNAMIC,)

    def validate(self, cfg, info, device) -> list[str]:
        if not [e for e in torch.backends.quantized.supported_engines if e != "none"]:
            raise StageError("this torch build has no quantized CPU engine (fbgemm, x86 or qnnpack)", field="method")
        return ["int8-dynamic serves on CPU: the quantized model is measured on CPU"] if device.type != "cpu" else []

    def serving_device(self, device: torch.device) -> torch.device:
        return torch.device("cpu")  # torch.ao's int8 kernels are CPU, fp32 in and out

    def quantize(self, model: nn.Module, cfg, device: torch.device, spec: dict) -> nn.Module:
        spec["backend"] = qf.TORCH_AO_DYNAMIC
        model = model.to(device="cpu", dtype=torch.float32)
        linears = prepare_linears(model, spec)
        if cfg.embeddings == "int8":
            spec["embeddings_quantized"], refused = qf.embedding_names(model)
            spec["left_float"].update(refused)
        qf.dynamic_int8(model, linears, spec["embeddings_quantized"])
        return model

    def rebuild(self, model: nn.Module, spec: dict) -> nn.Module:
        model = rebuild_linears(model, spec, "cpu")
        qf.dynamic_int8(model, spec["linear"], spec["embeddings_quantized"])
        return model
