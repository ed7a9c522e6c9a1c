"""Artifacts over real HTTP: listing a job's files, and downloads with ETag, Range, If-Range,
If-None-Match and HEAD. The rows and files are made here as the worker would make them."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import httpx
import pytest

from app.api.ranges import byte_range, content_disposition
from app.db.base import new_id, session_scope
from app.db.models import Artifact, Job
from app.errors import RangeNotSatisfiable
from tests.app.assets_helpers import assert_problem, walk_pages

SIZE = 3 * 1024 * 1024 + 17  # several read chunks, and not a round number


@dataclass
class Made:
    job_id: str
    artifact_id: str
    content: bytes
    sha256: str


def make_job(settings, owner: str = "team-a", files: dict[str, bytes] | None = None) -> tuple[str, list[str]]:
    job_id = new_id("job")
    ids = []
    with session_scope(settings.sqlalchemy_url) as session:
        session.add(Job(id=job_id, owner=owner, status="succeeded", request={}, recipe={}))
        session.flush()
        for name, content in (files or {}).items():
            rel = f"jobs/{job_id}/{name}"
            (settings.data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (settings.data_dir / rel).write_bytes(content)
            ids.append(new_id("art"))
            session.add(Artifact(id=ids[-1], job_id=job_id, owner=owner, name=name, path=rel,
                                 media_type="application/x-tar", size_bytes=len(content),
                                 sha256=hashlib.sha256(content).hexdigest()))
    return job_id, ids


@pytest.fixture
def made(settings) -> Made:
    content = os.urandom(SIZE)
    job_id, ids = make_job(settings, files={"model.tar": content})
    return Made(job_id, ids[0], content, hashlib.sha256(content).hexdigest())


def url(made: Made) -> str:
    return f"/v1/artifacts/{made.artifact_id}/download"


def test_list_a_jobs_artifacts(client, other_client, settings, made):
    body = client.get(f"/v1/jobs/{made.job_id}/artifacts").json()
    assert body["has_more"] is False
    [item] = body["data"]
    assert item["id"] == made.artifact_id and item["name"] == "model.tar"
    assert item["size_bytes"] == SIZE and item["sha256"] == made.sha256
    assert item["download_url"] == url(made) and item["media_type"] == "application/x-tar"
    job_id, ids = make_job(settings, files={f"f{i}.bin": bytes([i]) for i in range(5)})
    assert walk_pages(client, f"/v1/jobs/{job_id}/artifacts", limit=2) == (sorted(ids), [True, True, False])
    assert_problem(other_client.get(f"/v1/jobs/{made.job_id}/artifacts"), 404)
    assert_problem(client.get("/v1/jobs/job_nonexistent/artifacts"), 404)
    empty_job, _ = make_job(settings)
    assert client.get(f"/v1/jobs/{empty_job}/artifacts").json()["data"] == []


def test_full_download(client, made):
    with client.stream("GET", url(made)) as r:
        assert r.status_code == 200
        digest = hashlib.sha256()
        for chunk in r.iter_bytes():
            digest.update(chunk)
    assert r.headers["etag"] == f'"{digest.hexdigest()}"' == f'"{made.sha256}"'
    assert r.headers["accept-ranges"] == "bytes" and r.headers["content-length"] == str(SIZE)
    assert r.headers["content-disposition"] == 'attachment; filename="model.tar"'
    assert r.headers["content-type"] == "application/x-tar"
    head = client.head(url(made))
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(SIZE) and head.headers["etag"] == r.headers["etag"]


def test_ranges(client, made):
    data, etag = made.content, f'"{made.sha256}"'
    cases = [("bytes=0-99", 0, 100), ("bytes=1000-", 1000, SIZE), ("bytes=-500", SIZE - 500, SIZE),
             (f"bytes=10-{SIZE + 50}", 10, SIZE), (f"bytes=-{SIZE * 2}", 0, SIZE),
             (f"bytes={SIZE - 1}-", SIZE - 1, SIZE)]
    for header, start, end in cases:
        r = client.get(url(made), headers={"Range": header})
        assert r.status_code == 206, header
        assert r.content == data[start:end], header
        assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{SIZE}"
        assert r.headers["content-length"] == str(end - start) and r.headers["etag"] == etag
    head = client.head(url(made), headers={"Range": "bytes=0-9"})
    assert head.status_code == 206 and head.headers["content-length"] == "10" and head.content == b""
    for unsatisfiable in (f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}", "bytes=-0"):
        r = client.get(url(made), headers={"Range": unsatisfiable})
        assert_problem(r, 416)
        assert r.headers["content-range"] == f"bytes */{SIZE}"
    # Several ranges, another unit, or a malformed header: ignored, the whole body with 200.
    for ignored in ("bytes=0-1,5-6", "items=0-1", "bytes=9-3", "bytes=abc"):
        r = client.get(url(made), headers={"Range": ignored})
        assert r.status_code == 200 and len(r.content) == SIZE and "content-range" not in r.headers, ignored


def test_conditional_requests(client, made):
    etag = f'"{made.sha256}"'
    resumed = client.get(url(made), headers={"Range": "bytes=100-199", "If-Range": etag})
    assert resumed.status_code == 206 and resumed.content == made.content[100:200]
    for stale in ('"' + "0" * 64 + '"', f"W/{etag}", "Wed, 21 Oct 2015 07:28:00 GMT"):
        r = client.get(url(made), headers={"Range": "bytes=100-199", "If-Range": stale})
        assert r.status_code == 200 and r.content == made.content, stale
    for matching in (etag, f'"other", W/{etag}', "*"):
        r = client.get(url(made), headers={"If-None-Match": matching})
        assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag, matching
    r = client.get(url(made), headers={"If-None-Match": '"other"'})
    assert r.status_code == 200 and len(r.content) == SIZE


def test_download_ownership_and_missing_content(client, other_client, server, settings, made):
    assert_problem(other_client.get(url(made)), 404)
    assert other_client.head(url(made)).status_code == 404
    assert_problem(client.get("/v1/artifacts/art_nonexistent/download"), 404)
    assert_problem(httpx.get(f"{server.url}{url(made)}"), 401)
    (settings.data_dir / "jobs" / made.job_id / "model.tar").unlink()  # a row that outlived its file
    assert_problem(client.get(url(made)), 404)
    with session_scope(settings.sqlalchemy_url) as session:  # a row pointing outside the store
        session.get(Artifact, made.artifact_id).path = "../../etc/passwd"
    assert_problem(client.get(url(made)), 404)


def test_byte_range_and_disposition_rules():
    assert byte_range("bytes=0-0", 1) == (0, 1)
    assert byte_range("BYTES = 2 - 4", 10) == (2, 5)
    assert byte_range("bytes=" + "9" * 30 + "-", 10) is None  # absurd numbers are ignored, not parsed
    for header in ("bytes=0-", "bytes=-1"):
        with pytest.raises(RangeNotSatisfiable):
            byte_range(header, 0)
    assert content_disposition("model.tar") == 'attachment; filename="model.tar"'
    assert content_disposition('we"ird name.tar') == (
        "attachment; filename=\"we_ird name.tar\"; filename*=UTF-8''we%22ird%20name.tar")
    assert content_disposition("..\\..\\x.tar") == 'attachment; filename="x.tar"'  # no directory parts
    assert content_disposition("modèle.tar") == (
        "attachment; filename=\"mod_le.tar\"; filename*=UTF-8''mod%C3%A8le.tar")


def test_one_artifact_and_what_its_download_sends_agree(client, other_client, made):
    meta = client.get(f"/v1/artifacts/{made.artifact_id}")
    assert meta.status_code == 200, meta.text
    body = meta.json()
    assert (body["id"], body["sha256"], body["size_bytes"]) == (made.artifact_id, made.sha256, SIZE)
    head = client.head(body["download_url"])
    assert head.headers["etag"] == f'"{body["sha256"]}"' and int(head.headers["content-length"]) == SIZE
    assert_problem(other_client.get(f"/v1/artifacts/{made.artifact_id}"), 404)
    assert_problem(client.get("/v1/artifacts/art_missing"), 404)
