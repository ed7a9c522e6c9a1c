"""The job runner's outcomes that need no worker process to show: a failed quality gate, the time limit,
an unexpected exception, a lost lease and a GPU job handed back. (Called in this process; the task itself is
exercised in test_jobs.py.)"""

from __future__ import annotations

from worker import job_runner, routing

from .conftest import DISTILL, get_job, job_artifacts, job_events, make_job, recipe, update_job


def test_a_failed_gate_fails_the_job_naming_the_task_and_the_shortfall(settings):
    job_id = make_job(settings, [DISTILL], raw_recipe=recipe(settings, [DISTILL], gates={"min_retention": 2.0}))
    assert job_runner.run_job(settings, job_id) == "failed"
    job = get_job(settings, job_id)
    assert job.failure_code == "gate_failed" and job.report["status"] == "failed-gate"
    assert job.failure_message.startswith("stage 0:distill failed its quality gate: task text kept ")
    assert "needs 2.0" in job.failure_message and job.failure_message.endswith("no stage passed")
    assert [s.status for s in job.stages] == ["failed-gate"]
    assert {a.name for a in job_artifacts(settings, job_id)} == {"report.json", "manifest.json"}


def test_the_soft_time_limit_fails_the_job_and_keeps_finished_stages(settings):
    slow = {**DISTILL, "student": {"num_layers": 1}, "epochs": 1000}
    job_id = make_job(settings, [DISTILL, slow])
    # 6 s: room for the first stage on a loaded machine; the second (1000 epochs) cannot finish in it
    short = settings.model_copy(update={"job_soft_time_limit": 6})
    assert job_runner.run_job(short, job_id) == "failed"
    job = get_job(settings, job_id)
    assert job.failure_code == "timeout" and "6 s" in job.failure_message
    first, second = (s.status for s in sorted(job.stages, key=lambda s: s.index))
    # the limit stops the second stage mid-run, or (on a slow machine) before it starts, after the first
    # stage's evaluation and save
    assert first == "passed" and second in ("failed", "pending")
    assert (settings.jobs_dir / job_id / "stages" / "00-distill" / "stage.json").is_file()  # resumable
    assert job_events(settings, job_id)[-1].message.startswith("failed: timeout")


def test_an_unexpected_exception_fails_the_job_as_internal(settings, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(job_runner, "run_engine", explode)
    job_id = make_job(settings)
    assert job_runner.run_job(settings, job_id) == "failed"
    job = get_job(settings, job_id)
    assert (job.failure_code, job.failure_message) == ("internal_error", "RuntimeError: boom")
    assert job.lease_owner is None and job.lease_expires_at is None and job.finished_at is not None


def test_a_lost_lease_leaves_the_job_directory_to_the_worker_that_owns_it_now(settings, monkeypatch):
    """With S3 a finished job's directory is dropped. The new owner may be a sibling process on this host (one per
    GPU, one data_dir), running in that very directory: losing the lease must not delete it under it."""
    job_id = make_job(settings, [DISTILL])
    checkpoint = settings.jobs_dir / job_id / "stages" / "00-distill" / "stage.json"

    def run_until_a_sibling_takes_over(s, job, out_dir, progress, lease, worker):
        checkpoint.parent.mkdir(parents=True)
        checkpoint.write_text("{}")  # the sibling's checkpoint, in the directory both processes share
        update_job(settings, job.id, lease_owner="sibling-on-this-host")
        lease.lost.set()
        return job_runner.Outcome("cancelled")

    monkeypatch.setattr(job_runner, "_execute", run_until_a_sibling_takes_over)
    assert job_runner.run_job(settings.model_copy(update={"store": "s3"}), job_id) == "lease_lost"
    assert checkpoint.read_text() == "{}"
    assert get_job(settings, job_id).lease_owner == "sibling-on-this-host"


def test_a_gpu_job_handed_back_again_and_again_says_so_once(settings, monkeypatch):
    """Outside the solo pool a worker without CUDA keeps getting the job back every pause: one event, not one per
    round trip (thousands a day)."""
    sent = []
    monkeypatch.setattr(routing, "cuda_available", lambda: False)
    monkeypatch.setattr(job_runner, "HAND_BACK_PAUSE_S", 0)
    monkeypatch.setattr(job_runner, "enqueue_job", lambda s, job_id, queue: sent.append((job_id, queue)))
    job_id = make_job(settings, [DISTILL], queue="gpu", raw_recipe=recipe(settings, [DISTILL], device="cuda"))
    assert [job_runner.run_job(settings, job_id) for _ in range(3)] == ["handed_back"] * 3
    assert sent == [(job_id, "gpu")] * 3  # sent back every time, for a worker with a GPU
    assert [e.message for e in job_events(settings, job_id)] == [routing.refusal()]
    job = get_job(settings, job_id)
    assert (job.status, job.attempts, job.lease_owner) == ("queued", 0, None)


def test_the_failure_message_words_each_gate_rule_in_its_own_terms():
    from tests.app.assets_helpers import MINIMAL_REPORT
    from worker.job_runner import gate_message

    report = {**MINIMAL_REPORT, "status": "failed-gate", "shortfalls": [
        {"task": "topics", "metric": "accuracy", "retention": 0.9, "required": 0.95, "short_by": 0.05},
        {"task": "docs", "metric": "accuracy", "retention": 0.97, "required": 0.01, "short_by": 0.02,
         "rule": "max_drop", "drop": 0.03}]}
    message = gate_message(report)
    assert "task topics kept 0.9000 of the teacher's accuracy, needs 0.95 (short by 0.0500)" in message
    assert "task docs lost 0.0300 of accuracy, allowed at most 0.01 (short by 0.0200)" in message
