"""One teacher, several tasks: per-task students and a shared one, compared task by task, each its own artifact.

The two tasks (tests/fixtures.make_two_tasks) degrade at different rates under pruning: `fragile` (mixed-topic
sentences near the teacher's decision boundaries) and `robust` (clear sentences with gold labels).
"""

from __future__ import annotations

import json
import random

import pytest
import torch

import distillery
from worker.engine import parse_recipe, run
from worker.engine.errors import EngineError, RecipeError
from worker.engine.multi_plan import TrainGroup
from worker.engine.stages.distill import _epoch
from worker.engine.tasks.base import encode

FAST = {"latency_runs": 2, "warmup_runs": 0, "throughput_batch": 2}
DISTILL = {"kind": "distill", "student": {"num_layers": 2}, "epochs": 4, "batch_size": 16, "lr": 2e-3}
PRUNE = {"kind": "prune", "method": "structured", "neurons": 0.75}


def recipe(teacher, two_tasks, *, gates=(0.7, 0.95), stages=(DISTILL, PRUNE), **extra):
    return {
        "teacher": {"source": "local", "path": str(teacher)}, "task": "sequence-classification",
        "tasks": {"fragile": {"train": str(two_tasks["fragile_train"]), "eval": str(two_tasks["fragile_eval"]),
                              "gate": gates[0]},
                  "robust": {"train": str(two_tasks["robust_train"]), "eval": str(two_tasks["robust_eval"]),
                             "gate": gates[1]}},
        "stages": list(stages), "evaluate": FAST, "max_length": 32, **extra,
    }


def retention(stage_row: dict, task: str) -> float:
    return stage_row["evaluation"]["tasks"][task]["retention"]


def test_per_task_and_shared_students_are_compared_task_by_task(tiny_bert_cls, two_tasks, tmp_path):
    result = run(parse_recipe(recipe(tiny_bert_cls, two_tasks, strategy="both")), tmp_path / "out", roots=["/"])
    report = result.report
    assert result.ok and report["strategy"] == "both" and report["stages"] == []
    students = {s["name"]: s for s in report["students"]}
    assert [(s["name"], s["kind"]) for s in report["students"]] == [
        ("fragile", "per-task"), ("robust", "per-task"), ("shared", "shared")]
    assert students["shared"]["tasks"] == ["fragile", "robust"] and students["fragile"]["tasks"] == ["fragile"]
    # default loss weights: proportional to each task's training examples (96 each)
    assert students["shared"]["task_weights"] == {"fragile": 0.5, "robust": 0.5}
    assert students["shared"]["stages"][0]["details"]["task_weights"] == {"fragile": 0.5, "robust": 0.5}

    # pruning costs the fragile task far more than the robust one, for every student
    for s in students.values():
        distilled, pruned = s["stages"]
        lost_fragile = retention(distilled, "fragile") - retention(pruned, "fragile")
        lost_robust = retention(distilled, "robust") - retention(pruned, "robust")
        assert lost_fragile > lost_robust + 0.03, (s["name"], lost_fragile, lost_robust)
        assert retention(pruned, "robust") >= 0.95

    # the comparison: teacher value and every student on every task; gated only where trained
    cmp = report["comparison"]
    assert set(cmp) == {"fragile", "robust"}
    assert cmp["fragile"]["metric"] == "agreement" and cmp["robust"]["metric"] == "accuracy"
    assert cmp["robust"]["teacher"] == report["teacher"]["tasks"]["robust"]["value"]
    assert set(cmp["fragile"]["students"]) == {"fragile", "robust", "shared"}
    assert cmp["fragile"]["students"]["robust"]["gated"] is False
    assert cmp["fragile"]["students"]["robust"]["passed"] is None
    assert cmp["fragile"]["students"]["fragile"]["passed"] is True
    assert cmp["fragile"]["students"]["shared"]["retention"] == retention(students["shared"]["stages"][1], "fragile")

    # the cost of each choice: two models against one
    choices = report["choices"]
    assert choices["per-task"]["models"] == 2 and choices["shared"]["models"] == 1
    sizes = {n: s["evaluation"]["size_bytes"] for n, s in students.items()}
    assert choices["per-task"]["size_bytes"] == sizes["fragile"] + sizes["robust"]
    assert choices["shared"]["size_bytes"] == sizes["shared"]

    # each student is its own artifact, loadable, and listed in the manifest with its files' hashes
    assert result.artifact is None and set(result.artifacts) == {"fragile", "robust", "shared"}
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    assert set(manifest["students"]) == {"fragile", "robust", "shared"}
    assert set(manifest["inputs"]["data"]) == {"tasks.fragile.train", "tasks.robust.train", "tasks.fragile.eval",
                                               "tasks.robust.eval"}
    outputs = []
    for name in ("fragile", "shared"):
        assert report["final"]["students"][name] == f"students/{name}/artifact"
        model, tok = distillery.load_artifact(result.out_dir / "students" / name / "artifact")
        batch = encode(tok, ["the quick team wins the match"], 32).batch([0])
        outputs.append(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits)
    assert not torch.allclose(*outputs)  # trained on different data: different models
    assert json.loads((result.out_dir / "report.json").read_text())["students"][0]["name"] == "fragile"


def test_the_gate_fails_students_that_break_the_fragile_task(tiny_bert_cls, two_tasks, tmp_path):
    # fragile must keep 0.88: the shared student does once distilled (0.9) and not once pruned; the fragile
    # student, trained on its own small set, falls short already; the robust student is not gated on it
    result = run(parse_recipe(recipe(tiny_bert_cls, two_tasks, gates=(0.88, 0.95), strategy="both")),
                 tmp_path / "out", roots=["/"])
    students = {s["name"]: s for s in result.report["students"]}
    assert result.status == "failed-gate"
    assert students["robust"]["status"] == "succeeded" and students["robust"]["final_stage_index"] == 1
    shared, fragile = students["shared"], students["fragile"]
    assert [x["status"] for x in shared["stages"]] == ["passed", "failed-gate"]
    assert shared["final_stage_index"] == 0 and shared["artifact"] == "students/shared/artifact"
    assert [x["status"] for x in fragile["stages"]] == ["failed-gate"]
    assert fragile["final_stage_index"] is None and fragile["artifact"] is None
    for s in (shared, fragile):
        assert [f["task"] for f in s["shortfalls"]] == ["fragile"] and s["status"] == "failed-gate"
    assert {(f["student"], f["task"]) for f in result.report["shortfalls"]} == {("fragile", "fragile"),
                                                                               ("shared", "fragile")}
    assert set(result.artifacts) == {"robust", "shared"}  # the last passing candidate of each
    assert result.report["choices"]["per-task"]["passed"] is False


def test_shared_student_loss_weights_are_configurable(tiny_bert_cls, two_tasks, tmp_path):
    raw = recipe(tiny_bert_cls, two_tasks, stages=[{**DISTILL, "epochs": 1}], strategy="shared")
    raw["tasks"]["fragile"]["weight"] = 3.0
    raw["tasks"]["robust"]["weight"] = 1.0
    result = run(parse_recipe(raw), tmp_path / "out", roots=["/"])
    [shared] = result.report["students"]
    assert shared["name"] == "shared" and shared["task_weights"] == {"fragile": 0.75, "robust": 0.25}
    assert shared["stages"][0]["details"]["steps"] == 12  # 6 batches of 16 per task, one epoch


def test_each_task_contributes_its_weight_to_the_expected_loss():
    texts = [f"w{i}" for i in range(40)]
    groups = (TrainGroup("a", 0, 30, 0.2), TrainGroup("b", 30, 40, 0.8))

    class Enc:
        def batch(self, index):
            return index

    batches = list(_epoch(len(texts), 8, groups, random.Random(0), Enc()))
    assert sorted(i for b, _ in batches for i in b) == list(range(40))  # every example once
    assert all(len({i >= 30 for i in b}) == 1 for b, _ in batches)  # a batch holds one task
    share = {"a": 0.0, "b": 0.0}
    for b, scale in batches:
        share["a" if b[0] < 30 else "b"] += scale / len(batches)
    assert share == pytest.approx({"a": 0.2, "b": 0.8})


@pytest.mark.parametrize("change, field", [
    (lambda r: r.update(data={"train": r["tasks"]["robust"]["train"]}), "data"),
    (lambda r: r.update(strategy="shared", tasks={}), "strategy"),
    (lambda r: r["tasks"].update(bad={"train": r["tasks"]["robust"]["train"], "eval": "/nope.jsonl"}),
     "tasks.bad.eval"),
    (lambda r: r["tasks"]["robust"].update(eval=r["tasks"]["robust"]["train"].replace("train", "nothing")),
     "tasks.robust.eval"),
    (lambda r: r.update(gates={"per_task": {"elsewhere": 0.9}}), "recipe"),
    (lambda r: r["tasks"].update({"a b": r["tasks"]["robust"]}), "tasks.a b"),
])
def test_bad_task_configs_are_refused_naming_the_field(tiny_bert_cls, two_tasks, tmp_path, change, field):
    raw = recipe(tiny_bert_cls, two_tasks)
    change(raw)
    with pytest.raises(EngineError) as info:
        run(parse_recipe(raw), tmp_path / "out", roots=["/"])
    assert (info.value.field or "recipe").removesuffix(".[key]") == field
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_task_named_shared_is_refused_when_the_shared_student_is_asked_for(tiny_bert_cls, two_tasks, tmp_path):
    raw = recipe(tiny_bert_cls, two_tasks, strategy="both")
    raw["tasks"]["shared"] = raw["tasks"].pop("robust")
    with pytest.raises(RecipeError) as info:
        run(parse_recipe(raw), tmp_path / "out", roots=["/"])
    assert info.value.field == "tasks.shared"
