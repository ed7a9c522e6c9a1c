"""Reliability: Redis (the broker) restarts while jobs are queued and one is running. A broker without
persistence comes back empty, so the queued messages (and their enqueue markers) are gone; the database
still says the jobs are queued, and the reconciler (the API's thread; run here by the test) sends them
again. The worker reconnects on its own (Celery's broker_connection_retry), and every job runs exactly once.

The job store is the shared PostgreSQL (a fresh database); Redis is a private redis-server on its own port."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest
import redis

from app.db.migrate import upgrade
from app.settings import Settings
from tests import fixtures
from tests.databases import require_postgres, temporary_database
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
from worker.celery_app import MARKER, enqueue_job
from worker.reconciler import GRACE_S, reconcile

LONG = {**DISTILL, "student": {"num_layers": 1}, "epochs": 1000, "time_budget_s": 6}


@pytest.fixture(scope="module")
def database_url(tmp_path_factory) -> Iterator[str]:
    require_postgres()
    with temporary_database("postgres", tmp_path_factory.mktemp("db"), prefix="dftest") as url:
        yield url


@pytest.fixture(scope="module")
def settings(database_url, private_redis, tmp_path_factory, tiny_bert) -> Settings:
    root = tmp_path_factory.mktemp("broker")
    s = Settings(data_dir=root / "data", database_url=database_url, redis_url=private_redis.url,
                 model_roots=[root / "models"], lease_seconds=30, reconcile_seconds=1)
    shutil.copytree(tiny_bert, root / "models" / "tiny-bert")
    fixtures.make_data(s.uploads_dir / "data")
    upgrade(s.sqlalchemy_url)
    return s


def test_a_broker_restart_loses_no_job(settings, private_redis):
    worker = WorkerProc(settings, via_cli=True)
    try:
        broker = redis.Redis.from_url(settings.redis_url)
        first = make_job(settings, [LONG, QUANTIZE])
        enqueue_job(settings, first, "cpu")
        wait_until(lambda: get_job(settings, first).status == "running", timeout=60, what="the first job to start")
        queued = [make_job(settings) for _ in range(2)]
        created = time.monotonic()
        for job_id in queued:
            enqueue_job(settings, job_id, "cpu")
        # one job at a time (prefetch 1, acks_late): the two others wait in the broker
        assert broker.llen("cpu") == 2
        assert all(broker.exists(MARKER + j) for j in queued)

        private_redis.kill()
        private_redis.start()  # the same port, empty: both messages and their markers are gone
        assert broker.llen("cpu") == 0 and not any(broker.exists(MARKER + j) for j in queued)
        assert get_job(settings, first).status == "running"

        # The reconciler leaves alone a queued job younger than its grace period (the API may be enqueueing
        # it right now); the API's thread sends these once they are GRACE_S old. Rather than wait, pass 0.
        if time.monotonic() - created < GRACE_S - 2:
            assert reconcile(settings) == []
        sent = reconcile(settings, grace_s=0)
        # the running job holds a live lease, so it is not sent again; the two queued ones are, once each
        assert sorted(sent) == sorted(queued)
        assert all(broker.exists(MARKER + j) for j in queued)
        assert reconcile(settings, grace_s=0) == []

        jobs = {j: wait_for(settings, j, timeout=120, worker=worker) for j in [first, *queued]}
        log = worker.text()
        for job_id, job in jobs.items():
            assert job.status == "succeeded", (job_id, job.failure_code, job.failure_message, log[-4000:])
            assert job.attempts == 1, (job_id, job.attempts)
            starts = [e.message for e in job_events(settings, job_id) if e.stage == "job" and
                      e.message.startswith("started")]
            assert starts == ["started (attempt 1)"], (job_id, starts)
            assert [a.name for a in job_artifacts(settings, job_id)].count("model.tar") == 1
        # the worker survived the restart and reconnected by itself
        assert worker.proc.poll() is None, log[-4000:]
        assert log.count("Connected to redis://") >= 2, log[-4000:]
    finally:
        worker.stop()
