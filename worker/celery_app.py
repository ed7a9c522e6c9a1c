"""The Celery application. The broker carries only job ids; the database is the source of truth.

Settings for long, idempotent jobs: acks_late with reject_on_worker_lost (a job whose worker dies is
redelivered), prefetch 1 (a worker holds one job at a time), a visibility timeout above the longest
job (Redis would otherwise redeliver a job that is still running), and no result backend.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from app.settings import Settings, get_settings

TASK_NAME = "distillery.run_job"
QUEUES = ("cpu", "gpu")


def make_celery(settings: Settings) -> Celery:
    app = Celery("distillery", broker=settings.redis_url, include=["worker.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        task_default_queue="cpu",
        task_create_missing_queues=True,
        task_soft_time_limit=settings.job_soft_time_limit,
        task_time_limit=settings.job_time_limit,
        broker_transport_options={"visibility_timeout": settings.job_time_limit + 600},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


@lru_cache(maxsize=4)
def _celery_for(redis_url: str, soft: int, hard: int) -> Celery:
    return make_celery(Settings(redis_url=redis_url, job_soft_time_limit=soft, job_time_limit=hard))


def enqueue_job(settings: Settings, job_id: str, queue: str) -> None:
    """Send a job id to its queue. Call only after the job's row is committed (the worker re-reads it)."""
    app = _celery_for(settings.redis_url, settings.job_soft_time_limit, settings.job_time_limit)
    app.send_task(TASK_NAME, args=[job_id], queue=queue)


celery = make_celery(get_settings())  # the app `celery -A worker.celery_app worker` finds
