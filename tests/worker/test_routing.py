"""GPU routing guards: a job that needs CUDA reaching a worker without it is handed back (left queued, no attempt
used, never failed) and that worker stops taking the gpu queue; `distillery worker --queue gpu` without --gpus
finds the GPUs or refuses to start; and each stage of the report names the worker, host and device it ran on."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from app.db.base import session_scope
from app.db.migrate import upgrade
from app.db.models import StageRun
from app.exit_codes import EXIT_BAD_INPUT
from app.settings import Settings
from tests import fixtures
from worker.celery_app import enqueue_job
from worker.supervisor import detect_gpus

from .conftest import DISTILL, QUANTIZE, WorkerProc, get_job, job_events, make_job, recipe, wait_for, wait_until

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/15"  # its own: a handed-back job's message stays in the gpu queue


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_bert) -> Iterator[tuple[Settings, WorkerProc]]:
    root = tmp_path_factory.mktemp("routing")
    redis.Redis.from_url(REDIS_URL).flushdb()
    settings = Settings(data_dir=root / "data", database_url=f"sqlite:///{root / 'distillery.db'}",
                        redis_url=REDIS_URL, model_roots=[root / "models"], lease_seconds=5)
    shutil.copytree(tiny_bert, root / "models" / "tiny-bert")
    fixtures.make_data(settings.uploads_dir / "data")
    upgrade(settings.sqlalchemy_url)
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # no GPU for this worker, whatever the machine has
    try:
        worker = WorkerProc(settings, "cpu,gpu")  # a misconfigured worker: it takes the gpu queue too
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES")
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved
    yield settings, worker
    worker.stop()


def test_a_cuda_job_on_a_worker_without_cuda_is_handed_back_not_failed(stack):
    settings, worker = stack
    job_id = make_job(settings, queue="gpu", raw_recipe=recipe(settings, [DISTILL], device="cuda"))
    enqueue_job(settings, job_id, "gpu")

    def handed_back() -> list[str]:
        return [e.message for e in job_events(settings, job_id) if e.message.startswith("handed back")]

    wait_until(lambda: handed_back(), timeout=60, what="the hand-back event")
    assert "needs device cuda" in handed_back()[0] and "CUDA_VISIBLE_DEVICES ''" in handed_back()[0]
    wait_until(lambda: "no longer takes jobs from the gpu queue" in worker.text(), timeout=10,
               what="the worker to leave the gpu queue")
    time.sleep(2)  # a worker still on the gpu queue would take the job back within this
    job = get_job(settings, job_id)
    assert (job.status, job.attempts, job.failure_code, job.lease_owner) == ("queued", 0, None, None)
    assert len(handed_back()) == 1  # not a loop of deliveries
    assert redis.Redis.from_url(REDIS_URL).llen("gpu") == 1  # sent again, waiting for a GPU worker


def test_each_stage_names_the_worker_host_and_device_it_ran_on(stack):
    settings, worker = stack  # the worker that left the gpu queue still runs cpu jobs
    job_id = make_job(settings, [DISTILL, QUANTIZE])
    enqueue_job(settings, job_id, "cpu")
    job = wait_for(settings, job_id, worker=worker, timeout=120)
    assert job.status == "succeeded", (job.failure_code, job.failure_message, worker.text()[-3000:])
    on_disk = json.loads((settings.jobs_dir / job_id / "report.json").read_text())  # the downloadable report
    for report in (job.report, on_disk):
        assert [row["device"] for row in report["stages"]] == ["cpu", "cpu"]
        for row in report["stages"]:
            ran = row["worker"]
            assert ran["host"] == socket.gethostname() and ran["pid"] == worker.proc.pid
            assert ran["worker"].startswith("test-") and ran["worker"].endswith(f"@{socket.gethostname()}")
            assert ran["cuda_visible_devices"] == "" and ran["gpu"] is None
    with session_scope(settings.sqlalchemy_url) as session:
        rows = session.scalars(select(StageRun).where(StageRun.job_id == job_id).order_by(StageRun.index)).all()
        assert [r.metrics["worker"]["pid"] for r in rows] == [worker.proc.pid] * 2
        assert [r.metrics["device"] for r in rows] == ["cpu", "cpu"]


def _cli_worker(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", "worker", "--queue", "gpu"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def test_a_gpu_worker_without_gpus_refuses_to_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    out = _cli_worker({**env, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == EXIT_BAD_INPUT
    assert "no GPU was found (CUDA_VISIBLE_DEVICES='')" in out.stderr and "Traceback" not in out.stderr
    env.pop("CUDA_VISIBLE_DEVICES", None)
    out = _cli_worker({**env, "PATH": str(tmp_path)})  # no nvidia-smi on this PATH
    assert out.returncode == EXIT_BAD_INPUT and "nvidia-smi is not installed" in out.stderr


def test_gpus_are_detected_with_nvidia_smi_or_cuda_visible_devices(tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n[ \"$1\" = -L ] || exit 9\n"
                   "echo 'GPU 0: NVIDIA H100 (UUID: GPU-aaa)'\necho 'GPU 1: NVIDIA H100 (UUID: GPU-bbb)'\n")
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    assert detect_gpus({**env, "PATH": str(tmp_path)}) == (["0", "1"], "nvidia-smi -L lists 2")
    assert detect_gpus({**env, "CUDA_VISIBLE_DEVICES": "2,3"})[0] == ["2", "3"]
    assert detect_gpus({**env, "CUDA_VISIBLE_DEVICES": "0,-1,1"})[0] == ["0"]  # CUDA stops at -1
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    gpus, how = detect_gpus({**env, "PATH": str(tmp_path)})
    assert gpus == [] and "NVIDIA-SMI has failed" in how
