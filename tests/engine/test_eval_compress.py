"""The evaluation kinds through `distillery compress`: the report's task rows, intervals and gate checks."""

from __future__ import annotations

import json

import pytest

from tests.engine.test_cli import FAST_EVAL, compress
from tests.engine.test_eval_kinds import choice_rows, retrieval_rows
from tests.fixtures import write_jsonl
from worker.engine.report import load_report


def _check_row(row: dict, metric: str, kind: str) -> None:
    assert row["metric"] == metric and row["kind"] == kind
    lo, hi = row["interval"]
    assert lo <= row["value"] <= hi and row["resamples"] == 1000
    assert row["drop_interval"][0] <= row["drop"] <= row["drop_interval"][1]
    assert set(row["intervals"]) <= set(row["metrics"])


def test_embedding_tasks_report_their_own_metrics_and_gates_name_them(tiny_bert, data, tmp_path, write_recipe,
                                                                       capsys):
    retrieval = write_jsonl(tmp_path / "retrieval.jsonl", retrieval_rows(20))
    recipe = {
        "teacher": {"source": "local", "path": str(tiny_bert)}, "task": "feature-extraction",
        "data": {"train": str(data["train"]), "eval": {"topics": str(data["eval_cls"]), "search": str(retrieval),
                                                       "sts": str(data["eval_sts"])}},
        "stages": [{"kind": "quantize", "method": "int8-dynamic"}],
        "gates": {"max_drop": 0.5, "per_task": {"search": {"min_retention": 0.5}}},
        "evaluate": FAST_EVAL, "seed": 4,
    }
    out = tmp_path / "out"
    assert compress(write_recipe(recipe), out) == 0
    printed = capsys.readouterr().out
    assert "topics probe_accuracy=" in printed and "search ndcg_at_10=" in printed

    report = json.loads((out / "report.json").read_text())
    load_report(report)  # the typed model takes every new field
    teacher, stage = report["teacher"]["tasks"], report["stages"][0]
    for rows in (teacher, stage["evaluation"]["tasks"]):
        _check_row(rows["topics"], "probe_accuracy", "classification")
        _check_row(rows["search"], "ndcg_at_10", "retrieval")
        _check_row(rows["sts"], "spearman", "similarity")
        assert {"own_probe_accuracy", "v_measure", "cosine_to_teacher"} <= set(rows["topics"]["metrics"])
        assert {"recall_at_10", "mrr"} <= set(rows["search"]["metrics"])
    # the teacher's probe on the teacher's embeddings: no drop on any resample
    assert teacher["topics"]["drop"] == 0 and teacher["topics"]["drop_interval"] == [0.0, 0.0]
    checks = {(c["task"], c["rule"]): c for c in stage["gate"]["checks"]}
    assert set(checks) == {("topics", "max_drop"), ("search", "max_drop"), ("sts", "max_drop"),
                           ("search", "min_retention")}
    assert checks["topics", "max_drop"]["metric"] == "probe_accuracy"
    assert checks["search", "max_drop"]["observed"] == stage["evaluation"]["tasks"]["search"]["drop"]


def test_multiple_choice_through_compress_fails_a_max_drop_it_cannot_meet(tiny_gpt2, data, tmp_path,
                                                                           write_recipe, capsys):
    mc = write_jsonl(tmp_path / "mc.jsonl", choice_rows() * 5)
    recipe = {
        "teacher": {"source": "local", "path": str(tiny_gpt2)}, "task": "causal-lm",
        "data": {"train": str(data["train"]), "eval": {"choices": str(mc), "lm": str(data["eval_text"])}},
        "stages": [{"kind": "distill", "student": {"num_layers": 1}, "epochs": 1, "batch_size": 16}],
        # perplexity: lower is better, so its drop is the rise; no student of one layer keeps it at +0
        "gates": {"per_task": {"lm": {"max_drop": 0.0}}},
        "evaluate": FAST_EVAL,
    }
    out = tmp_path / "out"
    assert compress(write_recipe(recipe), out) != 0
    report = json.loads((out / "report.json").read_text())
    rows = report["stages"][0]["evaluation"]["tasks"]
    assert rows["choices"]["metric"] == "acc" and rows["choices"]["kind"] == "multiple-choice"
    assert {"acc_norm", "perplexity", "choice_agreement"} <= set(rows["choices"]["metrics"])
    assert rows["lm"]["metric"] == "perplexity" and rows["lm"]["drop"] > 0
    (short,) = report["shortfalls"]
    assert short["rule"] == "max_drop" and short["metric"] == "perplexity" and short["task"] == "lm"
    assert short["short_by"] == pytest.approx(rows["lm"]["drop"], abs=1e-6)
    assert "task lm lost" in capsys.readouterr().out
