"""The service commands: `distillery keys` against the real API, and `distillery serve` end to end (the
embedded broker, a worker subprocess, uvicorn, a job, and a clean stop on Ctrl-C)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.app.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def service_env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env.update({"DISTILLERY_DATA_DIR": str(settings.data_dir), "DATABASE_URL": settings.sqlalchemy_url,
                "REDIS_URL": settings.redis_url})
    return env


def test_keys_create_prints_a_key_that_authenticates_and_revoke_ends_it(settings, server):
    made = cli("keys", "create", "--owner", "team-cli", "--name", "ci", env=service_env(settings))
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert re.fullmatch(r"dk_[\w-]{43}", secret) and secret not in made.stderr
    key_id = re.search(r"(key_\w+)", made.stderr)[1]
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(f"{server.url}/v1/models", headers=headers).status_code == 200

    revoked = cli("keys", "revoke", key_id, env=service_env(settings))
    assert revoked.returncode == 0, revoked.stderr
    assert httpx.get(f"{server.url}/v1/models", headers=headers).status_code == 401
    again = cli("keys", "revoke", key_id, env=service_env(settings))
    assert again.returncode == 2 and "no active API key" in again.stderr


def test_api_migrates_serves_and_reconciles(settings, tmp_path):
    """`distillery api`: migrations on start, the app under uvicorn, and the reconciler thread sending a
    queued job whose message was lost; SIGTERM stops it."""
    from datetime import timedelta

    from app.db.base import utcnow
    from tests.worker.conftest import make_job

    job_id = make_job(settings, raw_recipe={"lost": True}, created_at=utcnow() - timedelta(minutes=5))
    env = {**service_env(settings), "DISTILLERY_RECONCILE_SECONDS": "1"}
    port = free_port()
    with open(tmp_path / "api.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "api", "--port", str(port)], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline and proc.poll() is None, (tmp_path / "api.log").read_text()
            time.sleep(0.2)
        broker = redis.Redis.from_url(settings.redis_url)
        deadline = time.time() + 10
        while broker.llen("cpu") == 0:
            assert time.time() < deadline, (tmp_path / "api.log").read_text()
            time.sleep(0.1)
        assert job_id in broker.lindex("cpu", 0).decode()
    finally:
        proc.terminate()
        code = proc.wait(20)
    assert code == 0, (tmp_path / "api.log").read_text()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # SQLite belongs to one `serve`
def test_migrations_run_concurrently_on_start(database_url):
    """Every process runs `alembic upgrade head` on start; on PostgreSQL an advisory lock serialises them."""
    from app.db.migrate import migrate

    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate(database_url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


class Serve:
    """`distillery serve` in a session of its own, so that a signal to its group is a terminal's Ctrl-C."""

    def __init__(self, data_dir: Path, port: int, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port),
                                      "--data-dir", str(data_dir)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=lambda s=stream, k=sink: k.extend(iter(s.readline, "")), daemon=True).start()

    def wait_for(self, pattern: str, timeout: float = 90) -> re.Match:
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = re.search(pattern, "".join(self.out))
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} in the output:\n{''.join(self.out)}\n{''.join(self.err)}")

    def ctrl_c(self, timeout: float = 20) -> tuple[int, float]:
        t0 = time.time()
        os.killpg(self.proc.pid, signal.SIGINT)
        code = self.proc.wait(timeout)
        return code, time.time() - t0


def _children_of(pid: int) -> list[int]:
    """Processes started by `pid` (they carry DISTILLERY_PARENT_PID) or still in its process group."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == pid:
            continue
        try:
            environ = (entry / "environ").read_bytes()
            pgid = os.getpgid(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
        if f"DISTILLERY_PARENT_PID={pid}".encode() in environ.split(b"\0") or pgid == pid:
            found.append(int(entry.name))
    return found


def test_serve_runs_everything_with_no_configuration_and_stops_cleanly(tmp_path, tiny_bert):
    import shutil

    from app.settings import Settings
    from tests import fixtures
    from tests.worker.conftest import DISTILL, get_job, make_job, recipe, wait_for
    from worker.celery_app import enqueue_job

    data_dir, models = tmp_path / "data", tmp_path / "models"
    shutil.copytree(tiny_bert, models / "tiny-bert")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DISTILLERY_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env["DISTILLERY_MODEL_ROOTS"] = json.dumps([str(models)])
    port = free_port()
    t0 = time.time()
    serve = Serve(data_dir, port, env)
    try:
        url = serve.wait_for(r"Distillery is running at (http://\S+)")[1]
        started_in = time.time() - t0
        secret = serve.wait_for(r"API key \(shown once; keep it\): (dk_\S+)")[1]
        broker = serve.wait_for(r"broker: (redis://\S+)")[1]
        assert url == f"http://127.0.0.1:{port}" and not broker.startswith("redis://127.0.0.1:6379/")
        assert httpx.get(f"{url}/readyz").status_code == 200
        assert (data_dir / "distillery.db").is_file()

        # a job, straight into the embedded database and broker (the job service's rows, by hand)
        settings = Settings(data_dir=data_dir, redis_url=broker, model_roots=[models])
        fixtures.make_data(settings.uploads_dir / "data")
        job_id = make_job(settings, [DISTILL], owner="local", raw_recipe=recipe(settings, [DISTILL]))
        enqueue_job(settings, job_id, "cpu")
        job = wait_for(settings, job_id, timeout=120)
        assert job.status == "succeeded", (job.failure_code, job.failure_message)
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"})
        listed = client.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]
        tar = next(a for a in listed if a["name"] == "model.tar")
        body = client.get(tar["download_url"]).content
        assert hashlib.sha256(body).hexdigest() == tar["sha256"]
        assert redis.Redis.from_url(broker).ping()
        assert get_job(settings, job_id).attempts == 1
    finally:
        pid = serve.proc.pid
        children = _children_of(pid)
        code, stopped_in = serve.ctrl_c()
    assert code == 0, "".join(serve.err)
    assert stopped_in < 10
    assert "Traceback" not in "".join(serve.err) + "".join(serve.out)
    assert len(children) >= 2  # the broker and the worker
    time.sleep(0.5)
    assert [p for p in children if Path(f"/proc/{p}").exists()] == []
    print(f"serve: ready in {started_in:.1f} s, stopped in {stopped_in:.1f} s after Ctrl-C")

    second = Serve(data_dir, free_port(), env)  # a later start: the key exists already
    try:
        second.wait_for(r"an API key exists already")
    finally:
        code, _ = second.ctrl_c()
    assert code == 0
