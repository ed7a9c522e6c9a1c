"""Jobs through a real Celery worker: claim, progress, stages, artifacts, cancellation, redelivery."""

from __future__ import annotations

import hashlib
import tarfile
import time
from datetime import timedelta

import pytest
import redis

from app.db.base import session_scope, utcnow
from app.db.models import Job, StageRun
from distillery import load_artifact
from worker.celery_app import enqueue_job
from worker.lease import aware
from worker.reconciler import reconcile

from .conftest import (
    DISTILL,
    QUANTIZE,
    WorkerProc,
    get_job,
    job_artifacts,
    job_events,
    make_job,
    recipe,
    update_job,
    wait_for,
    wait_until,
)


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stages_of(job: Job) -> list[str]:
    return [s.status for s in sorted(job.stages, key=lambda s: s.index)]


def update_stage(settings, job_id: str, index: int, **values) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        row = session.query(StageRun).filter_by(job_id=job_id, index=index).one()
        for k, v in values.items():
            setattr(row, k, v)


def test_job_runs_once_to_success_even_when_delivered_twice(settings, worker, tmp_path):
    job_id = make_job(settings)
    sent_at = utcnow()
    enqueue_job(settings, job_id, "cpu")
    enqueue_job(settings, job_id, "cpu")  # a duplicate message: the CAS claim makes it a no-op
    job = wait_for(settings, job_id, worker=worker)
    assert job.status == "succeeded", (job.failure_code, job.failure_message)
    assert job.attempts == 1 and job.lease_owner is None and job.finished_at is not None
    assert job.report["status"] == "succeeded" and len(job.report["stages"]) == 2
    print(f"enqueue -> claimed {(job.started_at - sent_at).total_seconds():.3f} s, "
          f"-> finished {(job.finished_at - sent_at).total_seconds():.2f} s")

    events = job_events(settings, job_id)
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    pairs = [(e.stage, e.message) for e in events]
    assert pairs[0] == ("job", "started (attempt 1)") and pairs[-1] == ("job", "succeeded")
    for label in ("0:distill", "1:quantize"):
        assert (label, "starting") in pairs and (label, "passed") in pairs
    assert any(e.message == "training" and e.step == e.total for e in events)

    stages = sorted(get_job(settings, job_id).stages, key=lambda s: s.index)
    assert [s.status for s in stages] == ["passed", "passed"]
    for s in stages:
        assert s.started_at is not None and s.finished_at is not None and s.finished_at >= s.started_at
        assert s.metrics["evaluation"]["tasks"]["text"]["retention"] is not None

    arts = {a.name: a for a in job_artifacts(settings, job_id)}
    assert set(arts) == {"model.tar", "report.json", "manifest.json"}
    for a in arts.values():
        path = settings.data_dir / a.path
        assert a.owner == "team-a" and path.is_file()
        assert a.size_bytes == path.stat().st_size and a.sha256 == _sha256(path)
    assert arts["model.tar"].media_type == "application/x-tar"
    with tarfile.open(settings.data_dir / arts["model.tar"].path) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    model, tokenizer = load_artifact(tmp_path / "unpacked" / "model")
    assert model is not None and tokenizer is not None


def test_a_job_cancelled_while_queued_never_starts(settings, worker):
    job_id = make_job(settings)
    update_job(settings, job_id, status="cancelled", cancel_requested=True)  # what the API does
    enqueue_job(settings, job_id, "cpu")
    sentinel = make_job(settings, attempts=settings.max_attempts)  # fails at once: proves the queue drained
    enqueue_job(settings, sentinel, "cpu")
    wait_for(settings, sentinel, worker=worker)
    job = get_job(settings, job_id)
    assert job.status == "cancelled" and job.attempts == 0 and job.started_at is None
    assert job_events(settings, job_id) == [] and job_artifacts(settings, job_id) == []
    assert not (settings.jobs_dir / job_id).exists()


def test_the_attempts_cap_fails_a_job_instead_of_running_it_again(settings, worker):
    job_id = make_job(settings, status="running", attempts=settings.max_attempts,
                      lease_expires_at=utcnow() - timedelta(seconds=30), lease_owner="gone:1:x")
    enqueue_job(settings, job_id, "cpu")
    job = wait_for(settings, job_id, worker=worker)
    assert (job.status, job.failure_code, job.attempts) == ("failed", "too_many_attempts", settings.max_attempts)
    assert job.lease_owner is None and job.finished_at is not None
    assert [(e.stage, e.message) for e in job_events(settings, job_id)] == [("job", "failed: too_many_attempts")]


def test_a_cancelling_job_whose_worker_died_is_finalised_as_cancelled(settings, worker):
    job_id = make_job(settings, status="cancelling", cancel_requested=True, attempts=1, lease_owner="gone:1:x",
                      lease_expires_at=utcnow() - timedelta(seconds=30))
    update_stage(settings, job_id, 0, status="running")
    enqueue_job(settings, job_id, "cpu")
    job = wait_for(settings, job_id, worker=worker)
    assert job.status == "cancelled" and job.attempts == 1 and job.lease_owner is None
    assert [s.status for s in sorted(job.stages, key=lambda s: s.index)] == ["cancelled", "pending"]
    assert [(e.stage, e.message) for e in job_events(settings, job_id)] == [("job", "cancelled")]


def test_a_recipe_error_at_run_time_fails_the_job_with_its_code(settings, worker):
    bad = recipe(settings, [DISTILL])
    bad["teacher"]["path"] = str(settings.model_roots[0] / "no-such-model")
    job_id = make_job(settings, [DISTILL], raw_recipe=bad)
    enqueue_job(settings, job_id, "cpu")
    job = wait_for(settings, job_id, worker=worker)
    assert job.status == "failed" and job.failure_code == "invalid_reference", job.failure_message
    assert "no-such-model" in job.failure_message and job.report is None
    assert job_events(settings, job_id)[-1].message.startswith("failed: invalid_reference: ")


def test_cancel_while_running_stops_at_the_next_step(settings, worker):
    job_id = make_job(settings, [{**DISTILL, "epochs": 200}, QUANTIZE])
    enqueue_job(settings, job_id, "cpu")
    wait_until(lambda: any(e.message == "training" for e in job_events(settings, job_id)), what="training")
    t0 = time.time()
    update_job(settings, job_id, status="cancelling", cancel_requested=True)
    job = wait_for(settings, job_id, worker=worker, timeout=30)
    stopped_in = time.time() - t0
    assert job.status == "cancelled" and job.failure_code is None, job.failure_message
    assert stopped_in < 10
    stages = sorted(job.stages, key=lambda s: s.index)
    assert [s.status for s in stages] == ["cancelled", "pending"]
    trained = [e.step for e in job_events(settings, job_id) if e.message == "training"]
    assert max(trained) < 200 * 6
    assert {a.name for a in job_artifacts(settings, job_id)} == {"report.json", "manifest.json"}
    print(f"cancel took effect in {stopped_in:.2f} s")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # `distillery serve`'s Ctrl-C path
def test_warm_shutdown_hands_a_running_job_back(settings, worker):
    """SIGTERM (Ctrl-C under `distillery serve`): the engine stops at its next step, the lease lapses at
    once, the attempt is not counted, and the job is sent again for the next worker."""
    own = WorkerProc(settings, queue="gpu")  # a queue of its own, so the module's worker leaves the job alone
    job_id = make_job(settings, [{**DISTILL, "epochs": 200}], queue="gpu")
    enqueue_job(settings, job_id, "gpu")
    wait_until(lambda: any(e.message == "training" for e in job_events(settings, job_id)), what="training")
    t0 = time.time()
    assert own.stop() == 0
    stopped_in = time.time() - t0
    job = get_job(settings, job_id)
    assert job.status == "running" and job.lease_owner is None and job.attempts == 0
    assert job.lease_expires_at is not None and stages_of(job) == ["pending"]
    assert job_events(settings, job_id)[-1].message.startswith("interrupted")
    assert redis.Redis.from_url(settings.redis_url).llen("gpu") == 1  # sent again
    update_job(settings, job_id, status="cancelled", cancel_requested=True)  # leave no work for later tests
    print(f"warm shutdown with a running job took {stopped_in:.2f} s")


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # the production crash path
def test_a_job_whose_worker_died_is_reclaimed_and_resumes_from_its_last_finished_stage(settings, worker):
    first = WorkerProc(settings, queue="gpu")
    # stage 1 trains under a time budget: a window in which the worker is surely mid-stage when it dies
    slow = {**DISTILL, "student": {"num_layers": 1}, "epochs": 1000, "time_budget_s": 3}
    job_id = make_job(settings, [DISTILL, slow], queue="gpu")
    enqueue_job(settings, job_id, "gpu")
    wait_until(lambda: any(e.stage == "1:distill" and e.message == "training" for e in job_events(settings, job_id)),
               what="stage 1 to train")
    first.kill()  # SIGKILL mid-run: no chance to clean up; the acks_late message stays unacked
    before = get_job(settings, job_id)
    assert before.status == "running" and stages_of(before) == ["passed", "running"]
    stage0 = sorted(before.stages, key=lambda s: s.index)[0]
    assert job_id not in reconcile(settings)  # the lease is still live: nothing to do yet
    second = WorkerProc(settings, queue="gpu")  # starts while the lease runs out
    wait_until(lambda: aware(get_job(settings, job_id).lease_expires_at) < utcnow(), timeout=20, what="lease lapse")
    assert job_id in reconcile(settings)
    job = wait_for(settings, job_id, worker=second)
    second.stop()
    assert job.status == "succeeded" and job.attempts == 2, (job.failure_code, job.failure_message)
    assert [s.get("resumed") for s in job.report["stages"]] == [True, None]
    resumed0 = sorted(job.stages, key=lambda s: s.index)[0]
    assert (resumed0.started_at, resumed0.finished_at) == (stage0.started_at, stage0.finished_at)
    assert resumed0.metrics["resumed"] is True
    events = job_events(settings, job_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    pairs = [(e.stage, e.message) for e in events]
    assert ("job", "started (attempt 2)") in pairs and ("0:distill", "resumed from checkpoint") in pairs
    assert pairs.count(("0:distill", "starting")) == 1  # stage 0 trained once, across both attempts
    assert pairs.count(("1:distill", "starting")) == 2  # stage 1 had not finished: it ran again
    assert {a.name for a in job_artifacts(settings, job_id)} == {"model.tar", "report.json", "manifest.json"}
