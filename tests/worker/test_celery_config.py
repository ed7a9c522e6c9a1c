"""The Celery settings long jobs depend on, checked as configuration: late acknowledgement with rejection on
a lost worker (a job whose worker dies is redelivered), prefetch 1, the job time limits, and a broker
visibility timeout above the hard limit (Redis would otherwise hand a running job to a second worker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import Settings, get_settings
from worker.celery_app import TASK_NAME, make_celery, visibility_timeout
from worker.supervisor import worker_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("soft, hard", [(100, 160), (6 * 3600, 6 * 3600 + 300), (3, 5)])
def test_make_celery_sets_what_long_jobs_need(soft, hard):
    settings = Settings(redis_url="redis://127.0.0.1:6379/3", job_soft_time_limit=soft, job_time_limit=hard)
    conf = make_celery(settings).conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_ignore_result is True  # no result backend: the database holds the outcome
    assert (conf.task_soft_time_limit, conf.task_time_limit) == (soft, hard)
    timeout = conf.broker_transport_options["visibility_timeout"]
    assert timeout == visibility_timeout(settings)
    assert timeout > hard  # a message is redelivered only after its job could have run to the hard limit
    assert conf.task_default_queue == "cpu"
    assert conf.broker_url == settings.redis_url


def test_the_task_acknowledges_late_and_is_rejected_when_its_worker_is_lost():
    from worker.tasks import run_job

    assert run_job.name == TASK_NAME
    assert run_job.acks_late is True and run_job.reject_on_worker_lost is True
    # the limits the task runs under are the settings' (bound from the app's configuration)
    settings = get_settings()
    assert (run_job.soft_time_limit, run_job.time_limit) == (settings.job_soft_time_limit, settings.job_time_limit)
    assert run_job.app.conf.task_acks_late is True and run_job.app.conf.worker_prefetch_multiplier == 1


def test_the_worker_app_takes_its_limits_from_the_environment():
    """`celery -A worker.celery_app worker` builds its app from the settings of the process's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env.update({"DISTILLERY_JOB_SOFT_TIME_LIMIT": "70", "DISTILLERY_JOB_TIME_LIMIT": "90",
                "REDIS_URL": "redis://127.0.0.1:6379/3"})
    code = ("import json; from worker.celery_app import celery as c; k = c.conf; print(json.dumps([k.task_soft_time_"
            "limit, k.task_time_limit, k.broker_transport_options['visibility_timeout'], k.task_acks_late]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    soft, hard, timeout, acks_late = json.loads(out)
    assert (soft, hard, acks_late) == (70, 90, True) and timeout > hard


def test_worker_processes_take_one_message_at_a_time():
    cmd = worker_command(["cpu"], "w@h")
    assert "--prefetch-multiplier=1" in cmd and "--pool=solo" in cmd and "--concurrency=1" in cmd


def test_a_soft_limit_past_the_hard_limit_is_refused():
    with pytest.raises(ValueError, match=r"DISTILLERY_JOB_SOFT_TIME_LIMIT \(500\) must not exceed"):
        Settings(job_soft_time_limit=500, job_time_limit=400)


def test_a_frozen_broker_costs_a_submit_seconds_not_a_hang():
    """A broker that accepts connections and never answers (frozen, not dead): the send gives up within the
    sending side's timeouts, so a request thread that enqueues is freed."""
    import socket
    import threading
    import time

    from worker.celery_app import SEND_TIMEOUT_S, enqueue_job

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # accepted, never answered
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    settings = Settings(redis_url=f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
    started = time.monotonic()
    try:
        with pytest.raises(Exception):  # noqa: B017 - kombu/redis raise their own timeout classes
            enqueue_job(settings, "job_frozen", "cpu")
    finally:
        stop.set()
        for conn in held:
            conn.close()
        listener.close()
    assert time.monotonic() - started < 6 * SEND_TIMEOUT_S
