"""What the nn.Linear-based methods share: finding the layers, recording them in the spec, replaying the
module conversions before a rebuild, and the torchao availability check."""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from ..errors import StageError
from ..stages import quant_formats as qf


def float_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def prepare_linears(model: nn.Module, spec: dict, group_size: int | None = None) -> list[str]:
    """Convert GPT-2's Conv1D to Linear and record the Linear layers to quantize (and those left float,
    with the reason) in the spec; a model with none is refused."""
    spec["dtype"] = str(float_dtype(model)).removeprefix("torch.")
    spec["conv1d_to_linear"] = qf.conv1d_to_linear(model)
    linears, spec["left_float"] = qf.linear_names(model, group_size)
    if not linears:
        raise StageError(f"found no nn.Linear layers to quantize in a {type(model).__name__}"
                         + (f" (group_size {group_size} divides none of their input sizes)" if group_size else ""))
    spec["linear"] = linears
    return linears


def rebuild_linears(model: nn.Module, spec: dict, device: str | None) -> nn.Module:
    """A fresh float model back in the dtype (and device) it was quantized in, its Conv1D converted."""
    model = model.to(device=device, dtype=getattr(torch, spec["dtype"]))
    qf.conv1d_to_linear(model, spec["conv1d_to_linear"])
    return model


def require_torchao(method: str) -> None:
    if importlib.util.find_spec("torchao") is None:
        raise StageError(f"{method} needs the torchao package, which is not installed", field="method")
