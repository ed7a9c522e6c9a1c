"""Helpers for the models, datasets and artifacts tests."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx

PROBLEM = "application/problem+json"
# The smallest report the engine's typed model accepts (worker/engine/report.py): a finished run with no stages.
MINIMAL_REPORT = {"report_version": 1, "task": "feature-extraction", "device": "cpu", "recipe_sha256": "ab" * 32,
                  "versions": {"torch": "2.13.0"}, "stages": [], "status": "succeeded", "shortfalls": [],
                  "final": {"stage_index": None, "artifact": None}, "duration_s": 1.5}


def assert_problem(response: httpx.Response, status: int) -> dict:
    """Every error is RFC 9457 problem+json carrying the request id."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["request_id"] and body["request_id"] == response.headers["x-request-id"]
    return body


def tar_gz(src: Path, top: str = "model") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(src, arcname=top)
    return buf.getvalue()


def tar_with_entry(name: str, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def chunked_multipart(field: str, filename: str, size: int, boundary: str = "b0undary") -> tuple[Iterator[bytes],
                                                                                                  dict[str, str]]:
    """A multipart body of `size` zero bytes sent with chunked encoding (no Content-Length), so that only
    the server's running count can stop it."""

    def gen() -> Iterator[bytes]:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        sent = 0
        while sent < size:
            n = min(256 * 1024, size - sent)
            sent += n
            yield b"\0" * n
        yield f"\r\n--{boundary}--\r\n".encode()

    return gen(), {"content-type": f"multipart/form-data; boundary={boundary}"}


def leftovers(uploads: Path) -> list[str]:
    """Everything under uploads/ that is a file or a non-empty staging entry (what a failure must not leave)."""
    if not uploads.exists():
        return []
    return sorted(str(p.relative_to(uploads)) for p in uploads.rglob("*") if p.is_file())


def walk_pages(client: httpx.Client, url: str, limit: int) -> tuple[list[str], list[bool]]:
    ids: list[str] = []
    flags: list[bool] = []
    params: dict = {"limit": limit}
    while True:
        page = client.get(url, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        ids += [item["id"] for item in body["data"]]
        flags.append(body["has_more"])
        if not body["has_more"]:
            assert body["next_cursor"] is None
            return ids, flags
        params = {"limit": limit, "after": body["next_cursor"]}
