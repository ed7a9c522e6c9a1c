"""The teacher's outputs on the transfer set, computed once and reused by every epoch.

Per example, so batches can be reshuffled each epoch and padded only to their own length:
sequence-level outputs (pooled embeddings, class logits) are kept whole; token-level ones (LM
logits, compacted to top-k; hidden states, in fp16) keep only the example's real tokens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..context import RunContext
from ..tasks.base import Batch, Encoded, Task


@dataclass
class TeacherTargets:
    primary: list[torch.Tensor]
    hidden: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # teacher layer -> per example
    seconds: float = 0.0

    def nbytes(self) -> int:
        tensors = self.primary + [t for per in self.hidden.values() for t in per]
        return sum(t.numel() * t.element_size() for t in tensors)

    def primary_batch(self, batch: Batch, per_token: bool) -> torch.Tensor:
        rows = [self.primary[i] for i in batch.index]
        return _pad(rows, batch.input_ids.shape[1]) if per_token else torch.stack(rows)

    def hidden_batch(self, layer: int, batch: Batch) -> torch.Tensor:
        return _pad([self.hidden[layer][i] for i in batch.index], batch.input_ids.shape[1])


def _pad(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    out = rows[0].new_zeros((len(rows), width, *rows[0].shape[1:]))
    for i, row in enumerate(rows):
        out[i, : row.shape[0]] = row
    return out


@torch.no_grad()
def compute_targets(
    task: Task,
    teacher: torch.nn.Module,
    enc: Encoded,
    cfg,
    hidden_layers: list[int],
    device: torch.device,
    batch_size: int,
    ctx: RunContext,
    label: str,
) -> TeacherTargets:
    start = time.perf_counter()
    teacher.eval()
    primary: list[torch.Tensor] = [torch.empty(0)] * len(enc)
    hidden: dict[int, list[torch.Tensor]] = {layer: [torch.empty(0)] * len(enc) for layer in hidden_layers}
    total = (len(enc) + batch_size - 1) // batch_size
    for step, batch in enumerate(enc.batches(batch_size), 1):
        ctx.check_cancel()
        b = batch.to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out, states = task.forward(teacher, b, hidden=bool(hidden_layers))
        out = task.compact_target(out, cfg).float().cpu()
        lengths = b.attention_mask.sum(1).tolist()
        for row, (i, n) in enumerate(zip(b.index, lengths, strict=True)):
            # fp32: the causal LM packs token indices with the logits, and fp16 cannot hold ids past 2048
            primary[i] = out[row, :n].clone() if task.per_token else out[row].clone()
            for layer in hidden_layers:
                hidden[layer][i] = states[layer][row, :n].float().cpu().half()
        if step % 10 == 0 or step == total:
            ctx.progress(label, "teacher outputs", step=step, total=total)
    return TeacherTargets(primary, hidden, time.perf_counter() - start)
