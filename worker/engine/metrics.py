"""Small metric helpers in plain torch (the engine does not depend on scipy or sklearn)."""

from __future__ import annotations

import torch


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean rank), as Spearman's correlation requires."""
    x = x.double()
    order = torch.argsort(x)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(len(x), dtype=torch.float64)
    _, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, inverse, ranks)
    return (sums / counts)[inverse]


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denom = a.norm() * b.norm()
    return float((a @ b) / denom) if denom > 0 else 0.0


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return pearson(_ranks(a), _ranks(b))


def accuracy(pred: torch.Tensor, gold: torch.Tensor) -> float:
    return float((pred == gold).double().mean())


def macro_f1(pred: torch.Tensor, gold: torch.Tensor) -> float:
    classes = torch.unique(torch.cat([pred, gold]))
    scores = []
    for c in classes:
        tp = ((pred == c) & (gold == c)).sum().item()
        fp = ((pred == c) & (gold != c)).sum().item()
        fn = ((pred != c) & (gold == c)).sum().item()
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(sum(scores) / len(scores))


def nearest_neighbour(emb: torch.Tensor) -> torch.Tensor:
    """Index of each row's most similar other row by cosine (self excluded)."""
    unit = torch.nn.functional.normalize(emb.float(), dim=-1)
    sim = unit @ unit.T
    sim.fill_diagonal_(-float("inf"))
    return sim.argmax(dim=-1)
