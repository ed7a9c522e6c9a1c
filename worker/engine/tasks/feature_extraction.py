"""Sentence embeddings with mean pooling, as sentence-transformers models compute them.

Scored by the eval set's kind, MTEB style: labelled text by probes and clustering (probes.py), query/positive
pairs by retrieval (retrieval.py), sentence pairs by Spearman, plain text by cosine to the teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..bootstrap import mean_of, spearman_of
from ..data import Dataset
from ..metrics import nearest_neighbour, spearman
from .base import Batch, Task, TaskScore, encode, masked_mean, run_batches
from .probes import as_numpy, check_split, fit_probe, score_labelled, split
from .retrieval import K, layout, score_retrieval


class FeatureExtraction(Task):
    name = "feature-extraction"
    train_kinds = frozenset({"text", "classification", "similarity", "retrieval"})
    eval_kinds = frozenset({"text", "similarity", "classification", "retrieval"})

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

    def check_dataset(self, dataset: Dataset, role: str, field: str) -> None:
        super().check_dataset(dataset, role, field)
        if role == "eval" and dataset.kind == "classification":
            check_split(dataset, field)  # at the dry run, not after the teacher has embedded everything

    def eval_outputs(self, model, tokenizer, dataset: Dataset, batch_size, max_length, device):
        # similarity pairs come out as a0, b0, a1, b1, ...; a retrieval set as its queries, then its corpus
        texts = layout(dataset).texts() if dataset.kind == "retrieval" else dataset.texts()
        enc = encode(tokenizer, texts, max_length)
        emb = torch.cat([p.float().cpu() for _, p in run_batches(self, model, enc, batch_size, device)])
        return {"embeddings": emb}

    def prepare_reference(self, reference: dict, dataset: Dataset, seed: int) -> dict:
        out = {**reference, "seed": seed}
        if dataset.kind == "classification":
            sp = split(dataset, seed)
            out["split"] = sp
            out["probe"] = fit_probe(as_numpy(reference["embeddings"])[sp.train], sp.labels[sp.train], seed)
        elif dataset.kind == "retrieval":
            out["layout"] = layout(dataset)
        return out

    def score(self, outputs, reference, dataset: Dataset) -> TaskScore:
        emb, ref = outputs["embeddings"], reference["embeddings"]
        cosines = F.cosine_similarity(emb, ref, dim=-1) if emb.shape == ref.shape else None
        metrics: dict[str, float] = {}
        samplers = {}
        if cosines is not None:
            metrics["cosine_to_teacher"] = float(cosines.mean())
            samplers["cosine_to_teacher"] = mean_of(cosines.double().numpy())
        if dataset.kind == "classification":
            if "probe" not in reference:  # a reference not prepared (scored by hand): prepare it here
                reference = self.prepare_reference(reference, dataset, reference.get("seed", 0))
            same = emb is ref or torch.equal(emb, ref)
            got, more, primary = score_labelled(as_numpy(emb), as_numpy(ref), reference["probe"],
                                                reference["split"], reference["seed"], same)
            return TaskScore({**got, **metrics}, primary=primary, resamplers={**more, **samplers})
        if dataset.kind == "retrieval":
            lay = reference.get("layout") or layout(dataset)
            got, more = score_retrieval(emb, lay)
            return TaskScore({**got, **metrics}, primary=f"ndcg_at_{K}", resamplers={**more, **samplers})
        metrics["top1_agreement"] = (float((nearest_neighbour(emb) == nearest_neighbour(ref)).double().mean())
                                     if len(emb) > 2 else 1.0)
        if dataset.kind == "similarity":
            a, b = emb[0::2], emb[1::2]
            gold = torch.tensor([r["score"] for r in dataset.rows])
            predicted = F.cosine_similarity(a, b, dim=-1)
            metrics["spearman"] = spearman(predicted, gold)
            samplers["spearman"] = spearman_of(predicted.double().numpy(), gold.double().numpy())
            return TaskScore(metrics, primary="spearman", resamplers=samplers)
        return TaskScore(metrics, primary="cosine_to_teacher", resamplers=samplers)
