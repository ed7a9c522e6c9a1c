"""The hard time limit on a real worker: a job stuck where the engine cannot check for cancellation (here the
latency measurement, tens of thousands of forward passes) is recorded as failed, then the worker process
ends itself (the solo pool ignores Celery's own limits), and `distillery worker` starts a new one.

About 20 s: a worker start, the 3 s limit, and the restarted worker's start; this is the one test of the
path that ends a worker process."""

from __future__ import annotations

import pytest

from .conftest import DISTILL, WorkerProc, get_job, job_events, make_job, recipe, wait_for, wait_until

STUCK_EVAL = {"latency_runs": 10_000, "warmup_runs": 1000, "throughput_batch": 4096}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # no database behaviour of its own
def test_the_hard_limit_fails_the_job_then_ends_the_worker_process_which_is_started_again(settings):
    # soft == hard: both fire in the same heartbeat tick, so the engine never gets to stop at the soft one
    short = settings.model_copy(update={"job_soft_time_limit": 3, "job_time_limit": 3})
    sup = WorkerProc(short, via_cli=True)
    try:
        job_id = make_job(short, [DISTILL], raw_recipe=recipe(short, [DISTILL], evaluate=STUCK_EVAL))
        from worker.celery_app import enqueue_job

        enqueue_job(short, job_id, "cpu")
        job = wait_for(short, job_id, timeout=120, worker=sup)
        assert (job.status, job.failure_code) == ("failed", "timeout"), job.failure_message
        assert job.failure_message == "the job was stopped at its hard time limit of 3 s"
        assert job.lease_owner is None and job.finished_at is not None and job.attempts == 1
        assert job_events(short, job_id)[-1].message.startswith("failed: timeout")
        # the worker process ended itself, and the supervisor started another that consumes again
        wait_until(lambda: "hard time limit reached; ending the worker process" in sup.text(), timeout=30,
                   what="the worker's exit")
        wait_until(lambda: "exited with 70; starting it again" in sup.text(), timeout=30, what="the restart")
        wait_until(lambda: sup.text().count(" ready.") >= 2, timeout=90, what="the new worker")
        assert sup.proc.poll() is None
        assert get_job(short, job_id).status == "failed"  # nothing ran it again
    finally:
        assert sup.stop() == 0
