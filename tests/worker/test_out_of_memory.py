"""A job too large for its worker's memory fails with code `out_of_memory` and a reason, and the worker lives
on to run the next job. The worker process gets an address-space limit (RLIMIT_AS, set on the running process
with prlimit) a little above what it holds idle, so the job's first large tensor cannot be allocated, as on a
machine that is out of memory, without endangering the machine that runs the tests."""

from __future__ import annotations

import json
import resource

import pytest

from bench.corpus import stdlib_sentences
from tests.worker.conftest import DISTILL, FAST_EVAL, QUANTIZE, WorkerProc, make_job, wait_for
from worker.celery_app import enqueue_job

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the worker's behaviour only

HEADROOM = 1536 << 20  # enough to load all-MiniLM-L6-v2 and tokenize; far from a 512-long batch's attention


def _virtual_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        kib = next(int(line.split()[1]) for line in fh if line.startswith("VmSize:"))
    return kib * 1024


def _long_texts(settings) -> str:
    """512 rows of about 300 tokens: attention maps at batch 512 need gigabytes."""
    sentences = stdlib_sentences()
    path = settings.uploads_dir / "data" / "long.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(512):
            text = " ".join(sentences[(i * 7 + k) % len(sentences)] for k in range(20))[:1500]
            fh.write(json.dumps({"text": text}) + "\n")
    return str(path)


def test_a_job_that_runs_out_of_memory_fails_clearly_and_the_worker_survives(settings):
    worker = WorkerProc(settings)
    try:
        pid = worker.proc.pid
        limit = _virtual_bytes(pid) + HEADROOM
        resource.prlimit(pid, resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
        huge = {"teacher": {"source": "bundled"}, "task": "feature-extraction", "max_length": 256,
                "data": {"train": _long_texts(settings),
                         "eval": {"text": str(settings.uploads_dir / "data" / "eval_text.jsonl")}},
                "stages": [{"kind": "distill", "student": {"num_layers": 2}, "epochs": 1, "batch_size": 512}],
                "evaluate": FAST_EVAL}
        job_id = make_job(settings, raw_recipe=huge, stages=huge["stages"])
        enqueue_job(settings, job_id, "cpu")
        job = wait_for(settings, job_id, timeout=240, worker=worker)
        assert job.status == "failed", (job.status, job.failure_code, job.failure_message, worker.text()[-3000:])
        assert job.failure_code == "out_of_memory", (job.failure_message, worker.text()[-3000:])
        assert "memory" in job.failure_message and "batch_size" in job.failure_message
        assert job.attempts == 1  # failed once, cleanly: not a crash that the lease would retry

        resource.prlimit(pid, resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        assert worker.proc.poll() is None  # the same process takes the next job
        next_id = make_job(settings, [DISTILL, QUANTIZE])
        enqueue_job(settings, next_id, "cpu")
        after = wait_for(settings, next_id, timeout=180, worker=worker)
        assert after.status == "succeeded", (after.failure_code, after.failure_message)
        assert worker.proc.pid == pid and worker.proc.poll() is None
    finally:
        worker.stop()
