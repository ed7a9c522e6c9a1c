"""Two Celery workers on one queue, each with its own data directory, sharing only Redis, PostgreSQL and the
S3 store (moto's S3-protocol server): they fetch the teacher and datasets from the bucket, put outputs and
stage checkpoints there, and jobs spread over both, and a worker killed with SIGKILL mid-stage loses no job and runs
none twice: its job is reclaimed by the other worker once the lease lapses, and resumes from its last
finished stage.

No API process runs here, so the test runs the reconciler itself (the API's thread, every
settings.reconcile_seconds). The worker subprocesses are `celery ... worker` itself, not `distillery worker`:
a SIGKILL then leaves nobody to hand the job back (the supervisor's child would shut down warm instead).
"""

from __future__ import annotations

import hashlib
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from app.db.base import session_scope
from app.db.models import Job
from app.store import get_store, upload_dir
from distillery import load_artifact
from tests.s3 import new_bucket
from worker.celery_app import enqueue_job
from worker.lease import aware
from worker.reconciler import start_reconciler

from .conftest import (
    DISTILL,
    QUANTIZE,
    WorkerProc,
    get_job,
    job_artifacts,
    job_events,
    make_job,
    recipe,
    wait_for,
)

# PostgreSQL is the production database of a cluster; SQLite would only add a minute of the same checks.
pytestmark = pytest.mark.parametrize("database_url", [
    pytest.param("sqlite", marks=pytest.mark.skip(reason="a cluster shares PostgreSQL; SQLite serves one host "
                                                          "(`distillery serve`), and this file must stay short")),
    "postgres",
], indirect=True)

@pytest.fixture(scope="module")
def settings(settings, s3_endpoint):
    """The conftest's stack on the S3 store: its inputs are put into a fresh bucket, under the keys recipes use."""
    s3 = settings.model_copy(update={"store": "s3", "s3_bucket": new_bucket(s3_endpoint),
                                     "s3_endpoint_url": s3_endpoint})
    store = get_store(s3)
    for name in ("train.jsonl", "eval_text.jsonl"):
        store.put_file(s3.uploads_dir / "data" / name, f"uploads/data/{name}")
    upload_dir(store, s3.model_roots[0] / "tiny-bert", "uploads/models/tiny-bert/")
    return s3


def worker_settings(settings, index: int):
    return settings.model_copy(update={"data_dir": settings.data_dir.parent / f"worker-{index}"})


def store_recipe(settings, stages: list[dict]) -> dict:
    """Store keys, not paths: each worker reads them from its own copy of the bucket."""
    return {**recipe(settings, stages), "teacher": {"source": "local", "path": "uploads/models/tiny-bert"},
            "data": {"train": "uploads/data/train.jsonl", "eval": {"text": "uploads/data/eval_text.jsonl"}}}


# Stage 1 trains under a time budget: a window of a few seconds in which its worker is surely mid-stage.
SLOW = {**DISTILL, "student": {"num_layers": 1}, "epochs": 1000, "time_budget_s": 3}
ARTIFACTS = {"model.tar", "report.json", "manifest.json"}


def pid_of(lease_owner: str) -> int:
    return int(lease_owner.rsplit(":", 2)[1])  # worker/lease.py new_owner(): host:pid:nonce


class Cluster:
    """Two workers on the cpu queue, the reconciler, and a watcher that records every lease owner it sees
    (a finished job's row no longer names its worker)."""

    def __init__(self, settings) -> None:
        self.settings = settings
        with ThreadPoolExecutor(2) as pool:  # the two workers import torch at the same time
            starting = [pool.submit(WorkerProc, worker_settings(settings, i), "cpu") for i in range(2)]
        started = [f.result() for f in starting if f.exception() is None]
        if len(started) < 2:
            for w in started:
                w.stop()
            raise next(f.exception() for f in starting if f.exception() is not None)
        self.workers: list[WorkerProc] = started
        self.owners: dict[str, set[int]] = {}
        self.stop = threading.Event()
        self.reconciler = start_reconciler(settings, self.stop)
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()

    def _watch(self) -> None:
        while not self.stop.wait(0.05):
            with session_scope(self.settings.sqlalchemy_url) as session:
                rows = session.execute(select(Job.id, Job.lease_owner).where(Job.lease_owner.is_not(None))).all()
            for job_id, owner in rows:
                self.owners.setdefault(job_id, set()).add(pid_of(owner))

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers]

    def logs(self) -> str:
        return "\n".join(f"--- worker {w.proc.pid}\n{w.text()[-3000:]}" for w in self.workers)

    def close(self) -> None:
        self.stop.set()
        self.watcher.join(5)
        self.reconciler.join(10)
        for w in self.workers:
            w.stop()


@pytest.fixture
def cluster(settings) -> Iterator[Cluster]:
    c = Cluster(settings)
    yield c
    c.close()


def submit(settings, n: int, stages: list[dict]) -> list[str]:
    ids = [make_job(settings, stages, raw_recipe=store_recipe(settings, stages)) for _ in range(n)]
    for job_id in ids:
        enqueue_job(settings, job_id, "cpu")
    return ids


def check_ran_once(settings, job_id: str, tmp_path, attempts: int) -> Job:
    """Succeeded, its last stage and its finish recorded once, events in order, artifacts whole."""
    job = get_job(settings, job_id)
    assert job.status == "succeeded", (job_id, job.failure_code, job.failure_message)
    assert job.attempts == attempts and job.lease_owner is None and job.finished_at is not None
    assert all(s.status == "passed" for s in job.stages)
    # every stage says where it ran (the report, not the worker, knows the device)
    assert job.report["device"] and all(row.get("device") for row in job.report["stages"])

    events = job_events(settings, job_id)
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # strictly increasing, no gap, across attempts
    pairs = [(e.stage, e.message) for e in events]
    last = f"{len(job.stages) - 1}:quantize"
    assert pairs.count(("job", "succeeded")) == 1 and pairs[-1] == ("job", "succeeded")
    assert pairs.count((last, "starting")) == 1 and pairs.count(("final", "succeeded")) == 1
    assert [m for s, m in pairs if s == "job" and m.startswith("started")] == [
        f"started (attempt {i})" for i in range(1, attempts + 1)]

    arts = job_artifacts(settings, job_id)
    assert sorted(a.name for a in arts) == sorted(ARTIFACTS)  # one row per name: the tar was recorded once
    assert not (settings.data_dir / "jobs" / job_id).exists()  # nothing reached this machine but the bucket
    store = get_store(settings)
    for a in arts:
        path = store.get_file(a.path, tmp_path / "fetched" / a.path)
        assert a.size_bytes == path.stat().st_size == store.size(a.path)
        assert a.sha256 == hashlib.sha256(path.read_bytes()).hexdigest(), (job_id, a.name)
    tar = next(a for a in arts if a.name == "model.tar")
    target = tmp_path / job_id
    with tarfile.open(tmp_path / "fetched" / tar.path) as fh:
        fh.extractall(target, filter="data")
    model, tokenizer = load_artifact(target / "model")
    assert model is not None and tokenizer is not None
    return job


def test_two_workers_share_the_queue(settings, cluster, tmp_path):
    t0 = time.time()
    ids = submit(settings, 6, [DISTILL, QUANTIZE])
    for job_id in ids:
        wait_for(settings, job_id, timeout=120, worker=cluster.workers[0])
    elapsed = time.time() - t0
    for job_id in ids:
        check_ran_once(settings, job_id, tmp_path, attempts=1)
    held = {job_id: cluster.owners.get(job_id, set()) for job_id in ids}
    assert all(len(pids) == 1 for pids in held.values()), held  # each job seen under one worker only
    per_worker = {pid: sum(pid in pids for pids in held.values()) for pid in cluster.pids()}
    assert all(n >= 1 for n in per_worker.values()), (per_worker, cluster.logs())
    print(f"6 jobs on two workers in {elapsed:.1f} s; jobs per worker {sorted(per_worker.values())}")


def test_a_worker_killed_mid_stage_loses_no_job_and_runs_none_twice(settings, cluster, tmp_path):
    ids = submit(settings, 4, [DISTILL, SLOW, QUANTIZE])

    def victim() -> Job | None:
        for job_id in ids:
            job = get_job(settings, job_id)
            if job.lease_owner and any(e.stage == "1:distill" and e.message == "training"
                                       for e in job_events(settings, job_id)):
                return job
        return None

    deadline = time.time() + 60
    while (target := victim()) is None:
        assert time.time() < deadline, f"no job reached stage 1\n{cluster.logs()}"
        time.sleep(0.1)
    dead = next(w for w in cluster.workers if w.proc.pid == pid_of(target.lease_owner))
    survivor = next(w for w in cluster.workers if w is not dead)
    dead.kill()  # SIGKILL mid-stage: no warm shutdown, no hand-back; the acks_late message stays unacked
    t_kill = time.time()

    before = get_job(settings, target.id)
    # the killed worker may already have finished another job; those ran once, before the kill
    done_before_kill = {job_id for job_id in ids if get_job(settings, job_id).status == "succeeded"}
    assert before.status == "running" and before.lease_owner == target.lease_owner
    assert [s.status for s in sorted(before.stages, key=lambda s: s.index)] == ["passed", "running", "pending"]
    stage0 = min(before.stages, key=lambda s: s.index)

    for job_id in ids:
        wait_for(settings, job_id, timeout=120, worker=survivor)
    reclaimed = get_job(settings, target.id)
    print(f"killed worker {dead.proc.pid}; its job finished on {survivor.proc.pid} "
          f"{aware(reclaimed.finished_at).timestamp() - t_kill:.1f} s later")

    for job_id in ids:
        owners = cluster.owners.get(job_id, set())
        if job_id == target.id:
            check_ran_once(settings, job_id, tmp_path, attempts=2)
        elif job_id in done_before_kill:
            assert len(owners) == 1, (job_id, cluster.owners)
            check_ran_once(settings, job_id, tmp_path, attempts=1)
        else:  # everything still queued or running at the kill went to the survivor, once
            assert owners == {survivor.proc.pid}, (job_id, cluster.owners)
            check_ran_once(settings, job_id, tmp_path, attempts=1)

    # the reclaimed job resumed: stage 0 kept its checkpoint and timings, stage 1 ran again on the survivor
    job = reclaimed
    assert cluster.owners[job.id] == {dead.proc.pid, survivor.proc.pid}
    assert [row.get("resumed") for row in job.report["stages"]] == [True, None, None]
    resumed0 = min(job.stages, key=lambda s: s.index)
    assert (resumed0.started_at, resumed0.finished_at) == (stage0.started_at, stage0.finished_at)
    pairs = [(e.stage, e.message) for e in job_events(settings, job.id)]
    assert pairs.count(("0:distill", "starting")) == 1 and ("0:distill", "resumed from checkpoint") in pairs
    assert pairs.count(("1:distill", "starting")) == 2
    # and only after its lease lapsed: never while the killed worker's claim was live
    second = next(e for e in job_events(settings, job.id) if e.message == "started (attempt 2)")
    assert aware(second.created_at) >= aware(before.lease_expires_at)
