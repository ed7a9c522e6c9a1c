"""Processes and rows for bench/api.py: the API and a worker as real subprocesses, a bare FastAPI app
served the same way, and a large artifact inserted straight into the database."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
# How `distillery api` (app/cli.py, cmd_api) runs uvicorn: info logging with the access log, proxy headers
# from loopback, a 75 s keep-alive. The bare endpoint gets the same, so that the comparison measures the
# service's own work; tests/test_bench_api.py fails if cmd_api's options drift from these.
SERVED_AS = {"proxy_headers": True, "forwarded_allow_ips": "127.0.0.1", "log_level": "info",
             "timeout_keep_alive": 75}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # cmd_api's root logging
BARE_SERVER = """
import json, logging, os, sys
import uvicorn
from fastapi import FastAPI

app = FastAPI()
BODY = json.loads(os.environ["BARE_BODY"])


@app.get("/bare")
def bare() -> dict:
    return BODY


logging.basicConfig(level=logging.INFO, format=os.environ["BARE_LOG_FORMAT"])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), **json.loads(os.environ["BARE_SERVED_AS"]))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pg_database(kind: str, tmp: Path):
    from tests.databases import temporary_database

    return temporary_database(kind, tmp, prefix="dbench")


class Service:
    """`distillery api` and `distillery worker` as subprocesses on one data dir, database and Redis db."""

    def __init__(self, tmp: Path, database_url: str, *, workers: int = 1,
                 worker_env: dict[str, str] | None = None) -> None:
        """`workers` separate `distillery worker` commands (as on separate hosts), each with `worker_env` added
        to its environment (OMP_NUM_THREADS, say)."""
        self.workers, self.worker_env = workers, worker_env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (tmp / "models").mkdir(exist_ok=True)
        self.settings = Settings(data_dir=tmp / "data", database_url=database_url,
                                 redis_url="redis://127.0.0.1:6379/8", model_roots=[tmp / "models"])
        self.env = {**os.environ, "DISTILLERY_DATA_DIR": str(self.settings.data_dir), "DATABASE_URL": database_url,
                    "REDIS_URL": self.settings.redis_url, "DISTILLERY_MODEL_ROOTS": f'["{tmp / "models"}"]',
                    "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
        self.procs: list[subprocess.Popen] = []
        self.owner, self.headers = "", {}
        self.log = tmp / "api.log"  # the API's output (its access log among it), as a deployment keeps it

    def __enter__(self) -> Service:
        import redis

        redis.Redis.from_url(self.settings.redis_url).flushdb()
        cli = [sys.executable, "-m", "app.cli"]
        with open(self.log, "wb") as log:
            api = subprocess.Popen([*cli, "api", "--port", str(self.port)], env=self.env, cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT)
        self.procs.append(api)
        wait_http(f"{self.url}/healthz")
        self.pid = api.pid
        for _ in range(self.workers):
            self.procs.append(subprocess.Popen([*cli, "worker", "--queue", "cpu", "--loglevel", "WARNING"],
                                               env={**self.env, **self.worker_env}, cwd=ROOT,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        try:
            self.wait_workers()  # every worker consumes before the first submission
        except BaseException:
            self.__exit__()
            raise
        return self

    def wait_workers(self, timeout: float = 120) -> None:
        """Until every Celery worker process answers a broadcast ping (it then consumes from its queue)."""
        from worker.celery_app import make_celery

        app = make_celery(self.settings)
        deadline = time.time() + timeout
        while len(app.control.ping(timeout=1.0)) < self.workers:
            if time.time() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"{self.workers} worker(s) did not start")
        app.close()

    def __exit__(self, *exc) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def bare_app_server(body: dict, folder: Path) -> Iterator[tuple[str, Path]]:
    """A FastAPI app with one route returning `body`, under uvicorn as `distillery api` is (SERVED_AS), its
    output in a log file as the API's is: (its URL, the log)."""
    import json

    port = free_port()
    script, log_path = folder / "bare_server.py", folder / "bare.log"
    script.write_text(BARE_SERVER)
    env = {**os.environ, "BARE_BODY": json.dumps(body), "BARE_SERVED_AS": json.dumps(SERVED_AS),
           "BARE_LOG_FORMAT": LOG_FORMAT}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(script), str(port)], cwd=folder, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/bare")
        yield f"http://127.0.0.1:{port}", log_path
    finally:
        proc.terminate()
        proc.wait(20)


def new_key(settings: Settings) -> tuple[str, dict]:
    from app.auth import create_key
    from app.db.base import session_scope

    with session_scope(settings.sqlalchemy_url) as session:
        _, secret = create_key(session, "bench", "bench")
    return "bench", {"Authorization": f"Bearer {secret}"}


def insert_artifact(settings: Settings, owner: str, size: int) -> tuple[str, Path]:
    import hashlib

    from app.db.base import new_id, session_scope
    from app.db.models import Artifact, Job

    job_id = new_id("job")
    path = settings.data_dir / "bench" / "big.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        for _ in range(size // len(block)):
            fh.write(block)
            digest.update(block)
    art_id = new_id("art")
    with session_scope(settings.sqlalchemy_url) as session:
        session.add(Job(id=job_id, owner=owner, status="succeeded", queue="cpu", request={}, recipe={}))
        session.flush()
        session.add(Artifact(id=art_id, job_id=job_id, owner=owner, name="big.bin", path="bench/big.bin",
                             media_type="application/octet-stream", size_bytes=path.stat().st_size,
                             sha256=digest.hexdigest()))
    return art_id, path


def register_tiny_inputs(service: Service) -> tuple[str, str]:
    """A tiny BERT teacher and a small text set, registered through the API: (model id, dataset id)."""
    import tempfile

    from tests import fixtures

    data = fixtures.make_data(Path(tempfile.mkdtemp()))
    model_dir = fixtures.make_bert(service.settings.model_roots[0] / "tiny-bert")
    with httpx.Client(base_url=service.url, headers=service.headers, timeout=60) as c:
        model = c.post("/v1/models", json={"name": "tiny", "source": {"source": "local", "path": str(model_dir)}})
        model.raise_for_status()
        with open(data["train"], "rb") as fh:
            dataset = c.post("/v1/datasets", files={"file": ("train.jsonl", fh)})
        dataset.raise_for_status()
    return model.json()["id"], dataset.json()["id"]
