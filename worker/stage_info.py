"""Where each stage ran: the worker's host, process, Celery node name, CUDA_VISIBLE_DEVICES and, on CUDA, the
GPU's name. The engine's own `device` field reads cuda:0 in every per-GPU worker process, which says nothing
about the machine or the GPU.

The worker writes this as worker.json into each checkpoint directory when the engine hands it over (before
the checkpoint goes to the store, the marker last), so it travels with the checkpoint: a stage resumed on
another machine keeps the name of the worker that ran it. The job runner copies it into the report's stage
entries (and the stage rows' metrics), the engine's files untouched otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

from worker.engine.layout import RunLayout
from worker.engine.report import load_report, save_report

log = logging.getLogger("distillery.worker")
WORKER_FILE = "worker.json"


def describe_worker(worker_name: str | None) -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "worker": worker_name,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _gpu_name(device: str | None) -> str | None:
    import torch

    # Only a process that already runs on CUDA: asking would otherwise initialise it here.
    if (device is None or device.startswith("cuda")) and torch.cuda.is_initialized():
        return torch.cuda.get_device_name(torch.cuda.current_device())
    return None


def write(checkpoint_dir: Path, marker: Path, worker: dict) -> None:
    """worker.json beside the marker; the GPU's name when the stage's candidate was on CUDA."""
    try:
        device = json.loads(marker.read_text(encoding="utf-8")).get("device")
    except (OSError, ValueError, AttributeError):
        device = None
    entry = {**worker, "gpu": _gpu_name(device if isinstance(device, str) else None)}
    tmp = checkpoint_dir / f".{WORKER_FILE}.part"
    tmp.write_text(json.dumps(entry, sort_keys=True), encoding="utf-8")
    os.replace(tmp, checkpoint_dir / WORKER_FILE)


def read(checkpoint_dir: Path) -> dict | None:
    try:
        return json.loads((checkpoint_dir / WORKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _stage_dir(layout: RunLayout, row: dict) -> Path | None:
    if isinstance(row.get("index"), int) and isinstance(row.get("kind"), str):
        return layout.stage_dir(row["index"], row["kind"])
    return None


def annotate_report(report: dict, out_dir: Path) -> bool:
    """Add `worker` to each stage entry (each student's too) and each search trial that has a worker.json.
    Returns whether anything was added."""
    layout = RunLayout(out_dir)
    places: list[tuple[dict, Path | None]] = [(row, _stage_dir(layout, row)) for row in report.get("stages") or []]
    for student in report.get("students") or []:
        places += [(row, _stage_dir(layout.student(str(student.get("name"))), row))
                   for row in student.get("stages") or []]
    for trial in (report.get("search") or {}).get("trials") or []:
        places.append((trial, layout.trial_dir(str(trial.get("id")))))
    changed = False
    for row, directory in places:
        info = read(directory) if directory is not None else None
        if info is not None:
            row["worker"] = info
            changed = True
    return changed


def rewrite_report(report: dict, out_dir: Path) -> None:
    """The report.json the engine wrote, with the workers added (before the job's files are hashed)."""
    if not annotate_report(report, out_dir):
        return
    path = RunLayout(out_dir).report
    if path.is_file():
        save_report(load_report(report), path)  # typed: what the worker adds fits the report's schema
