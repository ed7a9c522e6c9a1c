"""Distillation details: seeding, explicit students, hard labels, the teacher cache, time budgets."""

from __future__ import annotations

import pytest
import torch

from tests import fixtures
from worker.engine import parse_recipe, run
from worker.engine.errors import StageError
from worker.engine.stages.distill import default_layer_map

FAST = {"latency_runs": 2, "warmup_runs": 0, "throughput_batch": 2}


def _run(teacher, data, stage, tmp_path, name="out", task="feature-extraction", train="train", evals=None):
    recipe = parse_recipe({
        "teacher": {"source": "local", "path": str(teacher)}, "task": task,
        "data": {"train": str(data[train]), "eval": evals or {"text": str(data["eval_text"])}},
        "stages": [stage], "evaluate": FAST,
    })
    return run(recipe, tmp_path / name, roots=["/"])


def _weights(result) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(result.out_dir / "artifact" / "model.safetensors")


def test_same_seed_same_student_other_seed_other_student(tiny_bert, data, tmp_path):
    stage = {"kind": "distill", "student": {"num_layers": 2}, "epochs": 1, "batch_size": 16}
    a, b = (_run(tiny_bert, data, stage, tmp_path, n) for n in ("a", "b"))
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    recipe = parse_recipe({
        "teacher": {"source": "local", "path": str(tiny_bert)}, "task": "feature-extraction",
        "data": {"train": str(data["train"]), "eval": {"text": str(data["eval_text"])}},
        "stages": [stage], "evaluate": FAST, "seed": 1,
    })
    wc = _weights(run(recipe, tmp_path / "c", roots=["/"]))
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


def test_explicit_student_reference(tiny_bert, data, assets, tmp_path):
    student_dir = fixtures.make_bert(assets / "student-2", layers=2, seed=7)
    stage = {"kind": "distill", "student": {"model": {"source": "local", "path": str(student_dir)}},
             "epochs": 2, "batch_size": 16, "lr": 1e-3}
    result = _run(tiny_bert, data, stage, tmp_path)
    details = result.report["stages"][0]["details"]
    assert result.ok and details["student_layers"] is None and details["student_depth"] == 2
    assert details["final_loss"] < details["first_loss"]


def test_explicit_student_with_another_vocabulary_is_refused(tiny_bert, tiny_gpt2, data, tmp_path):
    stage = {"kind": "distill", "student": {"model": {"source": "local", "path": str(tiny_gpt2)}}, "epochs": 1}
    with pytest.raises(Exception, match=r"tokenizer differs|cannot load"):
        _run(tiny_bert, data, stage, tmp_path)


def test_hard_labels_need_labelled_data_and_help_accuracy(tiny_bert_cls, data, tmp_path):
    evals = {"topics": str(data["eval_cls"])}
    stage = {"kind": "distill", "student": {"num_layers": 1}, "epochs": 1, "hard_label_weight": 1.0}
    with pytest.raises(StageError, match=r"labelled data\.train"):
        _run(tiny_bert_cls, data, stage, tmp_path, task="sequence-classification", evals=evals)
    stage = {**stage, "epochs": 8, "lr": 2e-3, "batch_size": 16}
    result = _run(tiny_bert_cls, data, stage, tmp_path, "ok", "sequence-classification", "train_labelled", evals)
    row = result.report["stages"][0]["evaluation"]["tasks"]["topics"]
    assert row["metric"] == "accuracy" and result.report["teacher"]["tasks"]["topics"]["value"] > 0.9
    assert row["value"] > 0.6 and set(row["metrics"]) == {"accuracy", "macro_f1", "agreement"}


def test_teacher_runs_once_and_its_outputs_are_cached(tiny_gpt2, data, tmp_path, monkeypatch):
    from worker.engine.stages import distill_targets

    calls = []
    real = distill_targets.compute_targets

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr("worker.engine.stages.distill.compute_targets", counting)
    stage = {"kind": "distill", "student": {"num_layers": 2}, "epochs": 3, "batch_size": 16, "logit_top_k": 8,
             "hidden_states": {"weight": 0.5}}
    result = _run(tiny_gpt2, data, stage, tmp_path, task="causal-lm", evals={"lm": str(data["eval_text"])})
    details = result.report["stages"][0]["details"]
    assert calls == [1] and details["epochs_run"] == 3
    # top-8 logits (values + indices) and two hidden layers per token, not the whole vocabulary
    assert 0 < details["teacher_cache_bytes"] < 96 * 32 * (16 * 4 + 2 * 32 * 2) * 1.01


def test_time_budget_and_max_steps_stop_training(tiny_bert, data, tmp_path):
    stage = {"kind": "distill", "student": {"num_layers": 2}, "epochs": 1000, "time_budget_s": 1.0}
    details = _run(tiny_bert, data, stage, tmp_path, "t").report["stages"][0]["details"]
    assert details["stopped_by"] == "time_budget" and details["train_s"] < 10
    stage = {"kind": "distill", "student": {"num_layers": 2}, "epochs": 1000, "max_steps": 7}
    details = _run(tiny_bert, data, stage, tmp_path, "m").report["stages"][0]["details"]
    assert details["steps"] == 7 and details["stopped_by"] == "max_steps"


def test_default_layer_map_is_uniform():
    assert default_layer_map(3, 6) == {1: 2, 2: 4, 3: 6}
    assert default_layer_map(2, 4) == {1: 2, 2: 4}
