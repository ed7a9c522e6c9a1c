"""Bootstrap confidence intervals over a task's examples.

A metric that can be recomputed on a resample of its examples carries a `Resampler`: its per-example columns
and the reduction that turns resampled rows into the figure. Resamples are drawn from the recipe's seed and the
set's size only, so the teacher and every candidate see the same resamples: the drop and the retention are
paired (each resample's candidate figure against the same resample's teacher figure), which is what makes
the interval of a small drop narrow when both models err on the same examples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

RESAMPLES = 1000
LEVEL = 0.95
_CHUNK_CELLS = 4_000_000  # resampled cells per chunk: bounds memory on large sets


@dataclass(frozen=True)
class Resampler:
    """columns: one row per example; reduce: (B, n, c) resampled rows -> (B,) figures."""

    columns: np.ndarray
    reduce: Callable[[np.ndarray], np.ndarray]

    def __len__(self) -> int:
        return len(self.columns)


def _mean(x: np.ndarray) -> np.ndarray:
    return x[..., 0].mean(axis=1)


def mean_of(values) -> Resampler:
    """A figure that is the mean of a per-example value (correctness, a per-query nDCG, a cosine)."""
    return Resampler(np.asarray(values, dtype=np.float64).reshape(-1, 1), _mean)


def _perplexity(x: np.ndarray) -> np.ndarray:
    return np.exp(np.minimum(x[..., 0].sum(axis=1) / np.maximum(x[..., 1].sum(axis=1), 1), 700.0))


def perplexity_of(nll, tokens) -> Resampler:
    """exp(total NLL / total tokens), resampling whole examples (their tokens stay together)."""
    return Resampler(np.stack([np.asarray(nll, np.float64), np.asarray(tokens, np.float64)], axis=1), _perplexity)


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.divide((a * b).sum(axis=1), denom, out=np.zeros(len(a)), where=denom > 0)


def _spearman(x: np.ndarray) -> np.ndarray:
    # average ranks within each resample: resampling with replacement makes ties
    return _rowwise_pearson(rankdata(x[..., 0], axis=1), rankdata(x[..., 1], axis=1))


def spearman_of(predicted, gold) -> Resampler:
    return Resampler(np.stack([np.asarray(predicted, np.float64), np.asarray(gold, np.float64)], axis=1), _spearman)


def _entropy(counts: np.ndarray, total: np.ndarray) -> np.ndarray:
    p = counts / total[:, None]
    return -np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0).sum(axis=1)


def _v_measure(x: np.ndarray) -> np.ndarray:
    """sklearn's v_measure_score (beta 1) of each resample, from its contingency table."""
    labels, clusters = x[..., 0].astype(np.int64), x[..., 1].astype(np.int64)
    n_l, n_k = int(labels.max()) + 1, int(clusters.max()) + 1
    b = len(labels)
    code = (np.arange(b)[:, None] * n_l + labels) * n_k + clusters
    table = np.bincount(code.ravel(), minlength=b * n_l * n_k).reshape(b, n_l, n_k).astype(np.float64)
    total = table.sum(axis=(1, 2))
    h_c, h_k = _entropy(table.sum(axis=2), total), _entropy(table.sum(axis=1), total)
    p = table / total[:, None, None]
    outer = table.sum(axis=2)[:, :, None] * table.sum(axis=1)[:, None, :] / total[:, None, None] ** 2
    mi = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(np.where(p > 0, outer, 1))), 0).sum(axis=(1, 2))
    homogeneity = np.divide(mi, h_c, out=np.ones(b), where=h_c > 0)
    completeness = np.divide(mi, h_k, out=np.ones(b), where=h_k > 0)
    hc = homogeneity + completeness
    return np.divide(2 * homogeneity * completeness, hc, out=np.zeros(b), where=hc > 0)


def v_measure_of(labels, clusters) -> Resampler:
    """labels and clusters as integer codes (0..L-1, 0..K-1)."""
    return Resampler(np.stack([np.asarray(labels, np.float64), np.asarray(clusters, np.float64)], axis=1),
                     _v_measure)


def indices(n: int, seed: int, resamples: int = RESAMPLES) -> np.ndarray:
    """(resamples, n) example indices, drawn with replacement; the same for every model on the same set."""
    return np.random.default_rng([seed, n]).integers(0, n, size=(resamples, n))


def replicates(resampler: Resampler, idx: np.ndarray) -> np.ndarray:
    """The figure on each resample."""
    rows = max(1, _CHUNK_CELLS // max(1, idx.shape[1] * resampler.columns.shape[1]))
    return np.concatenate([resampler.reduce(resampler.columns[idx[i:i + rows]])
                           for i in range(0, len(idx), rows)])


def interval(reps: np.ndarray, estimate: float | None = None, level: float = LEVEL) -> list[float] | None:
    """The percentile interval of the resamples; given the estimate, shifted by the resamples' median bias
    (median - estimate) so that it is centred where the figure is. For a mean the shift is next to nothing;
    for a plug-in figure such as V-measure it is not: duplicated examples add mutual information, and every
    resample can sit above the estimate. None when a resample gave no figure."""
    reps = np.asarray(reps, dtype=np.float64)
    if not len(reps) or not np.all(np.isfinite(reps)):
        return None
    tail = (1 - level) / 2
    lo, mid, hi = np.quantile(reps, [tail, 0.5, 1 - tail])
    shift = mid - estimate if estimate is not None and np.isfinite(estimate) else 0.0
    return [float(lo - shift), float(hi - shift)]


def straddles(bounds: list[float] | None, threshold: float) -> bool | None:
    """Does the threshold lie inside the interval (a decision the examples cannot settle)?"""
    if bounds is None:
        return None
    return bounds[0] <= threshold <= bounds[1]
