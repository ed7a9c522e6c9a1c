"""Retries, Retry-After, Last-Event-ID resumption and resumed downloads, against a scripted loopback server
(real HTTP over real sockets) that answers 503, 429 or drops the connection on demand."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time

import httpx
import pytest

from distillery import AsyncClient, Client
from distillery.client import Artifact, ConnectionFailed, RateLimited, ServiceUnavailable
from distillery.client.transport import RetryPolicy, retry_after
from tests.client.fake_server import FakeServer, Reply

JOB = {"id": "job_1", "status": "queued", "queue": "cpu", "created_at": "2025-01-01T00:00:00Z", "attempts": 0,
       "stages": [], "request": {}, "links": {}}
UNAVAILABLE = Reply(503, json.dumps({"type": "urn:distillery:problem:database_unavailable", "title": "Service "
                                     "unavailable", "status": 503, "detail": "the database cannot be reached",
                                     "instance": "/v1/jobs", "request_id": "r1"}).encode(),
                    {"Retry-After": "0", "Content-Type": "application/problem+json"})
OK = Reply(200, json.dumps(JOB).encode())


def fast(url: str, **kw) -> Client:
    return Client(url, "dk_test", backoff=0.01, **kw)


def test_a_get_is_retried_on_503_and_a_dropped_connection():
    with FakeServer([UNAVAILABLE, Reply(drop=True), OK]) as srv, fast(srv.url) as c:
        assert c.jobs.get("job_1").id == "job_1"
    assert [s.path for s in srv.seen] == ["/v1/jobs/job_1"] * 3
    assert srv.seen[0].headers["authorization"] == "Bearer dk_test"


def test_create_retries_with_the_same_idempotency_key():
    with FakeServer([UNAVAILABLE, Reply(drop=True), Reply(201, json.dumps(JOB).encode())]) as srv, \
            fast(srv.url) as c:
        assert c.jobs.create({"task": "feature-extraction"}).id == "job_1"
    keys = {s.headers["idempotency-key"] for s in srv.seen}
    assert len(srv.seen) == 3 and len(keys) == 1 and len(keys.pop()) == 36  # one uuid for every attempt
    assert {s.body for s in srv.seen} == {b'{"task":"feature-extraction"}'}


def test_retry_after_is_honoured():
    limited = Reply(429, b'{"title": "Too many requests", "status": 429, "detail": "slow down"}',
                    {"Retry-After": "1"})
    with FakeServer([limited, OK]) as srv, fast(srv.url) as c:
        start = time.monotonic()
        c.jobs.get("job_1")
        assert time.monotonic() - start >= 0.95
    assert len(srv.seen) == 2
    now = Reply(429, limited.body, {"Retry-After": "0"})
    with FakeServer([now, now]) as srv, fast(srv.url, retries=1) as c, pytest.raises(RateLimited) as err:
        c.jobs.get("job_1")
    assert err.value.status == 429 and err.value.detail == "slow down" and len(srv.seen) == 2
    past = httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert retry_after(past) == 0.0 and retry_after(httpx.Response(503)) is None
    assert RetryPolicy(backoff=1, max_backoff=4).delay(10) <= 4


def test_uploads_and_registrations_are_not_retried(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    with FakeServer([UNAVAILABLE, UNAVAILABLE]) as srv, fast(srv.url) as c:
        with pytest.raises(ServiceUnavailable):
            c.datasets.upload(tmp_path / "d.jsonl")
        with pytest.raises(ServiceUnavailable):
            c.models.register("m", bundled=True)
    assert [s.method for s in srv.seen] == ["POST", "POST"]


def test_retries_run_out_with_the_typed_error():
    with FakeServer([UNAVAILABLE] * 3) as srv, fast(srv.url, retries=2) as c, \
            pytest.raises(ServiceUnavailable) as err:
        c.jobs.get("job_1")
    assert len(srv.seen) == 3
    assert err.value.status == 503 and err.value.request_id == "r1" and err.value.code == "database_unavailable"
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with fast(f"http://127.0.0.1:{port}", retries=1) as c, pytest.raises(ConnectionFailed) as err:
        c.jobs.get("job_1")
    assert err.value.status is None and f"127.0.0.1:{port}/v1/jobs/job_1" in str(err.value)


def _sse(*events: dict, end: bool) -> Reply:
    text = "retry: 50\n\n" + "".join(f"id: {e['seq']}\nevent: progress\ndata: {json.dumps(e)}\n\n" for e in events)
    text += ": keep-alive\n\n" + ('event: end\ndata: {"status": "succeeded"}\n\n' if end else "")
    return Reply(200, text.encode(), {"Content-Type": "text/event-stream"}, length=False)


def _event(seq: int) -> dict:
    return {"seq": seq, "time": "2025-01-01T00:00:00Z", "stage": "0:distill", "message": "training", "step": seq,
            "total": 3, "loss": 0.5}


def test_the_event_stream_resumes_with_last_event_id():
    script = [_sse(_event(1), _event(2), end=False), UNAVAILABLE, _sse(_event(3), end=True)]
    with FakeServer(script) as srv, fast(srv.url) as c:
        assert [e.seq for e in c.jobs.events("job_1", follow=True)] == [1, 2, 3]
    assert [s.headers.get("last-event-id") for s in srv.seen] == [None, "2", "2"]
    assert all(s.headers["accept"] == "text/event-stream" for s in srv.seen)


def test_a_download_cut_off_resumes_from_the_bytes_it_has(tmp_path):
    content = os.urandom(50_000)
    art = Artifact(id="art_1", name="model.tar", media_type="application/x-tar", size_bytes=len(content),
                   sha256=hashlib.sha256(content).hexdigest(), download_url="/v1/artifacts/art_1/download")
    script = [Reply(200, content, send_bytes=20_000),
              Reply(206, content[20_000:], {"Content-Range": f"bytes 20000-49999/{len(content)}"})]
    progress = []
    with FakeServer(script) as srv, fast(srv.url) as c:
        path = c.artifacts.download(art, tmp_path, on_progress=lambda done, total: progress.append(done))
    assert path.read_bytes() == content and progress[-1] == len(content)
    assert srv.seen[0].headers.get("range") is None
    assert srv.seen[1].headers["range"] == "bytes=20000-" and srv.seen[1].headers["if-range"] == f'"{art.sha256}"'

    # a name from the service never writes outside the directory asked for
    evil = art.model_copy(update={"name": "../../evil.tar"})
    (tmp_path / "in").mkdir()
    with FakeServer([Reply(200, content)]) as srv, fast(srv.url) as c:
        assert c.artifacts.download(evil, tmp_path / "in") == tmp_path / "in" / "evil.tar"


def test_the_async_client_retries_too(tmp_path):
    async def main(url: str) -> None:
        async with AsyncClient(url, "dk_test", backoff=0.01) as c:
            assert (await c.jobs.get("job_1")).id == "job_1"
            with pytest.raises(ServiceUnavailable):
                await c.datasets.upload(tmp_path / "d.jsonl")
            assert [e.seq async for e in c.jobs.events("job_1", follow=True)] == [1, 2, 3]

    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    script = [UNAVAILABLE, Reply(drop=True), OK, UNAVAILABLE, _sse(_event(1), _event(2), end=False),
              _sse(_event(3), end=True)]
    with FakeServer(script) as srv:
        asyncio.run(main(srv.url))
    assert [s.method for s in srv.seen] == ["GET"] * 3 + ["POST"] + ["GET"] * 2
    assert srv.seen[-1].headers["last-event-id"] == "2"


def test_wait_polls_when_the_events_url_is_not_a_stream():
    done = Reply(200, json.dumps({**JOB, "status": "succeeded"}).encode())
    with FakeServer([Reply(200, b'{"data": []}'), done]) as srv, fast(srv.url) as c:
        assert c.jobs.wait("job_1", timeout=5).status == "succeeded"
    assert [s.path.split("?")[0] for s in srv.seen] == ["/v1/jobs/job_1/events", "/v1/jobs/job_1"]
