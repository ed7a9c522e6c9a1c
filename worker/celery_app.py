"""The Celery application. The broker carries only job ids; the database is the source of truth.

Settings for long, idempotent jobs: acks_late with reject_on_worker_lost (a job whose worker dies is
redelivered), prefetch 1 (a worker holds one job at a time), a visibility timeout above the longest
job (Redis would otherwise redeliver a job that is still running), and no result backend.

Each enqueue also leaves a marker in Redis (`distillery:enqueued:<job id>`). The worker deletes it when
the message arrives; the reconciler only re-sends a job whose marker is gone, so a job that waits
behind a long one is not sent again every reconcile tick. The marker lives in the broker itself: a
broker that restarts empty loses messages and markers together, and the jobs are sent again.
"""

from __future__ import annotations

import time
from datetime import datetime
from functools import lru_cache

import redis
from celery import Celery

from app.settings import Settings, get_settings

TASK_NAME = "distillery.run_job"
QUEUES = ("cpu", "gpu")
MARKER = "distillery:enqueued:"


def make_celery(settings: Settings) -> Celery:
    app = Celery("distillery", broker=settings.redis_url, include=["worker.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        task_default_queue="cpu",
        task_create_missing_queues=True,
        # Enforced by Celery under prefork; the solo pool ignores them, so the job runner enforces the
        # same two limits itself (worker/lease.py).
        task_soft_time_limit=settings.job_soft_time_limit,
        task_time_limit=settings.job_time_limit,
        broker_transport_options={"visibility_timeout": visibility_timeout(settings)},
        broker_connection_retry_on_startup=True,
        # A solo worker cannot cancel its running task on a lost connection; say so instead of warning.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


def visibility_timeout(settings: Settings) -> int:
    return settings.job_time_limit + 600


# The sending side (the API's submit, the reconciler) runs on request threads: a broker that is down or frozen
# must cost it seconds, not hang it. The consuming worker keeps kombu's defaults (its reads block by design).
SEND_TIMEOUT_S = 3
SEND_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}


@lru_cache(maxsize=4)
def _celery_for(redis_url: str, soft: int, hard: int) -> Celery:
    app = make_celery(Settings(redis_url=redis_url, job_soft_time_limit=soft, job_time_limit=hard))
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "socket_timeout": SEND_TIMEOUT_S,
                                         "socket_connect_timeout": SEND_TIMEOUT_S}
    app.conf.task_publish_retry_policy = SEND_RETRY_POLICY
    app.conf.broker_connection_timeout = SEND_TIMEOUT_S
    return app


@lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=SEND_TIMEOUT_S, socket_connect_timeout=SEND_TIMEOUT_S)


def _send(settings: Settings, job_id: str, queue: str) -> None:
    app = _celery_for(settings.redis_url, settings.job_soft_time_limit, settings.job_time_limit)
    app.send_task(TASK_NAME, args=[job_id], queue=queue)


def enqueue_job(settings: Settings, job_id: str, queue: str) -> None:
    """Send a job id to its queue. Call only after the job's row is committed (the worker re-reads it)."""
    _send(settings, job_id, queue)
    # After the send: a failed send leaves no marker, so the reconciler sends the job again.
    _redis(settings.redis_url).set(MARKER + job_id, repr(time.time()), ex=visibility_timeout(settings))


def enqueue_if_needed(settings: Settings, job_id: str, queue: str, stale_before: datetime | None = None) -> bool:
    """The reconciler's send, made only when no message for the job is known to wait in the broker.

    Queued jobs (stale_before None): SET NX, atomic across API replicas that reconcile at once. Jobs whose
    lease lapsed: a marker older than the lapse refers to the message the lost worker consumed (the send and
    the marker's write can straddle the claim), so it does not count."""
    client = _redis(settings.redis_url)
    key, now = MARKER + job_id, repr(time.time())
    if stale_before is None:
        if not client.set(key, now, ex=visibility_timeout(settings), nx=True):
            return False
    else:
        raw = client.get(key)
        if raw is not None and float(raw) >= stale_before.timestamp():
            return False
        client.set(key, now, ex=visibility_timeout(settings))
    try:
        _send(settings, job_id, queue)
    except BaseException:
        client.delete(key)
        raise
    return True


def clear_marker(settings: Settings, job_id: str) -> None:
    """Called by the worker when a message for the job arrives: the broker no longer holds one."""
    _redis(settings.redis_url).delete(MARKER + job_id)


celery = make_celery(get_settings())  # the app `celery -A worker.celery_app worker` finds
