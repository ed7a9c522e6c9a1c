"""The typed report: every run mode writes it through ReportBuilder, and what it writes loads back as the
typed model and dumps to the very same JSON (report files of this version keep loading)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from tests.engine.test_cli import compress, recipe_for
from worker.engine.report import ReportBuilder, load_report

FAST = {"latency_runs": 2, "warmup_runs": 0, "throughput_batch": 2}
DISTILL = {"kind": "distill", "student": {"num_layers": 1}, "epochs": 1, "batch_size": 16}


def _tasks(two_tasks) -> dict:
    return {name: {"train": str(two_tasks[f"{name}_train"]), "eval": str(two_tasks[f"{name}_eval"]), "gate": 0.3}
            for name in ("fragile", "robust")}


def _recipes(request, data, two_tasks, tiny_bert_cls) -> dict[str, dict]:
    teacher = {"source": "local", "path": str(tiny_bert_cls)}
    multi = {"teacher": teacher, "task": "sequence-classification", "tasks": _tasks(two_tasks), "evaluate": FAST,
             "max_length": 32}
    return {
        "single": recipe_for("feature-extraction", request, data,
                             [DISTILL, {"kind": "quantize", "method": "int8-dynamic"}, {"kind": "evaluate"}],
                             gates={"min_retention": 0.0001}),
        "failed-gate": recipe_for("feature-extraction", request, data, [DISTILL], gates={"min_retention": 0.9999}),
        "students": {**multi, "strategy": "both", "stages": [DISTILL]},
        "search": {**multi, "stages": [{k: v for k, v in DISTILL.items() if k != "student"}],
                   "search": {"space": {"depth": [1, 2], "sparsity": [0, 0.5],
                                        "quantization": ["none", "int8-dynamic"]}}},
    }


@pytest.mark.parametrize("mode", ["single", "failed-gate", "students", "search"])
def test_every_mode_writes_a_report_that_round_trips(mode, request, data, two_tasks, tiny_bert_cls, write_recipe,
                                                     tmp_path):
    recipe = _recipes(request, data, two_tasks, tiny_bert_cls)[mode]
    out = tmp_path / "out"
    assert compress(write_recipe(recipe), out) in (0, 3)  # 3: a gate failed, which is a report too
    raw = json.loads((out / "report.json").read_text())
    report = load_report(raw)
    assert report.as_json() == raw
    assert report.mode == {"failed-gate": "single"}.get(mode, mode)
    assert report.status == ("failed-gate" if mode == "failed-gate" else report.status)
    assert (report.search is not None) == (mode == "search") and (report.students is not None) == (mode == "students")


def test_the_builder_refuses_a_misspelt_or_mistyped_field():
    builder = ReportBuilder(task="feature-extraction", device="cpu", recipe_sha256="ab", versions={}, mode="single")
    with pytest.raises(ValidationError, match="stratgy"):
        builder.section(stratgy="shared")
    with pytest.raises(ValidationError, match="status"):
        builder.finish("done", {"stage_index": None, "artifact": None})
    assert builder.finish("succeeded", {"stage_index": None, "artifact": None})["status"] == "succeeded"
