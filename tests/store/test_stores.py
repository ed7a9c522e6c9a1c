"""The two stores behind one interface: the local directory and S3 (against moto's real S3-protocol server)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import boto3
import httpx
import pytest

from app.settings import Settings
from app.storage import LocalStore, StoreError
from app.store import S3Store, get_store, materialise, upload_dir
from tests.s3 import new_bucket

MB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, s3_endpoint):
    if request.param == "local":
        return LocalStore(tmp_path / "root")
    return S3Store(new_bucket(s3_endpoint), prefix="p/", endpoint_url=s3_endpoint)


def test_put_get_size_list_delete(store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello store" * 100)
    store.put_file(src, "uploads/datasets/ds_1/a.jsonl")
    store.put_file(src, "uploads/datasets/ds_2/b.jsonl")
    assert store.size("uploads/datasets/ds_1/a.jsonl") == 1100
    assert store.size("uploads/datasets/ds_1/missing") is None
    listed = list(store.list("uploads/datasets/"))
    assert [k for k, _, _ in listed] == ["uploads/datasets/ds_1/a.jsonl", "uploads/datasets/ds_2/b.jsonl"]
    assert all(size == 1100 and when.tzinfo is not None for _, size, when in listed)
    got = store.get_file("uploads/datasets/ds_1/a.jsonl", tmp_path / "out" / "a.jsonl")
    assert got.read_bytes() == src.read_bytes() and not list((tmp_path / "out").glob(".*part"))
    with pytest.raises(FileNotFoundError):
        store.get_file("uploads/nothing", tmp_path / "out" / "nothing")
    store.delete("uploads/datasets/ds_1/a.jsonl")
    assert store.size("uploads/datasets/ds_1/a.jsonl") is None
    assert [k for k, _, _ in store.list("uploads/")] == ["uploads/datasets/ds_2/b.jsonl"]
    for bad in ("../x", "/etc/passwd"):
        with pytest.raises(StoreError):
            store.size(bad) if isinstance(store, S3Store) else store.path(bad)


def test_open_range_exact_bytes(store, tmp_path):
    content = os.urandom(3 * MB + 17)  # several chunks, not a round number
    (tmp_path / "f").write_bytes(content)
    store.put_file(tmp_path / "f", "jobs/job_1/model.tar")
    for start, end in [(0, len(content)), (0, 1), (MB - 3, 2 * MB + 5), (len(content) - 10, len(content)), (5, 5)]:
        assert b"".join(store.open_range("jobs/job_1/model.tar", start, end)) == content[start:end], (start, end)


def test_materialise_files_and_directories(store, tmp_path):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "sub" / "w.bin").write_bytes(b"w" * 1000)
    upload_dir(store, model, "uploads/models/mdl_1/")
    cache = tmp_path / "worker-data"
    local = materialise(store, cache, "uploads/models/mdl_1", is_dir=True)
    assert (local / "sub" / "w.bin").read_bytes() == b"w" * 1000 and (local / "config.json").is_file()
    if isinstance(store, S3Store):  # the local store is read in place: the engine reports a missing path
        with pytest.raises(FileNotFoundError):
            materialise(store, cache, "uploads/models/mdl_none", is_dir=True)


def test_multipart_upload_of_a_large_file(s3_endpoint, tmp_path):
    bucket = new_bucket(s3_endpoint)
    settings = Settings(data_dir=tmp_path, store="s3", s3_bucket=bucket, s3_endpoint_url=s3_endpoint,
                        s3_multipart_threshold=5 * MB, s3_part_size=8 * MB)
    store = get_store(settings)
    size = 24 * MB + 123
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(size))
    t0 = time.perf_counter()
    store.put_file(src, "jobs/job_big/model.tar")
    up = time.perf_counter() - t0
    head = boto3.client("s3", endpoint_url=s3_endpoint).head_object(Bucket=bucket, Key="jobs/job_big/model.tar")
    assert head["ContentLength"] == size
    # a multipart upload (past the 5 MiB threshold) of 8 MiB parts, its own setting: 4 parts
    assert head["ETag"].strip('"').endswith("-4"), head["ETag"]
    t0 = time.perf_counter()
    digest = hashlib.sha256()
    for chunk in store.open_range("jobs/job_big/model.tar", 0, size):
        digest.update(chunk)
    down = time.perf_counter() - t0
    assert digest.hexdigest() == hashlib.sha256(src.read_bytes()).hexdigest()
    print(f"multipart upload of {size / MB:.0f} MB: {size / MB / up:.0f} MB/s; streamed back at "
          f"{size / MB / down:.0f} MB/s")


def test_presigned_url_works_with_a_plain_get(s3_endpoint, tmp_path):
    store = S3Store(new_bucket(s3_endpoint), endpoint_url=s3_endpoint, presign=True)
    (tmp_path / "r.json").write_bytes(b'{"ok": true}')
    store.put_file(tmp_path / "r.json", "jobs/job_1/report.json")
    url = store.presign("jobs/job_1/report.json", "report.json")
    assert url is not None and "Signature" in url
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == b'{"ok": true}'
    assert 'filename="report.json"' in r.headers["content-disposition"]
    r = httpx.get(url, headers={"Range": "bytes=1-4"})
    assert r.status_code == 206 and r.content == b'"ok"'
    assert S3Store(store.bucket, endpoint_url=s3_endpoint).presign("jobs/job_1/report.json", "x") is None
    assert LocalStore(Path(tmp_path)).presign("x", "x") is None


def _expires_in(url: str) -> float:
    """Seconds until a presigned URL lapses (query signing: Expires is a Unix time; SigV4: X-Amz-Expires)."""
    from urllib.parse import parse_qs, urlsplit

    query = parse_qs(urlsplit(url).query)
    if "X-Amz-Expires" in query:
        return float(query["X-Amz-Expires"][0])
    return float(query["Expires"][0]) - time.time()


def test_presigned_urls_use_the_public_endpoint_and_the_expiry_setting(s3_endpoint, tmp_path):
    bucket = new_bucket(s3_endpoint)
    # inside compose the service talks to http://minio:9000; clients reach the store at another address
    public = s3_endpoint.replace("127.0.0.1", "localhost")
    settings = Settings(data_dir=tmp_path, store="s3", s3_bucket=bucket, s3_endpoint_url=s3_endpoint,
                        s3_presign=True, s3_public_endpoint_url=public, s3_presign_expiry_seconds=120)
    store = get_store(settings)
    (tmp_path / "r.json").write_bytes(b'{"ok": true}')
    store.put_file(tmp_path / "r.json", "jobs/job_1/report.json")  # through the internal endpoint
    url = store.presign("jobs/job_1/report.json", "report.json")
    assert url.startswith(f"{public}/{bucket}/jobs/job_1/report.json?"), url
    assert 100 < _expires_in(url) <= 121
    r = httpx.get(url)  # signed for the host the client uses, so the server accepts it
    assert r.status_code == 200 and r.content == b'{"ok": true}'
    # unset, the URL is signed for the endpoint the service uses, for an hour
    plain = get_store(settings.model_copy(update={"s3_public_endpoint_url": None,
                                                  "s3_presign_expiry_seconds": 3600}))
    url = plain.presign("jobs/job_1/report.json", "report.json")
    assert url.startswith(f"{s3_endpoint}/") and 3500 < _expires_in(url) <= 3601
