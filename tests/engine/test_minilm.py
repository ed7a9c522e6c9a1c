"""The real all-MiniLM-L6-v2, offline: distil to 3 layers, prune, int8, evaluate; the artifact reloads."""

from __future__ import annotations

import json

import pytest
import torch

import distillery
from bench.corpus import split, stdlib_sentences, write_jsonl
from worker.engine import parse_recipe, run
from worker.engine.references import bundled_model_dir
from worker.engine.tasks import get_task
from worker.engine.tasks.base import encode


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("minilm")
    train, held = split(stdlib_sentences(), 64, seed=0)
    recipe = parse_recipe({
        "teacher": {"source": "bundled"},
        "task": "feature-extraction",
        "data": {"train": str(write_jsonl(root / "train.jsonl", train[:256])),
                 "eval": {"held_out": str(write_jsonl(root / "held.jsonl", held))}},
        "stages": [
            {"kind": "distill", "student": {"num_layers": 3}, "epochs": 1, "lr": 5e-4,
             "hidden_states": {"weight": 1.0}},
            {"kind": "prune", "method": "structured", "neurons": 0.25},
            {"kind": "quantize", "method": "int8-dynamic", "embeddings": "int8"},
        ],
        "evaluate": {"latency_runs": 10, "throughput_batch": 8, "batch_sizes": [1], "windows": 2},  # CI time
        "max_length": 48,
        "gates": {"min_retention": 0.5},
    })
    return run(recipe, root / "out", roots=[root]), held


def test_minilm_compresses_and_reports(minilm_run):
    result, _ = minilm_run
    report = result.report
    assert result.status == "succeeded", report.get("shortfalls")
    teacher = report["teacher"]
    distilled, pruned, quantized = (s["evaluation"] for s in report["stages"])
    assert report["stages"][0]["details"]["student_layers"] == [0, 2, 5]
    assert teacher["parameters"] == pytest.approx(22.7e6, rel=0.01)
    assert teacher["size_bytes"] > 88e6
    assert pruned["parameters"] < distilled["parameters"] < teacher["parameters"]
    # the whole int8 artifact (weights, tokenizer, config) of the 3-layer student
    assert quantized["size_bytes"] < 20e6
    for ev in (distilled, pruned, quantized):
        assert ev["tasks"]["held_out"]["retention"] > 0.5
    # int8 costs little on top of the pruned model
    assert quantized["tasks"]["held_out"]["retention"] > pruned["tasks"]["held_out"]["retention"] - 0.05


def test_minilm_artifact_reloads_with_the_same_outputs(minilm_run):
    result, held = minilm_run
    model, tokenizer = distillery.load_artifact(result.artifact)
    task = get_task("feature-extraction")
    batch = encode(tokenizer, held[:8], 48).batch(list(range(8)))
    with torch.no_grad():
        student = task.forward(model, batch)[0]
    teacher, teacher_tok = task.load(type("R", (), {"name_or_path": str(bundled_model_dir()), "revision": None,
                                                    "local_dir": bundled_model_dir()})())
    with torch.no_grad():
        reference = task.forward(teacher, encode(teacher_tok, held[:8], 48).batch(list(range(8))))[0]
    cosine = torch.nn.functional.cosine_similarity(student, reference).mean()
    reported = result.report["stages"][-1]["evaluation"]["tasks"]["held_out"]["value"]
    assert float(cosine) == pytest.approx(reported, abs=0.08)  # 8 of the 64 held-out sentences
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    assert manifest["inputs"]["teacher"]["source"] == "bundled" and manifest["status"] == "succeeded"
