"""The client against the real service: the API in a real uvicorn (thread) and a real Celery worker subprocess,
sharing a SQLite database, a data directory and Redis database 11 (the other suites use 9, 10 and 12).

One stack serves the whole session (a worker start costs seconds of imports); the jobs a test needs are
submitted through the client itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from app.db.migrate import upgrade
from app.settings import Settings
from distillery import Client
from tests import fixtures
from tests.app.conftest import Server, make_key
from tests.worker.conftest import DISTILL, FAST_EVAL, QUANTIZE, WorkerProc

REDIS_URL = "redis://127.0.0.1:6379/14"  # its own: 9 app, 10 worker, 11 store, 12 dashboard, 13 faults
ROOT = Path(__file__).resolve().parents[2]
MAX_UPLOAD = 2 * 1024 * 1024


@dataclass
class Stack:
    settings: Settings
    url: str
    key: str  # team-a
    other_key: str  # team-b
    worker: WorkerProc
    root: Path
    data: dict[str, Path]  # local data files (not under the service's roots)
    teacher: Path  # a tiny BERT outside the service's model roots: it must be uploaded

    def client(self, **kw) -> Client:
        return Client(self.url, self.key, **kw)


@pytest.fixture(scope="session")
def stack(tmp_path_factory, tiny_bert) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("client-stack")
    redis.Redis.from_url(REDIS_URL).flushdb()
    settings = Settings(data_dir=root / "data", database_url=f"sqlite:///{root / 'distillery.db'}",
                        redis_url=REDIS_URL, model_roots=[root / "models"], max_upload_bytes=MAX_UPLOAD,
                        lease_seconds=5, reconcile_seconds=1)
    (root / "models").mkdir()
    shutil.copytree(tiny_bert, root / "models" / "tiny-bert")
    teacher = shutil.copytree(tiny_bert, root / "elsewhere" / "tiny-bert")
    data = fixtures.make_data(root / "src")
    upgrade(settings.sqlalchemy_url)
    worker = WorkerProc(settings, "cpu")
    from app.api.main import create_app

    try:
        with Server(create_app(settings)) as srv:
            yield Stack(settings, srv.url, make_key(settings, "team-a"), make_key(settings, "team-b"), worker, root,
                        data, teacher)
    finally:
        worker.stop()


@pytest.fixture
def client(stack) -> Iterator[Client]:
    with stack.client() as c:
        yield c


def job_body(model_id: str, train: str, eval_text: str, stages: list[dict] | None = None, **extra) -> dict:
    return {"teacher": {"model": model_id}, "task": "feature-extraction",
            "data": {"train": train, "eval": {"text": eval_text}},
            "stages": [DISTILL, QUANTIZE] if stages is None else stages, "evaluate": FAST_EVAL, "max_length": 32,
            **extra}


@dataclass
class DoneJob:
    job_id: str
    body: dict
    key: str
    model_id: str
    train_id: str
    eval_id: str


@pytest.fixture(scope="session")
def done_job(stack) -> DoneJob:
    """A job run to success through the sync client: a directory upload, two datasets, create, wait."""
    with stack.client() as c:
        model = c.models.upload(stack.teacher)
        train = c.datasets.upload(stack.data["train"])
        ev = c.datasets.upload(stack.data["eval_text"], name="held-out")
        body = job_body(model.id, train.id, ev.id)
        job = c.jobs.create(body, idempotency_key="client-done-job")
        finished = c.jobs.wait(job.id, timeout=240)
        assert finished.status == "succeeded", (finished.failure, stack.worker.text()[-3000:])
    return DoneJob(job.id, body, "client-done-job", model.id, train.id, ev.id)


def cli(stack: Stack, *args: str, key: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """`python -m app.cli ARGS` with the service's URL and key in the environment, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env.update({"DISTILLERY_URL": stack.url, "DISTILLERY_API_KEY": key or stack.key, "TQDM_MININTERVAL": "0"})
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
