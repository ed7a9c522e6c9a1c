"""`distillery gc` beside live jobs and submissions: what a running, cancelling or multi-task job needs stays (its
uploaded teacher too), a row a submission holds is skipped, a submission whose input went meanwhile is refused,
and multipart uploads left open by a killed process are aborted."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import boto3
import httpx
from sqlalchemy import select

from app.db.base import new_id, session_factory, session_scope, utcnow
from app.db.migrate import upgrade
from app.db.models import DatasetRecord, Job, ModelRecord
from app.gc import collect, run_gc
from app.settings import Settings
from app.store import get_store
from tests.databases import require_postgres, temporary_database
from tests.s3 import new_bucket
from tests.store.test_service_s3 import _dataset, s3_settings


def _model(settings: Settings, tmp_path: Path, age_days: float) -> ModelRecord:
    mdl_id = new_id("mdl")
    prefix = f"uploads/models/{mdl_id}/"
    (tmp_path / "config.json").write_text("{}")
    get_store(settings).put_file(tmp_path / "config.json", prefix + "config.json")
    with session_scope(settings.sqlalchemy_url) as s:
        row = ModelRecord(id=mdl_id, owner="team-a", name="m", source={"source": "store", "prefix": prefix},
                          size_bytes=2, sha256="0" * 64, created_at=utcnow() - timedelta(days=age_days))
        s.add(row)
    return row


def _live_job(settings: Settings, status: str, request: dict, recipe: dict) -> str:
    job_id = new_id("job")
    with session_scope(settings.sqlalchemy_url) as s:
        s.add(Job(id=job_id, owner="team-a", status=status, queue="cpu", created_at=utcnow() - timedelta(days=40),
                  request=request, recipe=recipe))
    return job_id


def test_gc_keeps_what_running_cancelling_and_multi_task_jobs_need(gc_settings, tmp_path):
    settings = gc_settings
    running_ds, cancelling_ds, task_train, task_eval, free_ds = (_dataset(settings, tmp_path, 40) for _ in range(5))
    teacher, free_model = _model(settings, tmp_path, 40), _model(settings, tmp_path, 40)
    _live_job(settings, "running", {"teacher": {"model": teacher.id}, "data": {"train": running_ds.id}},
              {"teacher": {"source": "local", "path": teacher.source["prefix"].rstrip("/")},
               "data": {"train": running_ds.path}})
    _live_job(settings, "cancelling", {"data": {"train": cancelling_ds.id}}, {"data": {"train": cancelling_ds.path}})
    # a multi-task job names its datasets per task (tasks:), not under data:
    _live_job(settings, "queued", {"tasks": {"topics": {"train": task_train.id, "eval": task_eval.id}}},
              {"tasks": {"topics": {"train": task_train.path, "eval": task_eval.path}}})
    finished = _live_job(settings, "succeeded", {"data": {"train": free_ds.id}}, {"data": {"train": free_ds.path}})

    removed = run_gc(settings, older_than_days=1e-9)
    assert removed.datasets == [free_ds.id] and removed.models == [free_model.id]
    store = get_store(settings)
    for kept in (running_ds, cancelling_ds, task_train, task_eval):
        assert store.size(kept.path) == 14, kept.path
    assert store.size(f"{teacher.source['prefix']}config.json") == 2
    assert store.size(f"{free_model.source['prefix']}config.json") is None and store.size(free_ds.path) is None
    with session_scope(settings.sqlalchemy_url) as s:
        assert s.get(ModelRecord, teacher.id) is not None and s.get(Job, finished) is not None


def test_gc_aborts_multipart_uploads_a_killed_process_left_open(tmp_path, s3_endpoint, monkeypatch):
    settings = s3_settings(tmp_path, s3_endpoint, new_bucket(s3_endpoint), "api")
    upgrade(settings.sqlalchemy_url)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    # what put_file's multipart upload leaves when its process is SIGKILLed between parts
    upload = client.create_multipart_upload(Bucket=settings.s3_bucket, Key="jobs/job_1/model.tar")
    client.upload_part(Bucket=settings.s3_bucket, Key="jobs/job_1/model.tar", UploadId=upload["UploadId"],
                       PartNumber=1, Body=b"x" * (5 * 1024**2))

    def open_uploads() -> list[str]:
        return [u["Key"] for u in client.list_multipart_uploads(Bucket=settings.s3_bucket).get("Uploads", [])]

    # moto reports every upload as initiated in 2010: a staging age of 30 years makes it one that may still run
    monkeypatch.setattr("app.gc.STAGING_STALE", timedelta(days=30 * 365))
    assert run_gc(settings).multipart == [] and open_uploads() == ["jobs/job_1/model.tar"]
    monkeypatch.undo()  # the real age, a day: this one is older
    assert run_gc(settings, dry_run=True).multipart == ["jobs/job_1/model.tar"]
    assert open_uploads() == ["jobs/job_1/model.tar"]
    assert run_gc(settings).multipart == ["jobs/job_1/model.tar"]
    assert open_uploads() == []


def test_gc_skips_a_row_that_a_submission_holds_on_postgres(tmp_path):
    require_postgres()  # a failure, not a skip, under DISTILLERY_TEST_REQUIRE_SERVICES (.ci/run)
    with temporary_database("postgres", tmp_path, prefix="dgctest") as url:
        upgrade(url)
        settings = Settings(data_dir=tmp_path / "data", database_url=url, retention_days=30)
        ds = _dataset(settings, tmp_path, 40)
        submission = session_factory(url)()
        try:  # a submission between its re-read (FOR SHARE) and its commit
            held = submission.scalars(select(DatasetRecord.id).where(DatasetRecord.id == ds.id)
                                      .with_for_update(read=True)).all()
            assert held == [ds.id]
            with session_scope(url) as s:
                removed, _ = collect(s, utcnow())  # SKIP LOCKED: no waiting, and the row stays
            assert removed.datasets == []
        finally:
            submission.rollback()
            submission.close()
        assert run_gc(settings, older_than_days=1e-9).datasets == [ds.id]  # released: now it goes


def test_a_submission_whose_dataset_gc_removed_meanwhile_is_refused(tmp_path, monkeypatch):
    from app.api.main import create_app
    from app.services import jobs as job_service
    from tests.app.conftest import Server, make_key

    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
                        redis_url="redis://127.0.0.1:6379/11")
    upgrade(settings.sqlalchemy_url)
    real_dry_run = job_service.dry_run

    def dry_run_racing_gc(s: Settings, recipe) -> None:
        real_dry_run(s, recipe)
        run_gc(s, older_than_days=1e-9)  # the dataset is old and, so far, no job names it

    monkeypatch.setattr(job_service, "dry_run", dry_run_racing_gc)
    with Server(create_app(settings)) as srv, httpx.Client(
            base_url=srv.url, headers={"Authorization": f"Bearer {make_key(settings, 'team-a')}"}) as c:
        r = c.post("/v1/datasets", files={"file": ("t.jsonl", b'{"text": "a b c"}\n{"text": "d e f"}\n')})
        assert r.status_code == 201, r.text
        ds_id = r.json()["id"]
        body = {"teacher": {"source": "bundled"}, "task": "feature-extraction",
                "data": {"eval": {"text": ds_id}}, "stages": [{"kind": "quantize", "method": "int8-dynamic"}]}
        r = c.post("/v1/jobs", json=body)
        assert r.status_code == 409, r.text
        problem = r.json()
        assert problem["type"] == "urn:distillery:problem:input_deleted" and ds_id in problem["detail"]
        assert problem["errors"] == [{"field": "data.eval.text", "message": f"dataset {ds_id} was deleted",
                                      "code": "input_deleted"}]
    with session_scope(settings.sqlalchemy_url) as s:
        assert s.scalars(select(Job)).all() == []  # no job pointing at nothing
