"""A slow upload does not hold up anyone else: while one client trickles a dataset in, other clients' requests
(lists, reads, another upload) are answered, and then the slow upload completes. Ordering, not timing: the
slow body does not send its end until the other requests have been answered, so an API that served the
upload to the exclusion of others would never answer them (their client times out and the test fails)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx

LINE = (json.dumps({"text": "one slow sentence at a time"}) + "\n").encode()


def test_a_slow_upload_does_not_block_other_requests(server, client, api_key):
    others_done, first_part_sent = threading.Event(), threading.Event()
    result: dict = {}

    def slow_body() -> Iterator[bytes]:
        yield (b'--slowb\r\nContent-Disposition: form-data; name="file"; filename="slow.jsonl"\r\n'
               b"Content-Type: application/octet-stream\r\n\r\n")
        yield LINE * 100
        first_part_sent.set()
        others_done.wait(60)  # the rest only after the other clients were served
        yield LINE * 100
        yield b"\r\n--slowb--\r\n"

    def upload() -> None:
        with httpx.Client(base_url=server.url, timeout=90) as slow:
            result["response"] = slow.post("/v1/datasets", content=slow_body(), headers={
                "Authorization": f"Bearer {api_key}", "Content-Type": "multipart/form-data; boundary=slowb"})

    thread = threading.Thread(target=upload)
    thread.start()
    assert first_part_sent.wait(30)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10) as other:
        answers = [other.get("/v1/datasets").status_code, other.get("/v1/jobs").status_code,
                   other.get("/readyz").status_code,
                   other.post("/v1/datasets", files={"file": ("quick.jsonl", LINE * 3)}).status_code]
    assert "response" not in result  # the slow upload was still open while the others were answered
    others_done.set()
    thread.join(60)
    assert answers == [200, 200, 200, 201]
    slow = result["response"]
    assert slow.status_code == 201, slow.text
    assert slow.json()["rows"] == 200
    names = sorted(d["name"] for d in client.get("/v1/datasets").json()["data"])
    assert names == ["quick.jsonl", "slow.jsonl"]
