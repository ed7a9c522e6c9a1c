"""Retrieval on a {"query", "positive"} set: each query ranks the set's positives (the corpus) by cosine.

Rows that share a query give it several relevant documents; a positive named twice is one document.
Per query: nDCG@10 (binary relevance, log2 discount, as sklearn.metrics.ndcg_score and MTEB define it),
recall@10 (the share of its relevant documents in the top 10) and the reciprocal rank of its first relevant
document (MRR, no cut-off). The set's figure is the mean over queries, so each has a per-query resampler.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..bootstrap import Resampler, mean_of
from ..data import Dataset

K = 10


@dataclass(frozen=True)
class Layout:
    queries: list[str]
    docs: list[str]
    relevant: np.ndarray  # (queries, docs) bool

    def texts(self) -> list[str]:
        """What the model embeds: the queries, then the corpus."""
        return self.queries + self.docs


def layout(dataset: Dataset) -> Layout:
    queries: dict[str, int] = {}
    docs: dict[str, int] = {}
    pairs = []
    for row in dataset.rows:
        q = queries.setdefault(row["query"], len(queries))
        d = docs.setdefault(row["positive"], len(docs))
        pairs.append((q, d))
    relevant = np.zeros((len(queries), len(docs)), dtype=bool)
    for q, d in pairs:
        relevant[q, d] = True
    return Layout(list(queries), list(docs), relevant)


def scores(emb: torch.Tensor, n_queries: int) -> np.ndarray:
    """Cosine of each query to each document."""
    unit = F.normalize(emb.float(), dim=-1)
    return (unit[:n_queries] @ unit[n_queries:].T).double().numpy()


def per_query(sim: np.ndarray, relevant: np.ndarray, k: int = K) -> dict[str, np.ndarray]:
    order = np.argsort(-sim, axis=1, kind="stable")
    ranked = np.take_along_axis(relevant, order, axis=1)  # relevance in ranked order
    discount = 1 / np.log2(np.arange(2, relevant.shape[1] + 2))
    top = min(k, relevant.shape[1])
    dcg = (ranked[:, :top] * discount[:top]).sum(axis=1)
    n_rel = relevant.sum(axis=1)
    ideal = np.cumsum(discount[:top])[np.minimum(n_rel, top) - 1]
    first = ranked.argmax(axis=1)  # every query has a relevant document
    return {
        f"ndcg_at_{k}": dcg / ideal,
        f"recall_at_{k}": ranked[:, :top].sum(axis=1) / n_rel,
        "mrr": 1 / (first + 1),
    }


def score_retrieval(emb: torch.Tensor, lay: Layout) -> tuple[dict[str, float], dict[str, Resampler]]:
    values = per_query(scores(emb, len(lay.queries)), lay.relevant)
    return ({name: float(v.mean()) for name, v in values.items()},
            {name: mean_of(v) for name, v in values.items()})
