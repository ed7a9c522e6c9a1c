"""An explicit student (`student: {model: <ref>}`): its own depth and width reach the dry run, so a student
the losses cannot compare with the teacher is refused there, and later stages are checked on its shape."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import yaml

from app.cli import main
from tests import fixtures
from tests.engine.test_cli import assert_manifest_lists_every_file

FAST = {"latency_runs": 2, "warmup_runs": 0, "throughput_batch": 2}


def _narrow_bert(teacher: Path, path: Path, hidden: int = 16, layers: int = 2) -> Path:
    """A BERT with the teacher's tokenizer but another width."""
    from transformers import BertConfig, BertModel

    path.mkdir(parents=True)
    for f in teacher.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            shutil.copy(f, path / f.name)
    torch.manual_seed(3)
    BertModel(BertConfig(vocab_size=len(fixtures.vocabulary()), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)).save_pretrained(path)
    return path


def _compress(tmp_path: Path, teacher: Path, student: Path, data, stages_after=(), task="feature-extraction",
              evals=None, *extra: str, **distill) -> tuple[int, Path]:
    recipe = {
        "teacher": {"source": "local", "path": str(teacher)}, "task": task,
        "data": {"train": str(data["train"]), "eval": evals or {"text": str(data["eval_text"])}},
        "stages": [{"kind": "distill", "student": {"model": {"source": "local", "path": str(student)}},
                    "epochs": 1, "batch_size": 16, **distill}, *stages_after],
        "evaluate": FAST,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    return main(["compress", str(path), "--out", str(out), "--quiet", "--root", "/", *extra]), out


def test_a_narrower_student_is_refused_by_the_dry_run_naming_the_field(tiny_bert, data, tmp_path, capsys):
    narrow = _narrow_bert(tiny_bert, tmp_path / "narrow")
    code, _ = _compress(tmp_path, tiny_bert, narrow, data, (), "feature-extraction", None, "--dry-run")
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "error [invalid_recipe]: stages.0.student.model: the student's hidden size is 16, the teacher's 32" in err


def test_a_narrower_student_needs_equal_widths_only_for_hidden_state_matching(tiny_bert_cls, data, tmp_path,
                                                                             capsys):
    """Classification compares logits, whose width is the number of classes: a narrower student is fine,
    unless hidden states are matched too."""
    narrow = _narrow_bert(tiny_bert_cls, tmp_path / "narrow")
    evals = {"topics": str(data["eval_cls"])}
    code, _ = _compress(tmp_path, tiny_bert_cls, narrow, data, (), "sequence-classification", evals, "--dry-run")
    assert code == 0, capsys.readouterr().err
    plan = json.loads(capsys.readouterr().out)
    assert plan["stages"][0]["layers"] == 2 and plan["stages"][0]["intermediate_size"] == 32
    code, out = _compress(tmp_path, tiny_bert_cls, narrow, data, (), "sequence-classification", evals)
    assert code == 0, capsys.readouterr().err  # and it runs, as the dry run said
    assert json.loads((out / "artifact" / "config.json").read_text())["hidden_size"] == 16
    code, _ = _compress(tmp_path, tiny_bert_cls, narrow, data, (), "sequence-classification", evals, "--dry-run",
                        hidden_states={"weight": 1.0})
    err = capsys.readouterr().err
    assert code == 2 and "stages.0.student.model: the student's hidden size is 16" in err
    assert "hidden-state matching (stages.0.hidden_states)" in err


def test_layer_map_is_checked_against_the_students_real_depth(tiny_bert, data, assets, tmp_path, capsys):
    student = fixtures.make_bert(tmp_path / "student-2", layers=2, seed=7)
    code, _ = _compress(tmp_path, tiny_bert, student, data, (), "feature-extraction", None, "--dry-run",
                        hidden_states={"layer_map": {3: 4}})
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "stages.0.hidden_states.layer_map: layer_map 3->4 is out of range (student 0..2, teacher 0..4)" in err


def test_a_two_layer_student_runs_through_distill_and_prune(tiny_bert, data, tmp_path, capsys):
    student = fixtures.make_bert(tmp_path / "student-2", layers=2, seed=7)
    prune = [{"kind": "prune", "method": "structured", "neurons": 0.5}]
    code, _ = _compress(tmp_path, tiny_bert, student, data, prune, "feature-extraction", None, "--dry-run",
                        hidden_states={"weight": 1.0})
    assert code == 0, capsys.readouterr().err
    plan = json.loads(capsys.readouterr().out)
    assert [s["layers"] for s in plan["stages"]] == [2, 2]  # the student's depth, not the teacher's 4
    assert [s["intermediate_size"] for s in plan["stages"]] == [64, 32]
    code, out = _compress(tmp_path, tiny_bert, student, data, prune, "feature-extraction", None,
                          hidden_states={"weight": 1.0})
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    distill, pruned = (s["details"] for s in report["stages"])
    assert distill["student_depth"] == 2 and distill["layer_map"] == {"1": 2, "2": 4}
    assert pruned["neurons_before"] == [64, 64] and pruned["neurons_after"] == [32, 32]
    saved = json.loads((out / "artifact" / "config.json").read_text())
    assert saved["num_hidden_layers"] == 2 and saved["intermediate_size"] == 32
    # the student is an input like the teacher: the manifest names it and hashes its files
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["inputs"]["students"]["stages.0"]
    assert entry["source"] == "local" and entry["path"] == str(student.resolve())
    assert_manifest_lists_every_file(entry["files"], student)
    assert_manifest_lists_every_file(manifest["artifact"]["files"], out / "artifact")


def test_a_student_without_a_classification_head_gets_a_fresh_one(tiny_bert_cls, data, tmp_path, capsys):
    """A plain encoder checkpoint as the student of a classifier: its head starts untrained, shaped like the
    teacher's (same classes, same names), and distillation trains it."""
    from transformers import AutoModelForSequenceClassification

    student = fixtures.make_bert(tmp_path / "encoder-2", layers=2, seed=7)  # a BertModel: no classifier
    code, out = _compress(tmp_path, tiny_bert_cls, student, data, (), "sequence-classification",
                          {"topics": str(data["eval_cls"])}, epochs=4, lr=2e-3)
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    details = report["stages"][0]["details"]
    assert details["student_depth"] == 2 and details["final_loss"] < details["first_loss"]
    model = AutoModelForSequenceClassification.from_pretrained(out / "artifact")
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert_cls)
    assert model.config.num_hidden_layers == 2 and model.config.id2label == teacher.config.id2label


def test_a_student_head_with_other_classes_is_refused(tiny_bert_cls, data, tmp_path, capsys):
    from transformers import BertConfig, BertForSequenceClassification

    student = tmp_path / "cls-2"
    shutil.copytree(tiny_bert_cls, student)
    cfg = BertConfig.from_pretrained(tiny_bert_cls, num_hidden_layers=2, id2label={0: "a", 1: "b"},
                                     label2id={"a": 0, "b": 1})
    BertForSequenceClassification(cfg).save_pretrained(student)
    code, _ = _compress(tmp_path, tiny_bert_cls, student, data, (), "sequence-classification",
                        {"topics": str(data["eval_cls"])}, "--dry-run")
    err = capsys.readouterr().err
    assert code == 2
    assert "stages.0.student.model: the student's sequence-classification head has 2 classes, the teacher's 3" in err


def test_a_feature_extraction_student_missing_body_weights_is_refused(tiny_bert, data, tmp_path, capsys):
    """A feature-extraction student is a bare base model (BertModel: keys without a "bert." prefix): all of it
    is body, so a checkpoint lacking some of its weights is refused instead of loading partly random."""
    from safetensors.torch import load_file, save_file

    student = fixtures.make_bert(tmp_path / "student-2", layers=2, seed=7)
    weights = load_file(student / "model.safetensors")
    kept = {k: v for k, v in weights.items() if not k.startswith("encoder.layer.1.")}
    assert len(kept) < len(weights)
    save_file(kept, student / "model.safetensors", metadata={"format": "pt"})
    code, out = _compress(tmp_path, tiny_bert, student, data)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert ("error [invalid_reference]: stages.0.student.model: the checkpoint has no weights for "
            "encoder.layer.1.attention.output.LayerNorm.bias") in err
    assert not (out / "artifact").exists()
