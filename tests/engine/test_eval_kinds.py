"""Each evaluation kind's metrics against scikit-learn (or a hand computation) on the same model outputs."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, ndcg_score, v_measure_score
from sklearn.model_selection import train_test_split
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from tests.fixtures import TOPICS, sentence, write_jsonl
from worker.engine.data import load_dataset
from worker.engine.errors import DataError
from worker.engine.tasks import get_task

SEED = 3


def labelled_rows(n: int, seed: int = 0) -> list[dict]:
    rng, topics = random.Random(seed), sorted(TOPICS)
    return [{"text": sentence(rng, topics[i % 3]), "label": topics[i % 3]} for i in range(n)]


def retrieval_rows(n: int, seed: int = 1) -> list[dict]:
    """Queries paired with a sentence of the same topic; the first query has a second positive."""
    rng, topics = random.Random(seed), sorted(TOPICS)
    rows = [{"query": sentence(rng, topics[i % 3]), "positive": sentence(rng, topics[i % 3])} for i in range(n)]
    rows.append({"query": rows[0]["query"], "positive": sentence(rng, topics[0])})
    return rows


def choice_rows() -> list[dict]:
    return [
        {"context": "the quick team", "choices": ["wins", "soup", "kernel data"], "label": 0},
        {"context": "the old chef makes ", "choices": ["bread", "a goal", "code"], "label": 0},
        {"context": "a server", "choices": ["moves the cloud", "salt"], "label": 1},
        {"context": "every coach sees the", "choices": ["ball", "oven", "chip", "league"], "label": 3},
    ]


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval-kinds")
    return {"cls": write_jsonl(root / "cls.jsonl", labelled_rows(60)),
            "ret": write_jsonl(root / "ret.jsonl", retrieval_rows(24)),
            "mc": write_jsonl(root / "mc.jsonl", choice_rows())}


def embed(task, model, tokenizer, ds) -> dict:
    return task.eval_outputs(model, tokenizer, ds, 16, 32, torch.device("cpu"))


@pytest.fixture(scope="module")
def bert_pair(tiny_bert):
    """The tiny teacher and a perturbed copy of it: a candidate whose embeddings differ."""
    teacher = AutoModel.from_pretrained(tiny_bert).eval()
    candidate = AutoModel.from_pretrained(tiny_bert).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in candidate.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return teacher, candidate, AutoTokenizer.from_pretrained(tiny_bert)


def test_labelled_set_probes_and_clustering_equal_sklearn(bert_pair, sets):
    teacher, candidate, tok = bert_pair
    task, ds = get_task("feature-extraction"), load_dataset(sets["cls"])
    ref = task.prepare_reference(embed(task, teacher, tok, ds), ds, SEED)
    out = embed(task, candidate, tok, ds)
    score = task.score(out, ref, ds)

    t, c = ref["embeddings"].double().numpy(), out["embeddings"].double().numpy()
    labels = np.array([r["label"] for r in ds.rows])
    train, test = train_test_split(np.arange(len(labels)), test_size=0.5, random_state=SEED, stratify=labels)
    train, test = np.sort(train), np.sort(test)
    teacher_probe = LogisticRegression(max_iter=1000, random_state=SEED).fit(t[train], labels[train])
    own_probe = LogisticRegression(max_iter=1000, random_state=SEED).fit(c[train], labels[train])
    clusters = KMeans(n_clusters=3, random_state=SEED, n_init=10).fit_predict(c)
    assert score.primary == "probe_accuracy"
    assert score.metrics["probe_accuracy"] == pytest.approx(
        accuracy_score(labels[test], teacher_probe.predict(c[test])), abs=1e-6)
    assert score.metrics["own_probe_accuracy"] == pytest.approx(
        accuracy_score(labels[test], own_probe.predict(c[test])), abs=1e-6)
    assert score.metrics["v_measure"] == pytest.approx(v_measure_score(labels, clusters), abs=1e-6)
    # the teacher scored the same way: its probe on its own embeddings
    mine = task.score(ref, ref, ds)
    assert mine.value == pytest.approx(accuracy_score(labels[test], teacher_probe.predict(t[test])), abs=1e-6)
    assert mine.metrics["own_probe_accuracy"] == mine.value


def test_retrieval_equals_sklearn_ndcg_and_the_standard_definitions(bert_pair, sets):
    _, candidate, tok = bert_pair
    task, ds = get_task("feature-extraction"), load_dataset(sets["ret"])
    out = embed(task, candidate, tok, ds)
    score = task.score(out, task.prepare_reference(out, ds, SEED), ds)

    queries = list(dict.fromkeys(r["query"] for r in ds.rows))
    docs = list(dict.fromkeys(r["positive"] for r in ds.rows))
    relevant = np.zeros((len(queries), len(docs)))
    for r in ds.rows:
        relevant[queries.index(r["query"]), docs.index(r["positive"])] = 1
    assert relevant[0].sum() == 2 and len(queries) == 24 and len(docs) == 25
    unit = F.normalize(out["embeddings"].double(), dim=-1).numpy()
    sim = unit[: len(queries)] @ unit[len(queries):].T
    recall, rr = [], []
    for q in range(len(queries)):
        ranked = np.argsort(-sim[q])
        hits = relevant[q, ranked]
        recall.append(hits[:10].sum() / hits.sum())
        rr.append(1 / (np.flatnonzero(hits)[0] + 1))
    assert score.primary == "ndcg_at_10"
    assert score.metrics["ndcg_at_10"] == pytest.approx(ndcg_score(relevant, sim, k=10), abs=1e-6)
    assert score.metrics["recall_at_10"] == pytest.approx(np.mean(recall), abs=1e-6)
    assert score.metrics["mrr"] == pytest.approx(np.mean(rr), abs=1e-6)


def hand_loglikelihood(model, tok, context: str, choice: str) -> float:
    """One unpadded forward pass over context + " " + choice; the choice's tokens follow the context's."""
    ctx = tok(context.rstrip(), add_special_tokens=False)["input_ids"]
    whole = tok(context.rstrip() + context[len(context.rstrip()):] + " " + choice,
                add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
    return sum(float(logp[p - 1, whole[p]]) for p in range(len(ctx), len(whole)))


def test_multiple_choice_acc_and_acc_norm_from_hand_loglikelihoods(tiny_gpt2, sets):
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval(), AutoTokenizer.from_pretrained(tiny_gpt2)
    task, ds = get_task("causal-lm"), load_dataset(sets["mc"])
    assert ds.kind == "multiple-choice"
    out = task.eval_outputs(model, tok, ds, 3, 64, torch.device("cpu"))  # batches of 3: padding is exercised
    score = task.score(out, out, ds)
    right, right_norm, nll, tokens = [], [], 0.0, 0
    for i, row in enumerate(ds.rows):
        lls = np.array([hand_loglikelihood(model, tok, row["context"], c) for c in row["choices"]])
        np.testing.assert_allclose(out["loglikelihood"][i, : len(lls)].numpy(), lls, atol=1e-4)
        chars = np.array([len(c) for c in row["choices"]], dtype=float)  # lm-eval: the choice's characters
        right.append(np.argmax(lls) == row["label"])
        right_norm.append(np.argmax(lls / chars) == row["label"])
        nll -= lls[row["label"]]
        tokens += int(out["choice_tokens"][i, row["label"]])
    assert score.primary == "acc" and score.higher_is_better
    assert score.metrics["acc"] == np.mean(right) and score.metrics["acc_norm"] == np.mean(right_norm)
    assert score.metrics["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-4)
    assert score.metrics["choice_agreement"] == 1.0


@pytest.mark.parametrize(("line", "message"), [
    ('{"context": "a", "choices": ["x", "y"], "label": 2}', "label must be the index of the right choice (0..1)"),
    ('{"context": "a", "choices": ["x"], "label": 0}', "choices must be a list of at least two"),
    ('{"context": "a", "choices": "x y", "label": 0}', "choices must be a list of at least two"),
    ('{"query": "a", "positive": ""}', "positive must be a non-empty string"),
])
def test_bad_rows_of_the_new_kinds_name_the_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(DataError, match=re.escape(f"bad.jsonl:1: {message}")):
        load_dataset(path)


def test_a_label_seen_once_cannot_be_split_and_the_error_names_the_field(tmp_path):
    rows = [*labelled_rows(6), {"text": "the team", "label": "lonely"}]
    ds = load_dataset(write_jsonl(tmp_path / "once.jsonl", rows))
    with pytest.raises(DataError, match="lonely appear once") as info:
        get_task("feature-extraction").check_dataset(ds, "eval", "data.eval.topics")
    assert info.value.field == "data.eval.topics"
