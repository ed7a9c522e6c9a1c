"""The job runner's outcomes that need no worker process to show: a failed quality gate, the time limit
and an unexpected exception. (Called in this process; the task itself is exercised in test_jobs.py.)"""

from __future__ import annotations

from worker import job_runner

from .conftest import DISTILL, get_job, job_artifacts, job_events, make_job, recipe


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
    short = settings.model_copy(update={"job_soft_time_limit": 3})
    assert job_runner.run_job(short, job_id) == "failed"
    job = get_job(settings, job_id)
    assert job.failure_code == "timeout" and "3 s" in job.failure_message
    assert [s.status for s in sorted(job.stages, key=lambda s: s.index)] == ["passed", "failed"]
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
