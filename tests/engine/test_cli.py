"""`distillery compress` end to end on tiny models: every task, reports, artifacts, exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from app.cli import main
from worker.engine.references import sha256_file

FAST_EVAL = {"latency_runs": 3, "warmup_runs": 1, "throughput_batch": 4}
TASKS = {
    "feature-extraction": ("tiny_bert", "train", {"text": "eval_text"}),
    "sequence-classification": ("tiny_bert_cls", "train_labelled", {"topics": "eval_cls"}),
    "causal-lm": ("tiny_gpt2", "train", {"lm": "eval_text"}),
}


def assert_manifest_lists_every_file(files: dict[str, str], folder: Path) -> None:
    """Every file under the folder, and nothing else, with its sha256."""
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert on_disk and set(files) == on_disk
    assert all(sha256_file(folder / f) == h for f, h in files.items())


def recipe_for(task: str, request, data, stages: list[dict], **extra) -> dict:
    model_fixture, train, evals = TASKS[task]
    return {
        "teacher": {"source": "local", "path": str(request.getfixturevalue(model_fixture))},
        "task": task,
        "data": {"train": str(data[train]), "eval": {k: str(data[v]) for k, v in evals.items()}},
        "stages": stages,
        "evaluate": FAST_EVAL,
        **extra,
    }


def compress(recipe_path: Path, out: Path, *extra: str) -> int:
    return main(["compress", str(recipe_path), "--out", str(out), "--quiet", "--root", "/", *extra])


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_distils_through_the_cli(task, request, data, write_recipe, tmp_path, capsys):
    distill = {"kind": "distill", "student": {"num_layers": 2}, "epochs": 2, "batch_size": 16,
               "hidden_states": {"weight": 1.0}}
    if task == "sequence-classification":
        distill["hard_label_weight"] = 0.5
    out = tmp_path / "out"
    assert compress(write_recipe(recipe_for(task, request, data, [distill])), out) == 0
    assert "status: succeeded" in capsys.readouterr().out

    report = json.loads((out / "report.json").read_text())
    teacher, stage = report["teacher"], report["stages"][0]
    assert report["status"] == "succeeded" and stage["status"] == "passed"
    assert stage["details"]["student_layers"] == [0, 3] and stage["details"]["steps"] == 2 * 6
    assert stage["details"]["precision"] == "fp32"  # bf16 autocast is for CUDA only (tests/engine/test_cuda.py)
    assert stage["details"]["final_loss"] < stage["details"]["first_loss"]  # it learned something
    assert stage["evaluation"]["parameters"] < teacher["parameters"]
    assert stage["evaluation"]["size_bytes"] < teacher["size_bytes"]
    for ev in (teacher, stage["evaluation"]):
        lat = ev["latency"]
        assert 0 < lat["batch1_p50_ms"] <= lat["batch1_p95_ms"] and lat["throughput_per_s"] > 0
        assert ev["nonzero_parameters"] <= ev["parameters"]
    (name, row), = stage["evaluation"]["tasks"].items()
    assert row["retention"] is not None and row["retention"] > 0
    assert teacher["tasks"][name]["retention"] == pytest.approx(1.0)
    assert stage["reload_max_abs_diff"] is not None and stage["reload_max_abs_diff"] < 1e-3
    assert stage["device"] == "cpu" == report["device"]

    # The artifact loads with plain transformers and matches the manifest's hashes.
    manifest = json.loads((out / "manifest.json").read_text())
    assert_manifest_lists_every_file(manifest["artifact"]["files"], out / "artifact")
    import transformers

    assert manifest["seed"] == 0 and manifest["recipe"]["seed"] == 0
    # the distribution's version may lack the local tag (+cu124) that torch.__version__ carries
    assert manifest["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert manifest["versions"]["transformers"] == transformers.__version__
    assert manifest["inputs"]["data"]["train"]["sha256"] == sha256_file(data[TASKS[task][1]])
    teacher_dir = request.getfixturevalue(TASKS[task][0])
    assert_manifest_lists_every_file(manifest["inputs"]["teacher"]["files"], teacher_dir)
    assert manifest["inputs"]["students"] == {}  # students made from the teacher's layers
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = {"feature-extraction": AutoModel, "sequence-classification": AutoModelForSequenceClassification,
           "causal-lm": AutoModelForCausalLM}[task]
    reloaded = cls.from_pretrained(out / "artifact")
    assert reloaded.config.num_hidden_layers == 2


def test_gate_set_above_what_the_run_reaches_fails_and_names_the_task(request, data, write_recipe, tmp_path,
                                                                      capsys):
    stages = [{"kind": "distill", "student": {"num_layers": 1}, "max_steps": 1}]
    recipe = recipe_for("feature-extraction", request, data, stages, gates={"min_retention": 0.9999})
    out = tmp_path / "out"
    assert compress(write_recipe(recipe), out) == 3
    printed = capsys.readouterr().out
    assert "status: failed-gate" in printed and "gate: task text kept" in printed
    report = json.loads((out / "report.json").read_text())
    (short,) = report["shortfalls"]
    assert short["task"] == "text" and short["required"] == 0.9999 and short["short_by"] > 0
    assert report["final"]["artifact"] is None and not (out / "artifact").exists()


def test_failed_gate_keeps_the_best_candidate_that_passed(request, data, write_recipe, tmp_path):
    stages = [
        {"kind": "distill", "student": {"layers": [0, 1, 2, 3]}, "max_steps": 1, "lr": 1e-9},  # ~ the teacher
        {"kind": "distill", "student": {"num_layers": 1}, "max_steps": 1},  # breaks the gate
    ]
    recipe = recipe_for("feature-extraction", request, data, stages, gates={"per_task": {"text": 0.999}})
    out = tmp_path / "out"
    assert compress(write_recipe(recipe), out) == 3
    report = json.loads((out / "report.json").read_text())
    assert [s["status"] for s in report["stages"]] == ["passed", "failed-gate"]
    assert report["final"]["stage_index"] == 0
    saved = json.loads((out / "artifact" / "config.json").read_text())
    assert saved["num_hidden_layers"] == 4


def test_dry_run_checks_layers_and_dataset_kinds(request, data, write_recipe, tmp_path, capsys):
    ok = recipe_for("feature-extraction", request, data, [{"kind": "distill", "student": {"layers": [0, 3]}}])
    assert compress(write_recipe(ok), tmp_path / "o1", "--dry-run") == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["valid"] and plan["stages"][0]["layers"] == 2
    bad = recipe_for("feature-extraction", request, data, [{"kind": "distill", "student": {"layers": [0, 7]}}])
    assert compress(write_recipe(bad), tmp_path / "o2", "--dry-run") == 2
    assert "stages.0.student.layers: layer 7 does not exist: the model has 4 layers" in capsys.readouterr().err
    wrong = recipe_for("causal-lm", request, data, [])
    wrong["data"]["eval"] = {"topics": str(data["eval_cls"])}
    assert compress(write_recipe(wrong), tmp_path / "o3", "--dry-run") == 2
    assert "data.eval.topics" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "report.json").exists()


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                                            "PYTHONPATH": str(Path(__file__).resolve().parents[2])})


def test_bad_input_exits_non_zero_without_a_traceback(tiny_bert, data, tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{"text": 42}\n')
    base = {"teacher": {"source": "local", "path": str(tiny_bert)}, "task": "feature-extraction",
            "data": {"train": str(data["train"])}, "stages": [{"kind": "distill"}]}
    cases = {
        "typo.yaml": ({**base, "stages": [{"kind": "distill", "epoch": 3}]}, "stages.0.epoch"),
        "task.yaml": ({**base, "task": "summarization"}, "task"),
        "data.yaml": ({**base, "data": {"train": str(broken)}}, "broken.jsonl:2: text must be a non-empty string"),
        "ref.yaml": ({**base, "teacher": {"source": "local", "path": str(tmp_path / "nope")}}, "not a directory"),
        "stage.yaml": ({**base, "stages": [{"kind": "shrink"}]}, "unknown stage"),
    }
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tf:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    cases["archive.yaml"] = ({**base, "teacher": {"source": "archive", "path": str(evil)}}, "points outside")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tiny_bert / "config.json").read_text())
    torch.save({"w": _Exploit()}, pickled / "pytorch_model.bin")
    cases["pickle.yaml"] = ({**base, "teacher": {"source": "local", "path": str(pickled)}}, "would run code")
    for name, (recipe, expected) in cases.items():
        (tmp_path / name).write_text(json.dumps(recipe))
        proc = _run_cli("compress", name, "--out", "out", "--root", "/", cwd=tmp_path)
        assert proc.returncode == 2, (name, proc.stderr)
        assert expected in proc.stderr and "Traceback" not in proc.stderr, (name, proc.stderr)
        assert "this must never run" not in proc.stdout
    proc = _run_cli("compress", "missing.yaml", "--out", "out", cwd=tmp_path)
    assert proc.returncode == 2 and "cannot read recipe" in proc.stderr and "Traceback" not in proc.stderr


def test_manifest_hashes_a_hub_teachers_snapshot(tiny_bert, data, tmp_path):
    """A hub teacher is recorded with the sha256 of every file of the cached snapshot it was loaded from, not
    only its id and revision. A fresh process, since huggingface_hub reads HF_HUB_CACHE once, at import."""
    import shutil

    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "hub" / "models--acme--tiny-bert" / "snapshots" / revision
    shutil.copytree(tiny_bert, snapshot)
    recipe = {"teacher": {"source": "hf", "id": "acme/tiny-bert", "revision": revision},
              "task": "feature-extraction", "data": {"train": str(data["train"])},
              "stages": [{"kind": "distill", "student": {"num_layers": 1}, "max_steps": 1}],
              "evaluate": {"latency_runs": 1, "warmup_runs": 0, "throughput_batch": 2}}
    (tmp_path / "r.json").write_text(json.dumps(recipe))
    proc = subprocess.run([sys.executable, "-m", "app.cli", "compress", "r.json", "--out", "out", "--quiet",
                           "--root", "/"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
                               "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == 0, proc.stderr[-2000:]
    teacher = json.loads((tmp_path / "out" / "manifest.json").read_text())["inputs"]["teacher"]
    assert teacher["source"] == "hf" and teacher["id"] == "acme/tiny-bert" and teacher["revision"] == revision
    assert_manifest_lists_every_file(teacher["files"], snapshot)
