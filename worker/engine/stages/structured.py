"""Structured pruning: remove whole attention heads and feed-forward neurons, shrinking the matrices.

Unlike magnitude pruning this makes the model smaller and faster on any hardware. The hidden size
is kept, so embeddings, LayerNorms and task heads are untouched. The feed-forward width is kept
uniform across layers so the config (intermediate_size / n_inner) can state it; head counts cannot
be stated in a BERT or GPT-2 config (head size is hidden / heads there), so they go in the
candidate's `structure`, and `apply_structure` rebuilds the shapes before weights are loaded.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..architecture import ModelInfo, find_layers
from ..candidate import Candidate
from ..context import RunContext
from ..errors import StageError
from ..memory import FP32, MemoryInputs, activations, parameters
from ..recipe import PruneStructuredConfig
from .base import Stage, StageEnv, register

# BERT-like encoders share module names (attention.self.query, intermediate.dense, ...).
BERT_LIKE = frozenset({"bert", "roberta", "xlm-roberta", "electra", "camembert"})
SUPPORTED = BERT_LIKE | {"gpt2"}


def _family(model_type: str) -> str:
    if model_type in BERT_LIKE:
        return "bert"
    if model_type == "gpt2":
        return "gpt2"
    raise StageError(f"structured pruning supports model types {', '.join(sorted(SUPPORTED))}, "
                     f"not {model_type!r}")


def kept_count(total: int, fraction: float) -> int:
    """How many of `total` units stay when removing `fraction`: round half up, keep at least one.
    Every layer uses this same rule, so every layer keeps the same count."""
    removed = int(total * fraction + 0.5)
    return max(1, total - removed)


# ---- weight surgery ---------------------------------------------------------------------------


def _out_in(module: nn.Module) -> torch.Tensor:
    """The weight as (out, in); Conv1D stores (in, out)."""
    return module.weight.detach().t() if isinstance(module, Conv1D) else module.weight.detach()


def _keep(module: nn.Module, index: torch.Tensor, side: str) -> None:
    """Keep only `index` along the module's output ("out") or input ("in") features, in place."""
    conv = isinstance(module, Conv1D)
    axis = (1 if conv else 0) if side == "out" else (0 if conv else 1)
    w = module.weight
    index = index.to(w.device)
    module.weight = nn.Parameter(w.detach().index_select(axis, index).clone(), requires_grad=w.requires_grad)
    if side == "out" and module.bias is not None:
        b = module.bias
        module.bias = nn.Parameter(b.detach().index_select(0, index).clone(), requires_grad=b.requires_grad)
    size = len(index)
    if conv:
        setattr(module, "nf" if side == "out" else "nx", size)
    else:
        setattr(module, "out_features" if side == "out" else "in_features", size)


def _head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Feature indices covered by the given heads (each head owns head_dim consecutive features)."""
    return (heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)


class _Block:
    """The parts of one transformer block that head and neuron surgery touch, for either family."""

    def __init__(self, block: nn.Module, family: str) -> None:
        self.family = family
        if family == "bert":
            self.attn = block.attention.self
            self.qkv = [self.attn.query, self.attn.key, self.attn.value]
            self.attn_out = block.attention.output.dense
            self.fc_in, self.fc_out = block.intermediate.dense, block.output.dense
        else:
            self.attn = block.attn
            self.qkv = [block.attn.c_attn]  # q, k and v concatenated along the output features
            self.attn_out = block.attn.c_proj
            self.fc_in, self.fc_out = block.mlp.c_fc, block.mlp.c_proj

    @property
    def heads(self) -> int:
        return self.attn.num_attention_heads if self.family == "bert" else self.attn.num_heads

    @property
    def head_dim(self) -> int:
        return self.attn.attention_head_size if self.family == "bert" else self.attn.head_dim

    @property
    def neurons(self) -> int:
        return _out_in(self.fc_in).shape[0]

    def head_scores(self) -> torch.Tensor:
        """L2 norm of each head's rows in q, k, v and its columns in the output projection."""
        h, d = self.heads, self.head_dim
        sq = _out_in(self.attn_out).float().pow(2).reshape(-1, h, d).sum(dim=(0, 2))
        for module in self.qkv:  # BERT: q, k, v separately; GPT-2: one (3 * h * d, hidden) matrix
            w = _out_in(module).float()
            sq += w.pow(2).reshape(-1, h, d, w.shape[1]).sum(dim=(0, 2, 3))
        return sq.sqrt()

    def neuron_scores(self) -> torch.Tensor:
        """L2 norm of each neuron's input row and output column."""
        return (_out_in(self.fc_in).float().pow(2).sum(1) + _out_in(self.fc_out).float().pow(2).sum(0)).sqrt()

    def keep_heads(self, heads: torch.Tensor) -> None:
        heads = heads.sort().values.cpu()
        d, width = self.head_dim, self.heads * self.head_dim
        rows = _head_rows(heads, d)
        if self.family == "bert":
            for module in self.qkv:
                _keep(module, rows, "out")
        else:
            _keep(self.qkv[0], torch.cat([rows, rows + width, rows + 2 * width]), "out")
        _keep(self.attn_out, rows, "in")
        k = len(heads)
        # The attention forward reshapes with -1 heads and a fixed head size; these attributes keep
        # the module's bookkeeping (and GPT-2's split of c_attn) consistent with the new width.
        if self.family == "bert":
            self.attn.num_attention_heads, self.attn.all_head_size = k, k * d
        else:
            # embed_dim is the attention's inner width here; c_proj still maps back to the hidden size
            self.attn.num_heads, self.attn.split_size, self.attn.embed_dim = k, k * d, k * d

    def keep_neurons(self, neurons: torch.Tensor) -> None:
        neurons = neurons.sort().values
        _keep(self.fc_in, neurons, "out")
        _keep(self.fc_out, neurons, "in")


def _blocks(model: nn.Module) -> list[_Block]:
    family = _family(model.config.model_type)
    return [_Block(block, family) for block in find_layers(model)[1]]


def _set_intermediate(model: nn.Module, blocks: list[_Block]) -> None:
    """State a uniform feed-forward width in the config, so a plain from_pretrained rebuilds it."""
    widths = {b.neurons for b in blocks}
    if len(widths) == 1:
        key = "n_inner" if model.config.model_type == "gpt2" else "intermediate_size"
        setattr(model.config, key, widths.pop())


def structure_of(model: nn.Module) -> dict:
    """The per-layer shapes of a (possibly pruned) model, JSON-serialisable. Head counts are recorded only
    when some layer has fewer than the config states: only then is the loader needed (the artifact's
    `plain_transformers` flag), since a uniform feed-forward width is stated in the config itself."""
    blocks = _blocks(model)
    out = {"intermediate": {str(i): b.neurons for i, b in enumerate(blocks)}}
    if any(b.heads < model.config.num_attention_heads for b in blocks):
        out["heads"] = {str(i): b.heads for i, b in enumerate(blocks)}
    return out


def apply_structure(model: nn.Module, structure: dict) -> None:
    """Shrink a freshly built full-size model to the recorded shapes, keeping the first k heads and
    neurons; the caller then loads the pruned weights with load_state_dict."""
    blocks = _blocks(model)
    for key, size_of, keep in (("heads", "heads", "keep_heads"), ("intermediate", "neurons", "keep_neurons")):
        for layer, k in (structure.get(key) or {}).items():
            i, k = int(layer), int(k)
            if not 0 <= i < len(blocks):
                raise StageError(f"structure names layer {i}, but the model has {len(blocks)} layers")
            current = getattr(blocks[i], size_of)
            if not 1 <= k <= current:
                raise StageError(f"structure asks for {k} {key} in layer {i}, which has {current}")
            if k < current:
                getattr(blocks[i], keep)(torch.arange(k))
    _set_intermediate(model, blocks)


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _removed(before: list[int], after: list[int]) -> dict:
    """Fraction of units removed, per layer and over all layers (rounding can keep more than asked)."""
    return {
        "per_layer": [round(1 - a / b, 6) for b, a in zip(before, after, strict=True)],
        "overall": round(1 - sum(after) / sum(before), 6) if before else 0.0,
    }


@register(PruneStructuredConfig)
class StructuredPrune(Stage):
    config: PruneStructuredConfig

    def memory_parts(self, m: MemoryInputs) -> dict[str, int]:
        # importance scores: one forward and backward pass over a batch of the training data
        return {"model weights and gradients": 2 * FP32 * parameters(m.before),
                "activations": activations(m.before, 32, m.seq, m.task)}

    def validate(self, info: ModelInfo, env: StageEnv) -> ModelInfo:
        try:
            _family(info.model_type)
        except StageError as exc:
            raise StageError(exc.message, field=self.field) from None
        if self.config.neurons == 0 or info.intermediate_size is None:
            return info
        # num_heads stays the config value: pruned head counts live in the candidate's structure.
        kept = kept_count(info.intermediate_size, self.config.neurons)
        return dataclasses.replace(info, intermediate_size=kept)

    def run(self, candidate: Candidate, env: StageEnv, ctx: RunContext) -> Candidate:
        ctx.check_cancel()
        if candidate.quantization is not None:
            raise StageError("prune before quantize: the weights of this candidate are already quantized",
                             field=self.field)
        model = copy.deepcopy(candidate.model)  # never touch the teacher or an earlier candidate
        try:
            blocks = _blocks(model)
        except StageError as exc:
            raise StageError(exc.message, field=self.field) from None
        heads_before = [b.heads for b in blocks]
        neurons_before = [b.neurons for b in blocks]
        params_before = _param_count(model)
        with torch.no_grad():
            for i, block in enumerate(blocks):
                ctx.check_cancel()
                ctx.progress(self.label, "pruning", step=i, total=len(blocks))
                if self.config.heads > 0:
                    k = kept_count(block.heads, self.config.heads)
                    block.keep_heads(block.head_scores().topk(k).indices)
                if self.config.neurons > 0:
                    k = kept_count(block.neurons, self.config.neurons)
                    block.keep_neurons(block.neuron_scores().topk(k).indices)
        ctx.progress(self.label, "pruning", step=len(blocks), total=len(blocks))
        _set_intermediate(model, blocks)
        heads_after, neurons_after = [b.heads for b in blocks], [b.neurons for b in blocks]
        params_after = _param_count(model)
        self.details = {
            "heads_before": heads_before,
            "heads_after": heads_after,
            "heads_removed": _removed(heads_before, heads_after),
            "neurons_before": neurons_before,
            "neurons_after": neurons_after,
            "neurons_removed": _removed(neurons_before, neurons_after),
            "parameters_before": params_before,
            "parameters_after": params_after,
            # of the whole model, embeddings and heads included: what the file and memory actually lose
            "parameter_reduction": round(1 - params_after / params_before, 6),
        }
        structure = {**candidate.structure, **structure_of(model)}
        return dataclasses.replace(candidate, model=model, structure=structure)
