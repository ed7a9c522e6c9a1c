"""The service on the S3 store (moto's real S3-protocol server): the API and a worker with SEPARATE data
directories, sharing only the database, Redis and the bucket. Uploads land in the bucket, the worker fetches
its inputs from it and puts its outputs there, the API serves them with Range (or a presigned redirect), and
`distillery gc` removes what is old and unneeded but never what a live job needs."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis

from app.db.base import new_id, session_scope, utcnow
from app.db.migrate import upgrade
from app.db.models import Artifact, DatasetRecord, Job
from app.gc import run_gc
from app.settings import Settings
from app.store import get_store
from tests import fixtures
from tests.app.assets_helpers import tar_gz
from tests.app.conftest import Server, make_key
from tests.s3 import new_bucket
from tests.worker.conftest import DISTILL, FAST_EVAL, QUANTIZE, WorkerProc, wait_for

REDIS_URL = "redis://127.0.0.1:6379/11"  # a database of its own
ROOT = Path(__file__).resolve().parents[2]


def s3_settings(tmp_path: Path, endpoint: str, bucket: str, name: str, **over) -> Settings:
    return Settings(data_dir=tmp_path / name, database_url=f"sqlite:///{tmp_path / 'shared.db'}", redis_url=REDIS_URL,
                    store="s3", s3_bucket=bucket, s3_endpoint_url=endpoint, s3_multipart_threshold=5 * 1024**2,
                    lease_seconds=5, **over)


@pytest.fixture
def api(tmp_path, s3_endpoint) -> Iterator[tuple[Settings, httpx.Client]]:
    redis.Redis.from_url(REDIS_URL).flushdb()
    settings = s3_settings(tmp_path, s3_endpoint, new_bucket(s3_endpoint), "api")
    upgrade(settings.sqlalchemy_url)
    from app.api.main import create_app

    with Server(create_app(settings)) as srv, httpx.Client(
            base_url=srv.url, headers={"Authorization": f"Bearer {make_key(settings, 'team-a')}"}, timeout=60) as c:
        yield settings, c


def run_on_another_machine(settings: Settings, tmp_path: Path, job_id: str):
    """Run the job on a worker with its own data directory (another machine), sharing only the database, the
    broker and the bucket; returns that worker's settings, the (stopped) worker and the job, which succeeded."""
    worker_settings = s3_settings(tmp_path, settings.s3_endpoint_url, settings.s3_bucket, "worker")
    worker = WorkerProc(worker_settings, "cpu")
    try:
        job = wait_for(worker_settings, job_id, timeout=180, worker=worker)
    finally:
        worker.stop()
    assert job.status == "succeeded", (job.failure_code, job.failure_message, worker.text()[-3000:])
    return worker_settings, worker, job


def bucket_keys(settings: Settings) -> list[str]:
    return [k for k, _, _ in get_store(settings).list("")]


def test_a_job_runs_on_a_worker_that_shares_only_the_store(api, tmp_path, tiny_bert):
    settings, client = api
    data = fixtures.make_data(tmp_path / "src")
    ids = {}
    for name in ("train", "eval_text"):
        r = client.post("/v1/datasets", files={"file": (f"{name}.jsonl", data[name].read_bytes())})
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    r = client.post("/v1/models", files={"archive": ("tiny.tar.gz", tar_gz(tiny_bert), "application/gzip")})
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["source"] == {"source": "store", "prefix": f"uploads/models/{model['id']}/"}
    keys = bucket_keys(settings)
    assert f"uploads/datasets/{ids['train']}/train.jsonl" in keys
    assert f"uploads/models/{model['id']}/config.json" in keys

    body = {"teacher": {"model": model["id"]}, "task": "feature-extraction",
            "data": {"train": ids["train"], "eval": {"text": ids["eval_text"]}},
            "stages": [DISTILL, QUANTIZE], "evaluate": FAST_EVAL, "max_length": 32}
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]

    worker_settings, _, _ = run_on_another_machine(settings, tmp_path, job_id)
    # the worker read its inputs from its own cache of the store, and never the API's directory
    assert (worker_settings.data_dir / f"uploads/models/{model['id']}/config.json").is_file()
    assert (worker_settings.data_dir / f"uploads/datasets/{ids['train']}/train.jsonl").is_file()
    assert not (settings.data_dir / "jobs" / job_id).exists()

    arts = {a["name"]: a for a in client.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]}
    assert set(arts) == {"model.tar", "report.json", "manifest.json"}
    assert f"jobs/{job_id}/model.tar" in bucket_keys(settings)
    tar = arts["model.tar"]
    whole = client.get(tar["download_url"])
    assert whole.status_code == 200 and whole.headers["etag"] == f'"{tar["sha256"]}"'
    assert hashlib.sha256(whole.content).hexdigest() == tar["sha256"] and len(whole.content) == tar["size_bytes"]
    part = client.get(tar["download_url"], headers={"Range": "bytes=100-4195"})
    assert part.status_code == 206 and part.content == whole.content[100:4196]
    assert part.headers["content-range"] == f"bytes 100-4195/{tar['size_bytes']}"
    assert client.get(tar["download_url"], headers={"If-None-Match": whole.headers["etag"]}).status_code == 304

    # presigned: GET redirects to the object store, HEAD still answers here
    from app.api.main import create_app

    presigning = settings.model_copy(update={"s3_presign": True})
    with Server(create_app(presigning)) as srv, httpx.Client(base_url=srv.url, headers=client.headers) as c2:
        r = c2.get(tar["download_url"])
        assert r.status_code == 307, r.text
        assert hashlib.sha256(httpx.get(r.headers["location"]).content).hexdigest() == tar["sha256"]
        head = c2.head(tar["download_url"])
        assert head.status_code == 200 and head.headers["etag"] == f'"{tar["sha256"]}"'


def _dataset(settings: Settings, tmp_path: Path, age_days: float) -> DatasetRecord:
    ds_id = new_id("ds")
    key = f"uploads/datasets/{ds_id}/d.jsonl"
    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    get_store(settings).put_file(tmp_path / "d.jsonl", key)
    with session_scope(settings.sqlalchemy_url) as s:
        row = DatasetRecord(id=ds_id, owner="team-a", name="d", path=key, kind="text", rows=1, columns=["text"],
                            size_bytes=14, sha256="0" * 64, created_at=utcnow() - timedelta(days=age_days))
        s.add(row)
    return row


def _job(settings: Settings, status: str, age_days: float, datasets: list[DatasetRecord], tmp_path: Path) -> str:
    job_id, when = new_id("job"), utcnow() - timedelta(days=age_days)
    data = {"train": datasets[0].path, "eval": {}} if datasets else {}
    with session_scope(settings.sqlalchemy_url) as s:
        s.add(Job(id=job_id, owner="team-a", status=status, queue="cpu", created_at=when,
                  finished_at=when if status == "succeeded" else None,
                  request={"data": {"train": datasets[0].id}} if datasets else {}, recipe={"data": data}))
        s.flush()
        if status == "succeeded":
            (tmp_path / "m.tar").write_bytes(os.urandom(1000))
            get_store(settings).put_file(tmp_path / "m.tar", f"jobs/{job_id}/model.tar")
            get_store(settings).put_file(tmp_path / "m.tar", f"jobs/{job_id}/stages/00-distill/stage.json")
            s.add(Artifact(id=new_id("art"), job_id=job_id, owner="team-a", name="model.tar",
                           path=f"jobs/{job_id}/model.tar", media_type="application/x-tar", size_bytes=1000,
                           sha256="0" * 64))
    return job_id


def test_gc_removes_old_unneeded_things_and_keeps_what_a_live_job_needs(gc_settings, tmp_path):
    settings = gc_settings
    needed, unneeded, recent = (_dataset(settings, tmp_path, 40), _dataset(settings, tmp_path, 40),
                                _dataset(settings, tmp_path, 1))
    live = _job(settings, "queued", 40, [needed], tmp_path)
    old_done, new_done = _job(settings, "succeeded", 40, [], tmp_path), _job(settings, "succeeded", 1, [], tmp_path)
    orphan = f"uploads/datasets/{new_id('ds')}/x.jsonl"  # an upload interrupted before its row: no row names it
    (tmp_path / "x").write_text("x")
    get_store(settings).put_file(tmp_path / "x", orphan)
    before = bucket_keys(settings)

    # the CLI, as an operator runs it: a dry run prints and removes nothing
    env = {**os.environ, "DISTILLERY_DATA_DIR": str(settings.data_dir), "DATABASE_URL": settings.sqlalchemy_url,
           "DISTILLERY_STORE": settings.store, "DISTILLERY_S3_BUCKET": settings.s3_bucket,
           "DISTILLERY_S3_ENDPOINT_URL": settings.s3_endpoint_url, "DISTILLERY_RETENTION_DAYS": "30"}
    out = subprocess.run([sys.executable, "-m", "app.cli", "gc", "--dry-run"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"would remove dataset {unneeded.id}" in out.stdout and f"jobs/{old_done}/model.tar" in out.stdout
    assert needed.id not in out.stdout and recent.id not in out.stdout
    assert bucket_keys(settings) == before

    # the orphan is recent (just written): kept until it is older than the retention
    removed = run_gc(settings, older_than_days=30)
    assert removed.datasets == [unneeded.id] and removed.artifacts == [f"jobs/{old_done}/model.tar"]
    after = bucket_keys(settings)
    assert unneeded.path not in after and not [k for k in after if k.startswith(f"jobs/{old_done}/")]
    assert {needed.path, recent.path, f"jobs/{new_done}/model.tar", f"jobs/{new_done}/stages/00-distill/stage.json",
            orphan} <= set(after)
    with session_scope(settings.sqlalchemy_url) as s:
        assert s.get(DatasetRecord, needed.id) is not None and s.get(DatasetRecord, unneeded.id) is None
        assert s.get(Job, old_done) is not None and s.get(Job, live).status == "queued"  # history stays

    # with no retention at all, the live job's dataset still stays; the orphan and the rest go
    removed = run_gc(settings, older_than_days=1e-9)
    assert needed.path in bucket_keys(settings) and orphan in removed.objects
    assert recent.id in removed.datasets and needed.id not in removed.datasets
    assert get_store(settings).size(needed.path) == 14
    if settings.store == "local":  # the job directories went too, not only the files the rows named
        assert not (settings.jobs_dir / old_done).exists() and not (settings.jobs_dir / new_done).exists()
        assert not (settings.uploads_dir / "datasets" / unneeded.id).exists()


@pytest.fixture
def api_with_roots(tmp_path, s3_endpoint, tiny_bert) -> Iterator[tuple[Settings, httpx.Client, Path]]:
    """The API on the S3 store with a model root holding the tiny teacher (tmp_path/roots/tiny)."""
    import shutil

    redis.Redis.from_url(REDIS_URL).flushdb()
    roots = tmp_path / "roots"
    shutil.copytree(tiny_bert, roots / "tiny")
    settings = s3_settings(tmp_path, s3_endpoint, new_bucket(s3_endpoint), "api", model_roots=[roots])
    upgrade(settings.sqlalchemy_url)
    from app.api.main import create_app

    with Server(create_app(settings)) as srv, httpx.Client(
            base_url=srv.url, headers={"Authorization": f"Bearer {make_key(settings, 'team-a')}"}, timeout=60) as c:
        yield settings, c, roots


def test_a_teacher_registered_by_path_is_copied_to_the_store_and_runs_on_a_worker_without_that_path(
        api_with_roots, tmp_path):
    import shutil

    from app.intake import check_local_model

    settings, client, roots = api_with_roots
    local_digest = check_local_model(str(roots / "tiny"), [roots]).sha256  # what the local store records
    r = client.post("/v1/models", json={"name": "tiny", "source": {"source": "local", "path": str(roots / "tiny")}})
    assert r.status_code == 201, r.text
    model = r.json()
    prefix = f"uploads/models/{model['id']}/"
    assert model["source"] == {"source": "store", "prefix": prefix, "copied_from": str((roots / "tiny").resolve())}
    assert model["sha256"] == local_digest and model["size_bytes"] > 0
    assert f"{prefix}config.json" in bucket_keys(settings)
    shutil.rmtree(roots / "tiny")  # the path is gone: jobs read the registered copy, on every machine

    data = fixtures.make_data(tmp_path / "src")
    ids = {}
    for name in ("train", "eval_text"):
        r = client.post("/v1/datasets", files={"file": (f"{name}.jsonl", data[name].read_bytes())})
        ids[name] = r.json()["id"]
    body = {"teacher": {"model": model["id"]}, "task": "feature-extraction",
            "data": {"train": ids["train"], "eval": {"text": ids["eval_text"]}},
            "stages": [DISTILL], "evaluate": FAST_EVAL, "max_length": 32}
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]

    worker_settings, worker, job = run_on_another_machine(settings, tmp_path, job_id)  # and no model roots there
    assert (worker_settings.data_dir / prefix / "config.json").is_file()  # fetched from the store
    # finished: the worker's working copy (checkpoints, tars) is gone; the store holds them
    assert not (worker_settings.jobs_dir / job_id).exists()
    assert f"jobs/{job_id}/model.tar" in bucket_keys(settings)
    assert f"jobs/{job_id}/stages/00-distill/worker.json" in bucket_keys(settings)
    for row in job.report["stages"]:
        assert row["worker"]["host"] == socket.gethostname() and row["worker"]["pid"] == worker.proc.pid


def test_registering_a_path_with_the_s3_store_keeps_the_local_checks(api_with_roots, tmp_path):
    from app.api.main import create_app

    settings, client, roots = api_with_roots
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"s" * 10)
    (roots / "tiny" / "extra.bin").symlink_to(outside / "secret.bin")  # a link out of the roots
    r = client.post("/v1/models", json={"name": "x", "source": {"source": "local", "path": str(roots / "tiny")}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "source.path", r.text
    assert "outside the allowed roots" in r.json()["detail"]
    (roots / "tiny" / "extra.bin").unlink()
    small = settings.model_copy(update={"max_unpacked_bytes": 1000})  # copies are capped like unpacked uploads
    with Server(create_app(small)) as srv, httpx.Client(base_url=srv.url, headers=client.headers) as c:
        r = c.post("/v1/models", json={"name": "x", "source": {"source": "local", "path": str(roots / "tiny")}})
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "too_large", r.text
    assert bucket_keys(settings) == []
    assert not list((settings.data_dir / "uploads").glob("models/*"))
    assert not list((settings.data_dir / "uploads" / ".staging").iterdir())
