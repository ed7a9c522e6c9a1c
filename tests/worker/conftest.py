"""Worker fixtures: a migrated database (SQLite and PostgreSQL), real Redis, and a real Celery worker
subprocess (never eager mode) configured through the same environment variables production uses.

One worker per database backend serves a module's tests (a worker start costs a few seconds of imports);
tests that kill a worker start their own. Jobs are inserted straight into the database and enqueued,
so these tests do not depend on the jobs API.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from app.db.base import new_id, session_scope, utcnow
from app.db.migrate import upgrade
from app.db.models import Artifact, Event, Job, StageRun
from app.settings import Settings
from tests import fixtures
from tests.databases import require_postgres, temporary_database

ROOT = Path(__file__).resolve().parents[2]
# A Redis database of its own: the API tests flush db 9 per test, which would drop queued messages here.
REDIS_URL = "redis://127.0.0.1:6379/10"
FAST_EVAL = {"latency_runs": 2, "warmup_runs": 1, "throughput_batch": 4}
DISTILL = {"kind": "distill", "student": {"num_layers": 2}, "epochs": 1, "batch_size": 16}
QUANTIZE = {"kind": "quantize", "method": "int8-dynamic"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(request, tmp_path_factory) -> Iterator[str]:
    if request.param == "postgres":
        require_postgres()
    with temporary_database(request.param, tmp_path_factory.mktemp("db"), prefix="dwtest") as url:
        yield url


@pytest.fixture(scope="module")
def settings(database_url, tmp_path_factory, tiny_bert) -> Settings:
    root = tmp_path_factory.mktemp("stack")
    redis.Redis.from_url(REDIS_URL).flushdb()
    s = Settings(data_dir=root / "data", database_url=database_url, redis_url=REDIS_URL,
                 model_roots=[root / "models"], lease_seconds=5, reconcile_seconds=1)
    shutil.copytree(tiny_bert, root / "models" / "tiny-bert")
    fixtures.make_data(s.uploads_dir / "data")
    upgrade(s.sqlalchemy_url)
    return s


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env.update({
        "DISTILLERY_DATA_DIR": str(settings.data_dir),
        "DATABASE_URL": settings.sqlalchemy_url,
        "REDIS_URL": settings.redis_url,
        "DISTILLERY_MODEL_ROOTS": json.dumps([str(r) for r in settings.model_roots]),
        "DISTILLERY_LEASE_SECONDS": str(settings.lease_seconds),
        "DISTILLERY_MAX_ATTEMPTS": str(settings.max_attempts),
        "DISTILLERY_JOB_SOFT_TIME_LIMIT": str(settings.job_soft_time_limit),
        "DISTILLERY_JOB_TIME_LIMIT": str(settings.job_time_limit),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DISTILLERY_STORE": settings.store,
    })
    if settings.store == "s3":  # credentials: the AWS_* variables tests/s3.py put in this environment
        env.update({"DISTILLERY_S3_BUCKET": settings.s3_bucket, "DISTILLERY_S3_PREFIX": settings.s3_prefix,
                    "DISTILLERY_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
                    "DISTILLERY_S3_MULTIPART_THRESHOLD": str(settings.s3_multipart_threshold)})
    return env


class WorkerProc:
    """A worker subprocess, its log in a file: `distillery worker` (the production command, which supervises
    Celery worker processes), or `celery ... worker` itself, whose SIGKILL leaves nobody to clean up."""

    def __init__(self, settings: Settings, queue: str = "cpu", *, via_cli: bool = False, args: tuple = (),
                 ready: int = 1) -> None:
        self.log = settings.data_dir.parent / f"worker-{queue}-{uuid.uuid4().hex[:6]}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        if via_cli:
            cmd = [sys.executable, "-m", "app.cli", "worker", "--queue", queue, *args]
        else:
            cmd = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queue, "--pool=solo",
                   "--concurrency=1", "--prefetch-multiplier=1", "-n", f"test-{uuid.uuid4().hex[:6]}@%h",
                   "--loglevel=INFO", "--without-gossip", "--without-mingle"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=worker_env(settings), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while self.text().count(" ready.") < ready:
            if self.proc.poll() is not None or time.time() > deadline:
                self.proc.kill()
                raise RuntimeError(f"the worker did not start:\n{self.text()[-3000:]}")
            time.sleep(0.1)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture(scope="module")
def worker(settings) -> Iterator[WorkerProc]:
    proc = WorkerProc(settings, via_cli=True)
    yield proc
    proc.stop()


# ---- jobs straight into the database -------------------------------------------------------------


def recipe(settings: Settings, stages: list[dict], **extra) -> dict:
    data = settings.uploads_dir / "data"
    return {
        "teacher": {"source": "local", "path": str(settings.model_roots[0] / "tiny-bert")},
        "task": "feature-extraction",
        "data": {"train": str(data / "train.jsonl"), "eval": {"text": str(data / "eval_text.jsonl")}},
        "stages": stages, "evaluate": FAST_EVAL, "max_length": 32, **extra,
    }


def make_job(settings: Settings, stages: list[dict] | None = None, *, queue: str = "cpu", owner: str = "team-a",
             raw_recipe: dict | None = None, **fields) -> str:
    stages = [DISTILL, QUANTIZE] if stages is None else stages
    job_id = new_id("job")
    with session_scope(settings.sqlalchemy_url) as session:
        values = {"status": "queued", "cancel_requested": False, "attempts": 0, "created_at": utcnow(), **fields}
        session.add(Job(id=job_id, owner=owner, queue=queue, request={"test": True},
                        recipe=raw_recipe or recipe(settings, stages), **values))
        for i, stage in enumerate(stages):
            session.add(StageRun(job_id=job_id, index=i, kind=stage["kind"], status="pending"))
    return job_id


def get_job(settings: Settings, job_id: str) -> Job:
    with session_scope(settings.sqlalchemy_url) as session:
        return session.get(Job, job_id)


def job_events(settings: Settings, job_id: str) -> list[Event]:
    with session_scope(settings.sqlalchemy_url) as session:
        return list(session.scalars(select(Event).where(Event.job_id == job_id).order_by(Event.seq)))


def job_artifacts(settings: Settings, job_id: str) -> list[Artifact]:
    with session_scope(settings.sqlalchemy_url) as session:
        return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)))


def update_job(settings: Settings, job_id: str, **values) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        job = session.get(Job, job_id)
        for k, v in values.items():
            setattr(job, k, v)


def wait_for(settings: Settings, job_id: str, statuses: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
             timeout: float = 180, worker: WorkerProc | None = None) -> Job:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = get_job(settings, job_id)
        if job.status in statuses:
            return job
        time.sleep(0.2)
    log = worker.text()[-4000:] if worker is not None else ""
    raise AssertionError(f"job {job_id} stayed {job.status} (wanted {statuses})\n{log}")


def wait_until(predicate, timeout: float = 180, what: str = "condition") -> None:
    # generous: it returns as soon as the condition holds; a loaded machine only makes it wait longer
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
