"""Embedding quality on a labelled set, the MTEB way, with scikit-learn.

- probe_accuracy: a logistic-regression probe trained on the TEACHER's embeddings of the train split, applied
  to the candidate's embeddings of the test split. That is the drop-in case: a classifier a user trained on the
  teacher keeps working on the compressed model (or does not).
- own_probe_accuracy: the same probe trained on the candidate's own embeddings (what retraining would give).
- v_measure: k-means on the candidate's embeddings of the whole set, k = the number of labels, seeded.

The split is stratified and drawn from the recipe's seed, so the teacher and every candidate use the same one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, v_measure_score
from sklearn.model_selection import train_test_split

from ..bootstrap import Resampler, mean_of, v_measure_of
from ..data import Dataset
from ..errors import DataError

TEST_SIZE = 0.5
PROBE_MAX_ITER = 1000


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # row indices
    test: np.ndarray
    labels: np.ndarray  # every row's label, as a string (a set may mix 3 and "3")


def check_split(dataset: Dataset, field: str | None = None) -> None:
    """A stratified half needs two classes and two examples of each."""
    counts = Counter(str(label) for label in dataset.labels())
    if len(counts) < 2:
        raise DataError(f"{dataset.path.name}: a probe needs at least two labels", field=field)
    rare = sorted(label for label, n in counts.items() if n < 2)
    if rare:
        raise DataError(f"{dataset.path.name}: label{'s' if len(rare) > 1 else ''} {', '.join(rare[:5])} "
                        "appear once; a stratified train/test split needs two examples of each", field=field)


def split(dataset: Dataset, seed: int) -> Split:
    check_split(dataset)
    labels = np.array([str(label) for label in dataset.labels()])
    train, test = train_test_split(np.arange(len(labels)), test_size=TEST_SIZE, random_state=seed,
                                   stratify=labels)
    return Split(np.sort(train), np.sort(test), labels)


def fit_probe(embeddings: np.ndarray, labels: np.ndarray, seed: int) -> LogisticRegression:
    return LogisticRegression(max_iter=PROBE_MAX_ITER, random_state=seed).fit(embeddings, labels)


def cluster(embeddings: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    return KMeans(n_clusters=n_clusters, random_state=seed, n_init=10).fit_predict(embeddings)


def as_numpy(emb: torch.Tensor) -> np.ndarray:
    return emb.detach().float().cpu().numpy().astype(np.float64)


def score_labelled(emb: np.ndarray, ref: np.ndarray, probe: LogisticRegression, sp: Split, seed: int,
                   same_model: bool) -> tuple[dict[str, float], dict[str, Resampler], str]:
    """The metrics, their resamplers and the primary metric's name."""
    gold = sp.labels[sp.test]
    metrics: dict[str, float] = {}
    samplers: dict[str, Resampler] = {}
    own = probe if same_model else fit_probe(emb[sp.train], sp.labels[sp.train], seed)
    own_pred = own.predict(emb[sp.test])
    metrics["own_probe_accuracy"] = float(accuracy_score(gold, own_pred))
    samplers["own_probe_accuracy"] = mean_of(own_pred == gold)
    primary = "own_probe_accuracy"  # a student of another width cannot take the teacher's probe
    if emb.shape[1] == ref.shape[1]:
        pred = own_pred if same_model else probe.predict(emb[sp.test])
        metrics["probe_accuracy"] = float(accuracy_score(gold, pred))
        samplers["probe_accuracy"] = mean_of(pred == gold)
        primary = "probe_accuracy"
    classes, codes = np.unique(sp.labels, return_inverse=True)
    clusters = cluster(emb, len(classes), seed)
    metrics["v_measure"] = float(v_measure_score(sp.labels, clusters))
    samplers["v_measure"] = v_measure_of(codes, clusters)
    return metrics, samplers, primary
