"""Latency through the run modes: `distillery compress` times every candidate against the teacher at the
recipe's batch sizes, times the reloaded artifact again at the end, and the search's latency objective is the
same ratio. Behaviour only: no assertion on how fast anything is."""

from __future__ import annotations

import json

import pytest

from app.cli import main
from app.cli_report import print_search
from app.compress_cmd import latency_cells
from worker.engine import RunContext, parse_recipe, run
from worker.engine.hardware import describe
from worker.engine.layout import PROBE_MARKER, RunLayout
from worker.engine.report import load_report
from worker.engine.search_run import relative_time

EVAL = {"latency_runs": 3, "warmup_runs": 1, "throughput_batch": 4, "batch_sizes": [1, 2], "windows": 2,
        "threads": 1}


def test_compress_times_candidates_against_the_teacher_at_every_batch_size(tiny_bert, data, write_recipe,
                                                                            tmp_path, capsys):
    recipe = {"teacher": {"source": "local", "path": str(tiny_bert)}, "task": "feature-extraction",
              "data": {"train": str(data["train"]), "eval": {"text": str(data["eval_text"])}},
              "stages": [{"kind": "quantize", "method": "int8-dynamic"}], "evaluate": EVAL}
    out = tmp_path / "out"
    assert main(["compress", str(write_recipe(recipe)), "--out", str(out), "--quiet", "--root", "/"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    load_report(report)  # every new field is in the typed report

    teacher, stage, final = report["teacher"]["latency"], report["stages"][0]["evaluation"]["latency"], \
        report["final"]["latency"]
    assert teacher["reference"] is None and teacher.get("speedup") is None  # the teacher alone
    for lat in (teacher, stage, final):
        assert [r["batch"] for r in lat["batches"]] == [1, 2, 4]  # batch 1, batch_sizes, throughput_batch
        assert lat["threads"] == 1 and lat["windows"] == 2
        assert lat["hardware"] == describe(__import__("torch").device("cpu"))
        assert lat["batch1_p50_ms"] == lat["batches"][0]["p50_ms"] and lat["throughput_batch"] == 4
        assert all(r["calls"] == 2 * 3 for r in lat["batches"])  # 2 windows x 3 runs (larger batches: at least 3)
        assert lat["noisy"] == any(r["noisy"] for r in lat["batches"])
    for lat in (stage, final):  # the candidate and the reloaded artifact, each interleaved with the teacher
        assert lat["reference"] == "teacher"
        for r in lat["batches"]:
            assert r["speedup"] > 0 and r["teacher_p50_ms"] > 0
            lo, hi = r["speedup_interval"]
            assert lo <= hi
    # the table: a speed-up column, the artifact's row, and `~` exactly where a figure is noisy
    assert "speed-up" in printed and "\nartifact" in printed
    assert ("~ noisy latency" in printed) == any(x["noisy"] for x in (teacher, stage, final))


def test_a_noisy_figure_is_marked_in_the_table():
    assert latency_cells({"batch1_p50_ms": 6.2, "noisy": True, "speedup": 2.0}) == ("6.20~", "2.00x~")
    assert latency_cells({"batch1_p50_ms": 6.2, "noisy": False, "speedup": None}) == ("6.20", "-")


def test_relative_time_is_the_same_window_ratio():
    lat = {"reference": "teacher", "batches": [{"batch": 1, "speedup": 2.0}, {"batch": 8, "speedup": 4.0}]}
    assert relative_time(lat, 1) == 0.5 and relative_time(lat, 8) == 0.25
    assert relative_time({"reference": None, "batches": [{"batch": 1}]}, 1) == 1.0
    with pytest.raises(ValueError, match=r"search\.objective\.batch"):
        relative_time(lat, 3)


def test_the_searchs_latency_objective_is_the_ratio_to_the_teacher(tiny_bert_cls, two_tasks, tmp_path, capsys):
    recipe = {
        "teacher": {"source": "local", "path": str(tiny_bert_cls)}, "task": "sequence-classification",
        "tasks": {"robust": {"train": str(two_tasks["robust_train"]), "eval": str(two_tasks["robust_eval"]),
                             "gate": 0.5}},
        "stages": [{"kind": "distill", "epochs": 1, "batch_size": 16}],
        "search": {"space": {"depth": [2], "sparsity": [0], "quantization": ["none", "int8-dynamic"]},
                   "objective": {"minimize": "latency"}, "exhaustive": True},
        "evaluate": EVAL, "max_length": 32,
    }
    result = run(parse_recipe(recipe), tmp_path / "out", roots=["/"], ctx=RunContext())
    search = result.report["search"]
    assert search["trials_run"] == 2
    for trial in search["trials"]:
        lat = trial["evaluation"]["latency"]
        assert lat["reference"] == "teacher"
        assert trial["objective"] == pytest.approx(1 / lat["speedup"])
        assert 0 < trial["predicted_objective"] < 20  # the probe's prediction is the same ratio, not ms
    probes = json.loads((RunLayout(tmp_path / "out").search_probe / PROBE_MARKER).read_text())
    assert all(p["latency"]["reference"] == "teacher" for p in probes["probes"].values())
    if result.artifact is not None:
        assert result.report["final"]["latency"]["reference"] == "teacher"
    capsys.readouterr()
    print_search(result.report)  # `distillery jobs show`: noisy trials named on their own line
    noisy = [t["id"] for t in search["trials"] if t["evaluation"]["latency"]["noisy"]]
    printed = capsys.readouterr().out
    assert ("noisy latency" in printed) == bool(noisy) and all(t in printed for t in noisy)
