"""int4-weight-only: torchao Int4WeightOnlyConfig (the tinygemm kernel, bf16 activations) on CUDA with tensor
cores; elsewhere IntxWeightOnlyConfig(int4, PerGroup), which is accurate but on CPU neither faster nor smaller
(int4 values stored one per byte)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ArtifactError, StageError
from ..stages import quant_formats as qf
from .linear_layers import prepare_linears, rebuild_linears, require_torchao
from .registry import QuantMethod, register_method

TILE_GROUPS_MESSAGE = f"the CUDA int4 kernel supports group_size {', '.join(map(str, qf.INT4_TILE_GROUPS))}"
CPU_NOTE = ("int4 on CPU runs through torchao's IntxWeightOnlyConfig: int4 values stored one per byte, "
            "so neither smaller nor faster than int8 on CPU; use int8-dynamic for CPU speed")


def int4_backend(device: torch.device) -> str:
    # The tinygemm int4 kernel needs tensor cores (compute capability 8.0+); elsewhere use Intx.
    cuda = device.type == "cuda" and torch.cuda.is_available()
    if cuda and torch.cuda.get_device_capability(device)[0] >= 8:
        return qf.TORCHAO_INT4_TILE
    return qf.TORCHAO_INTX_INT4


@register_method
class Int4WeightOnly(QuantMethod):
    name = "int4-weight-only"
    short_id = "i4w"
    rank = 5
    coarser_than = frozenset({"fp16", "bf16", "int8-weight-only"})
    backends = (qf.TORCHAO_INT4_TILE, qf.TORCHAO_INTX_INT4)

    def validate(self, cfg, info, device) -> list[str]:
        require_torchao(self.name)
        if info.hidden_size % cfg.group_size:
            sizes = [g for g in (32, 64, 128) if info.hidden_size % g == 0]
            raise StageError(f"group_size {cfg.group_size} does not divide the hidden size {info.hidden_size}, "
                             "so most layers could not be quantized" + (f"; try {sizes[-1]}" if sizes else ""),
                             field="group_size")
        if int4_backend(device) != qf.TORCHAO_INT4_TILE:
            return [CPU_NOTE]
        if cfg.group_size not in qf.INT4_TILE_GROUPS:
            raise StageError(TILE_GROUPS_MESSAGE, field="group_size")
        return []

    def quantize(self, model: nn.Module, cfg, device: torch.device, spec: dict) -> nn.Module:
        backend = int4_backend(device)
        spec.update(backend=backend, group_size=cfg.group_size)
        if backend == qf.TORCHAO_INT4_TILE:
            if cfg.group_size not in qf.INT4_TILE_GROUPS:
                raise StageError(TILE_GROUPS_MESSAGE, field="group_size")
            model = model.to(device=self.serving_device(device), dtype=torch.bfloat16)  # tinygemm: bf16 only
        else:
            model = model.to(self.serving_device(device))
        linears = prepare_linears(model, spec, cfg.group_size)
        spec["torchao"] = qf.torchao_version()
        qf.torchao_weight_only(model, backend, linears, cfg.group_size)
        return model

    def rebuild(self, model: nn.Module, spec: dict) -> nn.Module:
        tile = spec["backend"] == qf.TORCHAO_INT4_TILE
        if tile and not torch.cuda.is_available():
            raise ArtifactError("this model was quantized for the CUDA int4 kernel (tinygemm): it loads on a GPU")
        model = rebuild_linears(model, spec, "cuda" if tile else None)
        qf.torchao_weight_only(model, spec["backend"], spec["linear"], spec["group_size"])
        return model
