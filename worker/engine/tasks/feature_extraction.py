"""Sentence embeddings with mean pooling, as sentence-transformers models compute them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset
from ..metrics import nearest_neighbour, spearman
from .base import Batch, Task, TaskScore, encode, masked_mean, run_batches


class FeatureExtraction(Task):
    name = "feature-extraction"
    train_kinds = frozenset({"text", "classification", "similarity"})
    eval_kinds = frozenset({"text", "similarity"})

    def auto_class(self) -> type:
        from transformers import AutoModel

        return AutoModel

    def forward(self, model: nn.Module, batch: Batch, hidden: bool = False):
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=hidden)
        pooled = masked_mean(out.last_hidden_state.float(), batch.attention_mask)
        return pooled, (out.hidden_states if hidden else None)

    def distill_loss(self, student, teacher, mask, cfg) -> torch.Tensor:
        teacher = teacher.float()
        if cfg.embedding_loss == "cosine":
            return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
        return F.mse_loss(student, teacher)

    def eval_outputs(self, model, tokenizer, dataset: Dataset, batch_size, max_length, device):
        texts = dataset.texts()  # similarity pairs come out as a0, b0, a1, b1, ...
        enc = encode(tokenizer, texts, max_length)
        emb = torch.cat([p.float().cpu() for _, p in run_batches(self, model, enc, batch_size, device)])
        return {"embeddings": emb}

    def score(self, outputs, reference, dataset: Dataset) -> TaskScore:
        emb, ref = outputs["embeddings"], reference["embeddings"]
        metrics = {
            "cosine_to_teacher": float(F.cosine_similarity(emb, ref, dim=-1).mean()),
            "top1_agreement": float((nearest_neighbour(emb) == nearest_neighbour(ref)).double().mean())
            if len(emb) > 2 else 1.0,
        }
        if dataset.kind == "similarity":
            a, b = emb[0::2], emb[1::2]
            gold = torch.tensor([r["score"] for r in dataset.rows])
            metrics["spearman"] = spearman(F.cosine_similarity(a, b, dim=-1), gold)
            return TaskScore(metrics, primary="spearman")
        return TaskScore(metrics, primary="cosine_to_teacher")
