"""Reliability: the database is unavailable for a few seconds. The API answers 503 problem+json (with a
request id and Retry-After) instead of 500 or a hang, and recovers without a restart (pool_pre_ping); a
worker in the middle of a job keeps its events and retries its writes, and the job still ends succeeded,
once, with its artifact intact.

A private PostgreSQL (initdb in a temporary folder, its own port) is stopped and started with pg_ctl."""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from app.db.migrate import upgrade
from app.settings import Settings
from tests import fixtures
from tests.app.conftest import Server, make_key
from tests.faults.conftest import PrivatePostgres
from tests.worker.conftest import (
    DISTILL,
    QUANTIZE,
    WorkerProc,
    get_job,
    job_artifacts,
    job_events,
    make_job,
    wait_for,
    wait_until,
)

# Long enough to span the outage: the time budget ends training, not the step count.
LONG = {**DISTILL, "student": {"num_layers": 1}, "epochs": 1000, "time_budget_s": 8}


@pytest.fixture(scope="module")
def settings(private_postgres, private_redis, tmp_path_factory, tiny_bert) -> Settings:
    root = tmp_path_factory.mktemp("outage")
    s = Settings(data_dir=root / "data", database_url=private_postgres.url, redis_url=private_redis.url,
                 model_roots=[root / "models"], lease_seconds=30, reconcile_seconds=1)
    shutil.copytree(tiny_bert, root / "models" / "tiny-bert")
    fixtures.make_data(s.uploads_dir / "data")
    upgrade(s.sqlalchemy_url)
    return s


@pytest.fixture
def database_back(private_postgres) -> Iterator[PrivatePostgres]:
    """Whatever a test does, PostgreSQL is running again when it ends."""
    yield private_postgres
    if not (private_postgres.data / "postmaster.pid").exists():
        private_postgres.start()


def _timed_get(client: httpx.Client, path: str) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - start


def get_job_status_reachable(settings: Settings) -> bool:
    from sqlalchemy.exc import OperationalError

    try:
        get_job(settings, "job_none")
    except OperationalError:
        return False
    return True


def test_api_answers_503_problem_while_the_database_is_down_and_recovers(settings, database_back):
    from app.api.main import create_app

    pg = database_back
    key = make_key(settings, "team-a")
    with Server(create_app(settings)) as srv, \
            httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        assert client.get("/v1/jobs").status_code == 200  # the pool now holds a connection
        assert client.get("/readyz").status_code == 200

        pg.stop()
        response, took = _timed_get(client, "/v1/jobs")
        assert response.status_code == 503, response.text
        assert took < 5, f"the API took {took:.1f} s to say the database is down"
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers.get("retry-after"), response.headers
        body = response.json()
        assert body["status"] == 503 and body["type"] == "urn:distillery:problem:database_unavailable", body
        assert body["request_id"] and body["request_id"] == response.headers["x-request-id"]
        assert "Traceback" not in response.text and "psycopg" not in response.text

        ready, took = _timed_get(client, "/readyz")
        assert ready.status_code == 503 and took < 5
        assert ready.json()["checks"]["database"].startswith("error")
        assert ready.json()["checks"]["broker"] == "ok"

        pg.start()
        # the same server, its pool holding connections to the old server process: pre-ping replaces them
        again = client.get("/v1/jobs")
        assert again.status_code == 200, again.text
        assert client.get("/readyz").status_code == 200


def test_a_running_job_survives_a_database_outage(settings, database_back):
    pg = database_back
    redis.Redis.from_url(settings.redis_url).flushdb()
    worker = WorkerProc(settings, via_cli=True)
    try:
        from worker.celery_app import enqueue_job

        job_id = make_job(settings, [LONG, QUANTIZE])
        enqueue_job(settings, job_id, "cpu")

        def training() -> bool:  # a training step has been written: the distill loop is under way
            return any(e.total is not None for e in job_events(settings, job_id))

        wait_until(training, timeout=120, what="the first training step")
        pg.stop()
        down_at = time.time()
        time.sleep(4)
        assert worker.proc.poll() is None, worker.text()[-3000:]
        assert not get_job_status_reachable(settings)
        pg.start()

        job = wait_for(settings, job_id, timeout=120, worker=worker)
        log = worker.text()
        assert job.status == "succeeded", (job.failure_code, job.failure_message, log[-4000:])
        # the lease (30 s) outlived the outage: the job was never handed to anyone else
        assert job.attempts == 1, log[-4000:]
        assert job.lease_owner is None

        events = job_events(settings, job_id)
        seqs = [e.seq for e in events]
        assert seqs == list(range(1, len(seqs) + 1)), seqs  # strictly increasing, no gap, no duplicate
        job_messages = [e.message for e in events if e.stage == "job"]
        assert job_messages[0] == "started (attempt 1)" and job_messages[-1] == "succeeded", job_messages
        assert len([m for m in job_messages if m.startswith("started")]) == 1, job_messages
        stage_ends = [(e.stage, e.message) for e in events if e.total is None and e.message in ("passed", "failed")]
        assert stage_ends == [("0:distill", "passed"), ("1:quantize", "passed")], stage_ends

        # the outage fell inside training: the distill stage ended after the database went away, and the
        # worker noticed (its writes failed and were retried)
        distill_end = next(e for e in events if (e.stage, e.message) == ("0:distill", "passed"))
        assert distill_end.created_at.timestamp() > down_at + 1
        assert "progress not written yet" in log or "heartbeat failed" in log, log[-4000:]

        arts = {a.name: a for a in job_artifacts(settings, job_id)}
        assert list(arts).count("model.tar") == 1
        tar = settings.data_dir / arts["model.tar"].path
        assert arts["model.tar"].sha256 == hashlib.sha256(tar.read_bytes()).hexdigest()
        assert arts["model.tar"].size_bytes == tar.stat().st_size
        assert get_job(settings, job_id).status == "succeeded"
    finally:
        worker.stop()
