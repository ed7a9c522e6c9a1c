"""Multi-task and search jobs through a real Celery worker: each student is its own artifact; a search whose
worker is killed resumes on another worker without redoing the trials that had finished."""

from __future__ import annotations

import re
import shutil
import tarfile
import uuid

import pytest

from app.db.base import utcnow
from tests import fixtures
from worker.celery_app import enqueue_job
from worker.lease import aware
from worker.reconciler import reconcile

from .conftest import FAST_EVAL, WorkerProc, get_job, job_artifacts, job_events, make_job, wait_for, wait_until

FINISHED = re.compile(r"^trial \d+: (passed|failed-gate);")
# Queues of this module's own: other test runs may share Redis db 10, and their workers would take (and drop,
# not finding the job in their database) messages sent to cpu or gpu.
QUEUE, KILL_QUEUE = f"mt-{uuid.uuid4().hex[:8]}", f"mk-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def own_worker(settings):
    proc = WorkerProc(settings, queue=QUEUE)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def two_task_recipe(settings, tiny_bert_cls):
    """A recipe maker for the topic classifier and the two tasks that degrade at different rates."""
    teacher = settings.model_roots[0] / "tiny-bert-cls"
    if not teacher.exists():
        shutil.copytree(tiny_bert_cls, teacher)
    data = fixtures.make_two_tasks(settings.uploads_dir / "two-tasks")

    def make(stages: list[dict], **extra) -> dict:
        return {
            "teacher": {"source": "local", "path": str(teacher)}, "task": "sequence-classification",
            "tasks": {name: {"train": str(data[f"{name}_train"]), "eval": str(data[f"{name}_eval"]), "gate": gate}
                      for name, gate in (("fragile", 0.6), ("robust", 0.9))},
            "stages": stages, "evaluate": FAST_EVAL, "max_length": 32, **extra,
        }

    return make


def test_each_student_is_its_own_artifact(settings, own_worker, two_task_recipe):
    stages = [{"kind": "distill", "student": {"num_layers": 2}, "epochs": 4, "batch_size": 16, "lr": 2e-3}]
    job_id = make_job(settings, [], raw_recipe=two_task_recipe(stages, strategy="both"), queue=QUEUE)
    enqueue_job(settings, job_id, QUEUE)
    job = wait_for(settings, job_id, worker=own_worker)
    assert job.status == "succeeded", (job.failure_code, job.failure_message)
    arts = {a.name: a for a in job_artifacts(settings, job_id)}
    assert set(arts) == {"model-fragile.tar", "model-robust.tar", "model-shared.tar", "report.json",
                         "manifest.json"}
    for name in ("fragile", "robust", "shared"):
        with tarfile.open(settings.data_dir / arts[f"model-{name}.tar"].path) as tar:
            assert "model/distillery.json" in tar.getnames()
    assert [s["name"] for s in job.report["students"]] == ["fragile", "robust", "shared"]
    stages_seen = {e.stage for e in job_events(settings, job_id)}
    assert {"students/fragile/0:distill", "students/shared/0:distill"} <= stages_seen


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_search_whose_worker_died_resumes_without_redoing_finished_trials(settings, two_task_recipe):
    # each distillation trains for 2 s: a window in which the worker is surely mid-trial when it dies
    stages = [{"kind": "distill", "epochs": 1000, "time_budget_s": 2, "batch_size": 16, "lr": 2e-3}]
    space = {"depth": [1, 2, 3], "sparsity": [0, 0.75], "quantization": ["none", "int8-dynamic"]}
    job_id = make_job(settings, [], raw_recipe=two_task_recipe(stages, search={"space": space}), queue=KILL_QUEUE)
    first = WorkerProc(settings, queue=KILL_QUEUE)
    enqueue_job(settings, job_id, KILL_QUEUE)

    def finished() -> list[str]:
        return [e.stage for e in job_events(settings, job_id) if FINISHED.match(e.message)]

    wait_until(lambda: len(finished()) >= 1, what="a trial to finish")
    first.kill()  # SIGKILL mid-search
    done_before = finished()
    built_before = {e.stage for e in job_events(settings, job_id) if e.message == "built"}  # checkpointed nodes
    assert get_job(settings, job_id).status == "running"
    second = WorkerProc(settings, queue=KILL_QUEUE)
    wait_until(lambda: aware(get_job(settings, job_id).lease_expires_at) < utcnow(), timeout=20, what="lease lapse")
    assert job_id in reconcile(settings)
    job = wait_for(settings, job_id, worker=second)
    second.stop()
    assert job.status == "succeeded" and job.attempts == 2, (job.failure_code, job.failure_message)

    events = job_events(settings, job_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    started = [e.stage for e in events if e.stage.startswith("search/d") and e.message.endswith(": starting")
               and "/" not in e.stage.removeprefix("search/")]
    assert all(started.count(s) == 1 for s in done_before)  # a finished trial never ran again
    assert sum(started.count(s) - 1 for s in set(started)) <= 1  # only the one cut short by the kill
    resumed = {e.stage for e in events if e.message.startswith("trial resumed")}
    assert resumed == set(done_before)
    assert built_before and all(sum(1 for e in events if e.stage == s and e.message == "starting") == 1
                                for s in built_before)  # the distilled students of before were reused
    search = job.report["search"]
    assert search["passed"] and search["trials_run"] == len(set(started))
    assert [t["id"] for t in search["trials"]][: len(done_before)] == [s.removeprefix("search/")
                                                                        for s in done_before]
    assert {a.name for a in job_artifacts(settings, job_id)} == {"model.tar", "report.json", "manifest.json"}
    assert job.stages == []
