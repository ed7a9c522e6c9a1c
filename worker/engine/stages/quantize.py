"""Post-training quantization, and the rebuild path that lets a saved quantized state dict load again.

Methods and where they serve:
- int8-dynamic: torch.ao dynamic int8 Linear (+ optionally int8 Embedding); CPU only, and the one that
  makes CPU inference faster.
- int8-weight-only: torchao Int8WeightOnlyConfig; meant for GPU serving, runs on CPU too.
- int4-weight-only: torchao Int4WeightOnlyConfig (tinygemm, bf16) on CUDA; on CPU, where that kernel
  does not run, IntxWeightOnlyConfig(int4, PerGroup), which is accurate but neither faster nor smaller.
- fp16 / bf16: a cast; saved with save_pretrained.

The returned `spec` is JSON and names every converted and quantized module, so `rebuild_quantized`
replays the same transformation on a freshly built float model before its state dict is loaded.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util

import torch
from torch import nn

from ..architecture import ModelInfo
from ..candidate import Candidate
from ..context import RunContext
from ..errors import ArtifactError, StageError
from ..recipe import QuantizeConfig
from . import quant_formats as qf
from .base import Stage, StageEnv, register

SPEC_VERSION = 1
_TORCHAO_METHODS = ("int8-weight-only", "int4-weight-only")
_CAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_TILE_GROUPS = f"the CUDA int4 kernel supports group_size {', '.join(map(str, qf.INT4_TILE_GROUPS))}"
_INT4_CPU_NOTE = ("int4 on CPU runs through torchao's IntxWeightOnlyConfig: int4 values stored one per byte, "
                  "so neither smaller nor faster than int8 on CPU; use int8-dynamic for CPU speed")


def _int4_backend(device: torch.device) -> str:
    # The tinygemm int4 kernel needs tensor cores (compute capability 8.0+); elsewhere use Intx.
    cuda = device.type == "cuda" and torch.cuda.is_available()
    if cuda and torch.cuda.get_device_capability(device)[0] >= 8:
        return qf.TORCHAO_INT4_TILE
    return qf.TORCHAO_INTX_INT4


def _float_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def quantize_model(model: nn.Module, cfg: QuantizeConfig, device: torch.device) -> tuple[nn.Module, dict]:
    """Quantize a copy of `model` (the input is left untouched) for serving on `device` (int8-dynamic
    always serves on CPU). Returns the quantized model and the JSON spec that rebuilds it."""
    model = copy.deepcopy(model)
    method = cfg.method
    serving = torch.device("cuda") if device.type == "cuda" else torch.device("cpu")
    spec: dict = {
        "version": SPEC_VERSION, "method": method, "embeddings": cfg.embeddings,
        "group_size": cfg.group_size if method == "int4-weight-only" else None,
        "backend": qf.CAST, "serving_device": serving.type, "format": "torch-state-dict",
        "dtype": None, "conv1d_to_linear": [], "linear": [], "embeddings_quantized": [], "left_float": {},
    }
    if method in _CAST_DTYPES:
        model = model.to(device=serving, dtype=_CAST_DTYPES[method])
        spec.update(format="safetensors", dtype=str(_CAST_DTYPES[method]).removeprefix("torch."))
        return model, spec

    if method == "int8-dynamic":
        spec.update(backend=qf.TORCH_AO_DYNAMIC, serving_device="cpu")
        model = model.to(device="cpu", dtype=torch.float32)  # torch.ao's int8 kernels are CPU, fp32 in/out
    elif method == "int8-weight-only":
        spec["backend"] = qf.TORCHAO_INT8
        model = model.to(serving)
    else:
        backend = _int4_backend(device)
        spec["backend"] = backend
        if backend == qf.TORCHAO_INT4_TILE:
            if cfg.group_size not in qf.INT4_TILE_GROUPS:
                raise StageError(_TILE_GROUPS, field="group_size")
            model = model.to(device=serving, dtype=torch.bfloat16)  # tinygemm takes bf16 only
        else:
            model = model.to(serving)
    spec["dtype"] = str(_float_dtype(model)).removeprefix("torch.")
    spec["conv1d_to_linear"] = qf.conv1d_to_linear(model)
    group = spec["group_size"]
    linears, spec["left_float"] = qf.linear_names(model, group)
    if not linears:
        raise StageError(f"found no nn.Linear layers to quantize in a {type(model).__name__}"
                         + (f" (group_size {group} divides none of their input sizes)" if group else ""))
    spec["linear"] = linears
    if method == "int8-dynamic":
        if cfg.embeddings == "int8":
            spec["embeddings_quantized"], refused = qf.embedding_names(model)
            spec["left_float"].update(refused)
        qf.dynamic_int8(model, linears, spec["embeddings_quantized"])
    else:
        spec["torchao"] = qf.torchao_version()
        qf.torchao_weight_only(model, spec["backend"], linears, group)
    return model, spec


def rebuild_quantized(model: nn.Module, spec: dict) -> nn.Module:
    """Turn a freshly built float model of the same architecture (e.g. `AutoModel.from_config`) into
    the quantized module structure `spec` describes, in place, so that
    `model.load_state_dict(torch.load(path, weights_only=True), assign=True)` restores the weights.
    Call it before `torch.load`: it imports torchao, which registers its tensor classes as safe."""
    if spec.get("version") != SPEC_VERSION:
        raise ArtifactError(f"quantization spec version {spec.get('version')!r} is not supported "
                            f"(this engine reads version {SPEC_VERSION})")
    method, backend = spec.get("method"), spec.get("backend")
    if method in _CAST_DTYPES:
        return model.to(_CAST_DTYPES[method])
    if backend not in (qf.TORCH_AO_DYNAMIC, qf.TORCHAO_INT8, qf.TORCHAO_INT4_TILE, qf.TORCHAO_INTX_INT4):
        raise ArtifactError(f"unknown quantization backend {backend!r} for method {method!r}")
    if backend == qf.TORCHAO_INT4_TILE and not torch.cuda.is_available():
        raise ArtifactError("this model was quantized for the CUDA int4 kernel (tinygemm): it loads on a GPU")
    try:
        dtype = getattr(torch, spec["dtype"])
        device = {qf.TORCH_AO_DYNAMIC: "cpu", qf.TORCHAO_INT4_TILE: "cuda"}.get(backend)
        model = model.to(device=device, dtype=dtype)
        qf.conv1d_to_linear(model, spec["conv1d_to_linear"])
        if backend == qf.TORCH_AO_DYNAMIC:
            qf.dynamic_int8(model, spec["linear"], spec["embeddings_quantized"])
        else:
            qf.torchao_weight_only(model, backend, spec["linear"], spec["group_size"])
    except (KeyError, ValueError, AttributeError) as exc:  # a spec this architecture does not match
        raise ArtifactError(f"cannot rebuild the quantized model from its spec: {exc}") from None
    return model


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

    def validate(self, info: ModelInfo, env: StageEnv) -> ModelInfo:
        cfg, notes = self.config, []
        if cfg.method == "int8-dynamic":
            engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
            if not engines:
                raise StageError("this torch build has no quantized CPU engine (fbgemm, x86 or qnnpack)",
                                 field=f"{self.field}.method")
            if env.device.type != "cpu":
                notes.append("int8-dynamic serves on CPU: the quantized model is measured on CPU")
        elif cfg.method in _TORCHAO_METHODS and importlib.util.find_spec("torchao") is None:
            raise StageError(f"{cfg.method} needs the torchao package, which is not installed",
                             field=f"{self.field}.method")
        if cfg.method == "int4-weight-only":
            if info.hidden_size % cfg.group_size:
                sizes = [g for g in (32, 64, 128) if info.hidden_size % g == 0]
                raise StageError(f"group_size {cfg.group_size} does not divide the hidden size "
                                 f"{info.hidden_size}, so most layers could not be quantized"
                                 + (f"; try {sizes[-1]}" if sizes else ""), field=f"{self.field}.group_size")
            if _int4_backend(env.device) == qf.TORCHAO_INT4_TILE:
                if cfg.group_size not in qf.INT4_TILE_GROUPS:
                    raise StageError(_TILE_GROUPS, field=f"{self.field}.group_size")
            else:
                notes.append(_INT4_CPU_NOTE)
        if cfg.method == "int8-weight-only" and env.device.type != "cuda":
            notes.append("int8-weight-only is a GPU serving format: on CPU it shrinks the file, no faster")
        if cfg.method in _CAST_DTYPES and env.device.type != "cuda":
            notes.append(f"{cfg.method} halves the file, but its CPU kernels are usually slower than fp32")
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
