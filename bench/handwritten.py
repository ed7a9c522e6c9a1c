"""The plain torch/transformers baselines bench/engine.py measures the engine's stages against.

Each one is what a practitioner would write by hand for the same operation, with no engine code,
so that a ratio engine/hand shows the engine's own overhead.
"""

from __future__ import annotations

import copy
import math
import random
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import default_dynamic_qconfig, float_qparams_weight_only_qconfig, quantize_dynamic
from torch.nn.utils import prune


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def pad_batch(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch of token-id lists to its own longest row."""
    width = max(len(r) for r in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, r in enumerate(ids):
        input_ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return input_ids, mask


def pooled(model: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return mean_pool(model(input_ids=input_ids, attention_mask=mask).last_hidden_state.float(), mask)


def keep_layers(teacher: nn.Module, layers: list[int]) -> nn.Module:
    """A student made of a copy of the teacher's listed encoder layers."""
    student = copy.deepcopy(teacher)
    student.encoder.layer = nn.ModuleList([student.encoder.layer[i] for i in layers])
    student.config.num_hidden_layers = len(layers)
    return student


def distill(teacher: nn.Module, tok, texts: list[str], *, layers: list[int], max_length: int, batch_size: int,
            lr: float, loss: str, steps: int | None = None, budget_s: float | None = None,
            engine_like: bool = True, seed: int = 0) -> tuple[nn.Module, dict]:
    """Match the student's mean-pooled embedding to the teacher's, which is computed once up front.

    engine_like: the engine's optimiser settings (no decay on biases/norms, warm-up + cosine decay,
    gradient clipping, dropout off), for a like-for-like time and quality comparison. Otherwise the
    plain loop: AdamW at a constant lr on all parameters, dropout on (train mode).
    budget_s bounds the whole call (teacher pass + training) in wall-clock seconds.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    student = keep_layers(teacher, layers)
    ids = tok(texts, truncation=True, max_length=max_length, padding=False)["input_ids"]
    with torch.no_grad():  # teacher outputs, once, in batches of the training size
        teacher.eval()
        targets = torch.cat([pooled(teacher, *pad_batch(ids[i : i + batch_size], tok.pad_token_id))
                             for i in range(0, len(ids), batch_size)])
    teacher_pass_s = time.perf_counter() - start

    if engine_like:
        decay = [p for n, p in student.named_parameters() if p.ndim >= 2 and "norm" not in n.lower()]
        rest = [p for n, p in student.named_parameters() if not (p.ndim >= 2 and "norm" not in n.lower())]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                                lr=lr)
        horizon = steps or 10**9
        warm = max(1, int(0.1 * horizon))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (
            1 + math.cos(math.pi * min((s - warm) / max(1, horizon - warm), 1.0))))
        student.eval()
    else:
        opt = torch.optim.AdamW(student.parameters(), lr=lr)
        sched = None
        student.train()

    step, train_start, done = 0, time.perf_counter(), False
    while not done:
        order = list(range(len(ids)))
        rng.shuffle(order)
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            input_ids, mask = pad_batch([ids[i] for i in idx], tok.pad_token_id)
            s, t = pooled(student, input_ids, mask), targets[idx]
            value = (1 - F.cosine_similarity(s, t, dim=-1)).mean() if loss == "cosine" else F.mse_loss(s, t)
            value.backward()
            if engine_like:
                torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            if sched is not None:
                sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            out_of_time = budget_s is not None and time.perf_counter() - start > budget_s
            if (steps is not None and step >= steps) or out_of_time:
                done = True
                break
    student.eval()
    return student, {"steps": step, "teacher_pass_s": teacher_pass_s, "train_s": time.perf_counter() - train_start,
                     "total_s": time.perf_counter() - start, "final_loss": value.item()}


def encoder_linears(model: nn.Module) -> list[nn.Linear]:
    return [m for layer in model.encoder.layer for m in layer.modules() if isinstance(m, nn.Linear)]


def prune_magnitude(teacher: nn.Module, sparsity: float) -> tuple[nn.Module, float]:
    """Global L1 pruning of the encoder layers' Linear weights, masks made permanent."""
    model = copy.deepcopy(teacher)
    params = [(m, "weight") for m in encoder_linears(model)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    for m, name in params:
        prune.remove(m, name)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in params)
    return model, zeros / sum(m.weight.numel() for m, _ in params)


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0])
    lin.weight, lin.bias = nn.Parameter(weight.clone()), nn.Parameter(bias.clone())
    return lin


@torch.no_grad()
def prune_neurons(teacher: nn.Module, fraction: float) -> nn.Module:
    """Remove the feed-forward neurons with the smallest L2 norm of input row + output column."""
    model = copy.deepcopy(teacher)
    for layer in model.encoder.layer:
        fc_in, fc_out = layer.intermediate.dense, layer.output.dense
        score = (fc_in.weight.pow(2).sum(1) + fc_out.weight.pow(2).sum(0)).sqrt()
        keep = score.topk(max(1, len(score) - int(len(score) * fraction + 0.5))).indices.sort().values
        layer.intermediate.dense = _linear(fc_in.weight[keep], fc_in.bias[keep])
        layer.output.dense = _linear(fc_out.weight[:, keep], fc_out.bias)
    model.config.intermediate_size = len(keep)
    return model


def quantize_int8(teacher: nn.Module) -> nn.Module:
    """torch.ao dynamic int8 Linear + int8 weight-only Embedding. BERT's embeddings expand a stored
    token-type buffer over the batch (stride 0) when no token_type_ids are given, which the int8
    embedding kernel refuses at batch > 1: callers pass the tokenizer's (contiguous) token_type_ids."""
    qconfig = {nn.Linear: default_dynamic_qconfig, nn.Embedding: float_qparams_weight_only_qconfig}
    return quantize_dynamic(copy.deepcopy(teacher), qconfig)
