"""`distillery serve` heals: its broker and its worker are each killed (SIGKILL) mid-job, the job still succeeds
and /readyz is ready again within a minute; a job submitted while the broker is down is accepted and runs once
the broker is back. Then Ctrl-C and a new serve on the same port at once (TIME_WAIT does not make it busy).

A real serve subprocess and real HTTP, as a user runs it; the teacher is the tiny BERT fixture, and each job
trains for a few seconds (a time budget), so that the kills land mid-stage."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import httpx

from tests import fixtures
from tests.app.conftest import free_port
from tests.app.test_cli_service import Serve
from tests.worker.conftest import FAST_EVAL

HEALED_WITHIN_S = 60  # the bound: the job finishes and /readyz is ready again within a minute
LONG = {"kind": "distill", "student": {"num_layers": 1}, "epochs": 1000, "time_budget_s": 5}


def _state(pid: int) -> str | None:
    """The process's state letter (Z: a zombie), or None once it is gone and reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _worker_pid(serve_pid: int) -> int:
    """The Celery worker serve started: it carries DISTILLERY_PARENT_PID (worker/supervisor.py)."""
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"DISTILLERY_PARENT_PID={serve_pid}".encode() in environ and b"celery" in cmdline:
            return int(entry.name)
    raise AssertionError("no worker process")


def _until(predicate, timeout: float, what: str, serve: Serve):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        assert serve.proc.poll() is None, f"serve exited:\n{''.join(serve.err)[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}\n{''.join(serve.err)[-3000:]}")


class Jobs:
    def __init__(self, client: httpx.Client, body: dict) -> None:
        self.client, self.body = client, body

    def submit(self) -> str:
        r = self.client.post("/v1/jobs", json=self.body)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def get(self, job_id: str) -> dict:
        return self.client.get(f"/v1/jobs/{job_id}").json()

    def training(self, job_id: str) -> bool:
        job = self.get(job_id)
        return job["status"] == "running" and job["current_stage"] == "0:distill"

    def finished(self, job_id: str) -> dict | None:
        job = self.get(job_id)
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_serve_restarts_a_killed_broker_and_worker_and_restarts_on_the_same_port(tmp_path, tiny_bert):
    data_dir, models = tmp_path / "data", tmp_path / "models"
    shutil.copytree(tiny_bert, models / "tiny-bert")
    files = fixtures.make_data(tmp_path / "upload")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DISTILLERY_") and k not in ("DATABASE_URL", "REDIS_URL")}
    # a job submitted while the broker is down waits for a reconcile tick (default 30 s); keep the test short
    env.update(DISTILLERY_MODEL_ROOTS=json.dumps([str(models)]), DISTILLERY_RECONCILE_SECONDS="5")
    port = free_port()
    serve = Serve(data_dir, port, env)
    try:
        url = serve.wait_for(r"Distillery is running at (http://\S+)")[1]
        key = serve.wait_for(r"API key \(shown once; keep it\): (dk_\S+)")[1]
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        model = client.post("/v1/models", json={"name": "tiny", "source": {"source": "local",
                                                                          "path": str(models / "tiny-bert")}})
        assert model.status_code == 201, model.text
        ids = {}
        for name in ("train", "eval_text"):
            r = client.post("/v1/datasets", files={"file": (f"{name}.jsonl", files[name].read_bytes())})
            assert r.status_code == 201, r.text
            ids[name] = r.json()["id"]
        jobs = Jobs(client, {"teacher": {"model": model.json()["id"]}, "task": "feature-extraction",
                             "data": {"train": ids["train"], "eval": {"text": ids["eval_text"]}},
                             "stages": [LONG], "evaluate": FAST_EVAL, "max_length": 32})
        pidfile = data_dir / "valkey" / "valkey.pid"

        # 1. the broker, mid-job; a job submitted while it is down is accepted and left queued
        first = jobs.submit()
        _until(lambda: jobs.training(first), 60, "the first job to train", serve)
        broker_pid = int(pidfile.read_text())
        os.kill(broker_pid, signal.SIGKILL)
        during = jobs.submit()
        assert jobs.get(during)["status"] == "queued"
        _until(lambda: _state(broker_pid) is None, 10, "the killed broker to be reaped (no zombie)", serve)
        _until(lambda: _ready(url), HEALED_WITHIN_S, "/readyz ready after the broker was killed", serve)
        assert int(pidfile.read_text()) != broker_pid
        for job_id in (first, during):
            job = _until(lambda j=job_id: jobs.finished(j), HEALED_WITHIN_S, f"{job_id} to finish", serve)
            assert job["status"] == "succeeded", (job["failure"], "".join(serve.err)[-3000:])
        assert "the broker stopped unexpectedly" in "".join(serve.err)

        # 2. the worker, mid-job: the job resumes on the restarted worker, without waiting out its lease
        second = jobs.submit()
        _until(lambda: jobs.training(second), 60, "the second job to train", serve)
        worker_pid = _worker_pid(serve.proc.pid)
        os.kill(worker_pid, signal.SIGKILL)
        _until(lambda: _state(worker_pid) is None, 10, "the killed worker to be reaped", serve)
        job = _until(lambda: jobs.finished(second), HEALED_WITHIN_S, "the second job to finish", serve)
        assert job["status"] == "succeeded", (job["failure"], "".join(serve.err)[-3000:])
        assert job["attempts"] == 2 and _ready(url)
        assert _worker_pid(serve.proc.pid) != worker_pid
        client.get("/v1/jobs")  # a keep-alive connection the server closes as it stops: TIME_WAIT on the port
    finally:
        code, _ = serve.ctrl_c(timeout=40)
    assert code == 0, "".join(serve.err)[-3000:]

    # 3. Ctrl-C, then serve again on the same port at once: the API's TIME_WAIT connections do not block it
    again = Serve(data_dir, port, env)
    try:
        assert again.wait_for(r"Distillery is running at (http://\S+)", timeout=60)[1] == url
        assert _ready(url)
    finally:
        code, _ = again.ctrl_c(timeout=40)
    assert code == 0, "".join(again.err)[-3000:]
