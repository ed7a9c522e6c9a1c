"""Upload caps and hostile uploads over real HTTP: the unpacked-bytes cap and the compression-ratio limit come
from the settings (DISTILLERY_MAX_UNPACKED_BYTES, DISTILLERY_MAX_COMPRESSION_RATIO), the disk keeps its reserve
(DISTILLERY_MIN_FREE_DISK_BYTES, 507), dataset rows are capped (DISTILLERY_MAX_DATASET_ROW_BYTES), and archive
names, JSON, numbers and multipart boundaries that once crashed the parsers are 4xx problems naming the fault."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import get_args

import httpx

from app.settings import Settings
from tests.app.assets_helpers import assert_problem, chunked_multipart, leftovers
from tests.app.conftest import Server, make_key

MODEL = {"config.json": b'{"model_type": "bert"}', "model.safetensors": b"\1" * 64}


class Zeros(io.RawIOBase):
    """n zero bytes, read in chunks: a bomb built without holding it in memory."""

    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.left)
        buf[:n] = b"\0" * n
        self.left -= n
        return n


def tar(entries: dict[str, bytes | int], mode: str = "w:gz", fmt: int = tarfile.PAX_FORMAT, level: int = 1) -> bytes:
    """An archive of the given entries: bytes are a file's content, an int that many zeros, -1 a folder."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=fmt, **({"compresslevel": level} if "gz" in mode else {})) as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            if data == -1:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
                continue
            info.size = data if isinstance(data, int) else len(data)
            tf.addfile(info, Zeros(data) if isinstance(data, int) else io.BytesIO(data))
    return buf.getvalue()


def post_archive(client: httpx.Client, blob: bytes, name: str = "model.tar.gz") -> httpx.Response:
    return client.post("/v1/models", files={"archive": (name, blob, "application/octet-stream")})


def post_dataset(client: httpx.Client, name: str, blob: bytes) -> httpx.Response:
    return client.post("/v1/datasets", files={"file": (name, blob, "application/octet-stream")})


@contextmanager
def service(settings: Settings, **update) -> Iterator[httpx.Client]:
    """The real API with some settings changed, on a port of its own."""
    from app.api.main import create_app

    changed = settings.model_copy(update=update)
    with Server(create_app(changed)) as srv, httpx.Client(
            base_url=srv.url, headers={"Authorization": f"Bearer {make_key(changed, 'team-caps')}"}, timeout=60) as c:
        yield c


def test_the_caps_match_the_docs_by_default():
    defaults = Settings()
    assert defaults.max_unpacked_bytes == defaults.max_upload_bytes == 20 * 1024**3  # README: 20 GB
    assert (defaults.max_compression_ratio, defaults.min_free_disk_bytes) == (100, 1024**3)
    assert defaults.max_dataset_row_bytes == 1024**2


def test_an_archive_is_held_to_the_ratio_and_the_unpacked_cap(client, settings):
    bomb = tar({**MODEL, "zeros.bin": 3 * 1024**2})  # 3 MiB of zeros in a few kilobytes
    assert len(bomb) < 30_000
    body = assert_problem(post_archive(client, bomb), 422)
    assert "more than 100 times its size" in body["detail"] and body["errors"][0]["field"] == "archive", body
    assert leftovers(settings.uploads_dir) == []
    with service(settings, max_unpacked_bytes=1024**2, max_compression_ratio=1e6) as capped:
        plain = tar({**MODEL, "model.safetensors": os.urandom(1536 * 1024)}, mode="w")
        body = assert_problem(post_archive(capped, plain, "model.tar"), 422)
        assert "unpacks to more than 1048576 bytes" in body["detail"], body
        assert post_archive(capped, tar(MODEL)).status_code == 201
    assert leftovers(settings.uploads_dir / ".staging") == []


def test_uploads_and_unpacking_keep_the_free_disk_reserve(settings):
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(settings.data_dir).free
    with service(settings, min_free_disk_bytes=free + 1024**4) as full:
        for r in (post_dataset(full, "a.jsonl", b'{"text": "hello"}\n'), post_archive(full, tar(MODEL)),
                  full.post("/v1/datasets", content=chunked_multipart("file", "b.jsonl", 256 * 1024)[0],
                            headers=chunked_multipart("file", "b.jsonl", 0)[1])):
            body = assert_problem(r, 507)
            assert body["type"].endswith(":insufficient_storage") and r.headers["retry-after"] == "60", body
            assert str(settings.data_dir) not in body["detail"]
    # The archive passes the upload's check (a few kilobytes) but its unpacking would cross the reserve.
    bomb = tar({**MODEL, "zeros.bin": 300 * 1024**2}, level=9)
    with service(settings, min_free_disk_bytes=shutil.disk_usage(settings.data_dir).free - 100 * 1024**2,
                 max_compression_ratio=1e9) as tight:
        body = assert_problem(post_archive(tight, bomb), 507)
        assert "try again later" in body["detail"]
    assert leftovers(settings.uploads_dir) == []


def test_archive_names_that_crashed_the_unpacker_are_422(client, settings):
    deep = b"[" * 200_000 + b"]" * 200_000
    cases = {
        "appears more than once": tar({**MODEL, "a/x.txt": b"1", "a//x.txt": b"2"}),
        "is both a file and a folder": tar({**MODEL, "sub": b"file", "sub/inner.txt": b"x"}),
        "'./' is a file without a name": tar({**MODEL, "./": b"x"}),
        "a part longer than 255": tar({**MODEL, "n" * 300: b"x"}, fmt=tarfile.GNU_FORMAT),
        "a name longer than 1024 bytes": tar({**MODEL, "/".join(["d" * 250] * 6): b"x"}),
        "config.json is not valid JSON": tar({**MODEL, "config.json": deep}, mode="w"),
    }
    for reason, blob in cases.items():
        body = assert_problem(post_archive(client, blob), 422)
        assert reason in body["detail"] and body["errors"][0]["field"] == "archive", (reason, body)
        assert str(settings.data_dir) not in body["detail"]
    # `tar -C model .` writes the root as "./": that is a folder, and fine.
    assert post_archive(client, tar({"./": -1, **{f"./{k}": v for k, v in MODEL.items()}})).status_code == 201
    assert leftovers(settings.uploads_dir / ".staging") == []


def test_dataset_parsers_refuse_by_line(client, settings):
    cases = {
        ("deep.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n"): "deep.jsonl:1: the JSON is nested too deeply",
        ("digits.jsonl", b'{"text": "a", "label": ' + b"9" * 5000 + b"}\n"): "digits.jsonl:1: not usable JSON",
        ("digits.csv", b"text,label\na," + b"9" * 5000 + b"\n"): "digits.csv:2: label",
        ("long.jsonl", b'{"text": "a"}\n{"text": "' + b"x" * (1536 * 1024) + b'"}\n'):
            "long.jsonl:2: the line is longer than 1048576 bytes",
    }
    for (name, blob), detail in cases.items():
        body = assert_problem(post_dataset(client, name, blob), 422)
        assert body["detail"].startswith(detail) and body["errors"][0]["field"] == "file", body
    with service(settings, max_dataset_row_bytes=64) as small_rows:
        body = assert_problem(post_dataset(small_rows, "rows.jsonl", json.dumps({"text": "y" * 80}).encode()), 422)
        assert body["detail"] == "rows.jsonl:1: the line is longer than 64 bytes; rows are at most 64 bytes", body
    assert leftovers(settings.uploads_dir) == []


def multipart(boundary: str, headers: str = "") -> tuple[bytes, dict[str, str]]:
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n{headers}\r\n"
            f'{{"text": "hello"}}\n\r\n--{boundary}--\r\n').encode()
    return body, {"content-type": f'multipart/form-data; boundary="{boundary}"'}


def test_multipart_boundaries_and_part_headers_are_bounded(client):
    for boundary in ("b" * 300, "b" * 71, "bad\x7fchar", "ends with space "):
        body, headers = multipart(boundary)
        problem = assert_problem(client.post("/v1/datasets", content=body, headers=headers), 400)
        assert "boundary" in problem["detail"], problem
    body, headers = multipart("b" * 70)
    assert client.post("/v1/datasets", content=body, headers=headers).status_code == 201
    body, headers = multipart("ok", headers="X-Padding: " + "p" * 20_000 + "\r\n")
    problem = assert_problem(client.post("/v1/datasets", content=body, headers=headers), 400)
    assert "header size" in problem["detail"], problem  # python-multipart's own bound on part headers


def test_every_dataset_kind_the_engine_reads_uploads(client):
    """Retrieval and multiple-choice sets were stored, then answered with a 500 (the response's kind was short)."""
    from app.api.schemas_assets import DatasetOut
    from worker.engine.data import DatasetKind

    assert set(get_args(DatasetOut.model_fields["kind"].annotation)) == set(get_args(DatasetKind))
    for name, blob, kind in [("r.jsonl", b'{"query": "q", "positive": "p"}\n', "retrieval"),
                             ("mc.jsonl", b'{"context": "c", "choices": ["a", "b"], "label": 1}\n', "multiple-choice")]:
        r = post_dataset(client, name, blob)
        assert r.status_code == 201 and r.json()["kind"] == kind, r.text
