"""`distillery compress` as a user runs it: a progress bar with the loss on stderr, and Ctrl-C stopping cleanly."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from app.cli import main
from tests.engine.test_cli import FAST_EVAL

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def _write(tmp_path: Path, teacher: Path, data, stage: dict) -> Path:
    recipe = {"teacher": {"source": "local", "path": str(teacher)}, "task": "feature-extraction",
              "data": {"train": str(data["train"]), "eval": {"text": str(data["eval_text"])}},
              "stages": [stage], "evaluate": FAST_EVAL}
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    return path


def test_progress_bar_shows_steps_and_the_loss(tiny_bert, data, tmp_path, capsys):
    stage = {"kind": "distill", "student": {"num_layers": 2}, "epochs": 4, "batch_size": 16}  # 24 steps
    recipe = _write(tmp_path, tiny_bert, data, stage)
    cmd = [sys.executable, "-m", "app.cli", "compress", str(recipe), "--out", "out", "--root", "/"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=180, env=ENV)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "[teacher] computing the teacher's reference outputs" in err
    # the bar: its phase, steps done of the total and the latest loss
    assert re.search(r"\[0:distill\] training: 100%.*24/24.*loss=\d+\.\d{4}", err), err
    assert re.search(r"\[0:distill\] teacher outputs: 100%.*6/6", err), err
    assert "[final] succeeded" in err and "Traceback" not in err
    assert "status: succeeded" in proc.stdout  # the summary table goes to stdout, progress to stderr
    # --quiet: the same run, nothing on stderr (in process: a second interpreter start costs seconds)
    before = signal.getsignal(signal.SIGINT)
    assert main(["compress", str(recipe), "--out", str(tmp_path / "out2"), "--quiet", "--root", "/"]) == 0
    captured = capsys.readouterr()
    assert "status: succeeded" in captured.out and "training" not in captured.err and "loss=" not in captured.err
    assert signal.getsignal(signal.SIGINT) is before  # the Ctrl-C handler is the caller's again


def test_ctrl_c_during_distillation_cancels_cleanly(tiny_bert, data, tmp_path):
    # long enough that Ctrl-C lands mid-training: 1000 epochs of 6 steps
    stage = {"kind": "distill", "student": {"num_layers": 2}, "epochs": 1000, "batch_size": 16}
    recipe = _write(tmp_path, tiny_bert, data, stage)
    cmd = [sys.executable, "-m", "app.cli", "compress", str(recipe), "--out", "out", "--root", "/"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while "[0:distill] training" not in "".join(err):  # the bar appears after the first 10 steps
            assert proc.poll() is None and time.monotonic() < deadline, "".join(err)
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        out = proc.stdout.read()  # stderr is the reader thread's
    finally:
        proc.kill()
    reader.join(timeout=10)
    stderr = "".join(err)
    assert proc.returncode == 130, stderr
    assert "cancelling at the next step" in stderr and "Traceback" not in stderr
    assert "status: cancelled" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["status"] == "cancelled" and report["stages"] == []  # the stage never finished
    assert report["final"] == {"stage_index": None, "artifact": None}
    assert not (tmp_path / "out" / "artifact").exists()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "cancelled"
