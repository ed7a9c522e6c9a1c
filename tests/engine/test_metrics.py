"""The evaluation metrics against values worked out by hand, and similarity (Spearman) end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.engine.test_cli import compress, recipe_for
from worker.engine.data import Dataset, load_dataset
from worker.engine.evaluate import retention
from worker.engine.metrics import accuracy, macro_f1, nearest_neighbour, pearson, spearman
from worker.engine.tasks import get_task


def test_accuracy_and_macro_f1():
    pred, gold = torch.tensor([0, 1, 2, 1]), torch.tensor([0, 1, 1, 1])
    assert accuracy(pred, gold) == 0.75
    # class 0: tp 1 -> F1 1; class 1: tp 2, fn 1 -> 4/5; class 2: predicted once, never right -> 0
    assert macro_f1(pred, gold) == pytest.approx((1 + 0.8 + 0) / 3)
    assert macro_f1(gold, gold) == 1.0


def test_spearman_uses_average_ranks_for_ties():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    b = torch.tensor([5.0, 6.0, 7.0, 8.0, 7.0])  # ranks 1, 2, 3.5, 5, 3.5
    # deviations from the mean rank 3: a -2 -1 0 1 2, b -2 -1 .5 2 .5: 8 / sqrt(10 * 9.5)
    assert spearman(a, b) == pytest.approx(8 / math.sqrt(95))
    # monotonic but not linear: Spearman 1 (and -1 reversed) where Pearson is below 1
    x, y = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 10.0, 100.0, 1000.0])
    assert spearman(x, y) == pytest.approx(1.0) and spearman(x, -y) == pytest.approx(-1.0)
    assert pearson(x, y) < 0.9
    assert spearman(x, torch.ones(4)) == 0.0  # no variation: no correlation, not NaN


def test_nearest_neighbour_excludes_the_row_itself():
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    assert nearest_neighbour(emb).tolist() == [1, 0, 3, 2]


def _dataset(kind: str, rows: list[dict]) -> Dataset:
    return Dataset(path=Path("hand.jsonl"), kind=kind, rows=rows, sha256="")


def test_cosine_fidelity_and_top1_agreement():
    emb = torch.tensor([[1.0, 0, 0], [1, 0.1, 0], [0, 1, 0], [0, 1, 0.1]])  # neighbours 1, 0, 3, 2
    ref = torch.tensor([[1.0, 0, 0.1], [0, 0, 1], [0, 1, 0], [0, 1, 0.2]])  # neighbours 1, 3, 3, 2
    rows = [{"text": str(i)} for i in range(4)]
    score = get_task("feature-extraction").score({"embeddings": emb}, {"embeddings": ref}, _dataset("text", rows))
    cosines = [1 / math.sqrt(1.01), 0.0, 1.0, 1.02 / math.sqrt(1.01 * 1.04)]
    assert score.primary == "cosine_to_teacher" and score.higher_is_better
    assert score.metrics["cosine_to_teacher"] == pytest.approx(sum(cosines) / 4, abs=1e-6)
    assert score.metrics["top1_agreement"] == 0.75  # row 1's neighbour differs


def test_spearman_of_pair_similarities_against_gold_scores():
    # pairs interleaved a0, b0, a1, b1, ...: cosines 1, 0, ~0.707 against gold 0.9, 0.1, 0.5
    emb = torch.tensor([[1.0, 0], [1, 0], [1, 0], [0, 1], [1, 0], [1, 1]])
    rows = [{"text_a": "x", "text_b": "y", "score": s} for s in (0.9, 0.1, 0.5)]
    score = get_task("feature-extraction").score({"embeddings": emb}, {"embeddings": emb},
                                                 _dataset("similarity", rows))
    assert score.primary == "spearman" and score.value == pytest.approx(1.0)
    rows = [{"text_a": "x", "text_b": "y", "score": s} for s in (0.1, 0.9, 0.5)]  # gold order reversed
    assert get_task("feature-extraction").score({"embeddings": emb}, {"embeddings": emb},
                                                _dataset("similarity", rows)).value == pytest.approx(-1.0)


def test_perplexity_and_token_agreement_and_their_retention():
    task = get_task("causal-lm")
    teacher = {"nll": torch.tensor(6 * math.log(3)), "tokens": torch.tensor(6), "pred": torch.tensor([1, 2, 3, 4])}
    student = {"nll": torch.tensor(6 * math.log(4)), "tokens": torch.tensor(6), "pred": torch.tensor([1, 2, 0, 4])}
    ds = _dataset("text", [{"text": "t"}])
    t, s = task.score(teacher, teacher, ds), task.score(student, teacher, ds)
    assert t.primary == "perplexity" and not t.higher_is_better
    assert t.value == pytest.approx(3.0) and s.value == pytest.approx(4.0)
    assert s.metrics["token_agreement"] == 0.75 and t.metrics["token_agreement"] == 1.0
    assert retention(s, t) == pytest.approx(0.75)  # lower is better: teacher / student


def test_a_model_that_predicts_uniformly_has_the_vocabulary_size_as_perplexity(tiny_gpt2, data):
    from transformers import AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()  # every logit 0: each of V tokens has probability 1/V
    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    task = get_task("causal-lm")
    ds = load_dataset(data["eval_text"])
    out = task.eval_outputs(model, tok, ds, 8, 32, torch.device("cpu"))
    assert task.score(out, out, ds).value == pytest.approx(model.config.vocab_size, rel=1e-4)
    assert int(out["tokens"]) == sum(len(tok(t)["input_ids"]) - 1 for t in ds.texts())


def test_similarity_eval_through_the_cli_reports_spearman_and_retention(request, data, write_recipe, tmp_path):
    stages = [{"kind": "distill", "student": {"num_layers": 2}, "epochs": 1, "batch_size": 16}]
    recipe = recipe_for("feature-extraction", request, data, stages)
    # the topic classifier's encoder as the embedding teacher: trained on the topics, its sentence embeddings
    # rank same-topic pairs above the others (the random encoder's Spearman is noise, and can be negative)
    recipe["teacher"]["path"] = str(request.getfixturevalue("tiny_bert_cls"))
    recipe["data"]["eval"] = {"sts": str(data["eval_sts"])}
    out = tmp_path / "out"
    assert compress(write_recipe(recipe), out) == 0
    report = json.loads((out / "report.json").read_text())
    teacher, student = report["teacher"]["tasks"]["sts"], report["stages"][0]["evaluation"]["tasks"]["sts"]
    assert teacher["metric"] == student["metric"] == "spearman"
    assert teacher["examples"] == student["examples"] == 48  # pairs, not sentences
    assert teacher["value"] > 0.5 and teacher["retention"] == pytest.approx(1.0)
    assert student["teacher_value"] == teacher["value"]
    assert student["retention"] == pytest.approx(student["value"] / teacher["value"])
    assert set(student["metrics"]) == {"spearman", "cosine_to_teacher", "top1_agreement"}
    assert -1 <= student["value"] <= 1 and 0 < student["metrics"]["cosine_to_teacher"] <= 1
