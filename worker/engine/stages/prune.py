"""Unstructured (magnitude) and N:M semi-structured pruning of the weights inside transformer blocks.

A caveat the report states plainly: these methods only write zeros into dense matrices. The saved
file stays the same size and dense CPU kernels run no faster; only structured pruning (fewer heads,
narrower feed-forward, see structured.py) or sparse kernels (e.g. 2:4 sparse tensor cores on recent
GPUs) turn the zeros into speed.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn
from torch.nn.utils import prune
from transformers.pytorch_utils import Conv1D

from ..architecture import ModelInfo, find_layers
from ..candidate import Candidate
from ..context import RunContext
from ..errors import StageError
from ..memory import FP32, MemoryInputs, parameters
from ..recipe import PruneMagnitudeConfig, PruneNMConfig
from .base import Stage, StageEnv, register

_NOTE = "zeros in dense weights: file size and dense-kernel latency are unchanged"


def target_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Linear (and GPT-2 Conv1D) layers inside the transformer blocks.

    Embeddings, LayerNorms and task heads live outside the blocks and are left dense: they are
    small, and the heads are where pruning costs the most quality per parameter.
    """
    path, layers = find_layers(model)
    found = [
        (f"{path}.{i}.{name}", module)
        for i, block in enumerate(layers)
        for name, module in block.named_modules()
        if isinstance(module, nn.Linear | Conv1D)
    ]
    if not found:
        raise StageError(f"found no Linear layers to prune inside the blocks of a {type(model).__name__}")
    return found


def as_out_in(module: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """A view of the weight as (out, in): Conv1D stores it transposed, as (in, out)."""
    return weight.t() if isinstance(module, Conv1D) else weight


def sparsity_of(modules: list[tuple[str, nn.Module]]) -> tuple[int, int]:
    """(zero weights, all weights) over the targeted matrices."""
    zeros = total = 0
    for _, module in modules:
        w = module.weight.detach()
        zeros += int(w.numel() - torch.count_nonzero(w))
        total += w.numel()
    return zeros, total


class _PruneStage(Stage):
    def memory_parts(self, m: MemoryInputs) -> dict[str, int]:
        return {"model weights and masks": 2 * FP32 * parameters(m.before)}

    def _start(self, candidate: Candidate) -> tuple[nn.Module, list[tuple[str, nn.Module]]]:
        if candidate.quantization is not None:
            raise StageError("prune before quantize: the weights of this candidate are already quantized",
                             field=self.field)
        # A copy, so the teacher (or an earlier candidate the report still measures) keeps its weights.
        model = copy.deepcopy(candidate.model)
        return model, target_modules(model)

    def _finish(self, candidate: Candidate, model: nn.Module, modules, target: float) -> Candidate:
        zeros, total = sparsity_of(modules)
        self.details = {
            "target_sparsity": round(target, 6),
            "achieved_sparsity": round(zeros / total, 6),
            "pruned_parameters": zeros,
            "targeted_parameters": total,
            "targeted_layers": len(modules),
            "note": _NOTE,
        }
        return dataclasses.replace(candidate, model=model)


@register(PruneMagnitudeConfig)
class MagnitudePrune(_PruneStage):
    config: PruneMagnitudeConfig

    def run(self, candidate: Candidate, env: StageEnv, ctx: RunContext) -> Candidate:
        ctx.check_cancel()
        model, modules = self._start(candidate)
        amount = self.config.sparsity
        params = [(module, "weight") for _, module in modules]
        if self.config.scope == "global":
            # One threshold over all blocks: layers with many small weights lose more.
            ctx.progress(self.label, f"global magnitude pruning to {amount:.0%}")
            prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
        else:
            for i, (_, module) in enumerate(modules):
                ctx.check_cancel()
                ctx.progress(self.label, "pruning", step=i, total=len(modules))
                prune.l1_unstructured(module, "weight", amount=amount)
        # Bake the masks into plain parameters: no weight_orig/weight_mask, no forward pre-hooks,
        # so the state dict saves and reloads like any other model.
        for module, name in params:
            prune.remove(module, name)
        steps = 1 if self.config.scope == "global" else len(modules)
        ctx.progress(self.label, "pruning", step=steps, total=steps)
        return self._finish(candidate, model, modules, amount)


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean mask keeping the n largest |w| in every run of m consecutive inputs of each output row.

    `weight` is (out, in) with `in` divisible by m.
    """
    out_f, in_f = weight.shape
    groups = weight.detach().abs().reshape(out_f, in_f // m, m)
    keep = groups.topk(n, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return mask.reshape(out_f, in_f)


@register(PruneNMConfig)
class NMPrune(_PruneStage):
    config: PruneNMConfig

    def validate(self, info: ModelInfo, env: StageEnv) -> ModelInfo:
        # Block weights read either the hidden state or the feed-forward activations.
        m = self.config.m
        for what, size in (("hidden size", info.hidden_size), ("intermediate size", info.intermediate_size)):
            if size is not None and size % m:
                raise StageError(f"m={m} does not divide the model's {what} ({size}): every group of m "
                                 "inputs must be complete", field=f"{self.field}.m")
        return info

    def run(self, candidate: Candidate, env: StageEnv, ctx: RunContext) -> Candidate:
        ctx.check_cancel()
        model, modules = self._start(candidate)
        n, m = self.config.n, self.config.m
        # Checked again on the real shapes: earlier stages (structured pruning) may have changed them.
        for name, module in modules:
            in_f = as_out_in(module, module.weight).shape[1]
            if in_f % m:
                raise StageError(f"m={m} does not divide the input size {in_f} of {name}",
                                 field=f"{self.field}.m")
        with torch.no_grad():
            for i, (_, module) in enumerate(modules):
                ctx.check_cancel()
                ctx.progress(self.label, "pruning", step=i, total=len(modules))
                w = as_out_in(module, module.weight)
                w.mul_(nm_mask(w, n, m).to(w.dtype))  # in place through the view: Conv1D is updated too
        ctx.progress(self.label, "pruning", step=len(modules), total=len(modules))
        return self._finish(candidate, model, modules, 1 - n / m)
