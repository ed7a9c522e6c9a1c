"""The quantize stage: post-training quantization by a registered method, and the rebuild path that lets a
saved quantized state dict load again.

The methods (int8-dynamic, int8-weight-only, int4-weight-only, fp16, bf16, and any registered later) live in
worker/engine/quantization, one module each; this stage only dispatches on the recipe's `method`.

The returned `spec` is JSON and names every converted and quantized module, so `rebuild_quantized`
replays the same transformation on a freshly built float model before its state dict is loaded.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from ..architecture import ModelInfo
from ..candidate import Candidate
from ..context import RunContext
from ..errors import ArtifactError, StageError
from ..memory import FP32, MemoryInputs, parameters
from ..quantization import get_method, load_builtin_methods
from ..recipe import QuantizeConfig
from . import quant_formats as qf
from .base import Stage, StageEnv, register

SPEC_VERSION = 1


def quantize_model(model: nn.Module, cfg: QuantizeConfig, device: torch.device) -> tuple[nn.Module, dict]:
    """Quantize a copy of `model` (the input is left untouched) for serving on `device` (a method may serve
    elsewhere: int8-dynamic always serves on CPU). Returns the quantized model and the JSON spec that
    rebuilds it."""
    method = get_method(cfg.method)
    spec: dict = {
        "version": SPEC_VERSION, "method": cfg.method, "embeddings": cfg.embeddings, "group_size": None,
        "backend": qf.CAST, "serving_device": method.serving_device(device).type,
        "format": method.artifact_format, "dtype": None, "conv1d_to_linear": [], "linear": [],
        "embeddings_quantized": [], "left_float": {},
    }
    model = method.quantize(copy.deepcopy(model), cfg, device, spec)
    return model, spec


def rebuild_quantized(model: nn.Module, spec: dict) -> nn.Module:
    """Turn a freshly built float model of the same architecture (e.g. `AutoModel.from_config`) into
    the quantized module structure `spec` describes, in place, so that
    `model.load_state_dict(torch.load(path, weights_only=True), assign=True)` restores the weights.
    Call it before `torch.load`: it imports torchao, which registers its tensor classes as safe."""
    if spec.get("version") != SPEC_VERSION:
        raise ArtifactError(f"quantization spec version {spec.get('version')!r} is not supported "
                            f"(this engine reads version {SPEC_VERSION})")
    load_builtin_methods()
    name, backend = spec.get("method"), spec.get("backend")
    try:
        method = get_method(str(name))
    except ValueError:
        raise ArtifactError(f"unknown quantization method {name!r} (backend {backend!r})") from None
    if backend not in method.backends:
        raise ArtifactError(f"unknown quantization backend {backend!r} for method {name!r}")
    try:
        return method.rebuild(model, spec)
    except (KeyError, ValueError, AttributeError) as exc:  # a spec this architecture does not match
        raise ArtifactError(f"cannot rebuild the quantized model from its spec: {exc}") from None


def cpu_state_dict(model: nn.Module) -> dict:
    """The state dict to `torch.save` for a "torch-state-dict" artifact: tensors moved to CPU, and the
    per-module `_metadata` kept. torch.ao's quantized Linear reads its version from that metadata;
    without it, it takes the dict for a version-1 one and fails on a missing `weight` key."""
    state = model.state_dict()
    out = type(state)((k, v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in state.items())
    out._metadata = getattr(state, "_metadata", None)  # type: ignore[attr-defined]
    return out


def quantized_module_count(spec: dict) -> int:
    return len(spec.get("linear", [])) + len(spec.get("embeddings_quantized", []))


@register(QuantizeConfig)
class QuantizeStage(Stage):
    config: QuantizeConfig
    last_transform = True  # prune or distill after quantize would act on quantized weights

    def memory_parts(self, m: MemoryInputs) -> dict[str, int]:
        return {"model before and after": FP32 * parameters(m.before) + FP32 * parameters(m.after)}

    def validate(self, info: ModelInfo, env: StageEnv) -> ModelInfo:
        try:
            notes = get_method(self.config.method).validate(self.config, info, env.device)
        except StageError as exc:
            exc.field = f"{self.field}.{exc.field}" if exc.field else self.field
            raise
        self.details = {"notes": notes} if notes else {}
        return info  # quantization changes no shapes

    def run(self, candidate: Candidate, env: StageEnv, ctx: RunContext) -> Candidate:
        if candidate.quantization is not None:
            raise StageError(f"this candidate is already quantized ({candidate.quantization.get('method')})",
                             field=self.field)
        ctx.check_cancel()
        ctx.progress(self.label, f"quantizing ({self.config.method})")
        try:
            model, spec = quantize_model(candidate.model, self.config, env.device)
        except StageError as exc:
            exc.field = f"{self.field}.{exc.field}" if exc.field else self.field
            raise
        model.eval()
        self.details = {
            **self.details,
            "method": spec["method"], "backend": spec["backend"], "serving_device": spec["serving_device"],
            "quantized_modules": quantized_module_count(spec),
            "embeddings_quantized": spec["embeddings_quantized"],
            **({"left_float": spec["left_float"]} if spec["left_float"] else {}),
        }
        ctx.progress(self.label, "quantized")
        return dataclasses.replace(candidate, model=model, quantization=spec,
                                   device=torch.device(spec["serving_device"]))
