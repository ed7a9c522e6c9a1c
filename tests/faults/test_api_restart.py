"""The API process killed (SIGKILL) in the middle of an upload and of a download, then started again on the
same data directory and database: the half-received upload is never visible (no row, no file under
uploads/, gc clears its staging area), and the interrupted download resumes with Range + If-Range to the
exact bytes. Real `distillery api` processes over real HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from app.db.migrate import upgrade
from app.settings import Settings
from tests.app.conftest import free_port, make_key
from tests.app.test_artifacts import make_job

ROOT = Path(__file__).resolve().parents[2]
LINE = json.dumps({"text": "a sentence that will never be stored"}) + "\n"


class ApiProcess:
    def __init__(self, settings: Settings) -> None:
        self.settings, self.port = settings, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
        env.update({"DISTILLERY_DATA_DIR": str(self.settings.data_dir), "DATABASE_URL": self.settings.sqlalchemy_url,
                    "REDIS_URL": self.settings.redis_url, "DISTILLERY_MAX_UPLOAD_BYTES": str(64 << 20)})
        self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", "api", "--port", str(self.port)], cwd=ROOT,
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None and time.time() < deadline, "distillery api did not start"
            time.sleep(0.2)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)  # no shutdown handler runs: the hardest way to stop
        self.proc.wait(10)


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'api.db'}",
                 redis_url="redis://127.0.0.1:6379/13")
    upgrade(s.sqlalchemy_url)
    return s


@pytest.fixture
def api(settings) -> Iterator[ApiProcess]:
    proc = ApiProcess(settings)
    proc.start()
    yield proc
    if proc.proc and proc.proc.poll() is None:
        proc.proc.terminate()
        proc.proc.wait(20)


def _send_half_an_upload(api: ApiProcess, key: str, total: int) -> socket.socket:
    """Headers announcing `total` bytes, then about half of them; the connection stays open."""
    boundary = "restartb0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    body_len = len(head) + total + len(tail)
    sock = socket.create_connection(("127.0.0.1", api.port))
    sock.sendall((f"POST /v1/datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
                  f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {body_len}\r\n\r\n"
                  ).encode() + head)
    chunk = (LINE * ((1 << 20) // len(LINE) + 1)).encode()[: 1 << 20]
    for _ in range(total // 2 // len(chunk)):
        sock.sendall(chunk)
    return sock


def _staged_bytes(settings: Settings) -> int:
    staging = settings.data_dir / "uploads" / ".staging"
    return sum(p.stat().st_size for p in staging.rglob("*") if p.is_file()) if staging.exists() else 0


def test_an_upload_cut_by_an_api_kill_is_never_visible(settings, api):
    key = make_key(settings, "team-a")
    sock = _send_half_an_upload(api, key, total=16 << 20)
    deadline = time.time() + 30
    while _staged_bytes(settings) < 4 << 20:  # the API is mid-write when it dies
        assert time.time() < deadline, "the upload never reached the staging area"
        time.sleep(0.05)
    api.kill()
    sock.close()

    api.start()
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{api.url}/v1/datasets", headers=headers).json()["data"] == []
    datasets_dir = settings.data_dir / "uploads" / "datasets"
    assert not datasets_dir.exists() or not any(datasets_dir.iterdir())
    assert _staged_bytes(settings) > 0  # the partial bytes exist only under .staging, which nothing serves

    # a complete upload after the restart works, and gc removes the dead upload's staging once it is stale
    ok = httpx.post(f"{api.url}/v1/datasets", headers=headers,
                    files={"file": ("small.jsonl", LINE.encode() * 3, "application/octet-stream")})
    assert ok.status_code == 201, ok.text
    from app.gc import STAGING_STALE, run_gc

    stale = time.time() - STAGING_STALE.total_seconds() - 60
    for path in (settings.data_dir / "uploads" / ".staging").rglob("*"):
        os.utime(path, (stale, stale))
    removed = run_gc(settings)
    assert _staged_bytes(settings) == 0 and len(removed.staging) == 1, removed
    assert httpx.get(f"{api.url}/v1/datasets/{ok.json()['id']}", headers=headers).status_code == 200


def test_a_download_cut_by_an_api_kill_resumes_with_range(settings, api):
    key = make_key(settings, "team-a")
    content = os.urandom(24 << 20)
    _, (artifact_id,) = make_job(settings, files={"model.tar": content})
    url, headers = f"{api.url}/v1/artifacts/{artifact_id}/download", {"Authorization": f"Bearer {key}"}

    received = bytearray()
    etag = ""
    # the connection dies under the reader
    with pytest.raises(httpx.HTTPError), httpx.stream("GET", url, headers=headers, timeout=30) as response:
        etag = response.headers["etag"]
        for chunk in response.iter_bytes(256 * 1024):
            received += chunk
            if len(received) >= 2 << 20 and api.proc.poll() is None:
                api.kill()
    assert 0 < len(received) < len(content)

    api.start()
    rest = httpx.get(url, headers={**headers, "Range": f"bytes={len(received)}-", "If-Range": etag}, timeout=60)
    assert rest.status_code == 206, rest.text
    assert rest.headers["content-range"] == f"bytes {len(received)}-{len(content) - 1}/{len(content)}"
    whole = bytes(received) + rest.content
    assert hashlib.sha256(whole).hexdigest() == etag.strip('"') == hashlib.sha256(content).hexdigest()


def test_staging_of_live_uploads_survives_gc(settings):
    """gc leaves a staging directory alone while it is fresh: an upload may be arriving into it."""
    from app.gc import STAGING_STALE, run_gc

    live = settings.data_dir / "uploads" / ".staging" / "ds_live"
    live.mkdir(parents=True)
    (live / "part.jsonl").write_bytes(b"x" * 10)
    assert run_gc(settings).staging == [] and live.exists()
    assert timedelta(hours=1) <= STAGING_STALE
