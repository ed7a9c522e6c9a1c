"""The sync client against the real service and worker: every call, a job run to success with its report,
downloads that resume and verify, and the typed errors."""

from __future__ import annotations

import hashlib
import io
import tarfile
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from distillery import Client
from distillery.client import (
    ChecksumMismatch,
    Conflict,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    ValidationError,
    WaitTimeout,
)
from distillery.client.resources import dir_manifest_sha256, pack_model_dir
from tests.client.conftest import MAX_UPLOAD, job_body


def test_a_job_runs_to_success_and_reports(client, done_job, stack):
    job = client.jobs.get(done_job.job_id)
    assert job.status == "succeeded" and job.finished and job.failure is None
    assert [s.kind for s in job.stages] == ["distill", "quantize"]
    assert all(s.status == "passed" and s.duration_s is not None for s in job.stages)
    assert job.request["teacher"] == {"model": done_job.model_id}
    report = client.jobs.report(job.id)
    assert report["status"] == "succeeded" and [s["kind"] for s in report["stages"]] == ["distill", "quantize"]
    assert "text" in report["stages"][0]["evaluation"]["tasks"]

    # the same key and body is the same job, not a second one
    again = client.jobs.create(done_job.body, idempotency_key=done_job.key)
    assert again.id == job.id


def test_events_pages_and_stream(client, done_job):
    paged = list(client.jobs.events(done_job.job_id))
    assert [e.seq for e in paged] == list(range(1, len(paged) + 1)) and len(paged) > 5
    assert any(e.stage == "0:distill" and e.total for e in paged)
    streamed = list(client.jobs.events(done_job.job_id, follow=True))  # a finished job: replayed, then `end`
    assert [e.seq for e in streamed] == [e.seq for e in paged]
    later = list(client.jobs.events(done_job.job_id, follow=True, after=3))
    assert [e.seq for e in later] == [e.seq for e in paged[3:]]
    assert [e.seq for e in client.jobs.events(done_job.job_id, after=len(paged) - 2)] == [len(paged) - 1, len(paged)]
    assert client.jobs.wait(done_job.job_id, timeout=10).status == "succeeded"
    assert client.jobs.wait(done_job.job_id, poll_interval=0.1).status == "succeeded"


def test_models_and_datasets(client, stack, done_job):
    uploaded = client.models.get(done_job.model_id)
    packed = pack_model_dir(stack.teacher)
    try:  # the directory was packed deterministically: the recorded sha256 is that of the same tar again
        assert uploaded.sha256 == hashlib.sha256(packed.read_bytes()).hexdigest()
        with tarfile.open(packed) as tf:
            assert "model/config.json" in tf.getnames() and {m.mtime for m in tf.getmembers()} == {0}
    finally:
        packed.unlink()
    local = client.models.register("by-path", path=stack.root / "models" / "tiny-bert")
    assert local.source == {"source": "local", "path": str(stack.root / "models" / "tiny-bert")}
    assert local.sha256 == dir_manifest_sha256(stack.root / "models" / "tiny-bert")
    hub = client.models.register("hub", hf="org/model", revision="a" * 40)
    assert hub.source == {"source": "hf", "id": "org/model", "revision": "a" * 40}
    with pytest.raises(ValueError):
        client.models.register("two", path="/x", bundled=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(stack.teacher, arcname="m")
    (stack.root / "m.tar.gz").write_bytes(buf.getvalue())
    archive = client.models.upload(stack.root / "m.tar.gz", name="from-archive")
    assert archive.name == "from-archive" and archive.source["source"] == "store"
    ids = [m.id for m in client.models.list()]
    assert {done_job.model_id, local.id, hub.id, archive.id} <= set(ids)
    assert ids[:2] == [m.id for m in client.models.list(limit=2)]

    ds = client.datasets.get(done_job.eval_id)
    assert ds.name == "held-out" and ds.kind == "text" and ds.rows == 48
    assert {done_job.train_id, done_job.eval_id} <= {d.id for d in client.datasets.list()}


def test_jobs_list_follows_the_cursor_and_filters(client, done_job):
    everything = list(client.jobs.list())
    one_by_one = list(client.jobs.list(page_size=1))
    assert [j.id for j in one_by_one] == [j.id for j in everything] and done_job.job_id in {j.id for j in everything}
    assert done_job.job_id in {j.id for j in client.jobs.list(status=["succeeded"], page_size=1)}
    assert done_job.job_id not in {j.id for j in client.jobs.list(status="queued,running")}
    future = datetime.now(UTC) + timedelta(days=1)
    assert list(client.jobs.list(created_after=future)) == []
    assert done_job.job_id in {j.id for j in client.jobs.list(created_before=future)}
    assert len(list(client.jobs.list(limit=1))) == 1


def test_cancel(client, stack, done_job):
    body = job_body(done_job.model_id, done_job.train_id, done_job.eval_id,
                    stages=[{**job_body("", "", "")["stages"][0], "epochs": 200}])
    job = client.jobs.create(body)
    with pytest.raises(WaitTimeout) as err:
        client.jobs.wait(job.id, timeout=0.5)
    assert err.value.job.id == job.id and not err.value.job.finished
    with pytest.raises(WaitTimeout):
        client.jobs.wait(job.id, timeout=0.3, poll_interval=0.1)
    with pytest.raises(WaitTimeout):
        list(client.jobs.events(job.id, follow=True, timeout=0.5))
    cancelled = client.jobs.cancel(job.id)
    assert cancelled.status in ("cancelling", "cancelled")
    assert client.jobs.wait(job.id, timeout=120).status == "cancelled"
    assert client.jobs.cancel(job.id).status == "cancelled"  # idempotent
    with pytest.raises(Conflict) as err:  # a job that succeeded cannot be cancelled
        client.jobs.cancel(done_job.job_id)
    assert err.value.status == 409 and err.value.code == "job_finished"


def _download_hooks() -> tuple[dict, list]:
    seen: list[tuple[str | None, str | None, int, str | None]] = []

    def on_response(response: httpx.Response) -> None:
        if "/download" in response.request.url.path:
            seen.append((response.request.headers.get("range"), response.request.headers.get("if-range"),
                         response.status_code, response.headers.get("content-length")))

    return {"response": [on_response]}, seen


def test_download_resumes_a_partial_file_and_verifies_it(stack, done_job, tmp_path):
    hooks, seen = _download_hooks()
    with stack.client(event_hooks=hooks) as c:
        arts = {a.name: a for a in c.artifacts.list(done_job.job_id)}
        assert set(arts) == {"model.tar", "report.json", "manifest.json"}
        tar = arts["model.tar"]
        whole = c.artifacts.download(tar, tmp_path / "full")  # a path that is not a directory: the file itself
        content = whole.read_bytes()
        assert hashlib.sha256(content).hexdigest() == tar.sha256 and seen[-1][:3] == (None, None, 200)

        # an interrupted download left the first part: only the rest is fetched, with Range and If-Range
        half = tar.size_bytes // 2
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "model.tar.part").write_bytes(content[:half])
        path = c.artifacts.download(tar, tmp_path / "out")
        assert path == tmp_path / "out" / "model.tar" and path.read_bytes() == content
        assert seen[-1] == (f"bytes={half}-", f'"{tar.sha256}"', 206, str(tar.size_bytes - half))
        assert not (tmp_path / "out" / "model.tar.part").exists()

        # already in place and verified: nothing is fetched
        n = len(seen)
        assert c.artifacts.download(tar, tmp_path / "out") == path and len(seen) == n

        # resume=False starts over
        (tmp_path / "out" / "model.tar").unlink()
        (tmp_path / "out" / "model.tar.part").write_bytes(content[:half])
        c.artifacts.download(tar, tmp_path / "out", resume=False)
        assert seen[-1][:3] == (None, None, 200) and path.read_bytes() == content

        # by id (name and sha256 from GET /v1/artifacts/{id}), and all of a job's artifacts into a directory
        assert c.artifacts.get(tar.id) == tar
        by_id = c.artifacts.download(arts["report.json"].id, f"{tmp_path}/by-id/")  # a new directory
        assert by_id == tmp_path / "by-id" / "report.json"
        paths = c.artifacts.download(done_job.job_id, tmp_path / "all")
        assert sorted(p.name for p in paths) == ["manifest.json", "model.tar", "report.json"]
        assert c.artifacts.download(c.jobs.get(done_job.job_id), tmp_path / "some", names=["report.json"]) == [
            tmp_path / "some" / "report.json"]


def test_a_corrupt_partial_file_fails_the_sha256_and_is_removed(stack, done_job, tmp_path):
    hooks, seen = _download_hooks()
    with stack.client(event_hooks=hooks) as c:
        tar = next(a for a in c.artifacts.list(done_job.job_id) if a.name == "model.tar")
        bad = tmp_path / "model.tar.part"
        bad.write_bytes(b"\0" * 1000)  # not the artifact's first 1000 bytes
        with pytest.raises(ChecksumMismatch) as err:
            c.artifacts.download(tar, tmp_path)
        assert seen[-1][:3] == ("bytes=1000-", f'"{tar.sha256}"', 206)
        assert err.value.expected == tar.sha256 and err.value.actual != tar.sha256
        assert not bad.exists() and not (tmp_path / "model.tar").exists()
        # the next try starts from scratch and succeeds
        assert hashlib.sha256(c.artifacts.download(tar, tmp_path).read_bytes()).hexdigest() == tar.sha256


def test_typed_errors(stack, client, done_job, tmp_path):
    with Client(stack.url, stack.other_key) as other:
        for call in (lambda: other.jobs.get(done_job.job_id), lambda: other.jobs.report(done_job.job_id),
                     lambda: other.artifacts.list(done_job.job_id), lambda: other.models.get(done_job.model_id),
                     lambda: other.datasets.get(done_job.train_id)):
            with pytest.raises(NotFound) as err:
                call()
            assert err.value.status == 404 and err.value.request_id and err.value.type.endswith(":not_found")
        with pytest.raises(NotFound):
            list(other.jobs.events(done_job.job_id, follow=True))

    with pytest.raises(ValidationError) as err:  # the 422's field list
        client.jobs.create(job_body(done_job.model_id, done_job.train_id, done_job.eval_id,
                                    stages=[{"kind": "distill", "student": {"layers": [0, 9]}, "epochz": 1}]))
    fields = {e["field"] for e in err.value.errors}
    assert "stages.0.epochz" in fields and err.value.status == 422 and "epochz" in err.value.detail

    with pytest.raises(ValidationError) as err:  # the dry run names the field
        client.jobs.create(job_body(done_job.model_id, done_job.train_id, done_job.eval_id,
                                    stages=[{"kind": "distill", "student": {"layers": [0, 9]}}]))
    assert err.value.errors[0]["field"].startswith("stages.0.student")

    with pytest.raises(ValidationError) as err:  # the same Idempotency-Key with another body
        client.jobs.create({**done_job.body, "seed": 7}, idempotency_key=done_job.key)
    assert err.value.code == "idempotency_key_reused"

    big = tmp_path / "big.jsonl"
    big.write_bytes(b'{"text": "x"}\n' * (MAX_UPLOAD // 14 + 10))
    with pytest.raises(PayloadTooLarge) as err:
        client.datasets.upload(big)
    assert err.value.status == 413

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"nope": 1}\n')
    with pytest.raises(ValidationError) as err:
        client.datasets.upload(bad)
    assert "bad.jsonl:2" in err.value.detail

    with Client(stack.url, "dk_wrong") as nobody, pytest.raises(Unauthorized) as err:
        nobody.jobs.get(done_job.job_id)
    assert err.value.status == 401

    with pytest.raises(Conflict) as err:  # the report of a job that has not finished
        job = client.jobs.create(job_body(done_job.model_id, done_job.train_id, done_job.eval_id,
                                          stages=[{**job_body("", "", "")["stages"][0], "epochs": 200}]))
        try:
            client.jobs.report(job.id)
        finally:
            client.jobs.cancel(job.id)
    assert err.value.code == "job_not_finished"
    assert client.jobs.wait(job.id, timeout=120).status == "cancelled"
