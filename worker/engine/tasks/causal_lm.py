"""Causal language modelling (GPT-2 family): token-level distillation, perplexity, next-token agreement;
multiple-choice sets are scored by log-likelihood (multiple_choice.py)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..bootstrap import perplexity_of
from ..data import Dataset
from .base import Batch, Task, TaskScore, encode
from .multiple_choice import loglikelihoods, score_choices


class CausalLM(Task):
    name = "causal-lm"
    train_kinds = frozenset({"text"})
    eval_kinds = frozenset({"text", "multiple-choice"})
    per_token = True
    head_suffixes = ("ForCausalLM", "LMHeadModel")

    def auto_class(self) -> type:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def forward(self, model: nn.Module, batch: Batch, hidden: bool = False):
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=hidden)
        return out.logits, (out.hidden_states if hidden else None)

    def compact_target(self, primary: torch.Tensor, cfg) -> torch.Tensor:
        # A vocabulary of 50k makes full logits ~13 MB per 128-token example; keeping the top-k
        # (values and indices, packed) lets the teacher run once and still fit in memory.
        k = min(cfg.logit_top_k, primary.shape[-1])
        values, indices = primary.float().topk(k, dim=-1)
        return torch.cat([values, indices.float()], dim=-1)

    def distill_loss(self, student, teacher, mask, cfg) -> torch.Tensor:
        k = teacher.shape[-1] // 2
        t_values, t_index = teacher[..., :k].float(), teacher[..., k:].long()
        temp = cfg.temperature
        t_logp = F.log_softmax(t_values / temp, dim=-1)
        s_logp = F.log_softmax(student.float() / temp, dim=-1).gather(-1, t_index)
        per_token = (t_logp.exp() * (t_logp - s_logp)).sum(-1)
        m = mask.to(per_token.dtype)
        return (per_token * m).sum() / m.sum().clamp(min=1) * temp**2

    def hard_loss(self, student, batch: Batch) -> torch.Tensor | None:
        targets = batch.input_ids[:, 1:].masked_fill(batch.attention_mask[:, 1:] == 0, -100)
        return F.cross_entropy(student[:, :-1].reshape(-1, student.shape[-1]).float(), targets.reshape(-1))

    @torch.no_grad()
    def eval_outputs(self, model, tokenizer, dataset: Dataset, batch_size, max_length, device):
        if dataset.kind == "multiple-choice":
            return loglikelihoods(model, tokenizer, dataset, batch_size, max_length, device)
        enc = encode(tokenizer, dataset.texts(), max_length)
        nll, tokens, preds, rows_nll, rows_tokens = 0.0, 0, [], [], []
        for batch in enc.batches(batch_size):
            b = batch.to(device)
            logits = self.forward(model, b)[0].float()
            targets = b.input_ids[:, 1:]
            valid = b.attention_mask[:, 1:].bool()
            losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, reduction="none")
            nll += float(losses[valid].sum())
            tokens += int(valid.sum())
            preds.append(logits[:, :-1].argmax(-1)[valid].cpu())
            rows_nll.append((losses * valid).double().sum(1).cpu())  # per example, for the bootstrap
            rows_tokens.append(valid.sum(1).cpu())
        return {"nll": torch.tensor(nll), "tokens": torch.tensor(tokens), "pred": torch.cat(preds),
                "example_nll": torch.cat(rows_nll), "example_tokens": torch.cat(rows_tokens)}

    def score(self, outputs, reference, dataset: Dataset) -> TaskScore:
        if dataset.kind == "multiple-choice":
            return score_choices(outputs, reference, dataset)
        tokens = max(int(outputs["tokens"]), 1)
        ppl = math.exp(min(float(outputs["nll"]) / tokens, 700.0))
        agreement = float((outputs["pred"] == reference["pred"]).double().mean()) if tokens else 1.0
        samplers = {}
        if "example_nll" in outputs:
            samplers["perplexity"] = perplexity_of(outputs["example_nll"].numpy(), outputs["example_tokens"].numpy())
        return TaskScore({"perplexity": ppl, "token_agreement": agreement}, primary="perplexity",
                         higher_is_better=False, resamplers=samplers)
